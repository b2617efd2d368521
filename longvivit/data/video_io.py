"""Video with PyAV: encoding clips (H.264), streaming re-encodes of (segments of) files, and a frame reader for the
containers decord gets wrong."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

EPS = 1e-6  # seconds; absorbs float noise in frame timestamps


def x264_options(crf: int = 23, threads: int | None = None) -> dict[str, str]:
    """libx264 options that give the same bytes for the same frames, run after run.

    x264's macroblock-tree rate control (``mbtree``, on by default with ``crf``) made about 8% of our 64x64
    synthetic clips encode to 2-3 different bitstreams when the same frames were encoded 8 times in one process
    (some with different decoded pixels); with ``mbtree=0`` none did (96 clips x 8 encodes, 3 processes, with
    and without frame threads). Costs a little compression at the same ``crf``.

    Args:
        crf: Constant rate factor (lower = better quality, bigger file).
        threads: x264 threads; ``None`` lets x264 choose.
    """
    opts = {"crf": str(crf), "preset": "veryfast", "x264-params": "mbtree=0"}
    if threads is not None:
        opts["threads"] = str(threads)
    return opts


def encode_video(
    frames: np.ndarray,
    fps: float,
    out: str | Path | io.BytesIO | None = None,
    codec: str = "libx264",
    crf: int = 23,
    container: str = "mp4",
) -> bytes:
    """Encode RGB frames to a video container.

    Args:
        frames: (T, H, W, 3) uint8 RGB. H and W are rounded down to even sizes (H.264 with yuv420p needs it).
        fps: Frame rate written into the stream.
        out: Optional file path or buffer that also receives the bytes.
        codec: PyAV/FFmpeg encoder name.
        crf: Constant rate factor for x264 (lower = better quality, bigger file).
        container: Container format passed to PyAV (``mp4``, ``matroska``, ...).

    Returns:
        The encoded bytes.
    """
    import av  # imported here: decoding paths do not need the encoder

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if len(frames) == 0:
        raise ValueError("cannot encode a video with zero frames")
    h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container) as dst:
        rate = Fraction(fps).limit_denominator(1001)
        stream = dst.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            stream.options = x264_options(crf, threads=1)  # one thread: short clips, encoded in parallel jobs
        for frame in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:h, :w]), format="rgb24")
            for packet in stream.encode(vf):
                dst.mux(packet)
        for packet in stream.encode():
            dst.mux(packet)
    data = buf.getvalue()
    if isinstance(out, io.BytesIO):
        out.write(data)
    elif out is not None:
        Path(out).write_bytes(data)
    return data


# ----------------------------------------------------------------------------- streaming re-encode (shard tool)
def output_size(height: int, width: int, short_side: int | None, even: bool = True) -> tuple[int, int]:
    """(height, width) after an optional downscale to ``short_side`` (never upscales); even for H.264."""
    if short_side is not None and min(height, width) > short_side:
        scale = short_side / min(height, width)
        height, width = max(1, round(height * scale)), max(1, round(width * scale))
    if even:
        height, width = max(2, height // 2 * 2), max(2, width // 2 * 2)
    return height, width


def video_stream(container: Any) -> Any:
    """The video stream FFmpeg takes for the main one, the one decord (the loader) reads.

    Not simply the first: a file can hold a thumbnail or cover-picture track ahead of the video.

    Raises:
        NoFramesError: The file has no video stream (audio only?).
    """
    stream = container.streams.best("video")
    if stream is None:
        raise NoFramesError("no video stream (audio only?)")
    return stream


def _decoded_frames(src: Path, start: float) -> Iterator[tuple[float, Any]]:
    """Yield ``(t, av.VideoFrame)``, ``t`` in seconds from the stream's start time (what a player shows).

    Frames are decoded one at a time (a long 1080p video is never held in memory). For a late ``start`` the
    container is seeked a few seconds ahead of it; containers whose seek overshoots are decoded from the top.
    """
    import av

    for use_seek in (start > 10.0, False):
        with av.open(str(src)) as inp:
            ist = video_stream(inp)
            ist.thread_type = "AUTO"
            tb = float(ist.time_base)
            t0 = ist.start_time * tb if ist.start_time is not None else 0.0
            step = 1.0 / float(ist.average_rate or ist.guessed_rate or 25)
            if use_seek:
                inp.seek(int((start - 5.0 + t0) / tb), stream=ist, backward=True)
            t = None
            for i, frame in enumerate(inp.decode(ist)):
                t = frame.time - t0 if frame.time is not None else (0.0 if t is None else t + step)
                if i == 0 and use_seek and t > start + EPS:
                    break  # overshot: retry from the beginning
                yield t, frame
            else:
                return


def _quarter_turns(frame: Any) -> int:
    """Counter-clockwise quarter turns that put a decoded frame upright (its display matrix; 0 if none).

    Phone videos are often stored landscape with a rotation in the container; FFmpeg reports it as
    ``frame.rotation`` (degrees, counter-clockwise; -90 for the usual portrait clip).
    """
    return round(getattr(frame, "rotation", 0) or 0) // 90 % 4 if frame is not None else 0


def transcode_video(
    src: str | Path, dst: str | Path, *, start: float | None = None, end: float | None = None,
    fps: float | None = None, short_side: int | None = None, crf: int = 23, constant_rate: bool = False,
) -> int:
    """Re-encode (a segment of) a video to H.264 mp4, streaming frame by frame.

    Args:
        src: Input video (anything FFmpeg reads).
        dst: Output mp4 path.
        start: Segment start in seconds from the stream's start time; ``None`` = 0.
        end: Segment end in seconds (exclusive); ``None`` = end of the video.
        fps: Output rate; only ever lowers the native rate (frames are picked, not interpolated).
        short_side: Downscale so the short side is this many pixels (never upscales).
        crf: x264 constant rate factor.
        constant_rate: The source's frame times are irregular (a variable frame rate): output ``fps`` (the
            native average rate if ``None``) by picking the frame on screen at each output time, whatever the
            native rate, instead of re-timing the source frames one after the other.

    Returns:
        Number of frames written. At the native rate these are exactly the source frames whose timestamps
        lie in ``[start, end)``; at a lower rate, the frame showing at each ``start + j / fps``.
    """
    import av

    start = start or 0.0
    end = float("inf") if end is None else end
    with av.open(str(src)) as probe:
        ist = video_stream(probe)
        native = Fraction(ist.average_rate or ist.guessed_rate or 25)
        turns = _quarter_turns(next(probe.decode(ist), None))
        coded = (ist.codec_context.height, ist.codec_context.width)
        # Output in display orientation (what decord, the loader's decoder, shows): the rotation is applied
        # to the pixels, since the display matrix is not carried over to the new file.
        height, width = output_size(*(coded[::-1] if turns % 2 else coded), short_side)
    if constant_rate:
        rate = Fraction(fps or native).limit_denominator(1001)
    else:
        rate = native if fps is None or fps >= native else Fraction(fps).limit_denominator(1001)
    resample = constant_rate or rate != native
    count = 0
    with av.open(str(dst), "w", format="mp4", options={"movflags": "faststart"}) as out:
        ost = out.add_stream("libx264", rate=rate)
        ost.width, ost.height, ost.pix_fmt = width, height, "yuv420p"
        ost.options = x264_options(crf)
        time_base = Fraction(1) / rate

        def emit(frame: Any) -> None:
            nonlocal count
            if turns:
                upright = np.ascontiguousarray(np.rot90(frame.to_ndarray(format="rgb24"), turns))  # (H, W, 3)
                frame = av.VideoFrame.from_ndarray(upright, format="rgb24")
            # Limited range out: a full-range source (MJPEG, many phones' H.264) keeps its range tag through
            # reformat, but the stream is written untagged (= limited), so its colours came back stretched.
            vf = frame.reformat(width=width, height=height, format="yuv420p", interpolation="AREA",
                                dst_color_range="MPEG")
            vf.pts, vf.time_base = count, time_base
            # The frame keeps the source's picture type, which x264 follows. Letting x264 decide (NONE) made
            # the same pixels encode to different bytes from run to run far more often in our tests.
            for packet in ost.encode(vf):
                out.mux(packet)
            count += 1

        prev, last_t = None, 0.0
        for t, frame in _decoded_frames(Path(src), start):
            if t >= end - EPS:
                break
            if not resample:
                if t >= start - EPS:
                    emit(frame)
                continue
            # Resampling: `prev` is on screen during [its time, t); it fills every target time before t.
            while prev is not None and start + count / rate < t - EPS:
                emit(prev)
            prev, last_t = frame, t
        if prev is not None:
            stop = min(end, last_t + 1.0 / float(native))
            while start + count / rate < stop - EPS:
                emit(prev)
        for packet in ost.encode():
            out.mux(packet)
    if count == 0:
        raise ValueError(f"no frame in [{start}, {end}) s")
    return count


# ----------------------------------------------------------------------------- decoding (decord's fallback)
class NoFramesError(ValueError):
    """A readable file with no video stream (audio only, an image container) or with a stream of no frames."""


class DamagedVideoError(ValueError):
    """A video whose bytes are cut off or damaged: decoding stops part-way, or it holds less than it declares."""


# Containers whose video stream states its own length (mp4/mov track duration, AVI stream header, Matroska
# track DURATION tag); FFmpeg only estimates it for the others (MPEG-PS/TS from timestamps, ...).
_DECLARING_FORMATS = ("mov", "mp4", "matroska", "webm", "avi")


def _declared_seconds(container: Any, ist: Any) -> float | None:
    """The length in seconds an open container states for its video stream ``ist`` (headers only), ``None`` when
    it states none. A streamed AVI's placeholder sizes give FFmpeg a bogus length: see
    :func:`~longvivit.data.truncation.streamed_avi`, which callers check first."""
    if not set(container.format.name.split(",")) & set(_DECLARING_FORMATS):
        return None
    if ist.duration and ist.time_base:
        return float(ist.duration * ist.time_base)
    # Matroska, per track: "00:01:02.500000000", the end of its last frame (counted from 0, not its start)
    tag = ist.metadata.get("DURATION", "")
    start = float(ist.start_time * ist.time_base) if ist.start_time and ist.time_base else 0.0
    try:
        hours, minutes, seconds = tag.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds) - start
    except ValueError:  # no tag, or not h:m:s
        return None


def mpeg_stream_kind(data: bytes) -> str | None:
    """``"program stream"`` / ``"transport stream"`` for MPEG-PS (.mpg, .vob) / MPEG-TS (.ts, .mts, .m2ts) bytes.

    decord returns other frames than the ones asked for from both (its frame ``i`` of ``cityCC0.mpg`` is frame
    ``i + 12``; of an H.264 transport stream, frame ``i + 32``; with seeking, MPEG-2 frames 0, 1, 2 for 0, 25,
    50), so these are read with PyAV, and the shard writer re-encodes them.
    """
    if data[:4] == b"\x00\x00\x01\xba":  # pack header
        return "program stream"
    for size, first in ((188, 0), (192, 4)):  # 188-byte packets; M2TS prefixes each with a 4-byte timecode
        if len(data) > first and all(data[i] == 0x47 for i in range(first, min(len(data), first + 3 * size), size)):
            return "transport stream"
    return None


def _open_source(source: bytes | str | Path) -> Any:
    import av

    return av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source))


@dataclass(frozen=True)
class FrameTimes:
    """When the frames of a video stream are shown, as FFmpeg decodes them."""

    times: list[float]  # presentation time of each frame, seconds from the first, in decode (= presentation) order
    rate: float  # the stream's (average) frame rate
    end: float  # when the last frame stops being shown (its own duration, else 1 / rate), seconds from the first
    declared: float | None = None  # the length the container states for the stream, if it states one


def scan_frames(source: bytes | str | Path, until: float | None = None) -> FrameTimes:
    """Decode the video stream without converting any picture and say when each frame is shown.

    Used where decord cannot be trusted: MPEG streams (see :func:`mpeg_stream_kind`) and what it cannot open or
    decode (AV1, GIF, live WebM without a duration...); the shard writer also proves with it that every frame
    decodes.

    Args:
        source: Encoded video bytes or a file.
        until: Stop after the first frame later than this many seconds (the frames a window from the start
            needs); ``None`` reads them all.

    Raises:
        NoFramesError: No video stream, or no frame decodes.
        DamagedVideoError: Decoding stops with an error after some frames (damaged bytes).
    """
    import av

    with _open_source(source) as c:
        ist = video_stream(c)
        rate = float(ist.average_rate or ist.guessed_rate or 25)
        declared = _declared_seconds(c, ist)
        times: list[float] = []
        shown = 1.0 / rate  # how long the last frame is on screen
        try:
            for frame in c.decode(ist):
                t = frame.time
                times.append(times[-1] + 1.0 / rate if t is None and times else (t or 0.0))
                shown = float(frame.duration * frame.time_base) if frame.duration and frame.time_base else 1.0 / rate
                if until is not None and times[-1] - times[0] > until:
                    break
        except av.FFmpegError as err:
            if not times:
                raise
            raise DamagedVideoError(
                f"decoding stops after frame {len(times)}: {err.strerror or err} (damaged bytes)") from err
    if not times:
        raise NoFramesError("the video stream has no frames")
    first = min(times)
    return FrameTimes([t - first for t in times], rate, max(times) - first + shown, declared)


def scan_packets(source: bytes | str | Path) -> FrameTimes:
    """When the frames of the video stream are shown, from its packets alone (nothing decoded).

    About 50x cheaper than :func:`scan_frames` (a 5-minute 30 FPS H.264 video: 0.03 s against 1.9 s of CPU):
    it finds what the container says (a cut-off file, a hole a demuxer skips, the frames an edit list hides,
    which are flagged ``discard``), not damage inside a frame's bytes, which only decoding shows.

    Raises:
        NoFramesError: No video stream, or no packet.
        DamagedVideoError: Demuxing stops with an error after some packets.
    """
    import av

    with _open_source(source) as c:
        ist = video_stream(c)
        rate = float(ist.average_rate or ist.guessed_rate or 25)
        declared = _declared_seconds(c, ist)
        shown: list[tuple[float, float]] = []  # (presentation time, duration) of each packet shown
        try:
            for packet in c.demux(ist):
                if packet.size == 0 or packet.is_discard or packet.pts is None or packet.time_base is None:
                    continue  # the demuxer's flush packet, or a frame the edit list hides
                duration = float(packet.duration * packet.time_base) if packet.duration else 1.0 / rate
                shown.append((float(packet.pts * packet.time_base), duration))
        except av.FFmpegError as err:
            if not shown:
                raise
            raise DamagedVideoError(
                f"demuxing stops after packet {len(shown)}: {err.strerror or err} (damaged bytes)") from err
    if not shown:
        raise NoFramesError("the video stream has no frames")
    shown.sort()  # decode order -> presentation order
    first = shown[0][0]
    return FrameTimes([t - first for t, _ in shown], rate, shown[-1][0] - first + shown[-1][1], declared)


def pyav_frame_times(source: bytes | str | Path, until: float | None = None) -> tuple[list[float], float]:
    """``(times, rate)`` of :func:`scan_frames`: each frame's presentation time from the first, and the rate."""
    scan = scan_frames(source, until)
    return scan.times, scan.rate


