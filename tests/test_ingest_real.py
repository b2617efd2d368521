"""make_shards and the loader on inputs as people have them: full-range video, damaged and cut-off files, files
with more than one video stream."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import encode_frames, numbered_frames
from test_make_shards import _frames, _media, _read_samples

from longvivit.data.make_shards import main


def _shard_one(tmp_path: Path, record: dict) -> tuple[list[dict], list[dict]]:
    """make_shards on a one-line manifest: (samples, rejects)."""
    (tmp_path / "m.jsonl").write_text(json.dumps(record) + "\n")
    out = tmp_path / "out"
    main(["--manifest", str(tmp_path / "m.jsonl"), "--out", str(out)])
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    return _read_samples(out), rejects


@pytest.mark.parametrize(("fmt", "codec", "pix_fmt"), [("avi", "mjpeg", "yuvj420p"), ("mp4", "libx264", "yuvj420p")])
def test_a_cut_keeps_the_colours_of_a_full_range_source(tmp_path, fmt, codec, pix_fmt):
    # MJPEG (webcams, old cameras) and many phones' H.264 are full range. A segment (or --fps, --short-side) is
    # re-encoded, and the full-range values were written into a limited-range stream: dark went black (8 -> 0),
    # bright went brighter, every colour a frame shows was off.
    frames = numbered_frames(20, 32, 32)
    (tmp_path / f"cam.{fmt}").write_bytes(encode_frames(frames, fmt, codec, rate=10, pix_fmt=pix_fmt))
    (sample,), _ = _shard_one(tmp_path, {"video": f"cam.{fmt}", "caption": "a cut", "start": 1.0, "end": 2.0})
    stored = _frames(_media(sample)[1]).reshape(10, -1, 3).mean(axis=1)  # (T, 3) mean colour of each frame
    source = frames[10:20].reshape(10, -1, 3).mean(axis=1)
    assert np.abs(stored - source).max() < 4.0
