"""Retrieval metrics against a loop-based reference, hand-computed examples and degenerate models."""

from __future__ import annotations

import itertools
import json
import statistics

import numpy as np
import pytest
import torch

from longvivit.evaluation.retrieval import (
    RetrievalEvaluator,
    chance_metrics,
    pair_accuracy,
    retrieval_metrics,
    t2v_ranks,
    v2t_ranks,
)


def _reference_metrics(sim: list[list[float]], t2v: list[int]) -> dict:
    """Brute force, straight from the definitions in the module docstring."""
    num_texts, num_videos = len(sim), len(sim[0])
    t_ranks = []
    for i in range(num_texts):
        g = t2v[i]
        t_ranks.append(1 + sum(1 for w in range(num_videos) if w != g and sim[i][w] >= sim[i][g]))
    v_ranks = []
    for v in range(num_videos):
        own = [i for i in range(num_texts) if t2v[i] == v]
        if not own:
            continue
        best = max(sim[i][v] for i in own)
        v_ranks.append(1 + sum(1 for j in range(num_texts) if j not in own and sim[j][v] >= best))

    def summary(ranks: list[int]) -> dict:
        return {
            "R@1": 100 * sum(r <= 1 for r in ranks) / len(ranks),
            "R@5": 100 * sum(r <= 5 for r in ranks) / len(ranks),
            "R@10": 100 * sum(r <= 10 for r in ranks) / len(ranks),
            "MdR": statistics.median(ranks),
            "MnR": sum(ranks) / len(ranks),
            "MRR": sum(1 / r for r in ranks) / len(ranks),
        }

    return {"t2v": summary(t_ranks), "v2t": summary(v_ranks)}


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_with_ties_and_multi_captions(seed):
    rng = np.random.default_rng(seed)
    num_videos = int(rng.integers(12, 40))
    # 0-4 captions per video: some videos are distractors only, others have several captions.
    counts = rng.integers(0, 5, size=num_videos)
    counts[0] = max(counts[0], 1)
    t2v = np.repeat(np.arange(num_videos), counts)
    rng.shuffle(t2v)
    video = rng.normal(size=(num_videos, 8))
    text = video[t2v] + rng.normal(scale=1.5, size=(len(t2v), 8))
    # One decimal: many exact ties, so the pessimistic tie rule is exercised.
    sim = np.round(text @ video.T / 8, 1)

    got = retrieval_metrics(torch.tensor(sim), torch.tensor(t2v))
    want = _reference_metrics(sim.tolist(), t2v.tolist())
    assert got["num_videos"] == num_videos and got["num_texts"] == len(t2v)
    for direction in ("t2v", "v2t"):
        for name, value in want[direction].items():
            assert got[direction][name] == pytest.approx(value, abs=1e-9), (direction, name)


def test_hand_computed_example():
    # Videos 0, 1, 2; texts 0 and 1 describe video 0, text 2 video 1, text 3 video 2.
    t2v = torch.tensor([0, 0, 1, 2])
    sim = torch.tensor(
        [
            [0.9, 0.1, 0.2],  # gt 0.9, nothing >= -> rank 1
            [0.3, 0.5, 0.3],  # gt 0.3; 0.5 above and 0.3 tied -> rank 3
            [0.2, 0.4, 0.4],  # gt 0.4; tie with video 2 -> rank 2
            [0.1, 0.6, 0.5],  # gt 0.5; 0.6 above -> rank 2
        ],
        dtype=torch.float64,
    )
    m = retrieval_metrics(sim, t2v)
    # T2V ranks 1, 3, 2, 2.
    assert m["t2v"]["R@1"] == pytest.approx(25.0)
    assert m["t2v"]["R@5"] == pytest.approx(100.0)
    assert m["t2v"]["MdR"] == pytest.approx(2.0)
    assert m["t2v"]["MnR"] == pytest.approx(2.0)
    assert m["t2v"]["MRR"] == pytest.approx((1 + 1 / 3 + 1 / 2 + 1 / 2) / 4)
    # V2T: video 0 best caption 0.9, other texts 0.2, 0.1 -> 1; video 1 best 0.4 vs 0.1, 0.5, 0.6 -> 3;
    # video 2 best 0.5 vs 0.2, 0.3, 0.4 -> 1.
    assert m["v2t"]["R@1"] == pytest.approx(200 / 3)
    assert m["v2t"]["MdR"] == pytest.approx(1.0)
    assert m["v2t"]["MnR"] == pytest.approx(5 / 3)
    assert m["v2t"]["MRR"] == pytest.approx((1 + 1 / 3 + 1) / 3)
    assert m["chance"]["R@1"] == pytest.approx(100 / 3)
    assert m["chance"]["MRR"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)


