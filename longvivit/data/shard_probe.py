"""Probe manifest entries for the shard writer: accept each one (its bytes, stored or re-encoded, and its json)
or reject it with a reason code; never raises on bad input.

:func:`probe_entry` is what :mod:`longvivit.data.make_shards` runs on every entry, in worker processes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longvivit.data.formats import IMAGE_EXTS, VIDEO_EXTS
from longvivit.data.manifest import ManifestEntry
from longvivit.data.video_io import EPS as _EPS
from longvivit.data.video_io import output_size, transcode_video

# Reason codes written to rejects.jsonl and counted in stats.json (manifest-level ones come from manifest.py).
MISSING = "missing_file"
UNREADABLE = "unreadable"
ZERO_FRAMES = "zero_frames"
TOO_SHORT = "too_short"
OUT_OF_RANGE = "segment_out_of_range"
TRANSCODE_FAILED = "transcode_failed"


@dataclass(frozen=True)
class ShardOptions:
    """What the probe/encode step needs to know (picklable for worker processes)."""

    staging: str
    fps: float | None = None
    short_side: int | None = None
    min_seconds: float = 0.0
    crf: int = 23
    reencode: bool = False


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


def _has_empty_video_stream(path: Path) -> bool:
    """True when PyAV sees a video stream that decodes to nothing (decord only reports an error then)."""
    import av

    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                return False
            return next(iter(c.decode(video=0)), None) is None
    except Exception:
        return False


def _staged_path(entry: ManifestEntry, src: Path, opts: ShardOptions, ext: str) -> Path:
    # The name hashes everything the encode depends on, so a staged file from other options is never reused.
    st = src.stat()
    tag = json.dumps([str(src.resolve()), st.st_size, st.st_mtime_ns, entry.start, entry.end, opts.fps,
                      opts.short_side, opts.crf])
    return Path(opts.staging) / f"{sample_key(entry)}-{hashlib.sha1(tag.encode()).hexdigest()[:12]}.{ext}"


def _read_video_info(path: Path) -> tuple[int, float, int, int]:
    """(num_frames, fps, height, width) of a video as decord (the loader's decoder) sees it."""
    import decord

    vr = decord.VideoReader(str(path), num_threads=1)
    n = len(vr)
    h, w = vr[0].shape[:2] if n else (0, 0)
    return n, float(vr.get_avg_fps()), int(h), int(w)


def _probe_video(entry: ManifestEntry, src: Path, opts: ShardOptions) -> Sample | Reject:
    import decord
    import numpy as np

    def reject(reason: str, detail: str) -> Reject:
        return Reject(entry.line, entry.path, reason, detail)

    try:
        vr = decord.VideoReader(str(src), num_threads=1)
    except Exception as err:
        if _has_empty_video_stream(src):
            return reject(ZERO_FRAMES, "the video stream has no frames")
        return reject(UNREADABLE, f"cannot open: {_first_line(err)}")
    n = len(vr)
    if n == 0:
        return reject(ZERO_FRAMES, "the video stream has no frames")
    fps = float(vr.get_avg_fps())
    if not fps > 0:
        return reject(UNREADABLE, f"no usable frame rate ({fps})")
    ts = vr.get_frame_timestamp(np.arange(n))[:, 0]  # (n,) presentation time of each frame, stream-relative
    src_duration = n / fps
    segment = entry.start is not None or entry.end is not None
    start = entry.start or 0.0
    end = src_duration if entry.end is None else min(entry.end, src_duration)
    if segment:
        if start >= src_duration:
            return reject(OUT_OF_RANGE, f"start {start:.3f}s is beyond the duration {src_duration:.3f}s")
        idx = np.nonzero((ts >= start - _EPS) & (ts < end - _EPS))[0]
        if len(idx) == 0:
            return reject(OUT_OF_RANGE, f"no frame in [{start:.3f}, {end:.3f})s")
        first, last = int(idx[0]), int(idx[-1])
    else:
        first, last = 0, n - 1
    try:
        frame = vr[first].asnumpy()
        vr[last].asnumpy()
    except Exception as err:
        return reject(UNREADABLE, f"cannot decode frames {first} and {last} of {n}: {_first_line(err)}")
    del vr
    length = (end - start) if segment else src_duration
    if length < opts.min_seconds:
        return reject(TOO_SHORT, f"{length:.3f}s is shorter than --min-seconds {opts.min_seconds}")

    height, width = frame.shape[:2]
    ext = src.suffix.lower().lstrip(".")
    out_fps = fps if opts.fps is None else min(opts.fps, fps)
    resize = opts.short_side is not None and min(height, width) > opts.short_side
    if segment or out_fps < fps or resize or opts.reencode or ext not in VIDEO_EXTS:
        ext = "mp4"
        media = _staged_path(entry, src, opts, ext)
        try:
            if not media.exists():
                tmp = media.with_name(media.name + ".tmp")
                transcode_video(src, tmp, start=start if segment else None, end=end if segment else None,
                                fps=opts.fps, short_side=opts.short_side, crf=opts.crf)
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
    return _sample(entry, src, opts, Path(media), ext, info)


def _probe_image(entry: ManifestEntry, src: Path, opts: ShardOptions) -> Sample | Reject:
    from PIL import Image

    try:
        with Image.open(src) as im:
            im.verify()  # catches truncated files that open() alone accepts
        with Image.open(src) as im:
            im.load()
            fmt = (im.format or "").lower()
            width, height = im.size
            new_h, new_w = output_size(height, width, opts.short_side, even=False)
            ext = src.suffix.lower().lstrip(".")
            media = src
            if (new_h, new_w) != (height, width) or ext not in IMAGE_EXTS or fmt not in ("jpeg", "png"):
                ext = "jpg" if fmt == "jpeg" else "png"
                media = _staged_path(entry, src, opts, ext)
                out = im.convert("RGB") if ext == "jpg" or im.mode not in ("RGB", "RGBA", "L") else im
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