def pyav_read_frames(source: bytes | str | Path, indices: list[int]) -> np.ndarray:
    """Decode the frames at ``indices`` (decode order = presentation order), upright, as RGB.

    Args:
        source: Encoded video bytes or a file.
        indices: Frame indices (repeats allowed), each below the frame count of :func:`pyav_frame_times`.

    Returns:
        (len(indices), H, W, 3) uint8, every frame at the first frame's size (a stream whose resolution changes
        part-way, as joined MPEG-TS recordings do, is scaled to it, as a re-encode would).
    """
    wanted = set(indices)
    picked: dict[int, np.ndarray] = {}
    size: tuple[int, int] | None = None
    with _open_source(source) as c:
        for i, frame in enumerate(c.decode(video_stream(c))):
            size = size or (frame.width, frame.height)
            if i in wanted:
                turns = _quarter_turns(frame)
                rgb = frame.to_ndarray(width=size[0], height=size[1], format="rgb24")  # (H, W, 3)
                picked[i] = np.ascontiguousarray(np.rot90(rgb, turns))
                if len(picked) == len(wanted):
                    break
    missing = sorted(wanted - picked.keys())
    if missing:
        raise ValueError(f"frames {missing[:4]} did not decode")
    return np.stack([picked[i] for i in indices])  # (T, H, W, 3)