def test_perfect_similarity():
    t2v = torch.tensor([0, 0, 1, 2, 2, 2, 3])
    sim = torch.nn.functional.one_hot(t2v, num_classes=4).float()
    m = retrieval_metrics(sim, t2v)
    for direction in ("t2v", "v2t"):
        assert m[direction]["R@1"] == 100.0
        assert m[direction]["MdR"] == 1.0
        assert m[direction]["MnR"] == 1.0
        assert m[direction]["MRR"] == 1.0


def test_constant_model_scores_chance_or_worse():
    t2v = torch.tensor([0, 1, 1, 2, 3, 4, 5, 5])
    sim = torch.full((8, 6), 0.7)
    m = retrieval_metrics(sim, t2v)
    chance = m["chance"]
    for direction in ("t2v", "v2t"):
        assert m[direction]["R@1"] <= chance["R@1"]
        assert m[direction]["MRR"] <= chance["MRR"]
        assert m[direction]["MdR"] >= chance["MdR"]
    # Pessimistic ties put every right answer last.
    assert t2v_ranks(sim, t2v).tolist() == [6] * 8
    ranks, videos = v2t_ranks(sim, t2v)
    assert videos.tolist() == list(range(6))
    assert ranks.tolist() == [8, 7, 8, 8, 8, 7]  # 1 + texts of other videos


def test_chance_equals_average_over_all_orderings():
    num_videos = 4
    scores = torch.tensor([0.1, 0.2, 0.3, 0.4])
    perms = list(itertools.permutations(range(num_videos)))
    sim = torch.stack([scores[list(p)] for p in perms])  # (24, 4): every ordering once, gt video 0
    m = retrieval_metrics(sim, torch.zeros(len(perms), dtype=torch.long))
    for name, value in chance_metrics(num_videos).items():
        assert m["t2v"][name] == pytest.approx(value), name


def test_videos_without_captions_are_distractors_only():
    t2v = torch.tensor([0, 2])
    sim = torch.tensor([[0.5, 0.9, 0.1], [0.1, 0.2, 0.3]])
    ranks, videos = v2t_ranks(sim, t2v)
    assert videos.tolist() == [0, 2]
    assert t2v_ranks(sim, t2v).tolist() == [2, 1]  # video 1 still competes in T2V


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        retrieval_metrics(torch.zeros(3, 2), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError):
        retrieval_metrics(torch.zeros(3, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError):
        retrieval_metrics(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]))


def test_pair_accuracy_hand_example():
    t2v = torch.tensor([0, 0, 1, 2])
    sim = torch.tensor(
        [
            [0.9, 0.1, 0.0, 0.0],  # pair (0, 1): right
            [0.4, 0.4, 0.0, 0.0],  # pair (0, 1): tie -> half
            [0.2, 0.3, 0.5, 0.0],  # pair (1, 2): wrong
            [0.0, 0.0, 0.0, 0.0],  # video 2 is never a pair's first video: not a query
        ]
    )
    out = pair_accuracy(sim, t2v, [(0, 1), (1, 2)])
    assert out["num_queries"] == 3
    assert out["accuracy"] == pytest.approx(100 * 1.5 / 3)
    assert out["chance"] == 50.0
    assert pair_accuracy(torch.ones(4, 4), t2v, [(0, 1), (1, 0)])["accuracy"] == pytest.approx(50.0)
    with pytest.raises(ValueError, match="no caption"):
        pair_accuracy(sim, t2v, [(3, 0)])  # video 3 has no caption
    with pytest.raises(ValueError):
        pair_accuracy(sim, t2v, [(0, 4)])


