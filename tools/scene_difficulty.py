"""Which scene properties make event direction hard to learn? Single-event clips with knobs, a supervised head.

``tools/event_probe.py`` asks whether an encoder learns event direction from the demo's clips (2-3 events, the
demo's scenes). This tool asks *what about the scenes* makes that slow: it renders clips with exactly one event
in memory (no mp4, so it isolates the scenes from the codec), from scenes whose difficulty is set by flags
(objects per scene, background, object sizes, grid, event length), and trains an encoder with an 8-way head
on the event's verb (moves left/right/up/down, grows, shrinks, appears, disappears). Every verb has its
time-reversal among the eight, so a model that ignores frame order can at best tell the four *kinds* of change
apart (~50% if balanced); accuracy above that, and a fall when the frames are shuffled, is order learned.

``--objective`` sets what teaches the verb: ``label`` (the 8-way head above), ``nce`` (the checkpoint's whole
video-text model trained on the clips' captions with the NCE loss, as stage 2 does; scored zero-shot by ranking
the object's 8 verb captions) or ``label-then-text`` (``label`` first, then the video encoder frozen and only
the text side trained by NCE: does the text tower follow once the video features carry direction?).

    python tools/scene_difficulty.py --checkpoint runs/demo/stage1/checkpoints/last.ckpt              # demo scenes
    python tools/scene_difficulty.py --checkpoint ... --objects 1 --background black --sizes 0.12,0.2 \\
        --grid 2 --event-frames 6,10                                                                  # easiest
    python tools/scene_difficulty.py --checkpoint ... --objects 2 --background black --sizes 0.12,0.2 \\
        --grid 2 --event-frames 6,10 --objective nce                                                  # captions
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from event_probe import CNN3d, ProbeHead, ViViTFeatures, warmup_cosine  # noqa: E402

from longvivit.config import CLIP_MEAN, CLIP_STD  # noqa: E402
from longvivit.data import render, scenes, synthetic  # noqa: E402
from longvivit.data.scenes import DIRECTIONS, Background, Event, Scene, is_valid, phrase  # noqa: E402
from longvivit.loss import NCELoss  # noqa: E402
from longvivit.models.checkpoint import load_model  # noqa: E402

VERBS: tuple[str, ...] = ("left", "right", "up", "down", "grow", "shrink", "appear", "disappear")
_DARK = ("black", "navy")  # the backgrounds darker than every object colour (brown is as dark as blue)
# The data pipeline's default normalisation (longvivit.data.decode), as (1, 3, 1, 1) for (T, 3, H, W) frames.
_MEAN = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
_STD = torch.tensor(CLIP_STD).view(1, 3, 1, 1)


@contextmanager
def scene_geometry(grid: int, sizes: tuple[float, float]) -> Iterator[None]:
    """Temporarily change the grid and the object radii of the synthetic scenes (module constants).

    Diagnostic only: the generator's geometry is fixed by design; this lets the tool render other geometries
    with the same sampling and rendering code.
    """
    modules = (scenes, render, synthetic)
    old_grid = [m.GRID for m in modules]
    old_sizes = dict(scenes.SIZES)
    try:
        for m in modules:
            m.GRID = grid
        scenes.SIZES.update(small=sizes[0], big=sizes[1])  # one dict object, shared by the three modules
        yield
    finally:
        for m, g in zip(modules, old_grid, strict=True):
            m.GRID = g
        scenes.SIZES.update(old_sizes)


class EventClips(NamedTuple):
    """Single-event clips with their verb and caption, and the 8 captions a zero-shot classifier ranks."""

    videos: Tensor  # (N, T, 3, H, W), normalised like the data pipeline
    labels: Tensor  # (N,) verb indices into VERBS
    captions: list[str]  # "the red circle moves left"
    candidates: list[list[str]]  # per clip, the same object with each of the 8 verbs, in VERBS order


def _event(obj: int, verb: str) -> Event:
    return Event(obj, "move", verb) if verb in DIRECTIONS else Event(obj, verb, "")


def single_event_clips(
    n: int,
    seed: int,
    *,
    objects: int,
    background: str,
    event_frames: tuple[int, int],
    num_frames: int = 16,
    size: int = 64,
) -> EventClips:
    """``n`` clips with one event each, rendered at 1 FPS and normalised like the data pipeline.

    Args:
        n: Clips.
        seed: Seed of the scenes.
        objects: Objects per scene; 0 samples 2-3 like the demo.
        background: ``"demo"`` (the demo's mix of colours, gradients and noise), ``"solid"`` (the demo's
            colours, flat), ``"dark"`` (the demo's mix on its dark colours only, where every object is brighter
            than the background), ``"dark-solid"`` (the same, flat) or ``"black"``.
        event_frames: ``(low, high)``: each event lasts ``low <= frames < high``.
        num_frames: Frames per clip.
        size: Frame side.

    Returns:
        :class:`EventClips`: ``(n, T, 3, size, size)`` frames, ``(n,)`` verb indices, captions, candidates.
    """
    rng = np.random.default_rng(seed)
    videos, labels, captions, candidates = [], [], [], []
    while len(videos) < n:
        verb = int(rng.integers(len(VERBS)))
        count = objects or int(rng.integers(2, 4))
        objs = synthetic._sample_objects(rng, count, hidden_prob=0.0)
        if VERBS[verb] == "appear":  # something must be hidden to appear
            objs = (replace(objs[0], visible=False),) + objs[1:]
        options = [_event(i, VERBS[verb]) for i in range(len(objs)) if is_valid(objs, _event(i, VERBS[verb]))]
        if not options:
            continue  # e.g. "disappear" with one object, "grow" when every object is big: draw again
        length = int(rng.integers(*event_frames))
        start = int(rng.integers(0, num_frames - length))
        ev = replace(options[int(rng.integers(len(options)))], start=start, end=start + length)
        bg = synthetic._sample_background(rng)
        if background.startswith("dark"):
            bg = replace(bg, colour=_DARK[int(rng.integers(len(_DARK)))])
        if background in ("solid", "dark-solid"):
            bg = Background(bg.colour)
        elif background == "black":
            bg = Background("black")
        frames = render.render_frames(Scene(objs, bg, (ev,), num_frames, 1.0), size)
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0  # (T, H, W, 3) -> (T, 3, H, W)
        videos.append((x - _MEAN) / _STD)
        labels.append(verb)
        captions.append(phrase(objs, ev))
        candidates.append([phrase(objs, _event(ev.obj, v)) for v in VERBS])
    return EventClips(torch.stack(videos), torch.tensor(labels), captions, candidates)


def shuffle_frames(videos: Tensor) -> Tensor:
    """The frames of every clip in one fixed random order (the same permutation for all clips)."""
    return videos[:, torch.randperm(videos.shape[1], generator=torch.Generator().manual_seed(0))]


@torch.no_grad()
def accuracy(
    logits: Callable[[Tensor], Tensor], modules: Sequence[nn.Module], videos: Tensor, labels: Tensor, shuffle: bool
) -> float:
    """Test accuracy in %, with ``modules`` in eval mode; ``shuffle`` permutes the frames (:func:`shuffle_frames`).

    Args:
        logits: ``(N, T, 3, H, W)`` videos -> ``(N, len(VERBS))`` scores.
        modules: Put in eval mode for the evaluation, back in training mode after.
        videos: Test clips.
        labels: ``(N,)`` verb indices.
        shuffle: Shuffle the frames first.
    """
    for m in modules:
        m.eval()
    pred = logits(shuffle_frames(videos) if shuffle else videos).argmax(1)
    for m in modules:
        m.train()
    return 100.0 * (pred == labels).float().mean().item()


def batched(fn: Callable[[Any], Tensor], x: Tensor | Sequence[str], size: int = 64) -> Tensor:
    """``fn`` over ``x`` (a tensor or a list of captions) in chunks of ``size`` rows, concatenated."""
    return torch.cat([fn(x[i : i + size]) for i in range(0, len(x), size)])


def fit(
    params: list[Tensor],
    loss_fn: Callable[[Tensor], Tensor],
    evaluate: Callable[[], tuple[float, float]],
    num_train: int,
    args: argparse.Namespace,
    steps: int,
    tag: str = "",
) -> None:
    """AdamW + warmup-cosine over random batches of clip indices; prints test accuracy every ``eval_every``.

    Args:
        params: Trained parameters (clipped to norm 2).
        loss_fn: ``(batch,)`` clip indices -> scalar loss.
        evaluate: -> ``(accuracy in order, accuracy with the frames shuffled)``.
        num_train: Training clips to draw from.
        args: The parsed flags (``lr``, ``batch_size``, ``eval_every``, ``seed``).
        steps: Optimiser steps.
        tag: Printed before each line (which phase).
    """
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05)
    sched = warmup_cosine(opt, steps)
    gen = torch.Generator().manual_seed(args.seed)
    running, t0 = None, time.perf_counter()
    for step in range(1, steps + 1):
        loss = loss_fn(torch.randint(num_train, (args.batch_size,), generator=gen))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 2.0)
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
        if step % args.eval_every == 0 or step == steps:
            ordered, shuffled = evaluate()
            print(
                f"{tag}step {step:5d}  loss {running:.3f}  test acc {ordered:.1f}%  shuffled {shuffled:.1f}%  "
                f"(chance {100 / len(VERBS):.1f}%; {time.perf_counter() - t0:.0f} s)",
                flush=True,
            )


class CaptionScorer:
    """The text side of a checkpoint scoring clips against captions: ``video_map`` then cosine with the tower.

    Args:
        model: A :class:`~longvivit.models.model.VideoTextModel`; its text tower is locked to ``unlocked``
            trainable layers (plus its projection).
        unlocked: Text layers left trainable.
        video_map: Applied to the video encoder's output before the L2 normalisation (identity by default).
    """

    def __init__(self, model: nn.Module, unlocked: int, video_map: nn.Module | None = None) -> None:
        self.model, self.text = model, model.text_encoder
        self.text.lock(unlocked)
        self.video_map = video_map or nn.Identity()
        self.loss = NCELoss()

    def encode_text(self, captions: list[str]) -> Tensor:
        return F.normalize(self.text.encode(captions), dim=-1)

    def normalise(self, video_features: Tensor) -> Tensor:
        return F.normalize(self.video_map(video_features), dim=-1)

    def nce(self, video_features: Tensor, captions: list[str], extra_videos: Tensor | None = None) -> Tensor:
        """NCE of video features (before ``video_map``) against their captions; ``extra_videos`` match none."""
        extra = None if extra_videos is None else self.normalise(extra_videos)
        return self.loss(
            self.normalise(video_features),
            self.encode_text(captions),
            self.model.get_logit_scale(),
            extra_video_features=extra,
        )

    def zero_shot(self, video_features: Tensor, candidates: list[list[str]]) -> Tensor:
        """``(N, D)`` video features, ``N`` lists of the 8 verb captions -> ``(N, 8)`` cosines."""
        flat = [c for cs in candidates for c in cs]
        text = batched(self.encode_text, flat, 256)  # (N * 8, D)
        return torch.einsum("nd,nkd->nk", self.normalise(video_features), text.view(len(candidates), len(VERBS), -1))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--encoder", choices=("vivit", "cnn3d"), default="vivit")
    p.add_argument("--checkpoint", help="LongViViT checkpoint or folder (required for --encoder vivit)")
    p.add_argument(
        "--objective",
        choices=("label", "nce", "label-then-text"),
        default="label",
        help="label: 8-way head; nce: the checkpoint's video-text model on the captions;\n"
        "label-then-text: label, then the text side alone by NCE on the frozen video features",
    )
    p.add_argument("--text-unlocked", type=int, default=1, help="text layers trained with nce (the demo: 1)")
    p.add_argument("--text-steps", type=int, default=300, help="steps of the text phase of label-then-text")
    p.add_argument(
        "--reverse-negatives",
        action="store_true",
        help="nce: each clip played backwards is an extra negative for its caption",
    )
    p.add_argument(
        "--logit-scale",
        type=float,
        default=None,
        help="nce: start the learned 1/temperature here instead of the checkpoint's value",
    )
    p.add_argument("--objects", type=int, default=0, help="objects per scene; 0 = 2-3 like the demo")
    p.add_argument("--background", choices=("demo", "solid", "dark", "dark-solid", "black"), default="demo")
    p.add_argument(
        "--sizes",
        default=",".join(str(v) for v in scenes.SIZES.values()),
        help="small,big object radius as a fraction of the frame side",
    )
    p.add_argument("--grid", type=int, default=scenes.GRID, help="grid cells per side")
    p.add_argument("--event-frames", default="3,6", help="low,high: event length in frames (1 FPS), high excluded")
    p.add_argument("--train", type=int, default=2048, help="training clips")
    p.add_argument("--test", type=int, default=512, help="test clips")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.encoder == "vivit" and not args.checkpoint:
        p.error("--encoder vivit needs --checkpoint")
    if args.objective != "label" and args.encoder != "vivit":
        p.error(f"--objective {args.objective} needs --encoder vivit (a text tower from --checkpoint)")
    small, big = (float(v) for v in args.sizes.split(","))
    low, high = (int(v) for v in args.event_frames.split(","))
    if not 1 <= low < high <= 16:
        p.error("--event-frames needs 1 <= low < high <= 16")

    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    kw = {"objects": args.objects, "background": args.background, "event_frames": (low, high)}
    with scene_geometry(args.grid, (small, big)):
        train = single_event_clips(args.train, args.seed + 1, **kw)
        test = single_event_clips(args.test, args.seed + 2, **kw)
    counts = torch.bincount(train.labels, minlength=len(VERBS))
    print(
        f"scene_difficulty: {len(train.videos)} train / {len(test.videos)} test clips in "
        f"{time.perf_counter() - t0:.0f} s; train verbs {dict(zip(VERBS, counts.tolist(), strict=True))}",
        flush=True,
    )
    x, y = train.videos, train.labels

    def both_orders(logits: Callable[[Tensor], Tensor], modules: Sequence[nn.Module]) -> tuple[float, float]:
        return tuple(accuracy(logits, modules, test.videos, test.labels, shuffle) for shuffle in (False, True))

    if args.objective == "nce":
        model, _ = load_model(args.checkpoint, num_frames=16)
        if args.logit_scale is not None:
            with torch.no_grad():
                model.logit_scale.fill_(math.log(args.logit_scale))
        scorer = CaptionScorer(model, args.text_unlocked)

        def video(v: Tensor) -> Tensor:
            return model.video_encoder(v, mask_ratio=0.0)

        def nce_loss(idx: Tensor) -> Tensor:
            extra = video(x[idx].flip(1)) if args.reverse_negatives else None  # (B, D): the clips reversed
            return scorer.nce(video(x[idx]), [train.captions[i] for i in idx], extra)

        def zero_shot(videos: Tensor) -> Tensor:
            return scorer.zero_shot(batched(video, videos), test.candidates)

        params = [q for q in model.parameters() if q.requires_grad]
        fit(params, nce_loss, lambda: both_orders(zero_shot, [model]), len(x), args, args.steps)
        return 0

    encoder = CNN3d() if args.encoder == "cnn3d" else ViViTFeatures(args.checkpoint, 16)
    prior = (counts.float() / len(y)).clamp(1e-4, 1 - 1e-4)
    head = ProbeHead(encoder.out_dim, len(VERBS), prior, multi_label=False)
    fit(
        list(encoder.parameters()) + list(head.parameters()),
        lambda idx: F.cross_entropy(head(encoder(x[idx])), y[idx]),
        lambda: both_orders(lambda v: batched(lambda b: head(encoder(b)), v), [encoder, head]),
        len(x),
        args,
        args.steps,
    )
    if args.objective == "label-then-text":
        # The video encoder is frozen and its features computed once; the text tower, a linear map on the video
        # features (identity at the start) and the temperature train.
        encoder.eval()
        head.eval()
        with torch.no_grad():
            feats_train, feats_test = batched(encoder, x), batched(encoder, test.videos)
            feats_shuffled = batched(encoder, shuffle_frames(test.videos))
        video_map = nn.Linear(encoder.out_dim, encoder.out_dim, bias=False)
        nn.init.eye_(video_map.weight)
        model, _ = load_model(args.checkpoint, num_frames=16)
        scorer = CaptionScorer(model, args.text_unlocked, video_map)

        def text_eval() -> tuple[float, float]:  # the features are fixed: shuffled ones were computed above
            def zero_shot(f: Tensor) -> Tensor:
                return scorer.zero_shot(f, test.candidates)

            return tuple(accuracy(zero_shot, [model], f, test.labels, False) for f in (feats_test, feats_shuffled))

        params = [q for q in model.text_encoder.parameters() if q.requires_grad]
        params += [video_map.weight, model.logit_scale]
        fit(
            params,
            lambda idx: scorer.nce(feats_train[idx], [train.captions[i] for i in idx]),
            text_eval,
            len(x),
            args,
            args.text_steps,
            tag="text ",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
