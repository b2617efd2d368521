"""Shared fixtures: real mp4 bytes encoded on the fly, and the committed real sample clips."""

from __future__ import annotations

import os
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
