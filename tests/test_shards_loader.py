"""The webdataset pipeline on real shards: equality with direct decoding, exactly-once eval across
workers and ranks, deterministic training streams, mixing, corrupt samples, and tokenisation with the
real tokenizer."""

from __future__ import annotations

import io
import json
import logging
import re
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from conftest import ASSETS, moving_square_frames
from PIL import Image

from longvivit.config import PreprocessConfig
from longvivit.data import load_clips
from longvivit.data.collate import load_tokenizer
from longvivit.data.datamodule import ShardLoader
from longvivit.data.decode import decode_video
from longvivit.data.shards import ShardDataset, TooManyFailuresError, expand_shards
from longvivit.data.video_io import encode_video

SMALL = PreprocessConfig(num_frames=4, fps=4.0, image_size=16)


def video_bytes(seed: int, num_frames: int = 8, size: int = 32) -> bytes:
    return encode_video(moving_square_frames(num_frames, size, size, seed=seed), fps=8.0)


def png_bytes(seed: int, size: int = 12) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
        buf, "PNG"
    )
    return buf.getvalue()


def write_shard(path: Path, samples: list[dict]) -> Path:
    """Write samples in the agreed format: ``{"key", "media": bytes, "ext", "captions"}`` each."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path)) as sink:
        for s in samples:
            ext = s.get("ext", "mp4")
            media = "image" if ext in ("jpg", "jpeg", "png") else "video"
            info = {"captions": s["captions"], "media": media, "ext": ext, "source": s["key"]}
            if "meta" in s:
                info["meta"] = s["meta"]
            sink.write(
                {
                    "__key__": s["key"],
                    ext: s["media"],
                    "json": json.dumps(info).encode(),
                    "txt": s["captions"][0].encode(),
                }
            )
    return path


def video_shards(
    root: Path,
    num_shards: int,
    per_shard: int,
    prefix: str = "shard",
    seed0: int = 0,
    cache: dict | None = None,
) -> list[str]:
    """Shards of distinct tiny real mp4 clips; keys ``{prefix}{shard}{index}``."""
    urls = []
    for s in range(num_shards):
        samples = []
        for i in range(per_shard):
            key = f"{prefix}{s:02d}{i:02d}"
            seed = seed0 + s * 100 + i
            data = cache.setdefault(seed, video_bytes(seed)) if cache is not None else video_bytes(seed)
            samples.append(
                {"key": key, "media": data, "captions": [f"clip {key}", f"another caption of {key}"]}
            )
        urls.append(str(write_shard(root / f"{prefix}-{s:06d}.tar", samples)))
    return urls


@pytest.fixture(scope="module")
def clip_cache():
    return {}


def keys_of(loader) -> list[str]:
    return [k for batch in loader for k in batch["key"]]


# ---------------------------------------------------------------------------------------------- load_clips
def test_load_clips_equals_direct_decoding_in_order(tmp_path, make_video):
    files = [
        make_video(f"v{i}.mp4", num_frames=12 + 4 * i, fps=8.0, height=48, width=64, seed=i) for i in range(3)
    ]
    samples = [
        {"key": f"00000{i}_v{i}", "media": f.read_bytes(), "captions": [f"caption {i}"]}
        for i, f in enumerate(files)
    ]
    write_shard(tmp_path / "shard-000000.tar", samples[:2])
    write_shard(tmp_path / "shard-000001.tar", samples[2:])
    cfg = PreprocessConfig(num_frames=4, fps=4.0, image_size=32)
    clips = list(
        load_clips(str(tmp_path / "shard-{000000..000001}.tar"), num_frames=4, fps=4.0, image_size=32)
    )
    assert [c["key"] for c in clips] == ["000000_v0", "000001_v1", "000002_v2"]
    for clip, f in zip(clips, files, strict=True):
        ref, valid = decode_video(f.read_bytes(), cfg)
        assert torch.equal(clip["video"], ref)  # the shard carries the file's bytes unchanged
        assert clip["num_valid_frames"] == valid == 4
        assert clip["video"].shape == (4, 3, 32, 32)
    assert clips[1]["captions"] == ["caption 1"]


def test_load_clips_with_workers_keeps_order_and_reads_each_once(tmp_path, clip_cache):
    urls = video_shards(tmp_path, 3, 3, cache=clip_cache)
    expected = [f"shard{s:02d}{i:02d}" for s in range(3) for i in range(3)]
    assert [c["key"] for c in load_clips(urls, num_frames=2, image_size=16)] == expected
    assert [c["key"] for c in load_clips(tmp_path, num_frames=2, image_size=16, num_workers=2)] == expected


def test_load_clips_reports_the_same_records_with_and_without_workers(tmp_path):
    # Through DataLoader workers the (key, reason) tuples arrived as lists: it.skipped == [("k", "r")] failed.
    samples = [
        {"key": "000000_ok", "media": video_bytes(1), "captions": ["fine"]},
        {"key": "000001_noise", "media": bytes(range(256)) * 8, "captions": ["noise"]},
        {"key": "000002_image", "media": png_bytes(0), "ext": "png", "captions": ["an image"]},
    ]
    write_shard(tmp_path / "s-000000.tar", samples)
    reads = []
    for workers in (0, 1):
        it = load_clips(tmp_path, num_frames=2, image_size=16, num_workers=workers, max_fail_fraction=1.0)
        assert [c["key"] for c in it] == ["000000_ok"]
        reads.append((it.skipped, it.passed_over))
    assert reads[0] == reads[1]
    assert all(isinstance(r, tuple) for records in reads[1] for r in records)
    assert [k.split(" @ ")[0] for k, _ in reads[1][0]] == ["000001_noise"]


def test_load_clips_refuses_a_random_start_instead_of_reading_from_the_first_frame(tmp_path, clip_cache):
    video_shards(tmp_path, 1, 1, cache=clip_cache)
    with pytest.raises(ValueError, match="start must be 'first' or 'center'.*got 'random'"):
        load_clips(tmp_path, num_frames=2, image_size=16, start="random")
    centred = next(iter(load_clips(tmp_path, num_frames=2, fps=4.0, image_size=16, start="center")))["video"]
    first = next(iter(load_clips(tmp_path, num_frames=2, fps=4.0, image_size=16)))["video"]
    assert not torch.equal(centred, first)  # 8 frames at 8 FPS: the centred window starts later


def test_load_clips_checks_the_types_of_its_sizes_up_front(tmp_path, clip_cache):
    # num_frames=16.0 (e.g. cfg.num_frames / 2) failed inside every decode: each clip was "skipped" as bad data
    video_shards(tmp_path, 1, 2, cache=clip_cache)
    whole = [c["video"].shape for c in load_clips(tmp_path, num_frames=np.int64(2), fps=4, image_size=16.0)]
    assert whole == [(2, 3, 16, 16)] * 2
    for bad, said in ((dict(num_frames=2.5), "num_frames must be a whole number, got 2.5"),
                      (dict(image_size=(16, 24)), "image_size must be a whole number"),
                      (dict(num_frames=True), "num_frames must be a whole number, got True"),
                      (dict(fps="2"), "fps must be a number, got '2'")):
        with pytest.raises(TypeError, match=re.escape(said)):
            load_clips(tmp_path, **{"num_frames": 2, "image_size": 16, **bad})
    with pytest.raises(TypeError, match="num_frames must be a whole number, got 2.5"):  # the config checks it
        PreprocessConfig(num_frames=2.0 + 0.5, image_size=16)
    assert PreprocessConfig(num_frames=4.0, image_size=np.int64(16)).num_frames == 4


def test_expand_shards_patterns_dirs_and_lists(tmp_path, clip_cache):
    urls = video_shards(tmp_path / "a", 3, 1, cache=clip_cache)
    assert expand_shards(str(tmp_path / "a" / "shard-{000000..000002}.tar")) == urls
    assert expand_shards(tmp_path / "a") == urls
    assert expand_shards([urls[2], urls[0]]) == [urls[2], urls[0]]
    assert expand_shards(f"{urls[0]}::{urls[1]}") == urls[:2]
    assert expand_shards(str(tmp_path / "a" / "*.tar")) == urls  # quoted globs reach us unexpanded
    assert expand_shards([str(tmp_path / "a" / "shard-00000[12].tar"), urls[0]]) == [*urls[1:], urls[0]]
    with pytest.raises(FileNotFoundError, match="no shards match"):
        expand_shards(str(tmp_path / "b" / "*.tar"))
    for not_a_shard in ("manifest.jsonl", "clip.MP4", "list.csv"):  # said so, not "invalid tar header"
        with pytest.raises(ValueError, match="is not a webdataset shard.*make_shards"):
            expand_shards([urls[0], str(tmp_path / not_a_shard)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        expand_shards(tmp_path / "empty")
    # a typo'd path, or a brace pattern past the last shard: named, not read as samples that all fail
    with pytest.raises(FileNotFoundError, match=r"no shard at .*/nowhere$"):
        expand_shards(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"none of the 2 shards exists, e\.g\. .*shard-000003\.tar"):
        expand_shards(str(tmp_path / "a" / "shard-{000003..000004}.tar"))
    with pytest.warns(RuntimeWarning, match=r"2 of 5 shards do not exist \(e\.g\. .*shard-000003\.tar\)"):
        assert expand_shards(str(tmp_path / "a" / "shard-{000000..000004}.tar"))[:3] == urls  # gaps: skipped
    remote = ["https://host/s/shard-{0..1}.tar", "pipe:curl -s https://host/s/x.tar"]
    assert expand_shards(remote) == ["https://host/s/shard-0.tar", "https://host/s/shard-1.tar", remote[1]]


def test_file_urls_are_the_local_shards_they_name(tmp_path, clip_cache):
    # webdataset users write file: URLs; they were refused as missing shards ("no shard at file:/...")
    urls = video_shards(tmp_path / "a", 2, 1, cache=clip_cache)
    folder = tmp_path / "a"
    assert expand_shards(f"file:{urls[0]}") == [urls[0]]
    assert expand_shards(f"file://{urls[0]}") == [urls[0]]
    assert expand_shards(f"file://localhost{urls[0]}") == [urls[0]]
    assert expand_shards(f"file:{folder}/shard-{{000000..000001}}.tar") == urls
    assert expand_shards(f"file:{folder}") == urls  # a folder and a glob too
    assert expand_shards(f"file:{folder}/*.tar") == urls
    with pytest.raises(FileNotFoundError, match=r"no shard at .*/nowhere\.tar$"):
        expand_shards(f"file:{folder}/nowhere.tar")
    with pytest.raises(ValueError, match="host 'elsewhere'"):
        expand_shards("file://elsewhere/data/x.tar")
    keys = [c["key"] for c in load_clips(f"file:{folder}/shard-{{000000..000001}}.tar", num_frames=2, image_size=16)]
    assert keys == ["shard0000", "shard0100"]


def test_a_failing_pipe_command_is_named_with_its_exit_status(tmp_path, clip_cache):
    # It was recorded as "<tar ?>: ReadError: empty file", the command named nowhere and its failure unsaid.
    urls = video_shards(tmp_path, 1, 1, cache=clip_cache)
    missing = tmp_path / "missing.tar"
    it = load_clips([f"pipe:cat {missing}", f"pipe:cat {urls[0]}"], num_frames=2, image_size=16,
                    max_fail_fraction=1.0)
    assert [c["key"] for c in it] == ["shard0000"]
    assert it.skipped == [(f"<tar pipe:cat {missing}>", "the command exited with status 1")]


def test_a_folder_of_gzipped_shards_is_read(tmp_path, clip_cache):
    # webdataset reads .tar.gz/.tgz shards, but a folder of them was "no .tar shards in directory"
    import gzip
    import shutil

    urls = video_shards(tmp_path / "plain", 2, 1, cache=clip_cache)
    (tmp_path / "gz").mkdir()
    with open(urls[0], "rb") as src, gzip.open(tmp_path / "gz" / "shard-000000.tar.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    shutil.copy(urls[1], tmp_path / "gz" / "shard-000001.tgz")
    (tmp_path / "gz" / "notes.txt").write_text("not a shard")
    assert [Path(u).name for u in expand_shards(tmp_path / "gz")] == ["shard-000000.tar.gz", "shard-000001.tgz"]
    assert [c["key"] for c in load_clips(tmp_path / "gz", num_frames=2, image_size=16)] == ["shard0000", "shard0100"]


def test_real_clips_in_shards(tmp_path):
    names = [("bigbuckbunny.mp4", "mp4"), ("cityCC0.mpg", "mpg")]
    if not all((ASSETS / n).exists() for n, _ in names):
        pytest.skip("real clips not in tests/assets")
    samples = [
        {
            "key": f"00000{i}_{Path(n).stem}",
            "media": (ASSETS / n).read_bytes(),
            "ext": ext,
            "captions": [f"real clip {n}"],
        }
        for i, (n, ext) in enumerate(names)
    ]
    write_shard(tmp_path / "real-000000.tar", samples)
    clips = list(load_clips(tmp_path, num_frames=4, fps=1.0, image_size=32))
    assert [c["key"] for c in clips] == ["000000_bigbuckbunny", "000001_cityCC0"]
    for clip, (n, _) in zip(clips, names, strict=True):
        ref, _ = decode_video(
            (ASSETS / n).read_bytes(), PreprocessConfig(num_frames=4, fps=1.0, image_size=32)
        )
        assert torch.equal(clip["video"], ref) and clip["num_valid_frames"] == 4


# ---------------------------------------------------------------------------------------------- exactly once
@pytest.mark.parametrize(
    ("num_shards", "per_shard", "split"), [(4, 3, "shard"), (1, 7, "sample"), (3, 2, "auto")]
)
def test_eval_reads_every_sample_once_across_two_workers(tmp_path, clip_cache, num_shards, per_shard, split):
    urls = video_shards(tmp_path, num_shards, per_shard, cache=clip_cache)
    ds = ShardDataset(urls, "video", SMALL, train=False, batch_size=2, eval_split=split, rank=0, world_size=1)
    keys = keys_of(ShardLoader(ds, num_workers=2))
    expected = {f"shard{s:02d}{i:02d}" for s in range(num_shards) for i in range(per_shard)}
    assert sorted(keys) == sorted(expected)  # each exactly once: no duplicates, nothing missing


@pytest.mark.parametrize("num_shards", [1, 2, 5])
def test_eval_reads_every_sample_once_across_ranks_and_workers(tmp_path, clip_cache, num_shards):
    # 2 ranks x 2 workers = 4 slots; with 1 or 2 shards some slots would get no shard at all.
    urls = video_shards(tmp_path, num_shards, 3, cache=clip_cache)
    seen = []
    for rank in range(2):
        ds = ShardDataset(urls, "video", SMALL, train=False, batch_size=2, rank=rank, world_size=2)
        seen.extend(keys_of(ShardLoader(ds, num_workers=2)))
    assert Counter(seen) == Counter(f"shard{s:02d}{i:02d}" for s in range(num_shards) for i in range(3))


def test_rank_from_environment(tmp_path, clip_cache, monkeypatch):
    urls = video_shards(tmp_path, 2, 2, cache=clip_cache)
    seen = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        ds = ShardDataset(urls, "video", SMALL, train=False, batch_size=1)  # rank discovered in the workers
        part = keys_of(ShardLoader(ds, num_workers=1))
        assert 0 < len(part) < 4
        seen.extend(part)
    assert sorted(seen) == sorted(f"shard{s:02d}{i:02d}" for s in range(2) for i in range(2))


# ---------------------------------------------------------------------------------------------- corrupt data
def test_corrupt_samples_are_skipped_reported_and_iteration_continues(tmp_path, caplog):
    good = video_bytes(1)
    samples = [
        {"key": "000000_ok", "media": good, "captions": ["fine"]},
        {"key": "000001_truncated", "media": good[: len(good) // 2], "captions": ["cut"]},
        {"key": "000002_ok", "media": video_bytes(2), "captions": ["fine too"]},
        {"key": "000003_text", "media": b"a caption saved under the wrong name\n" * 3, "captions": ["text"]},
        {"key": "000004_nocaption", "media": good, "captions": [" "]},
        {"key": "000005_image", "media": png_bytes(0), "ext": "png", "captions": ["an image"]},
        {"key": "000006_ok", "media": video_bytes(3), "captions": ["last"]},
    ]
    write_shard(tmp_path / "bad-000000.tar", samples)
    with caplog.at_level(logging.WARNING, logger="longvivit.data"):
        it = load_clips(tmp_path, num_frames=2, image_size=16, max_fail_fraction=0.9)
        keys = [c["key"] for c in it]
    assert keys == ["000000_ok", "000002_ok", "000006_ok"]
    skipped = {k.split(" @ ")[0]: reason for k, reason in it.skipped}
    # The image is another loader's sample, not a corrupt one: passed over, not reported as skipped, but listed
    # apart (it was dropped without a trace: a mixed test set lost its images from the evaluation unsaid)
    assert set(skipped) == {"000001_truncated", "000003_text", "000004_nocaption"}
    assert [(k.split(" @ ")[0], r) for k, r in it.passed_over] == [("000005_image", "a png sample in a video dataset")]
    assert "caption" in skipped["000004_nocaption"] and "not a video: the 111 bytes are text" in skipped["000003_text"]
    assert sum("skipped sample" in r.message for r in caplog.records) == 3


def test_mixed_shards_feed_video_and_image_loaders_without_failures(tmp_path):
    samples = [{"key": f"0000{i:02d}_v", "media": video_bytes(i), "captions": ["v"]} for i in range(3)]
    samples += [
        {"key": f"0001{i:02d}_i", "media": png_bytes(i), "ext": "png", "captions": ["i"]} for i in range(30)
    ]
    write_shard(tmp_path / "mixed-000000.tar", samples)
    common = dict(train=False, batch_size=None, rank=0, world_size=1, min_fail_count=5)
    videos = ShardDataset(tmp_path, "video", SMALL, **common)
    images = ShardDataset(tmp_path, "image", PreprocessConfig(image_size=8), **common)
    assert [s["key"] for s in videos if "key" in s] == [f"0000{i:02d}_v" for i in range(3)]
    assert len([s for s in images if "key" in s]) == 30
    assert videos.skip_log.failed == 0 and videos.skip_log.other_media == 30
    # In training too, a mixed shard yields its videos...
    mixed = ShardDataset(tmp_path / "mixed-000000.tar", "video", SMALL, train=True, rank=0, world_size=1)
    assert next(iter(mixed))["key"].endswith("_v")
    # ...but a stream of nothing but the other kind is a configuration mistake, said clearly.
    image_shard = str(write_shard(tmp_path / "img" / "i-000000.tar", samples[3:]))
    images_as_videos = ShardDataset(image_shard, "video", SMALL, train=True, rank=0, world_size=1)
    with pytest.raises(TooManyFailuresError, match="other modality"):
        next(iter(images_as_videos))


def test_skips_reach_the_main_process_from_workers(tmp_path):
    good = video_bytes(4)
    samples = [
        {"key": f"0000{i:02d}_c", "media": good if i % 3 else b"garbage", "captions": ["c"]} for i in range(9)
    ]
    write_shard(tmp_path / "bad-000000.tar", samples)
    ds = ShardDataset(
        tmp_path,
        "video",
        SMALL,
        train=False,
        batch_size=2,
        max_fail_fraction=0.5,
        rank=0,
        world_size=1,
        eval_split="sample",
    )
    loader = ShardLoader(ds, num_workers=2)
    assert len(keys_of(loader)) == 6
    assert sorted(k.split(" @ ")[0] for k, _ in loader.skipped) == ["000000_c", "000003_c", "000006_c"]


def test_failure_fraction_raises_with_the_count(tmp_path):
    samples = [
        {"key": f"0000{i:02d}_c", "media": video_bytes(5) if i % 2 else b"junk", "captions": ["c"]}
        for i in range(12)
    ]
    write_shard(tmp_path / "bad-000000.tar", samples)
    # Checked at each failure once 10 samples were seen: the 6th failure comes with the 11th sample.
    with pytest.raises(TooManyFailuresError, match=r"6 of 11 samples"):
        list(load_clips(tmp_path, num_frames=2, image_size=16, max_fail_fraction=0.3, min_fail_count=10))
    # Under the budget the same data passes.
    assert len(list(load_clips(tmp_path, num_frames=2, image_size=16, max_fail_fraction=0.6))) == 6


def test_truncated_tar_and_missing_shard_are_recorded(tmp_path, clip_cache):
    urls = video_shards(tmp_path, 2, 4, cache=clip_cache)
    with tarfile.open(urls[0]) as tf:
        third = [m for m in tf.getmembers() if not m.name.endswith((".json", ".txt"))][2]
    raw = Path(urls[0]).read_bytes()
    Path(urls[0]).write_bytes(raw[: third.offset_data + third.size // 2])  # cut inside the third sample's video
    it = load_clips(
        [urls[0], str(tmp_path / "missing.tar"), urls[1]], num_frames=2, image_size=16, max_fail_fraction=0.9
    )
    keys = [c["key"] for c in it]
    assert keys[-4:] == [f"shard01{i:02d}" for i in range(4)]  # the next shard is read in full
    assert 1 <= len(keys) - 4 <= 3
    assert any("<tar" in k and "missing.tar" in k for k, _ in it.skipped)
    assert any("<tar" in k and "shard-000000.tar" in k and "ReadError" in r for k, r in it.skipped)


# ------------------------------------------------------------------------------------------ training streams
def train_keys(urls, n, **kw) -> list[str]:
    ds = ShardDataset(
        urls, "video", SMALL, train=True, batch_size=None, shuffle_buffer=4, rank=0, world_size=1, **kw
    )
    out = []
    for s in ds:
        out.append(s["key"])
        if len(out) == n:
            return out
    raise AssertionError("a training stream ended")


def test_training_stream_is_infinite_and_deterministic(tmp_path, clip_cache):
    urls = video_shards(tmp_path, 3, 2, cache=clip_cache)
    a = train_keys(urls, 20, seed=1)
    assert a == train_keys(urls, 20, seed=1)
    assert a != train_keys(urls, 20, seed=2)
    assert set(a) <= {f"shard{s:02d}{i:02d}" for s in range(3) for i in range(2)}
    ds = ShardDataset(urls, "video", SMALL, train=True, shuffle_buffer=4, seed=1, rank=0, world_size=1)
    ds.set_epoch(1)
    assert [s["key"] for s, _ in zip(ds, range(20), strict=False)] != a
    ds_r1 = ShardDataset(urls, "video", SMALL, train=True, shuffle_buffer=4, seed=1, rank=1, world_size=2)
    assert [s["key"] for s, _ in zip(ds_r1, range(20), strict=False)] != a


def test_image_and_video_streams_of_one_seed_are_not_in_lockstep(tmp_path, clip_cache):
    """Stage 1 mixes an image and a video stream with one seed; image shards are often frames of the same
    videos, in the same order. The streams must not draw the same shard indices and shuffles (they did: the
    i-th image of every batch came from the i-th clip's position)."""
    videos = video_shards(tmp_path / "v", 4, 4, prefix="s", cache=clip_cache)
    images = []
    for s in range(4):
        samples = [{"key": f"s{s:02d}{i:02d}", "media": png_bytes(s * 10 + i), "ext": "png", "captions": ["x"]}
                   for i in range(4)]
        images.append(str(write_shard(tmp_path / "i" / f"s-{s:06d}.tar", samples)))
    common = {"train": True, "shuffle_buffer": 8, "seed": 3, "rank": 0, "world_size": 1}
    video_keys = [s["key"] for s, _ in zip(ShardDataset(videos, "video", SMALL, **common), range(24), strict=False)]
    image_keys = [s["key"] for s, _ in zip(ShardDataset(images, "image", PreprocessConfig(image_size=8), **common),
                                           range(24), strict=False)]
    assert sum(a == b for a, b in zip(video_keys, image_keys, strict=True)) < 8


def test_weighted_mixing_of_datasets(tmp_path):
    def image_shard(name: str, n: int) -> str:
        return str(
            write_shard(
                tmp_path / f"{name}-000000.tar",
                [
                    {"key": f"{name}{i:03d}", "media": png_bytes(i), "ext": "png", "captions": [name]}
                    for i in range(n)
                ],
            )
        )

    a, b = image_shard("a", 10), image_shard("b", 10)
    ds = ShardDataset(
        [a, b],
        "image",
        PreprocessConfig(image_size=8),
        train=True,
        weights=[3.0, 1.0],
        shuffle_buffer=0,
        seed=0,
        rank=0,
        world_size=1,
    )
    keys = [s["key"] for s, _ in zip(ds, range(400), strict=False)]
    frac_a = sum(k.startswith("a") for k in keys) / len(keys)
    assert 0.65 < frac_a < 0.85
    ds = ShardDataset(
        [a, b],
        "image",
        PreprocessConfig(image_size=8),
        train=True,
        weights=[0.0, 1.0],
        shuffle_buffer=0,
        rank=0,
        world_size=1,
    )
    assert all(s["key"].startswith("b") for s, _ in zip(ds, range(30), strict=False))
    with pytest.raises(ValueError):
        ShardDataset([a, b], "image", train=True, weights=[1.0])


# -------------------------------------------------------------------------------------------- batches + text
@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(None)  # the packaged all-MiniLM-L6-v2 tokenizer


def test_train_batches_tokenise_one_random_caption(tmp_path, clip_cache, tokenizer):
    urls = video_shards(tmp_path, 2, 3, cache=clip_cache)
    ds = ShardDataset(
        urls,
        "video",
        SMALL,
        train=True,
        batch_size=3,
        tokenizer=tokenizer,
        max_text_length=12,
        shuffle_buffer=4,
        rank=0,
        world_size=1,
    )
    chosen = set()
    for batch, _ in zip(ds, range(4), strict=False):
        assert batch["video"].shape == (3, 4, 3, 16, 16) and batch["modality"] == "video"
        assert batch["num_valid_frames"].dtype == torch.long and batch["num_valid_frames"].tolist() == [
            4,
            4,
            4,
        ]
        L = batch["input_ids"].shape[1]  # padded to the longest caption of the batch, at most max_text_length
        assert batch["attention_mask"].shape == (3, L) and L <= 12 and batch["attention_mask"][:, -1].any()
        for key, caps, ids in zip(batch["key"], batch["captions"], batch["input_ids"], strict=True):
            assert len(caps) == 1 and caps[0] in (f"clip {key}", f"another caption of {key}")
            assert (
                ids.tolist()
                == tokenizer(caps[0], padding="max_length", max_length=L, truncation=True)["input_ids"]
            )
            assert tokenizer.decode(ids, skip_special_tokens=True) == caps[0].lower()
            chosen.add(caps[0].split()[0])
    assert chosen == {"clip", "another"}  # both captions get picked


def test_eval_batches_keep_all_captions(tmp_path, tokenizer):
    samples = [
        {"key": "000000_a", "media": video_bytes(7), "captions": ["one", "two", "three"]},
        {"key": "000001_b", "media": video_bytes(8), "captions": ["only one"]},
    ]
    write_shard(tmp_path / "val-000000.tar", samples)
    ds = ShardDataset(
        tmp_path,
        "video",
        SMALL,
        train=False,
        batch_size=4,
        tokenizer=tokenizer,
        max_text_length=8,
        rank=0,
        world_size=1,
    )
    (batch,) = list(ds)
    assert batch["captions"] == [["one", "two", "three"], ["only one"]]
    assert batch["input_ids"].shape [0] == 2 and batch["input_ids"].shape[1] <= 8  # first caption of each clip
    assert batch["all_input_ids"].shape[0] == 4 and batch["caption_sample"].tolist() == [0, 0, 0, 1]
    assert tokenizer.decode(batch["all_input_ids"][2], skip_special_tokens=True) == "three"


def test_image_batches(tmp_path):
    write_shard(
        tmp_path / "img-000000.tar",
        [
            {"key": f"0000{i:02d}_i", "media": png_bytes(i, size=20), "ext": "png", "captions": ["x"]}
            for i in range(5)
        ],
    )
    ds = ShardDataset(
        tmp_path, "image", PreprocessConfig(image_size=16), train=False, batch_size=2, rank=0, world_size=1
    )
    batches = list(ShardLoader(ds))
    assert [b["image"].shape for b in batches] == [(2, 3, 16, 16), (2, 3, 16, 16), (1, 3, 16, 16)]
    assert all(b["modality"] == "image" and "video" not in b for b in batches)
    asset = ASSETS / "cityCC0.png"
    if asset.exists():
        write_shard(
            tmp_path / "real" / "img-000000.tar",
            [{"key": "000000_city", "media": asset.read_bytes(), "ext": "png", "captions": ["city"]}],
        )
        ds = ShardDataset(
            tmp_path / "real", "image", PreprocessConfig(image_size=32), batch_size=1, rank=0, world_size=1
        )
        (batch,) = list(ds)
        assert batch["image"].shape == (1, 3, 32, 32) and batch["image"].std() > 0.1


def test_file_uris_are_percent_decoded(tmp_path, clip_cache):
    # Path.as_uri() (and every tool writing file URIs) percent-encodes: file:///data/my%20clips/x.tar names
    # "/data/my clips/x.tar", which was reported as a missing shard.
    urls = video_shards(tmp_path / "my clips #1", 1, 1, cache=clip_cache)
    assert expand_shards(Path(urls[0]).as_uri()) == urls
    assert expand_shards((tmp_path / "my clips #1").as_uri()) == urls  # a folder
    keys = [c["key"] for c in load_clips(Path(urls[0]).as_uri(), num_frames=2, image_size=16)]
    assert keys == ["shard0000"]
