"""make_shards end to end: real clips and broken inputs in, webdataset shards out, read back with decord."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import av
import decord
import numpy as np
import pytest
import webdataset as wds
from conftest import (
    ASSETS,
    moving_square_frames,
)
from PIL import Image

from longvivit.data import make_shards
from longvivit.data.make_shards import main
from longvivit.data.video_io import encode_video, transcode_video

MEDIA_EXTS = ("mp4", "avi", "mkv", "webm", "mov", "mpg", "mpeg", "m4v", "jpg", "jpeg", "png")


# ----------------------------------------------------------------------------- helpers
def _write_manifest(path: Path, records: list) -> Path:
    """One JSON object per line; a str record is written verbatim (to plant malformed lines)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def _read_samples(out: Path) -> list[dict]:
    """All samples of all shards in ``out``, in shard order, as webdataset yields them (raw bytes)."""
    urls = sorted(str(p) for p in out.glob("shard-*.tar"))
    return list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))


def _per_shard_counts(out: Path) -> list[int]:
    return [len(list(wds.WebDataset(str(p), shardshuffle=False))) for p in sorted(out.glob("shard-*.tar"))]


def _media(sample: dict) -> tuple[str, bytes]:
    (ext,) = [k for k in sample if k in MEDIA_EXTS]
    return ext, sample[ext]


def _frames(src: str | Path | bytes) -> np.ndarray:
    vr = decord.VideoReader(io.BytesIO(src) if isinstance(src, bytes) else str(src), num_threads=1)
    return vr.get_batch(list(range(len(vr)))).asnumpy()  # (T, H, W, 3)


def _pyav_frames(path: Path, indices: list[int]) -> list[np.ndarray]:

    with av.open(str(path)) as c:
        frames = []
        for frame in c.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) > max(indices):
                break
    return [frames[i] for i in indices]


def _square_x(frames: np.ndarray) -> np.ndarray:
    """Column centroid of the yellow square in each frame: identifies which source frame it is."""
    mask = (frames[..., 0] > 150) & (frames[..., 1] > 110) & (frames[..., 2] < 120)  # (T, H, W)
    cols = np.arange(frames.shape[2])[None, None, :]
    return (mask * cols).sum((1, 2)) / np.maximum(mask.sum((1, 2)), 1) / frames.shape[2]


def _source_indices(stored: np.ndarray, source: np.ndarray) -> list[int]:
    ref = _square_x(source)
    return [int(np.argmin(np.abs(ref - x))) for x in _square_x(stored)]


def _zero_frame_avi(path: Path) -> Path:

    # A container with a video stream header and no packet at all.
    with av.open(str(path), "w", format="avi") as c:
        s = c.add_stream("mpeg4", rate=8)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        c.start_encoding()
    return path


def _clip(path: Path, num_frames: int, fps: float, height: int = 48, width: int = 96, seed: int = 0) -> Path:
    encode_video(moving_square_frames(num_frames, height, width, seed), fps=fps, out=path)
    return path


