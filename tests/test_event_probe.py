"""tools/event_probe.py: verb labels from captions, balanced direction accuracy, and a run on real shards."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import event_probe as P  # noqa: E402


def test_verb_labels_match_whole_verbs():
    y = P.verb_labels("the cyan triangle disappears, then the red square moves left")
    assert {v for v, on in zip(P.VERBS, y.tolist(), strict=True) if on} == {"disappears", "moves left"}
    y = P.verb_labels("the red circle appears; after that, the blue square grows and the square shrinks")
    assert {v for v, on in zip(P.VERBS, y.tolist(), strict=True) if on} == {"appears", "grows", "shrinks"}


class _Given(nn.Module):
    """An 'encoder' whose features are the logits we want the identity head to output."""

    def __init__(self, feats: torch.Tensor) -> None:
        super().__init__()
        self.feats = feats

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.feats[video[:, 0, 0, 0, 0].long()]  # frame 0 pixel 0 holds the clip's index


def _identity_head() -> nn.Linear:
    head = nn.Linear(len(P.VERBS), len(P.VERBS), bias=False)
    head.weight.data = torch.eye(len(P.VERBS))
    return head


def test_direction_scores_are_balanced_and_skip_pairs_without_both_sides():
    left, right = P.VERBS.index("moves left"), P.VERBS.index("moves right")
    n = 8
    labels = torch.zeros(n, len(P.VERBS))
    labels[:6, left] = 1  # six "left" clips, two "right" clips
    labels[6:, right] = 1
    labels[0, right] = 1  # holds both: not scored
    videos = torch.arange(n).float()[:, None, None, None, None].expand(n, 2, 3, 4, 4)
    constant = torch.zeros(n, len(P.VERBS))
    constant[:, left] = 1.0  # always says "left": right on 5 of 5 left clips, wrong on both right clips
    scores = P.direction_scores(_Given(constant), _identity_head(), videos, labels)
    assert scores == {"moves left/moves right": {"balanced_acc": 50.0, "n": 7}}  # not 5/7 = 71%
    perfect = labels.clone()
    scores = P.direction_scores(_Given(perfect), _identity_head(), videos, labels, batch_size=3)
    assert scores["moves left/moves right"]["balanced_acc"] == 100.0


@pytest.fixture(scope="module")
def clip_shards(tmp_path_factory) -> Path:
    """Synthetic 32 px clips in real webdataset shards."""
    from longvivit.data import make_shards, synthetic

    root = tmp_path_factory.mktemp("event_probe")
    synthetic.generate(root / "data", seed=2, size=32, num_images=0, num_clips=(12, 0, 8), num_long=0)
    for split in ("train", "test"):
        assert make_shards.main(["--manifest", str(root / "data" / "clips" / f"{split}.jsonl"),
                                 "--out", str(root / "shards" / split)]) == 0
    return root / "shards"


@pytest.mark.parametrize("encoder", ["cnn3d", "vivit"])
def test_runs_on_real_shards_and_writes_its_history(clip_shards, tmp_path, encoder, capsys):
    args = ["--train", str(clip_shards / "train"), "--test", str(clip_shards / "test"), "--encoder", encoder,
            "--frames", "4", "--size", "32", "--steps", "2", "--batch-size", "4", "--eval-every", "1",
            "--json", str(tmp_path / "probe.json")]
    if encoder == "vivit":
        from tests.test_model import tiny_model

        folder = tiny_model().save_pretrained(tmp_path / "model")
        args += ["--checkpoint", str(folder), "--freeze"]
    assert P.main(args) == 0
    out = json.loads((tmp_path / "probe.json").read_text())
    assert [h["step"] for h in out["history"]] == [1, 2]
    for h in out["history"]:
        for scores in (h["ordered"], h["shuffled"]):
            assert scores and all(0.0 <= s["balanced_acc"] <= 100.0 and s["n"] > 0 for s in scores.values())
    assert "train loss" in capsys.readouterr().out
