"""Which scene properties make event direction hard to learn? Single-event clips with knobs, a supervised head.

``tools/event_probe.py`` asks whether an encoder learns event direction from the demo's clips (2-3 events, the
demo's scenes). This tool asks *what about the scenes* makes that slow: it renders clips with exactly one event
in memory (no mp4, so it isolates the scenes from the codec), from scenes whose difficulty is set by flags
(objects per scene, background, object sizes, grid, event length), and trains an encoder with an 8-way head
on the event's verb (moves left/right/up/down, grows, shrinks, appears, disappears). Every verb has its
time-reversal among the eight, so a model that ignores frame order can at best tell the four *kinds* of change
apart (~50% if balanced); accuracy above that, and a fall when the frames are shuffled, is order learned.

    python tools/scene_difficulty.py --checkpoint runs/demo/stage1/checkpoints/last.ckpt              # demo scenes
    python tools/scene_difficulty.py --checkpoint ... --objects 1 --background black --sizes 0.12,0.2 \\
        --grid 2 --event-frames 6,10                                                                  # easiest
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))

from event_probe import CNN3d, ProbeHead, ViViTFeatures, warmup_cosine  # noqa: E402

from longvivit.config import CLIP_MEAN, CLIP_STD  # noqa: E402
from longvivit.data import render, scenes, synthetic  # noqa: E402
from longvivit.data.scenes import DIRECTIONS, Background, Event, Scene, is_valid  # noqa: E402

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


def single_event_clips(n: int, seed: int, *, objects: int, background: str, event_frames: tuple[int, int],
                       num_frames: int = 16, size: int = 64) -> tuple[Tensor, Tensor]:
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
        ``(n, T, 3, size, size)`` frames and ``(n,)`` verb indices into :data:`VERBS`.
    """
    rng = np.random.default_rng(seed)
    videos, labels = [], []
    while len(videos) < n:
        verb = int(rng.integers(len(VERBS)))
        count = objects or int(rng.integers(2, 4))
        objs = synthetic._sample_objects(rng, count, hidden_prob=0.0)
        if VERBS[verb] == "appear":  # something must be hidden to appear
            objs = (replace(objs[0], visible=False),) + objs[1:]
        kind, arg = ("move", VERBS[verb]) if VERBS[verb] in DIRECTIONS else (VERBS[verb], "")
        options = [Event(i, kind, arg) for i in range(len(objs)) if is_valid(objs, Event(i, kind, arg))]
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
    return torch.stack(videos), torch.tensor(labels)


@torch.no_grad()
def accuracy(encoder: torch.nn.Module, head: ProbeHead, videos: Tensor, labels: Tensor, shuffle: bool) -> float:
    """Test accuracy in %, in eval mode; ``shuffle`` permutes the frames (one fixed permutation)."""
    encoder.eval()
    head.eval()
    if shuffle:
        videos = videos[:, torch.randperm(videos.shape[1], generator=torch.Generator().manual_seed(0))]
    pred = torch.cat([head(encoder(videos[i : i + 64])).argmax(1) for i in range(0, len(videos), 64)])
    encoder.train()
    head.train()
    return 100.0 * (pred == labels).float().mean().item()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--encoder", choices=("vivit", "cnn3d"), default="vivit")
    p.add_argument("--checkpoint", help="LongViViT checkpoint or folder (required for --encoder vivit)")
    p.add_argument("--objects", type=int, default=0, help="objects per scene; 0 = 2-3 like the demo")
    p.add_argument("--background", choices=("demo", "solid", "dark", "dark-solid", "black"), default="demo")
    p.add_argument("--sizes", default=",".join(str(v) for v in scenes.SIZES.values()),
                   help="small,big object radius as a fraction of the frame side")
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
    small, big = (float(v) for v in args.sizes.split(","))
    low, high = (int(v) for v in args.event_frames.split(","))
    if not 1 <= low < high <= 16:
        p.error("--event-frames needs 1 <= low < high <= 16")

    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    kw = {"objects": args.objects, "background": args.background, "event_frames": (low, high)}
    with scene_geometry(args.grid, (small, big)):
        x_train, y_train = single_event_clips(args.train, args.seed + 1, **kw)
        x_test, y_test = single_event_clips(args.test, args.seed + 2, **kw)
    counts = torch.bincount(y_train, minlength=len(VERBS))
    print(f"scene_difficulty: {len(x_train)} train / {len(x_test)} test clips in {time.perf_counter() - t0:.0f} s; "
          f"train verbs {dict(zip(VERBS, counts.tolist(), strict=True))}", flush=True)
    encoder = CNN3d() if args.encoder == "cnn3d" else ViViTFeatures(args.checkpoint, 16)
    prior = (counts.float() / len(y_train)).clamp(1e-4, 1 - 1e-4)
    head = ProbeHead(encoder.out_dim, len(VERBS), prior, multi_label=False)
    params = list(encoder.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05)
    sched = warmup_cosine(opt, args.steps)
    gen = torch.Generator().manual_seed(args.seed)
    running, t0 = None, time.perf_counter()
    for step in range(1, args.steps + 1):
        idx = torch.randint(len(x_train), (args.batch_size,), generator=gen)
        loss = F.cross_entropy(head(encoder(x_train[idx])), y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 2.0)
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
        if step % args.eval_every == 0 or step == args.steps:
            ordered = accuracy(encoder, head, x_test, y_test, shuffle=False)
            shuffled = accuracy(encoder, head, x_test, y_test, shuffle=True)
            print(f"step {step:5d}  loss {running:.3f}  test acc {ordered:.1f}%  shuffled {shuffled:.1f}%  "
                  f"(chance {100 / len(VERBS):.1f}%; {time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