# ----------------------------------------------------------------------------- the mixed corpus
GOOD = {  # line -> (key, ext) of every input that must land in the shards
    1: ("000001_bigbuckbunny", "mp4"), 2: ("000002_walk", "mp4"), 3: ("000003_photo", "jpg"),
    4: ("000004_seg", "mp4"), 5: ("000005_cityCC0", "mp4"), 16: ("000016_cityCC0", "png"),
    17: ("000017_city_cut", "mp4"),
}
REJECTED = {
    6: "damaged", 7: "unreadable", 8: "unreadable", 9: "missing_file", 10: "empty_caption",
    11: "malformed_line", 12: "zero_frames", 13: "too_short", 14: "segment_out_of_range", 15: "bad_segment",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("corpus")
    walk = _clip(d / "walk.mp4", 24, 8.0)
    _clip(d / "b.mp4", 20, 10.0, seed=1)
    Image.fromarray(moving_square_frames(1, 40, 56)[0]).save(d / "photo.jpg", quality=90)
    (d / "trunc.mp4").write_bytes(walk.read_bytes()[: walk.stat().st_size // 2])
    (d / "zero.mp4").write_bytes(b"")
    (d / "notes.mp4").write_text("this is a text file, not a video\n")
    _zero_frame_avi(d / "empty_stream.avi")
    _clip(d / "tiny.mp4", 4, 8.0)
    records = [
        {"video": str(ASSETS / "bigbuckbunny.mp4"), "caption": ["bunny wakes up", "a rabbit yawns"]},  # 1
        {"video": "walk.mp4", "caption": "a square moves right", "topic": "synthetic"},  # 2
        {"image": "photo.jpg", "caption": "a still square"},  # 3
        {"video": "b.mp4", "caption": "the middle second", "start": 0.5, "end": 1.5, "id": "seg"},  # 4
        {"video": str(ASSETS / "cityCC0.mpg"), "caption": "towers at night"},  # 5
        {"video": "trunc.mp4", "caption": "cut in half"},  # 6
        {"video": "zero.mp4", "caption": "zero bytes"},  # 7
        {"video": "notes.mp4", "caption": "text named mp4"},  # 8
        {"video": "missing.mp4", "caption": "not there"},  # 9
        {"video": "walk.mp4", "caption": "  "},  # 10
        '{"video": "walk.mp4", "caption": ',  # 11
        {"video": "empty_stream.avi", "caption": "no frames"},  # 12
        {"video": "tiny.mp4", "caption": "half a second"},  # 13
        {"video": "walk.mp4", "caption": "late start", "start": 10.0, "end": 12.0},  # 14
        {"video": "walk.mp4", "caption": "backwards", "start": 2.0, "end": 1.0},  # 15
        {"image": str(ASSETS / "cityCC0.png"), "caption": "a still of the towers"},  # 16
        {"video": str(ASSETS / "cityCC0.mpg"), "caption": "three seconds", "start": 2.0, "end": 5.0,
         "id": "city.cut"},  # 17
    ]
    return _write_manifest(d / "manifest.jsonl", records)


ARGS = ["--maxcount", "3", "--min-seconds", "1.0"]


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    assert main(["--manifest", str(corpus), "--out", str(out), *ARGS]) == 0
    return out


def test_rejects_and_stats_name_every_bad_input(built):
    rejects = [json.loads(line) for line in (built / "rejects.jsonl").read_text().splitlines()]
    assert {r["line"]: r["reason"] for r in rejects} == REJECTED
    assert all(set(r) == {"line", "source", "reason", "detail"} and r["detail"] for r in rejects)
    assert next(r for r in rejects if r["line"] == 9)["source"] == "missing.mp4"
    stats = json.loads((built / "stats.json").read_text())
    assert stats["written"] == len(GOOD) and stats["rejected"] == len(REJECTED)
    assert stats["rejected_by_reason"] == {
        "bad_segment": 1, "empty_caption": 1, "malformed_line": 1, "missing_file": 1,
        "segment_out_of_range": 1, "too_short": 1, "unreadable": 2, "damaged": 1, "zero_frames": 1,
    }
    assert (stats["videos"], stats["images"], stats["shards"]) == (5, 2, 3)  # 7 samples, 3 a shard
    shards = sorted(built.glob("shard-*.tar"))
    assert [p.name for p in shards] == stats["shard_names"]
    assert stats["bytes"] == sum(p.stat().st_size for p in shards)
    samples = _read_samples(built)
    infos = [json.loads(s["json"]) for s in samples]
    videos = [i for i in infos if i["media"] == "video"]
    assert stats["frames"] == sum(i["num_frames"] for i in videos)
    assert stats["hours"] == pytest.approx(sum(i["duration"] for i in videos) / 3600)
    assert not list(built.glob("*.tmp")) and not (built / ".staging").exists()


def test_every_good_input_is_in_exactly_one_shard_once(built, corpus):
    samples = _read_samples(built)
    keys = [s["__key__"] for s in samples]
    assert keys == [GOOD[line][0] for line in sorted(GOOD)]  # manifest order, no duplicate, no loss
    assert all("." not in k for k in keys)
    for s in samples:
        info = json.loads(s["json"])
        key, ext = GOOD[info["line"]]
        assert (s["__key__"], _media(s)[0], info["ext"]) == (key, ext, ext)
        assert s["txt"].decode() == info["captions"][0]
    by_line = {json.loads(s["json"])["line"]: json.loads(s["json"]) for s in samples}
    assert by_line[1]["captions"] == ["bunny wakes up", "a rabbit yawns"]
    assert by_line[1]["source"] == str(ASSETS / "bigbuckbunny.mp4")
    assert by_line[2]["meta"] == {"topic": "synthetic"} and by_line[4]["meta"] == {"id": "seg"}
    # Shard k holds accepted samples [3k, 3k+3).
    assert _per_shard_counts(built) == [3, 3, 1]
    index = json.loads((built / "shard-000001.index.json").read_text())
    assert index["keys"] == keys[3:6]


def test_copied_videos_decode_to_the_source_frames(built, corpus):
    samples = {json.loads(s["json"])["line"]: s for s in _read_samples(built)}
    for line, source in ((1, ASSETS / "bigbuckbunny.mp4"), (2, corpus.parent / "walk.mp4")):
        info = json.loads(samples[line]["json"])
        data = _media(samples[line])[1]
        assert data == source.read_bytes()  # copy mode stores the bytes untouched
        vr = decord.VideoReader(io.BytesIO(data), num_threads=1)
        ref = decord.VideoReader(str(source), num_threads=1)
        assert info["num_frames"] == len(vr) == len(ref)
        assert info["fps"] == pytest.approx(ref.get_avg_fps())
        assert info["duration"] == pytest.approx(len(ref) / ref.get_avg_fps())
        assert (info["height"], info["width"]) == ref[0].shape[:2]
        assert (info["start"], info["end"]) == (None, None)
        # Early frames of the 720p clip keep the test fast; the small clips are compared up to their end.
        idx = [0, 1, 2] if line == 1 else [0, len(ref) // 2, len(ref) - 1]
        np.testing.assert_array_equal(vr.get_batch(idx).asnumpy(), ref.get_batch(idx).asnumpy())
    assert json.loads(samples[1]["json"])["num_frames"] == 132  # Big Buck Bunny excerpt: 5.28 s at 25 fps


def test_mpeg_streams_are_reencoded_to_the_frames_ffmpeg_shows(built, corpus):
    # An MPEG program stream was stored as it was, and decord, the loader's decoder, reads cityCC0.mpg 12 frames
    # late (it skips the first GOP): every clip of an .mpg (or .ts) started at the wrong time.
    samples = {json.loads(s["json"])["line"]: s for s in _read_samples(built)}
    info = json.loads(samples[5]["json"])
    assert (info["ext"], info["reencoded_because"], info["num_frames"]) == ("mp4", "MPEG program stream", 190)
    assert info["fps"] == 25.0 and (info["width"], info["height"]) == (720, 404)  # 405 rows: even for H.264
    stored = _frames(_media(samples[5])[1])
    size = (info["width"], info["height"])
    for i in (2, 14, 100):
        ref = [np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BILINEAR), dtype=float)
               for f in _pyav_frames(ASSETS / "cityCC0.mpg", [i - 2, i, i + 2])]
        errs = [np.abs(stored[i].astype(float) - r).mean() for r in ref]
        assert np.argmin(errs) == 1, (i, errs)


def test_segments_are_cut_to_the_requested_frames(built, corpus):
    samples = {json.loads(s["json"])["line"]: s for s in _read_samples(built)}
    seg = json.loads(samples[4]["json"])
    stored = _frames(_media(samples[4])[1])
    # b.mp4: 20 frames at 10 fps; [0.5, 1.5) s holds source frames 5..14.
    assert (seg["start"], seg["end"], seg["num_frames"], seg["fps"]) == (0.5, 1.5, 10, 10.0)
    assert seg["duration"] == pytest.approx(1.0) and len(stored) == 10
    assert _source_indices(stored, _frames(corpus.parent / "b.mp4")) == list(range(5, 15))
    # cityCC0.mpg starts at 0.54 s in its stream; segment times are stream-relative like decord's.
    city = json.loads(samples[17]["json"])
    city_frames = _frames(_media(samples[17])[1])
    assert (city["start"], city["end"], city["num_frames"], len(city_frames)) == (2.0, 5.0, 75, 75)
    # The first stored frame is the one shown at t = 2.0 s: frame 50 of the stream as FFmpeg decodes it, not a
    # neighbour (those differ by MAE ~15). decord is no reference here: on this MPEG-PS it skips the first GOP
    # (12 frames) and pads the end with copies of the last frame.
    size = (city["width"], city["height"])  # 405 rows were scaled to an even 404 for H.264
    ref = [np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BILINEAR), dtype=float)
           for f in _pyav_frames(ASSETS / "cityCC0.mpg", [48, 50, 52])]
    errs = [np.abs(city_frames[0].astype(float) - r).mean() for r in ref]
    assert np.argmin(errs) == 1 and errs[1] < 0.7 * min(errs[0], errs[2]), errs


