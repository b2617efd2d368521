"""Supervised event-direction probe: can a video encoder tell an event from its time-reversal at all?

The order-only pairs of the synthetic set need two things: seeing *which way* an event goes ("moves left" vs
"moves right", "grows" vs "shrinks", "appears" vs "disappears") and binding events to their place in time.
This tool measures the first one directly, without the text tower: it trains a linear head on batch-normalised
features (and, unless ``--freeze``, the encoder) to predict from a clip which event verbs its caption holds,
then scores each verb pair on the test clips that hold exactly one of the two. The score is the balanced
accuracy (the mean of the two verbs' accuracies), so a constant guess scores 50%, and a model that ignores
frame order about that: the two verbs of a pair are each other's time-reversal, so they differ in the order
of the same kind of frames. The score with the frames shuffled at evaluation, reported beside it, measures
what is left without order.

A contrastive model cannot learn order from captions faster than this supervised head learns it from labels,
so a checkpoint (or a budget) at 50% here cannot separate the order-only pairs either. ``--encoder cnn3d``
trains a small 3D CNN instead, a control that tells a property of the data from one of the ViViT.

Usage:
  python tools/event_probe.py --checkpoint runs/demo/stage1/checkpoints/last.ckpt \\
      --train runs/demo/shards/clips/train --test runs/demo/shards/clips/test --steps 300
  python tools/event_probe.py --checkpoint runs/demo/stage2/checkpoints/last.ckpt --freeze ...  # linear probe
  python tools/event_probe.py --encoder cnn3d ...                                             # control
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Verb pairs whose members are each other's time-reversal in the synthetic set (longvivit.data.synthetic).
VERB_PAIRS: tuple[tuple[str, str], ...] = (
    ("moves left", "moves right"),
    ("moves up", "moves down"),
    ("grows", "shrinks"),
    ("appears", "disappears"),
)
VERBS: tuple[str, ...] = tuple(v for pair in VERB_PAIRS for v in pair)
_PATTERNS = [re.compile(rf"(?<![a-z]){re.escape(v)}(?![a-z])") for v in VERBS]


class ProbeHead(nn.Module):
    """BatchNorm without affine parameters, then a linear layer (the linear-probe head of MAE).

    The normalisation matters as much as it does in :class:`CNN3d`: a ViViT's pooled features differ from clip
    to clip mostly in background and colour, and the directions that carry an event are a small part of their
    scale. A bare linear head at these learning rates grows too slowly to amplify them, and its gradient into
    the encoder stays as small: on 1-object clips that a 3D CNN learns in 100 steps, the ViViT behind a bare
    head stayed at the label prior for 300 steps, and behind this head reached 100% in 300
    (``tools/scene_difficulty.py``, docs/order.md).
    """

    def __init__(self, dim: int, num_outputs: int, prior: Tensor, multi_label: bool = True) -> None:
        """Build the head so that it starts at the label prior rather than at uniform guesses.

        Args:
            dim: Feature size.
            num_outputs: Labels (multi-label, sigmoid outputs) or classes (softmax outputs).
            prior: ``(num_outputs,)`` label or class frequencies in (0, 1).
            multi_label: Bias = log-odds of each label's frequency if true, else log of each class's frequency.
        """
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False)
        self.linear = nn.Linear(dim, num_outputs)
        with torch.no_grad():
            self.linear.bias.copy_((prior / (1 - prior)).log() if multi_label else prior.log())

    def forward(self, x: Tensor) -> Tensor:
        """(B, dim) -> (B, num_outputs) logits."""
        return self.linear(self.norm(x))


def warmup_cosine(opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over the first 5% of ``steps`` times a cosine over all of them (the probes' schedule).

    Not :func:`longvivit.training.optim.cosine_with_warmup`, whose cosine starts after the warmup: the figures
    in docs/order.md were measured with this one.
    """
    warmup = max(1, steps // 20)
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )


def verb_labels(caption: str) -> Tensor:
    """(len(VERBS),) float 0/1: which event verbs the caption holds (whole words: "appears" is not in "disappears")."""
    return torch.tensor([float(p.search(caption) is not None) for p in _PATTERNS])


