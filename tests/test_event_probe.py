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


def test_direction_scores_are_balanced_and_skip_pairs_without_both_sides():
    left, right = P.VERBS.index("moves left"), P.VERBS.index("moves right")
    n = 8
    labels = torch.zeros(n, len(P.VERBS))
    labels[:6, left] = 1  # six "left" clips, two "right" clips
    labels[6:, right] = 1
    labels[0, right] = 1  # holds both: not scored
    constant = torch.zeros(n, len(P.VERBS))
    constant[:, left] = 1.0  # always says "left": right on 5 of 5 left clips, wrong on both right clips
    assert P.direction_scores(constant, labels) == {"moves left/moves right": {"balanced_acc": 50.0, "n": 7}}
    assert P.direction_scores(labels.clone(), labels)["moves left/moves right"]["balanced_acc"] == 100.0


def test_encode_all_batches_and_shuffles_frames_only_when_asked():
    videos = torch.arange(5 * 6).float().reshape(5, 6, 1, 1, 1).expand(5, 6, 3, 2, 2)

    class FirstFrame(nn.Module):
        def forward(self, video: torch.Tensor) -> torch.Tensor:
            return video[:, :, 0, 0, 0]  # (B, T): the frame ids in the order the encoder sees them

    ordered = P.encode_all(FirstFrame(), videos, batch_size=2)
    assert torch.equal(ordered, videos[:, :, 0, 0, 0])
    shuffled = P.encode_all(FirstFrame(), videos, shuffle=True, batch_size=2)
    assert not torch.equal(shuffled, ordered)
    assert torch.equal(shuffled.sort(dim=1).values, ordered)  # the same frames of the same clip


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
    assert out["prior_loss"] > 0
    for h in out["history"]:
        for scores in (h["ordered"], h["shuffled"]):
            assert scores and all(0.0 <= s["balanced_acc"] <= 100.0 and s["n"] > 0 for s in scores.values())
    assert "train loss" in capsys.readouterr().out


def test_probe_head_starts_at_the_prior_and_ignores_feature_scale():
    torch.manual_seed(0)
    prior = torch.tensor([0.1, 0.5, 0.8])
    head = P.ProbeHead(4, 3, prior)
    x = torch.randn(32, 4)
    # Batch-normalised input: a common offset and a per-dimension scale (a pooled ViViT's background and colour
    # content dominating its features) change nothing, so small differences reach the linear layer at full size.
    assert torch.allclose(head(x), head(0.05 * x + 7.0), atol=1e-2)  # float32 rounding of the offset
    head.linear.weight.data.zero_()
    head.eval()
    assert torch.allclose(torch.sigmoid(head(x)), prior.expand(32, 3), atol=1e-6)
    classes = torch.tensor([0.2, 0.3, 0.5])
    head = P.ProbeHead(4, 3, classes, multi_label=False).eval()
    head.linear.weight.data.zero_()
    assert torch.allclose(torch.softmax(head(x), -1), classes.expand(32, 3), atol=1e-6)


def test_scene_difficulty_renders_single_event_clips_and_trains(capsys):
    import scene_difficulty as D

    from longvivit.data import render, scenes, synthetic

    with D.scene_geometry(2, (0.12, 0.2)):
        assert (scenes.GRID, render.GRID, synthetic.GRID) == (2, 2, 2) and scenes.SIZES["big"] == 0.2
        x, y, captions, candidates = D.single_event_clips(12, 0, objects=1, background="black", event_frames=(6, 10))
    assert (scenes.GRID, scenes.SIZES["big"]) == (3, 0.13)  # restored
    for label, caption, options in zip(y.tolist(), captions, candidates, strict=True):
        assert len(set(options)) == len(D.VERBS) and options[label] == caption  # the object with each verb
        assert caption.startswith(options[0].rsplit(" ", 2)[0])  # "the red circle ..."
    assert x.shape == (12, 16, 3, 64, 64) and y.shape == (12,)
    assert set(y.tolist()) <= set(range(len(D.VERBS))) and D.VERBS.index("disappear") not in y.tolist()
    black = (torch.tensor([25.0, 25.0, 25.0]).view(1, 3, 1, 1) / 255.0 - D._MEAN) / D._STD
    assert torch.allclose(x[:, :, :, 0, 0], black.view(1, 1, 3).expand(12, 16, 3), atol=1e-5)  # corner: background
    changed = (x[:, 0] - x[:, -1]).abs().amax((1, 2, 3))
    assert (changed > 0.5).all()  # every clip holds its event
    assert D.main(["--encoder", "cnn3d", "--train", "8", "--test", "8", "--steps", "2", "--batch-size", "4",
                   "--eval-every", "1"]) == 0
    assert capsys.readouterr().out.count("test acc") == 2


@pytest.mark.parametrize("objective", ["nce", "label-then-text"])
def test_scene_difficulty_trains_on_captions(tmp_path, objective, capsys):
    import dataclasses

    import scene_difficulty as D

    from longvivit.models.model import VideoTextModel
    from tests.test_model import tiny_cfg, tiny_text

    torch.manual_seed(0)
    cfg = tiny_cfg()
    cfg.video = dataclasses.replace(cfg.video, image_size=64)  # the tool renders 64 px clips
    folder = VideoTextModel(cfg, text_encoder=tiny_text(cfg)).save_pretrained(tmp_path / "model")
    args = ["--checkpoint", str(folder), "--objective", objective, "--objects", "2", "--train", "8", "--test", "8",
            "--steps", "2", "--text-steps", "2", "--batch-size", "4", "--eval-every", "1", "--text-unlocked", "0"]
    assert D.main(args + (["--reverse-negatives"] if objective == "nce" else [])) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "test acc" in line]
    assert len(lines) == (2 if objective == "nce" else 4)
    assert objective == "nce" or lines[-1].startswith("text step")
    with pytest.raises(SystemExit):
        D.main(["--encoder", "cnn3d", "--objective", objective])  # captions need a text tower


def test_caption_scorer_ranks_each_clip_against_its_own_objects_verbs():
    import scene_difficulty as D

    from tests.test_model import tiny_model

    model = tiny_model().eval()
    _, labels, captions, candidates = D.single_event_clips(6, 3, objects=2, background="black", event_frames=(6, 10))
    scorer = D.CaptionScorer(model, unlocked=0)
    with torch.no_grad():
        own = scorer.encode_text(captions)  # (6, D): a "video" that is exactly its caption's embedding
        scores = scorer.zero_shot(own, candidates)
        assert scores.shape == (6, len(D.VERBS))
        assert torch.equal(scores.argmax(1), labels)
        assert torch.allclose(scores.max(1).values, torch.ones(6), atol=1e-5)
        plain = scorer.nce(own, captions)
        harder = scorer.nce(own, captions, extra_videos=scorer.encode_text(captions[::-1]))
    assert harder > plain  # the extra clips are scored as negatives for every caption