def test_images_are_stored_with_their_size(built, corpus):
    samples = {json.loads(s["json"])["line"]: s for s in _read_samples(built)}
    for line, source, size in ((3, corpus.parent / "photo.jpg", (56, 40)), (16, ASSETS / "cityCC0.png", None)):
        info = json.loads(samples[line]["json"])
        data = _media(samples[line])[1]
        assert data == source.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            assert (info["width"], info["height"]) == im.size == (size or Image.open(source).size)
        assert (info["media"], info["num_frames"]) == ("image", 1)


def test_two_workers_write_the_same_shards(built, corpus, tmp_path):
    out = tmp_path / "w2"
    assert main(["--manifest", str(corpus), "--out", str(out), *ARGS, "--workers", "2"]) == 0
    assert sorted(p.name for p in built.glob("shard-*")) == sorted(p.name for p in out.glob("shard-*"))
    for one, two in zip(sorted(built.glob("*.index.json")), sorted(out.glob("*.index.json")), strict=True):
        a, b = json.loads(one.read_text()), json.loads(two.read_text())
        assert (a["keys"], a["samples"]) == (b["keys"], b["samples"])  # same samples, same shards, same order
    for a, b in zip(_read_samples(built), _read_samples(out), strict=True):
        assert (a["__key__"], a["json"], a["txt"]) == (b["__key__"], b["json"], b["txt"])
        assert _media(a) == _media(b)  # copied bytes, and re-encoded segments byte for byte
    assert (out / "rejects.jsonl").read_text() == (built / "rejects.jsonl").read_text()