class CNN3d(nn.Module):
    """A small 3D CNN (four strided conv-BatchNorm-ReLU blocks, global average pool): the control encoder.

    BatchNorm matters: without it this network's predictions collapsed to the label prior (every test clip got
    the same verb ranking) at every learning rate we tried, which says nothing about the data.
    """

    def __init__(self, width: int = 128) -> None:
        super().__init__()
        w = width

        def block(cin: int, cout: int, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> nn.Module:
            pad = tuple(k // 2 for k in kernel)
            return nn.Sequential(nn.Conv3d(cin, cout, kernel, stride, pad, bias=False), nn.BatchNorm3d(cout), nn.ReLU())

        self.net = nn.Sequential(
            block(3, w // 4, (3, 5, 5), (1, 2, 2)),
            block(w // 4, w // 2, (3, 3, 3), (1, 2, 2)),
            block(w // 2, w, (3, 3, 3), (2, 2, 2)),
            block(w, w, (3, 3, 3), (2, 2, 2)),
        )
        self.out_dim = w

    def forward(self, video: Tensor) -> Tensor:
        """(B, T, 3, H, W) -> (B, width)."""
        return self.net(video.transpose(1, 2)).mean((2, 3, 4))  # (B, C, T, H, W) -> pooled (B, width)


class ViViTFeatures(nn.Module):
    """The video encoder of a LongViViT checkpoint, unmasked: (B, T, 3, H, W) -> (B, embed_dim)."""

    def __init__(self, checkpoint: str, num_frames: int) -> None:
        super().__init__()
        from longvivit.models.checkpoint import load_model

        model, _ = load_model(checkpoint, num_frames=num_frames)
        self.encoder = model.video_encoder
        self.out_dim = self.encoder.cfg.embed_dim

    def forward(self, video: Tensor) -> Tensor:
        return self.encoder(video, mask_ratio=0.0)


def load_labelled(shards: str, num_frames: int, image_size: int) -> tuple[Tensor, Tensor]:
    """Every clip of ``shards`` decoded into memory: ``(N, T, 3, H, W)`` frames and ``(N, len(VERBS))`` labels."""
    from longvivit.data import load_clips

    clips = load_clips(shards, num_frames=num_frames, image_size=image_size)
    videos, labels = [], []
    for clip in clips:
        videos.append(clip["video"])
        labels.append(verb_labels(clip["captions"][0]))
    if clips.skipped:
        print(f"event_probe: skipped {len(clips.skipped)} clips of {shards}: {clips.skipped[:3]}", file=sys.stderr)
    if not videos:
        raise ValueError(f"no clips in {shards}")
    return torch.stack(videos), torch.stack(labels)


@torch.no_grad()
def encode_all(encoder: nn.Module, videos: Tensor, shuffle: bool = False, batch_size: int = 32) -> Tensor:
    """Features of every clip, in eval mode.

    Args:
        encoder: Clip -> features.
        videos: ``(N, T, 3, H, W)``.
        shuffle: Permute the frames of every clip (one seeded permutation per batch) before encoding.
        batch_size: Clips per forward.

    Returns:
        ``(N, features)``.
    """
    was_training = encoder.training
    encoder.eval()
    gen = torch.Generator().manual_seed(0)
    out = []
    for i in range(0, len(videos), batch_size):
        x = videos[i : i + batch_size]
        if shuffle:
            x = x[:, torch.randperm(x.shape[1], generator=gen)]
        out.append(encoder(x))
    encoder.train(was_training)
    return torch.cat(out)


def direction_scores(logits: Tensor, labels: Tensor) -> dict[str, dict[str, float]]:
    """Balanced accuracy of each verb pair on the clips that hold exactly one of its two verbs.

    Args:
        logits: ``(N, len(VERBS))``, one per verb.
        labels: ``(N, len(VERBS))`` from :func:`verb_labels`.

    Returns:
        ``{"moves left/moves right": {"balanced_acc": %, "n": clips}, ...}`` (pairs without clips of both
        verbs left out).
    """
    out = {}
    for j, (a, b) in enumerate(VERB_PAIRS):
        ia, ib = 2 * j, 2 * j + 1
        only_a = (labels[:, ia] == 1) & (labels[:, ib] == 0)
        only_b = (labels[:, ib] == 1) & (labels[:, ia] == 0)
        if not only_a.any() or not only_b.any():
            continue
        acc_a = (logits[only_a, ia] > logits[only_a, ib]).float().mean().item()
        acc_b = (logits[only_b, ib] > logits[only_b, ia]).float().mean().item()
        out[f"{a}/{b}"] = {"balanced_acc": round(50 * (acc_a + acc_b), 1), "n": int(only_a.sum() + only_b.sum())}
    return out


def _mean(scores: dict[str, dict[str, float]]) -> float:
    return round(sum(s["balanced_acc"] for s in scores.values()) / max(1, len(scores)), 1)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--train", required=True, help="training shards (captions name the events)")
    p.add_argument("--test", required=True, help="test shards")
    p.add_argument("--encoder", choices=("vivit", "cnn3d"), default="vivit")
    p.add_argument("--checkpoint", help="LongViViT checkpoint or folder (required for --encoder vivit)")
    p.add_argument("--freeze", action="store_true", help="train the head only (a linear probe of the features)")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=24)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the evaluations here")
    args = p.parse_args(argv)
    if args.encoder == "vivit" and not args.checkpoint:
        p.error("--encoder vivit needs --checkpoint")
    if args.steps < 1 or args.eval_every < 1:
        p.error("--steps and --eval-every must be >= 1")

    torch.manual_seed(args.seed)
    x_train, y_train = load_labelled(args.train, args.frames, args.size)
    x_test, y_test = load_labelled(args.test, args.frames, args.size)
    print(f"event_probe: {len(x_train)} train / {len(x_test)} test clips; verb counts (train) "
          f"{dict(zip(VERBS, y_train.sum(0).int().tolist(), strict=True))}", flush=True)
    encoder = CNN3d() if args.encoder == "cnn3d" else ViViTFeatures(args.checkpoint, args.frames)
    encoder.requires_grad_(not args.freeze)
    prior = y_train.mean(0).clamp(1e-4, 1 - 1e-4)
    head = ProbeHead(encoder.out_dim, len(VERBS), prior)

    @torch.no_grad()
    def predict(features: Tensor) -> Tensor:
        head.eval()  # BatchNorm's running statistics, not those of the test set
        out = head(features)
        head.train()
        return out
    if args.freeze:  # a linear probe: encode once, train the head on the features
        train_in = encode_all(encoder, x_train)
        test_feats = {"ordered": encode_all(encoder, x_test), "shuffled": encode_all(encoder, x_test, shuffle=True)}

        def forward(batch: Tensor) -> Tensor:
            return head(batch)

        def test_logits(order: str) -> Tensor:
            return predict(test_feats[order])
    else:
        train_in = x_train

        def forward(batch: Tensor) -> Tensor:
            return head(encoder(batch))

        def test_logits(order: str) -> Tensor:
            return predict(encode_all(encoder, x_test, shuffle=order == "shuffled"))

    params = list(head.parameters()) + ([] if args.freeze else list(encoder.parameters()))
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05)
    sched = warmup_cosine(opt, args.steps)
    gen = torch.Generator().manual_seed(args.seed)
    history, running, t0 = [], None, time.perf_counter()
    for step in range(1, args.steps + 1):
        idx = torch.randint(len(train_in), (args.batch_size,), generator=gen)
        loss = F.binary_cross_entropy_with_logits(forward(train_in[idx]), y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % args.eval_every == 0 or step == args.steps:
            ordered = direction_scores(test_logits("ordered"), y_test)
            shuffled = direction_scores(test_logits("shuffled"), y_test)
            history.append({"step": step, "train_loss": round(running, 4), "ordered": ordered, "shuffled": shuffled,
                            "seconds": round(time.perf_counter() - t0, 1)})
            cells = "  ".join(f"{k} {v['balanced_acc']:.1f}" for k, v in ordered.items())
            print(f"step {step:5d}  loss {running:.3f}  balanced acc: {cells}  | mean {_mean(ordered):.1f} "
                  f"(shuffled {_mean(shuffled):.1f}; chance 50)", flush=True)
    # The label prior's entropy: a head that learned nothing from the clips ends near this loss.
    floor = -(prior * prior.log() + (1 - prior) * (1 - prior).log()).mean().item()
    print(f"event_probe: train loss {running:.3f} vs {floor:.3f} for the label prior alone", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "prior_loss": floor,
                                         "history": history}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
