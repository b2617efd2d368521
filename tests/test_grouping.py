"""``group_by``: adjacent samples sharing a metadata value (order-only pairs) train in one batch."""

from __future__ import annotations

import json
import warnings

import pytest
from test_shards_loader import SMALL, video_bytes, write_shard

from longvivit.data.shards import ShardDataset


@pytest.fixture(scope="module")
def clip_cache() -> dict[int, bytes]:
    """Encoded test clips by seed, shared by this module's tests."""
    return {}


def test_group_by_keeps_adjacent_pairs_together_through_the_shuffle(tmp_path, clip_cache):
    # 3 pairs back to back (adjacent in the shard, as the synthetic set writes them), then 9 singletons, some
    # with an empty meta and some with none; real mp4 bytes: grouping happens on raw samples, before decoding.
    samples = []
    for i in range(12):
        meta = {"pair_id": f"p{i // 2}"} if i < 6 else {}
        samples.append({"key": f"s{i:02d}", "media": clip_cache.setdefault(i, video_bytes(i)),
                        "captions": [f"clip {i}"], "meta": meta})
    for i in range(12, 15):
        samples.append({"key": f"s{i:02d}", "media": clip_cache.setdefault(i, video_bytes(i)), "captions": ["x"]})
    url = str(write_shard(tmp_path / "pairs-000000.tar", samples))
    partner = {f"s{i:02d}": f"s{i ^ 1:02d}" for i in range(6)}

    def stream(group_by):
        ds = ShardDataset(url, "video", SMALL, train=True, shuffle_buffer=8, seed=3, rank=0, world_size=1,
                          group_by=group_by)
        return [s["key"] for s, _ in zip(ds, range(120), strict=False)]

    def together(keys):
        # every pair member sits right next to its partner (the stream may start or end inside a pair)
        return sum(k in partner and partner[k] in keys[max(0, j - 1): j + 2] for j, k in enumerate(keys))

    grouped = stream("pair_id")
    paired = [k for k in grouped[1:-1] if k in partner]
    assert together(grouped[1:-1]) == len(paired) > 30
    assert grouped != sorted(grouped)  # still shuffled
    loose = stream(None)
    assert together(loose[1:-1]) < len([k for k in loose[1:-1] if k in partner])


def test_group_by_keeps_every_pair_in_one_batch_also_when_datasets_are_mixed(tmp_path, clip_cache):
    # Adjacent in the stream was not enough: batch boundaries cut ~30% of the pairs, and with weighted mixing the
    # other set's samples were interleaved before grouping (12 pairs together against 32 alone).
    def shard(name, n_pairs, n_single):
        samples = [{"key": f"{name}{i:02d}", "media": clip_cache.setdefault(i, video_bytes(i)), "captions": ["c"],
                    "meta": {"pair_id": f"{name}{i // 2}"} if i < 2 * n_pairs else {}}
                   for i in range(2 * n_pairs + n_single)]
        return str(write_shard(tmp_path / f"{name}-000000.tar", samples))

    a, b = shard("a", 4, 3), shard("b", 2, 5)
    ds = ShardDataset([a, b], "video", SMALL, train=True, batch_size=4, shuffle_buffer=6, seed=0, rank=0,
                      world_size=1, weights=[1.0, 1.0], group_by="pair_id")
    batches = [b["key"] for b, _ in zip(ds, range(60), strict=False)]
    assert all(len(k) == 4 for k in batches)
    paired = [f"a{i:02d}" for i in range(8)] + [f"b{i:02d}" for i in range(4)]
    pairs = {k: k[0] + f"{int(k[1:]) ^ 1:02d}" for k in paired}
    members = [k for keys in batches for k in keys if k in pairs]
    assert len(members) > 60  # both sets' pairs are drawn often
    split = [k for keys in batches for k in keys if k in pairs and pairs[k] not in keys]
    assert split == []


def test_a_group_by_field_no_sample_has_is_said():
    # --data.group_by pairid (misspelled) grouped nothing, silently.
    from longvivit.data.shards import _grouped

    samples = [{"json": json.dumps({"meta": {"pair_id": "p"}}).encode()}] * 3 + [{"json": b"{}"}] * 1000
    with pytest.warns(RuntimeWarning, match="group_by 'pairid': none of the first 1000 training samples"):
        assert sum(len(g) for g in _grouped(iter(samples), "pairid")) == 1003
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [len(g) for g in _grouped(iter(samples), "pair_id")][:2] == [3, 1]