# ----------------------------------------------------------------------------- resume, overwrite, options
@pytest.fixture
def synthetic(make_video, tmp_path) -> Path:
    records = [{"video": make_video(f"c{i}.mp4", num_frames=12, fps=8.0, seed=i).name,
                "caption": f"clip {i}"} for i in range(4)]
    records.append({"video": "c0.mp4", "caption": "cut", "start": 0.25, "end": 1.0})  # re-encoded
    return _write_manifest(tmp_path / "synthetic.jsonl", records)


def _mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.tar")}


def _stats(out: Path) -> dict:
    return json.loads((out / "stats.json").read_text())


def test_rerun_resumes_after_a_lost_shard_and_stale_tmp(synthetic, tmp_path):
    out = tmp_path / "out"
    argv = ["--manifest", str(synthetic), "--out", str(out), "--maxcount", "2"]
    assert main(argv) == 0
    before, first = _mtimes(out), _read_samples(out)
    assert len(before) == 3
    lost = (out / "shard-000001.tar").read_bytes()
    (out / "shard-000001.tar").unlink()
    (out / "shard-000002.tar.tmp").write_bytes(b"half a shard")
    (out / ".staging").mkdir()
    (out / ".staging" / "x.mp4.tmp").write_bytes(b"half an encode")

    assert main(argv) == 0
    after = _mtimes(out)
    assert after["shard-000000.tar"] == before["shard-000000.tar"]  # untouched, not rewritten
    assert after["shard-000002.tar"] == before["shard-000002.tar"]
    assert (out / "shard-000001.tar").read_bytes() == lost
    assert (_stats(out)["shards_written"], _stats(out)["shards_skipped"]) == (1, 2)
    assert [s["__key__"] for s in _read_samples(out)] == [s["__key__"] for s in first]
    assert not list(out.rglob("*.tmp"))

    assert main([*argv, "--overwrite"]) == 0
    assert all(_mtimes(out)[n] != t for n, t in after.items())
    assert _stats(out)["shards_written"] == 3
    # A plan with fewer shards removes the surplus ones: samples must never appear twice.
    assert main([*argv[:-2], "--maxcount", "10"]) == 0
    assert sorted(_mtimes(out)) == ["shard-000000.tar"]
    assert [s["__key__"] for s in _read_samples(out)] == [s["__key__"] for s in first]


