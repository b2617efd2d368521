"""make_shards and the loader on inputs as people have them: full-range video, damaged and cut-off files, files
with more than one video stream."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import encode_frames, frame_ids, numbered_frames
from test_make_shards import _frames, _media, _read_samples

from longvivit.data.decode import DecodeError, read_frames
from longvivit.data.make_shards import main
from longvivit.data.shard_probe import probe_entry
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


def _noisy_frames(n: int = 30, size: int = 32) -> np.ndarray:
    """Numbered frames with noise on top: packets big enough that damage lands inside the picture data."""
    noise = np.random.default_rng(0).integers(0, 24, (n, size, size, 3))
    return np.clip(numbered_frames(n, size, size).astype(int) + noise - 12, 0, 255).astype(np.uint8)


def _damaged_inputs(tmp_path: Path) -> dict[str, str]:
    """name -> a pattern of its reject detail; each was in the shards (or crashed the loader) before it was rejected."""
    frames = _noisy_frames()
    mkv = encode_frames(frames, "matroska")
    mp4 = encode_frames(frames, "mp4")  # moov at the end
    avi = encode_frames(frames, "avi", "mpeg4")
    hole = bytearray(encode_frames(frames, "mp4", options={"movflags": "frag_keyframe+empty_moov"}))
    hole[len(hole) // 2 : len(hole) // 2 + len(hole) // 8] = bytes(len(hole) // 8)  # a run of zeros mid-file
    tail = bytearray(mkv)
    tail[len(tail) // 2 :] = bytes(len(tail) - len(tail) // 2)  # a preallocated download that stopped half-way
    files = {"cut.mkv": mkv[: len(mkv) // 2], "cut.mp4": mp4[: len(mp4) * 9 // 10], "cut.avi": avi[: len(avi) // 2],
             "hole.mp4": bytes(hole), "zero_tail.mkv": bytes(tail)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return {"cut.mkv": "cut off: the Matroska segment", "cut.mp4": "cut off: the mp4 box 'moov'",
            "cut.avi": "cut off: the AVI chunk", "hole.mp4": "decoding stops after frame \\d+: ",
            "zero_tail.mkv": r"its frames cover 1\.\d\d s of the 3\.00 s the container states"}


def test_damaged_videos_are_rejected_with_what_is_wrong(tmp_path):
    # A cut-off Matroska/WebM/AVI was stored as a shorter video (its caption still about the whole one), and the
    # loader crashed (SIGSEGV in decord) on a cut-off AVI; an mp4 with a damaged middle passed a check of its first
    # and last frames and then failed at every load; a half-written mkv was stored as half a video.
    expected = _damaged_inputs(tmp_path)
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"video": n, "caption": n}) + "\n" for n in expected))
    assert main(["--manifest", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "out")]) == 1
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert {r["source"]: r["reason"] for r in rejects} == dict.fromkeys(expected, "damaged")
    for r in rejects:
        assert re.match(expected[r["source"]], r["detail"]), r


def test_the_loader_refuses_cut_off_bytes_instead_of_reading_or_crashing_on_them(tmp_path):
    # Shards from other tools can hold cut-off files: decord read a cut-off mkv as a shorter video, and crashed
    # the process on some cut-off AVIs.
    _damaged_inputs(tmp_path)
    with pytest.raises(DecodeError, match=r"the video is cut off \(\d+ bytes\): the Matroska segment at byte"):
        read_frames((tmp_path / "cut.mkv").read_bytes(), 4)


def test_a_stream_copy_cut_is_stored_as_the_frames_it_shows(tmp_path):
    # `ffmpeg -ss 1.5 -c copy` keeps the packets from the keyframe before 1.5 s and hides them with an edit list:
    # FFmpeg shows 15 frames, decord counted 30 (the last 15 a frozen copy), so the sample said 3 s and the loader
    # took the frozen frames for real ones.
    frames = numbered_frames(30, 32, 32)
    (tmp_path / "gop.mp4").write_bytes(encode_frames(frames, "mp4", gop=30))
    with av.open(str(tmp_path / "gop.mp4")) as src, av.open(str(tmp_path / "copy.mp4"), "w") as dst:
        ist = src.streams.video[0]
        ost = dst.add_stream_from_template(ist)
        shift = int(1.5 / ist.time_base)
        for packet in src.demux(ist):
            if packet.dts is not None:
                packet.pts, packet.dts, packet.stream = packet.pts - shift, packet.dts - shift, ost
                dst.mux(packet)
    (sample,), rejects = _shard_one(tmp_path, {"video": "copy.mp4", "caption": "the second half"})
    info = json.loads(sample["json"])
    assert rejects == [] and info["reencoded_because"] == "decord counts 30 frames where FFmpeg shows 15"
    assert (info["num_frames"], info["duration"]) == (15, 1.5)
    assert frame_ids(_frames(_media(sample)[1])) == list(range(15, 30))


@pytest.mark.parametrize("workers, failure", [(1, "crash"), (2, "crash"), (1, "hang"), (2, "hang")])
def test_a_probe_that_crashes_or_hangs_costs_that_input_only(tmp_path, monkeypatch, workers, failure):
    # decord has died with SIGSEGV on damaged bytes. In-process (--workers 1) that ended make_shards with nothing
    # written and no rejects; in a multiprocessing.Pool (--workers 2) the run waited for ever for the lost result.
    # A decoder stuck on damaged bytes stalled the whole run for ever too.
    import faulthandler
    import os
    import signal
    import time

    from longvivit.data import make_shards

    main_pid = os.getpid()

    def probe_or_fail(entry, opts):
        if entry.path == "bad.mp4" and os.getpid() != main_pid:  # a probe in the main process would kill pytest
            if failure == "crash":
                faulthandler.disable()  # pytest's handler would print the forked worker's stack on the crash
                os.kill(os.getpid(), signal.SIGSEGV)
            time.sleep(3600)
        return probe_entry(entry, opts)

    monkeypatch.setattr(make_shards, "probe_entry", probe_or_fail)
    for name in ("a.mp4", "bad.mp4", "c.mp4"):
        (tmp_path / name).write_bytes(encode_frames(numbered_frames(4, 16, 16), "mp4"))
    names = ["a.mp4", "bad.mp4", "c.mp4", "a.mp4"]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"video": n, "caption": f"{i}"}) + "\n"
                                              for i, n in enumerate(names)))
    out = tmp_path / "out"
    assert main(["--manifest", str(tmp_path / "m.jsonl"), "--out", str(out), "--workers", str(workers),
                 "--timeout", "4"]) == 0
    (reject,) = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    if failure == "crash":
        assert (reject["line"], reject["reason"]) == (2, "crashed") and "killed by SIGSEGV" in reject["detail"]
    else:
        assert (reject["line"], reject["reason"]) == (2, "timed_out") and "timed out after 4 s" in reject["detail"]
    assert [json.loads(s["json"])["line"] for s in _read_samples(out)] == [1, 3, 4]


def test_a_last_frame_shown_for_seconds_is_no_damage(tmp_path):
    # A screen recording that ends on a still: its last frame lasts 5 s. The frames' length must count that frame's
    # own duration, or the check for damaged bytes would reject a good file.
    src = tmp_path / "src.mkv"
    src.write_bytes(encode_frames(numbered_frames(20, 16, 16), "matroska", "mpeg4"))  # no B-frames: packets in order
    with av.open(str(src)) as inp, av.open(str(tmp_path / "still_end.mkv"), "w") as out:
        ist = inp.streams.video[0]
        ost = out.add_stream_from_template(ist)
        packets = [p for p in inp.demux(ist) if p.size]
        packets[-1].duration = int(5 / ist.time_base)
        for packet in packets:
            packet.stream = ost
            out.mux(packet)
    (sample,), rejects = _shard_one(tmp_path, {"video": "still_end.mkv", "caption": "ends on a still"})
    assert rejects == [] and json.loads(sample["json"])["num_frames"] == 20


@pytest.mark.parametrize("verify, decoded", [("demux", 0), ("decode", 1)])
def test_a_clean_video_is_checked_from_its_packets_unless_decoding_is_asked_for(tmp_path, monkeypatch, verify,
                                                                                decoded):
    # Decoding every frame of every video stored as it is cost ~50x a packet scan (2 s of CPU for 5 minutes of
    # 360p; hours over a large set); the packets tell cut-off files, holes and hidden frames apart already.
    from longvivit.data import shard_probe
    from longvivit.data.manifest import ManifestEntry

    calls = []
    real = shard_probe.scan_frames
    monkeypatch.setattr(shard_probe, "scan_frames", lambda src, *a: calls.append(src) or real(src, *a))
    (tmp_path / "clean.mp4").write_bytes(encode_frames(_noisy_frames(), "mp4"))
    entry = ManifestEntry("clean.mp4", ["c"], line=1, base_dir=tmp_path)
    sample = probe_entry(entry, shard_probe.ShardOptions(staging=str(tmp_path / "st"), verify=verify))
    assert isinstance(sample, shard_probe.Sample) and sample.info["num_frames"] == len(_noisy_frames())
    assert len(calls) == decoded


def _streamed_avi(frames: np.ndarray) -> bytes:
    """An AVI as FFmpeg writes it into a pipe (``ffmpeg ... -f avi -``): placeholder sizes, no frame count."""

    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def write(self, b) -> int:
            self.data += bytes(b)
            return len(b)

    sink = Pipe()
    with av.open(sink, "w", format="avi") as c:
        stream = c.add_stream("mjpeg", rate=10)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuvj420p"
        for picture in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    return bytes(sink.data)


def test_an_avi_written_to_a_pipe_is_a_video_not_a_cut_off_file(tmp_path):
    # Its RIFF size is the placeholder 0xFFFFFFFF: it was rejected as 'damaged' ("the AVI chunk 'AVI' runs to byte
    # 4294967303"), and decord aborts the process on it (std::bad_alloc), so it is read with PyAV and re-encoded.
    frames = numbered_frames(30, 32, 32)
    data = _streamed_avi(frames)
    assert data[4:8] == b"\xff\xff\xff\xff"
    (tmp_path / "piped.avi").write_bytes(data)
    (sample,), rejects = _shard_one(tmp_path, {"video": "piped.avi", "caption": "from a pipe"})
    info = json.loads(sample["json"])
    assert rejects == [] and info["reencoded_because"].startswith("a streamed AVI")
    assert (info["num_frames"], info["duration"]) == (30, 3.0)
    assert frame_ids(_frames(_media(sample)[1])) == list(range(30))
    video, valid = read_frames(data, 4, fps=1.0)  # shards from other tools: the loader reads it too
    assert valid == 3 and frame_ids(video[:3]) == [0, 10, 20]


def test_bytes_after_the_last_mp4_box_are_no_box_even_when_they_read_like_one(tmp_path):
    # Anything after the last box whose 4 bytes after a size were printable was taken for a box running past the
    # end: a playable mp4 with a maker's trailer (or padding) was rejected as 'damaged: cut off'.
    from longvivit.data.truncation import cut_off

    mp4 = encode_frames(numbered_frames(20, 32, 32), "mp4")
    data = mp4 + b"\x00\x00\x10\x00SEFH" + b"\x01" * 24
    assert cut_off(data) is None
    assert "mp4 box 'moov'" in cut_off(mp4[: len(mp4) - 100])  # a file cut inside its last box still is cut
    (tmp_path / "trailer.mp4").write_bytes(data)
    (sample,), rejects = _shard_one(tmp_path, {"video": "trailer.mp4", "caption": "with a trailer"})
    assert rejects == [] and json.loads(sample["json"])["num_frames"] == 20


def test_a_stream_whose_resolution_changes_part_way_decodes_at_the_first_size(tmp_path):
    # Joined MPEG-TS recordings change resolution mid-stream; the PyAV reader (MPEG streams, files decord cannot
    # read) stacked frames of two sizes: `caption --video` and the loader failed with "all input arrays must have
    # the same shape".
    from longvivit.config import PreprocessConfig
    from longvivit.data.decode import decode_video_file

    small, large = numbered_frames(10, 48, 64), numbered_frames(10, 64, 96)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(encode_frames(small, "mpegts") + encode_frames(large, "mpegts"))
    with av.open(str(joined)) as c:
        assert len({(f.width, f.height) for f in c.decode(video=0)}) == 2
    frames = pyav_read_frames(joined, [0, 5, 12, 19])
    assert frames.shape == (4, 48, 64, 3)
    video, valid = decode_video_file(joined, PreprocessConfig(num_frames=4, fps=5.0, image_size=32))
    assert tuple(video.shape) == (4, 3, 32, 32) and valid == 4