def _flat(metrics: dict) -> dict:
    """Nested metrics dict -> {"t2v/R@1": ..., "num_videos": ...} (pytest.approx compares flat dicts)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update({f"{key}/{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def _batches(rng, num_videos=9, dim=6):
    video = torch.tensor(rng.normal(size=(num_videos, dim)), dtype=torch.float32)
    keys = [f"vid{i:03d}" for i in range(num_videos)]
    text_owner = [i for i in range(num_videos) for _ in range(1 + i % 3)]
    noise = torch.tensor(rng.normal(size=(len(text_owner), dim)), dtype=torch.float32)
    text = video[text_owner] + 0.8 * noise
    captions = [f"caption {j} of {keys[i]}" for j, i in enumerate(text_owner)]
    return video, keys, text, text_owner, captions


def test_evaluator_matches_direct_metrics_and_round_trips(tmp_path):
    video, keys, text, owner, captions = _batches(np.random.default_rng(0))
    ev = RetrievalEvaluator()
    for start in range(0, len(keys), 4):  # uneven batches, texts in a different batching
        ev.add_videos(video[start : start + 4] * 3.0, keys[start : start + 4])  # scale must not matter
    for start in range(0, len(owner), 5):
        ev.add_texts(text[start : start + 5], [keys[i] for i in owner[start : start + 5]],
                     captions[start : start + 5])
    sim = torch.nn.functional.normalize(text, dim=-1) @ torch.nn.functional.normalize(video, dim=-1).T
    want = retrieval_metrics(sim, torch.tensor(owner))
    assert _flat(ev.compute()) == pytest.approx(_flat(want))

    out = ev.save_embeddings(tmp_path / "emb")
    # Recompute with numpy and json only, as an outside tool would.
    v = np.load(out / "video_emb.npy")
    t = np.load(out / "text_emb.npy")
    vid_ids = json.loads((out / "video_ids.json").read_text())
    texts = json.loads((out / "text_ids.json").read_text())
    assert vid_ids == keys and [x["caption"] for x in texts] == captions
    t2v = torch.tensor([vid_ids.index(x["video"]) for x in texts])
    recomputed = retrieval_metrics(torch.from_numpy(t @ v.T), t2v)
    assert _flat(recomputed) == pytest.approx(_flat(want))
    assert _flat(RetrievalEvaluator.load_embeddings(out).compute()) == pytest.approx(_flat(want))


def test_evaluator_rejects_duplicates_and_unknown_keys():
    ev = RetrievalEvaluator()
    ev.add_videos(torch.randn(2, 4), ["a", "b"])
    with pytest.raises(ValueError, match="duplicate"):
        ev.add_videos(torch.randn(1, 4), ["a"])
    with pytest.raises(ValueError, match="duplicate"):
        ev.add_videos(torch.randn(2, 4), ["c", "c"])
    ev.add_texts(torch.randn(1, 4), ["zzz"])
    with pytest.raises(ValueError, match="never added"):
        ev.compute()
    ev.reset()
    with pytest.raises(ValueError):
        ev.compute()


def test_collapsed_embeddings_do_not_score_perfectly():
    ev = RetrievalEvaluator()
    ev.add_videos(torch.ones(5, 4), [str(i) for i in range(5)])
    ev.add_texts(torch.ones(5, 4), [str(i) for i in range(5)])
    m = ev.compute()
    assert m["t2v"]["R@1"] == 0.0 and m["v2t"]["R@1"] == 0.0
    assert m["t2v"]["MdR"] == 5.0