def test_interrupted_write_leaves_no_partial_shard(synthetic, tmp_path, monkeypatch):
    out = tmp_path / "out"
    argv = ["--manifest", str(synthetic), "--out", str(out), "--maxcount", "2"]
    real_add, calls = make_shards._add_member, []

    def crash_in_second_shard(*args, **kwargs):
        calls.append(1)
        if len(calls) == 8:  # shard 0 took 6 members (2 samples x 3 files)
            raise KeyboardInterrupt
        real_add(*args, **kwargs)

    monkeypatch.setattr(make_shards, "_add_member", crash_in_second_shard)
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    assert sorted(p.name for p in out.glob("shard-*.tar")) == ["shard-000000.tar"]
    assert (out / "shard-000001.tar.tmp").exists()
    done = _mtimes(out)
    monkeypatch.setattr(make_shards, "_add_member", real_add)
    assert main(argv) == 0
    assert _mtimes(out)["shard-000000.tar"] == done["shard-000000.tar"]
    keys = [s["__key__"] for s in _read_samples(out)]
    assert len(keys) == len(set(keys)) == 5
    assert not list(out.glob("*.tmp"))


def test_plan_keeps_complete_shards_even_if_sizes_moved(tmp_path):
    def sample(i: int, size: int) -> make_shards.Sample:
        (tmp_path / f"{i}.mp4").write_bytes(b"x" * size)
        info = {"captions": ["c"], "media": "video"}
        return make_shards.Sample(f"{i:06d}_s", i, str(tmp_path / f"{i}.mp4"), "mp4", info, f"fp{i}")

    samples = [sample(i, 3000) for i in range(5)]
    fresh = make_shards.plan_shards(samples, maxcount=10, maxsize=13_000)
    assert [len(g) for g in fresh] == [2, 2, 1]  # a sample takes 5.5 KB of tar: 2 fit in 13 KB, 3 do not
    # An earlier run (smaller re-encodes) wrote 3 samples into shard 0: kept, the rest planned after it.
    kept = make_shards.plan_shards(samples, 10, 13_000, existing={0: ["fp0", "fp1", "fp2"], 1: ["fp9"]})
    assert [[s.line for s in g] for g in kept] == [[0, 1, 2], [3, 4]]
    stale = make_shards.plan_shards(samples, 10, 13_000, existing={0: ["fp0", "fpX", "fp2"]})
    assert [len(g) for g in stale] == [2, 2, 1]


def test_maxsize_starts_a_new_shard_per_oversized_sample(synthetic, tmp_path):
    out = tmp_path / "out"
    assert main(["--manifest", str(synthetic), "--out", str(out), "--maxsize", "1k"]) == 0
    assert _per_shard_counts(out) == [1] * 5


