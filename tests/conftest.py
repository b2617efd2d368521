"""Shared fixtures: real mp4 bytes encoded on the fly, and the committed real sample clips."""

from __future__ import annotations

import io
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ASSETS = Path(__file__).parent / "assets"


def moving_square_frames(num_frames: int = 24, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of a bright square moving right over a noisy background.

    Each frame differs, so tests can tell frames apart after decoding (index encoded in the square's position).
    """
    rng = np.random.default_rng(seed)
    bg = rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)
    frames = np.repeat(bg[None], num_frames, axis=0).copy()
    side = max(4, height // 4)
    for t in range(num_frames):
        x = int(t * (width - side) / max(1, num_frames - 1))
        frames[t, height // 2 - side // 2 : height // 2 + side // 2, x : x + side] = (250, 200, 30)
    return frames


@pytest.fixture
def make_video(tmp_path):
    """Factory writing a real H.264 mp4 to tmp_path and returning its path."""
    from longvivit.data.video_io import encode_video

    def _make(name: str = "clip.mp4", num_frames: int = 24, fps: float = 8.0, height: int = 48, width: int = 64,
              seed: int = 0) -> Path:
        path = tmp_path / name
        encode_video(moving_square_frames(num_frames, height, width, seed), fps=fps, out=path)
        return path

    return _make


def numbered_frames(n: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Frame i is flat with red (i % 16) * 16 + 8 and green (i // 16) * 16 + 8: its index survives the codec."""
    i = np.arange(n)
    rgb = np.stack([(i % 16) * 16 + 8, (i // 16) * 16 + 8, np.full(n, 128)], axis=1).astype(np.uint8)  # (n, 3)
    return np.broadcast_to(rgb[:, None, None, :], (n, height, width, 3)).copy()


def frame_ids(frames: np.ndarray) -> list[int]:
    mean = frames.reshape(len(frames), -1, 3).mean(axis=1)  # (T, 3)
    return [int(r // 16) + 16 * int(g // 16) for r, g, _ in mean]


def encode_frames(frames: np.ndarray, fmt: str, codec: str = "libx264", rate: int = 10,
            pts_ms: list[int] | None = None, pix_fmt: str = "yuv420p", options: dict[str, str] | None = None,
            gop: int | None = None) -> bytes:
    """Encode ``frames`` to a ``fmt`` container with PyAV, at ``rate`` or at explicit times (ms) of each frame.

    ``options`` go to the muxer (e.g. ``{"movflags": "faststart"}``); ``gop`` sets the keyframe interval.
    """
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt, options=options or {}) as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        if gop is not None:
            s.gop_size = gop
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            if pts_ms is not None:
                vf.pts, vf.time_base = pts_ms[i], Fraction(1, 1000)
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


# ten frames 0.1 s apart, then one a second: 20 frames over 11 s (a screen recording that sat still)
VFR_PTS_MS = [100 * i for i in range(10)] + [900 + 1000 * (i - 9) for i in range(10, 20)]


def audio_only_mp4() -> bytes:
    """An mp4 holding one second of silence and no video stream."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        stream = c.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode()]:
            c.mux(packet)
    return buf.getvalue()

