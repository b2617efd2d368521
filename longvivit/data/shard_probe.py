"""Probe manifest entries for the shard writer: accept each one (its bytes, stored or re-encoded, and its json)
or reject it with a reason code; never raises on bad input.

:func:`probe_entry` is what :mod:`longvivit.data.make_shards` runs on every entry, in worker processes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from longvivit.data.decode import decoder_message, rgb_image, still_image_format, text_head
from longvivit.data.formats import IMAGE_EXTS, STORED_VIDEO_EXTS
from longvivit.data.manifest import ManifestEntry
from longvivit.data.sampling import variable_timestamps
from longvivit.data.truncation import cut_off, streamed_avi
from longvivit.data.video_io import EPS as _EPS
from longvivit.data.video_io import (
    DamagedVideoError,
    NoFramesError,
    mpeg_stream_kind,
    output_size,
    pyav_read_frames,
    scan_frames,
    scan_packets,
    transcode_video,
)

# Reason codes written to rejects.jsonl and counted in stats.json (manifest-level ones come from manifest.py).
MISSING = "missing_file"
UNREADABLE = "unreadable"
ZERO_FRAMES = "zero_frames"
TOO_SHORT = "too_short"
OUT_OF_RANGE = "segment_out_of_range"
TRANSCODE_FAILED = "transcode_failed"
DAMAGED = "damaged"
CRASHED = "crashed"  # the probe's process died (see longvivit.data.isolated)
TIMED_OUT = "timed_out"  # the probe took longer than make_shards --timeout


@dataclass(frozen=True)
class ShardOptions:
    """What the probe/encode step needs to know (picklable for worker processes)."""

    staging: str
    fps: float | None = None
    short_side: int | None = None
    min_seconds: float = 0.0
    crf: int = 23
    reencode: bool = False
    verify: str = "demux"  # or "decode": every frame decoded once (see _timing)


@dataclass
class Sample:
    """An accepted input: where its bytes are and the json stored next to them."""

    key: str
    line: int
    media_path: str
    ext: str
    info: dict[str, Any]
    fingerprint: str = ""  # of the inputs (source file, entry, options), not of the possibly re-encoded bytes

    @property
    def size(self) -> int:
        """Bytes this sample adds to a tar (headers and 512-byte padding included)."""
        sizes = (os.path.getsize(self.media_path), len(self.json_bytes()), len(self.txt_bytes()))
        return sum(512 + -(-n // 512) * 512 for n in sizes)

    def json_bytes(self) -> bytes:
        """The ``{key}.json`` member (keys sorted, so equal samples give equal bytes)."""
        return json.dumps(self.info, ensure_ascii=False, sort_keys=True).encode()

    def txt_bytes(self) -> bytes:
        """The ``{key}.txt`` member: the first caption."""
        return self.info["captions"][0].encode()


@dataclass
class Reject:
    """An input that will not be in the shards, and why."""

    line: int
    source: str | None
    reason: str
    detail: str


def sample_key(entry: ManifestEntry) -> str:
    """Deterministic, unique (line numbers are) and dot-free key of a manifest entry."""
    name = entry.id if entry.id is not None else Path(entry.path).stem
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in name)
    safe = "_".join(p for p in safe.split("_") if p)[:48]
    return f"{entry.line:06d}_{safe}" if safe else f"{entry.line:06d}"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[-1] if text else type(err).__name__)[:300]


def _staged_path(entry: ManifestEntry, src: Path, opts: ShardOptions, ext: str) -> Path:
    # The name hashes everything the encode depends on, so a staged file from other options is never reused.
    st = src.stat()
    tag = json.dumps([str(src.resolve()), st.st_size, st.st_mtime_ns, entry.start, entry.end, opts.fps,
                      opts.short_side, opts.crf])
    return Path(opts.staging) / f"{sample_key(entry)}-{hashlib.sha1(tag.encode()).hexdigest()[:12]}.{ext}"


def _read_video_info(path: Path) -> tuple[int, float, int, int]:
    """(num_frames, fps, height, width) of a video we wrote, as decord (the loader's decoder) sees it."""
    import decord

    vr = decord.VideoReader(str(path), num_threads=1)
    n = len(vr)
    h, w = vr[0].shape[:2] if n else (0, 0)
    return n, float(vr.get_avg_fps()), int(h), int(w)


@dataclass
class _Timing:
    """When each frame of a source is shown, and why its bytes cannot be stored as they are (None: they can)."""

    times: list[float]  # seconds, stream-relative, one per frame
    fps: float
    height: int
    width: int
    reencode: str | None = None
    variable: bool = False  # frame times are not those of a constant rate

    @property
    def duration(self) -> float:
        n = len(self.times)
        if not self.variable:  # a constant rate: what the loader will compute
            return n / self.fps
        gaps = sorted(b - a for a, b in pairwise(self.times)) or [1.0 / self.fps]
        return self.times[-1] - self.times[0] + gaps[len(gaps) // 2]


def _decord_timing(src: Path) -> _Timing:
    """How decord, the loader's decoder, sees ``src``: frame times, rate, size (raises what decord raises)."""
    import decord
    import numpy as np

    vr = decord.VideoReader(str(src), num_threads=1)
    n = len(vr)
    if n == 0:
        raise NoFramesError("the video stream has no frames")
    fps = float(vr.get_avg_fps())
    if not fps > 0:
        raise ValueError(f"no usable frame rate ({fps})")
    ts = [float(t) for t in vr.get_frame_timestamp(np.arange(n))[:, 0]]  # presentation times, stream-relative
    first, last = vr[0].asnumpy(), vr[n - 1].asnumpy()  # decord decodes the first and the last GOP
    del vr, last
    variable = variable_timestamps(ts, fps) is not None
    return _Timing(ts, fps, int(first.shape[0]), int(first.shape[1]), "variable frame rate" if variable else None,
                   variable)


def _check_declared_length(shown: float, declared: float | None) -> None:
    """Raise :class:`DamagedVideoError` when the frames (shown for ``shown`` seconds) end well before the length
    the container states (``declared``).

    Damaged bytes inside a Matroska, WebM or AVI file (a download with a hole, a preallocated file never filled)
    make the demuxer skip or stop without an error: the file decoded as a shorter video. The slack (1 s or 5%)
    absorbs rounding in the stated lengths.
    """
    if declared is not None and declared - shown > max(1.0, 0.05 * declared):
        raise DamagedVideoError(f"its frames cover {shown:.2f} s of the {declared:.2f} s the container states "
                                "(bytes missing or damaged)")


def _timing(src: Path, verify: str = "demux") -> _Timing:
    """Frame times and size of ``src``, with decord where the loader's decord reads the file right, else PyAV.

    FFmpeg's view of the stream is checked against decord's: from the packets (``verify="demux"``: cut-off
    files, holes a demuxer skips, frames an edit list hides), or by decoding every frame once with PyAV
    (``"decode"``, pictures not converted, ~50x the CPU: also damage inside frames, which otherwise passes a
    check of the first and last frames and fails wherever the loader samples in between, where it is skipped
    and listed). A file decord cannot read, an MPEG stream or a streamed AVI is decoded whole either way (it is
    re-encoded).

    Raises:
        NoFramesError: No video stream or no frame.
        DamagedVideoError: Cut off, or decoding stops part-way.
        Exception: Neither decoder reads the file (the decord error, PyAV's chained to it).
    """
    with open(src, "rb") as f:
        head = f.read(1024)
    text = text_head(head)
    if text is not None:
        raise ValueError(f"the file is text ({text!r}...)")
    why_cut = cut_off(src)
    if why_cut:
        raise DamagedVideoError(f"cut off: {why_cut}")
    mpeg = mpeg_stream_kind(head)
    kind = f"MPEG {mpeg}" if mpeg else streamed_avi(head)  # decord misreads these (or aborts on them)
    seen: _Timing | None = None
    decord_error: Exception | None = None
    if kind is None:
        try:
            seen = _decord_timing(src)
        except NoFramesError:
            raise
        except Exception as err:
            decord_error = err
    if seen is None:
        still = still_image_format(src)
        if still:
            raise ValueError(f"a still image ({still}), not a video: list it as {{\"image\": ...}}")
    try:
        if seen is not None and verify == "demux":
            scan = scan_packets(src)  # what FFmpeg shows, as the container tells it
            if len(scan.times) != len(seen.times):
                scan = scan_frames(src)  # the file is re-encoded: the frames FFmpeg decodes, exactly
        else:
            scan = scan_frames(src)  # what FFmpeg shows, and the proof that every frame decodes
    except (NoFramesError, DamagedVideoError):
        raise
    except Exception as err:
        raise err from decord_error
    # a streamed AVI's placeholder sizes give FFmpeg a bogus length: nothing is declared there
    _check_declared_length(scan.end, None if streamed_avi(head) else scan.declared)
    times, fps = scan.times, scan.rate
    if seen is not None and len(seen.times) == len(times):
        return seen
    if kind:
        why = kind
    elif seen is None:
        why = "decord cannot read it"
    else:  # e.g. a stream-copy cut (ffmpeg -ss -c copy): decord also counts the frames its edit list hides
        why = f"decord counts {len(seen.times)} frames where FFmpeg shows {len(times)}"
    height, width = pyav_read_frames(src, [0]).shape[1:3]
    return _Timing(times, fps, int(height), int(width), why, variable_timestamps(times, fps) is not None)


def _probe_video(entry: ManifestEntry, src: Path, opts: ShardOptions) -> Sample | Reject:
    import numpy as np

    def reject(reason: str, detail: str) -> Reject:
        return Reject(entry.line, entry.path, reason, detail)

    try:
        timing = _timing(src, opts.verify)
    except NoFramesError as err:
        return reject(ZERO_FRAMES, str(err))
    except DamagedVideoError as err:
        return reject(DAMAGED, str(err))
    except Exception as err:
        return reject(UNREADABLE, f"cannot read it as a video: {decoder_message(err)}")
    n, fps, ts = len(timing.times), timing.fps, np.asarray(timing.times)
    src_duration = timing.duration
    segment = entry.start is not None or entry.end is not None
    start = entry.start or 0.0
    end = src_duration if entry.end is None else min(entry.end, src_duration)
    if segment:
        if start >= src_duration:
            return reject(OUT_OF_RANGE, f"start {start:.3f}s is beyond the duration {src_duration:.3f}s")
        if not np.any((ts >= start - _EPS) & (ts < end - _EPS)):
            return reject(OUT_OF_RANGE, f"no frame in [{start:.3f}, {end:.3f})s")
    length = (end - start) if segment else src_duration
    if length < opts.min_seconds:
        return reject(TOO_SHORT, f"{length:.3f}s is shorter than --min-seconds {opts.min_seconds}")

    height, width = timing.height, timing.width
    ext = src.suffix.lower().lstrip(".")
    out_fps = fps if opts.fps is None else min(opts.fps, fps)
    resize = opts.short_side is not None and min(height, width) > opts.short_side
    reencode = timing.reencode or opts.reencode or ext not in STORED_VIDEO_EXTS
    if segment or out_fps < fps or resize or reencode:
        ext = "mp4"
        media = _staged_path(entry, src, opts, ext)
        variable = timing.variable
        try:
            if not media.exists():
                tmp = media.with_name(media.name + ".tmp")
                transcode_video(src, tmp, start=start if segment else None, end=end if segment else None,
                                fps=min(opts.fps or _cfr_rate(timing), _cfr_rate(timing)) if variable else opts.fps,
                                short_side=opts.short_side, crf=opts.crf, constant_rate=variable)
                os.replace(tmp, media)
            n, fps, height, width = _read_video_info(media)
        except Exception as err:
            return reject(TRANSCODE_FAILED, _first_line(err))
        if n == 0:
            return reject(TRANSCODE_FAILED, "the re-encoded video has no frames")
    else:
        media = src
    info = {
        "captions": entry.captions, "media": "video", "ext": ext, "duration": n / fps, "fps": fps,
        "num_frames": n, "width": width, "height": height, "source": entry.path,
        "start": start if segment else None, "end": end if segment else None, "line": entry.line,
        "meta": _meta(entry),
    }
    if timing.reencode:
        info["reencoded_because"] = timing.reencode
    return _sample(entry, src, opts, Path(media), ext, info)


def _cfr_rate(timing: _Timing) -> float:
    """A constant rate for a variable-rate source: its shortest frame interval (frames shown that briefly keep
    a frame of their own), within [its average rate, max(30, its average rate)]."""
    average = len(timing.times) / timing.duration
    gaps = [b - a for a, b in pairwise(timing.times) if b - a > 1e-4]
    fastest = 1.0 / min(gaps) if gaps else average
    return max(average, min(fastest, max(30.0, average)))


def _probe_image(entry: ManifestEntry, src: Path, opts: ShardOptions) -> Sample | Reject:
    from PIL import Image

    try:
        with Image.open(src) as im:
            im.verify()  # catches truncated files that open() alone accepts
        with Image.open(src) as im:
            fmt = (im.format or "").lower()
            shown = rgb_image(im)  # as the loader will decode it: upright (EXIF), 8-bit RGB
            width, height = shown.size
            new_h, new_w = output_size(height, width, opts.short_side, even=False)
            ext = src.suffix.lower().lstrip(".")
            media = src
            if (new_h, new_w) != (height, width) or ext not in IMAGE_EXTS or fmt not in ("jpeg", "png"):
                ext = "jpg" if fmt == "jpeg" else "png"
                media = _staged_path(entry, src, opts, ext)
                out = shown
                if (new_h, new_w) != (height, width):
                    out = out.resize((new_w, new_h), Image.Resampling.BICUBIC)
                tmp = media.with_name(media.name + ".tmp")
                out.save(tmp, format="JPEG" if ext == "jpg" else "PNG", quality=95)
                os.replace(tmp, media)
                width, height = new_w, new_h
    except Exception as err:
        return Reject(entry.line, entry.path, UNREADABLE, f"cannot read image: {_first_line(err)}")
    info = {
        "captions": entry.captions, "media": "image", "ext": ext, "duration": 0.0, "fps": 0.0,
        "num_frames": 1, "width": width, "height": height, "source": entry.path, "start": None, "end": None,
        "line": entry.line, "meta": _meta(entry),
    }
    return _sample(entry, src, opts, Path(media), ext, info)


def _meta(entry: ManifestEntry) -> dict[str, Any]:
    return {**entry.meta, **({"id": entry.id} if entry.id is not None else {})}


def _sample(entry: ManifestEntry, src: Path, opts: ShardOptions, media: Path, ext: str,
            info: dict[str, Any]) -> Sample:
    # A stored sample is identified by what it was made from (the source file, the manifest entry in info, the
    # encoding options), so a rerun can tell a complete shard without decoding or re-encoding anything.
    st = src.stat()
    tag = [sample_key(entry), ext, info, str(src.resolve()), st.st_size, st.st_mtime_ns, opts.fps,
           opts.short_side, opts.crf, opts.reencode]
    fingerprint = hashlib.sha1(json.dumps(tag, sort_keys=True).encode()).hexdigest()
    return Sample(sample_key(entry), entry.line, str(media), ext, info, fingerprint)


def probe_entry(entry: ManifestEntry, opts: ShardOptions) -> Sample | Reject:
    """Check one manifest entry and prepare its stored bytes; never raises.

    Args:
        entry: The manifest entry.
        opts: Re-encoding and filtering options.

    Returns:
        A :class:`Sample` ready to be written or a :class:`Reject` with a reason code.
    """
    src = entry.resolved_path
    try:
        if not src.is_file():
            return Reject(entry.line, entry.path, MISSING, f"no such file: {src}")
        if src.stat().st_size == 0:
            return Reject(entry.line, entry.path, UNREADABLE, "empty file (0 bytes)")
        if entry.media == "image":
            return _probe_image(entry, src, opts)
        return _probe_video(entry, src, opts)
    except Exception as err:  # a probe must not take the whole run down
        return Reject(entry.line, entry.path, UNREADABLE, f"unexpected error: {_first_line(err)}")