def test_fps_and_short_side_reencode_only_what_is_larger(make_video, tmp_path):
    big = make_video("big.mp4", num_frames=24, fps=8.0, height=48, width=96)
    small = make_video("small.mp4", num_frames=8, fps=4.0, height=24, width=32)
    Image.fromarray(moving_square_frames(1, 40, 56)[0]).save(tmp_path / "photo.png")
    manifest = _write_manifest(tmp_path / "m.jsonl", [
        {"video": "big.mp4", "caption": "big"}, {"video": "small.mp4", "caption": "small"},
        {"image": "photo.png", "caption": "photo"},
    ])
    out = tmp_path / "out"
    assert main(["--manifest", str(manifest), "--out", str(out), "--fps", "4", "--short-side", "32"]) == 0
    by_line = {json.loads(s["json"])["line"]: s for s in _read_samples(out)}
    info = json.loads(by_line[1]["json"])
    stored = _frames(by_line[1]["mp4"])
    # 3 s at 8 fps -> 4 fps keeps every other frame; 48x96 -> short side 32.
    assert (info["num_frames"], info["fps"], info["height"], info["width"]) == (12, 4.0, 32, 64)
    assert stored.shape == (12, 32, 64, 3)
    assert _source_indices(stored, _frames(big)) == list(range(0, 24, 2))
    assert by_line[2]["mp4"] == small.read_bytes()  # already small and slow: copied, not re-encoded
    with Image.open(io.BytesIO(by_line[3]["png"])) as im:
        assert im.size == (45, 32) == (json.loads(by_line[3]["json"])["width"],
                                       json.loads(by_line[3]["json"])["height"])


def test_reencode_normalises_every_video_to_mp4(make_video, tmp_path):
    clip = make_video("a.mp4", num_frames=10, fps=5.0)
    avi = tmp_path / "a.avi"
    encode_video(moving_square_frames(10, 48, 64), fps=5.0, out=avi, codec="mpeg4", container="avi")
    manifest = _write_manifest(tmp_path / "m.jsonl", [{"video": "a.mp4", "caption": "mp4"},
                                                      {"video": "a.avi", "caption": "avi"}])
    out = tmp_path / "out"
    assert main(["--manifest", str(manifest), "--out", str(out), "--reencode"]) == 0
    samples = _read_samples(out)
    assert [_media(s)[0] for s in samples] == ["mp4", "mp4"]
    assert _media(samples[0])[1] != clip.read_bytes()
    for s, src in zip(samples, (clip, avi), strict=True):
        info = json.loads(s["json"])
        assert info["num_frames"] == len(_frames(_media(s)[1])) == len(_frames(src)) == 10
        assert info["fps"] == pytest.approx(5.0)


def test_late_segments_seek_and_still_cut_the_right_frames(tmp_path):
    # 25 s long, so the cut seeks instead of decoding from the top; a wide frame makes each step visible.
    src = _clip(tmp_path / "long.mp4", 100, 4.0, height=32, width=640)
    n = transcode_video(src, tmp_path / "cut.mp4", start=15.0, end=16.5)
    cut = _frames(tmp_path / "cut.mp4")
    assert n == len(cut) == 6
    assert _source_indices(cut, _frames(src)) == list(range(60, 66))
    n = transcode_video(src, tmp_path / "slow.mp4", start=20.1, end=23.0, fps=1.0)
    assert _source_indices(_frames(tmp_path / "slow.mp4"), _frames(src)) == [80, 84, 88] and n == 3


# ----------------------------------------------------------------------------- exit codes
def test_exit_codes_for_unreadable_manifest_and_nothing_written(tmp_path, capsys):
    assert main(["--manifest", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope.jsonl" in err
    manifest = _write_manifest(tmp_path / "bad.jsonl", [{"video": "gone.mp4", "caption": "x"}, "{oops"])
    assert main(["--manifest", str(manifest), "--out", str(tmp_path / "o2")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing written" in err
    assert _stats(tmp_path / "o2")["rejected_by_reason"] == {"malformed_line": 1, "missing_file": 1}
    assert not list((tmp_path / "o2").glob("*.tar"))


def test_tools_wrapper_runs_as_a_script(tmp_path):
    script = Path(__file__).parents[1] / "tools" / "make_shards.py"
    proc = subprocess.run([sys.executable, str(script), "--manifest", str(tmp_path / "none.csv"), "--out",
                           str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("make_shards: cannot read manifest")
