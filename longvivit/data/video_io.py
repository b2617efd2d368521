"""Encoding frames to real video bytes (PyAV, H.264): shared by the shard tool, the synthetic set and tests."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import numpy as np


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
            # One thread: x264 with frame threading does not give the same bytes twice for the same frames.
            stream.options = {"crf": str(crf), "preset": "veryfast", "threads": "1"}
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
