"""make_shards and the loader on inputs as people have them: full-range video, damaged and cut-off files, files
with more than one video stream."""

from __future__ import annotations

import io
import json
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import encode_frames, frame_ids, numbered_frames
from test_make_shards import _frames, _media, _read_samples

from longvivit.data.make_shards import main
from longvivit.data.video_io import pyav_frame_times, pyav_read_frames


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


def _thumbnail_first_mkv(frames: np.ndarray) -> bytes:
    """An mkv whose first video stream is a one-picture thumbnail track; the video is the second stream."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as c:
        thumb = c.add_stream("mjpeg", rate=1)
        thumb.width, thumb.height, thumb.pix_fmt = 16, 16, "yuvj420p"
        main_ = c.add_stream("libx264", rate=10)
        main_.width, main_.height, main_.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for stream, pictures in ((thumb, np.zeros((1, 16, 16, 3), np.uint8)), (main_, frames)):
            for picture in pictures:
                for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                    c.mux(packet)
            for packet in stream.encode():
                c.mux(packet)
    return buf.getvalue()


def test_a_thumbnail_track_ahead_of_the_video_is_not_taken_for_it(tmp_path):
    # decord reads the stream FFmpeg picks as the main one; PyAV code (cuts, re-encodes, the loader's fallback) read
    # the first video stream: a segment of this file was "transcode_failed: no frame in [1.0, 2.0) s".
    frames = numbered_frames(30, 32, 32)
    data = _thumbnail_first_mkv(frames)
    assert len(pyav_frame_times(data)[0]) == 30 and frame_ids(pyav_read_frames(data, [29])) == [29]
    (tmp_path / "thumb.mkv").write_bytes(data)
    (sample,), rejects = _shard_one(tmp_path, {"video": "thumb.mkv", "caption": "a cut", "start": 1.0, "end": 2.0})
    assert rejects == [] and frame_ids(_frames(_media(sample)[1])) == list(range(10, 20))
