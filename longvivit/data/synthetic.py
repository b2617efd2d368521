"""Synthetic order-sensitive video-text data: procedural scenes rendered with numpy, encoded to real mp4.

Scenes hold 2-3 objects (shape x colour x size) on a 3x3 grid over a named background. Clips show events in
sequence -- an object moves left/right/up/down by one cell, grows, shrinks, appears, disappears or turns another
colour -- each over a contiguous run of frames with smooth interpolation, and the caption states them in order:
"the red circle moves left, then the blue square grows".

Order sensitivity is built in: val and test hold *order-only* pairs (shared ``pair_id``, ``order_only: true``):

- ``reverse``: the second clip is the exact time-reversal of the first, with the inverse events in reverse
  order. Both clips contain the same multiset of frames, so any bag-of-frames model scores chance in the pair.
- ``swap``: the same events from the same start, in another order.

Three sets, each with train/val/test manifests in the project format: ``images/`` (single frames for the image
stage), ``clips/`` (16 s at a few FPS, 2-3 events; 16 frames at 1 FPS) and ``long/`` (128+ s, 6-10 events,
``summary``). Scenes, captions and frames are a pure function of the seed; captions never repeat across a
set's splits, and val/test do not change when the training counts do.

    longvivit synth --out runs/synth --preset demo

Scene logic and captions are in :mod:`longvivit.data.scenes`, rendering in :mod:`longvivit.data.render`; this
module samples scenes, plans the splits and writes the media and manifests.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from longvivit.data.render import render_frames
from longvivit.data.scenes import (
    BACKGROUNDS,
    COLOURS,
    DIRECTIONS,
    GRID,
    KINDS,
    SHAPES,
    SIZES,
    Background,
    Event,
    Obj,
    Scene,
    apply,
    caption,
    is_valid,
    permute_scene,
    phrase,
    reverse_scene,
    states,
)

SETS = ("images", "clips", "long")
SPLITS = ("train", "val", "test")
# Splits are planned test-first so the evaluation sets do not change when the training set grows.
_PLAN_ORDER = ("test", "val", "train")
PRESETS: dict[str, dict[str, tuple[int, int, int]]] = {
    "mini": {"num_images": (16, 8, 8), "num_clips": (16, 8, 8), "num_long": (4, 4, 4)},
    "demo": {"num_images": (512, 64, 64), "num_clips": (512, 64, 128), "num_long": (96, 16, 48)},
}


@dataclass
class Item:
    """A planned sample: its scene, caption and the manifest fields (``media`` is relative to the set folder)."""

    set: str
    split: str
    index: int
    scene: Scene
    caption: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def media(self) -> str:
        return f"{self.split}/{self.index:05d}." + ("png" if self.set == "images" else "mp4")


# ------------------------------------------------------------------------------------------ sampling


def _sample_objects(rng: np.random.Generator, n: int, hidden_prob: float) -> tuple[Obj, ...]:
    cells = rng.permutation(GRID * GRID)[:n]
    colours = rng.permutation(list(COLOURS))[:n]
    objs = [Obj(str(rng.choice(SHAPES)), str(colours[i]), str(rng.choice(list(SIZES))), int(c % GRID), int(c // GRID))
            for i, c in enumerate(cells)]
    if n > 1 and rng.random() < hidden_prob:  # lets "appears" open a clip
        objs[0] = replace(objs[0], visible=False)
    return tuple(objs)


def _sample_background(rng: np.random.Generator) -> Background:
    return Background(str(rng.choice(list(BACKGROUNDS))), str(rng.choice(("solid", "gradient", "noise"))),
                      int(rng.integers(3)), int(rng.integers(2**31)))


def _sample_events(rng: np.random.Generator, objs: tuple[Obj, ...], n: int) -> list[Event]:
    events, before = [], None
    for _ in range(n):
        candidates: dict[str, list[Event]] = {}
        for i in range(len(objs)):
            options = [Event(i, "move", d) for d in DIRECTIONS] + [Event(i, k) for k in KINDS[1:5]]
            options += [Event(i, "recolour", c) for c in COLOURS]
            for ev in options:
                # no event that just undoes the previous one: "appears, then disappears" flicker says little
                if is_valid(objs, ev) and apply(objs, ev) != before:
                    candidates.setdefault(ev.kind, []).append(ev)
        kinds = sorted(candidates)  # kind first, then instance: keeps the verbs balanced
        pool = candidates[kinds[int(rng.integers(len(kinds)))]]
        ev = pool[int(rng.integers(len(pool)))]
        events.append(ev)
        before, objs = objs, apply(objs, ev)
    return events


def _layout(rng: np.random.Generator, n: int, num_frames: int, min_len: int) -> list[tuple[int, int]]:
    """``n`` ordered non-overlapping ``[start, end)`` spans, separated by at least one still frame."""
    weights = rng.uniform(0.7, 1.3, n)
    active = rng.uniform(0.5, 0.7) * num_frames
    lengths = np.maximum(min_len, np.floor(weights / weights.sum() * active)).astype(int)
    spare = num_frames - int(lengths.sum()) - (n - 1)
    if spare < 0:
        raise ValueError(
            f"{n} events of >= {min_len} frames do not fit in {num_frames} frames: give the videos more "
            "(seconds x fps)"
        )
    gaps = np.floor(rng.dirichlet(np.ones(n + 1)) * spare).astype(int)
    spans, t = [], int(gaps[0])
    for i in range(n):
        spans.append((t, t + int(lengths[i])))
        t += int(lengths[i]) + 1 + int(gaps[i + 1])
    return spans


def sample_clip(rng: np.random.Generator, num_events: int, num_frames: int, fps: float) -> Scene:
    """A random scene with ``num_events`` valid events laid out over ``num_frames``."""
    objs = _sample_objects(rng, int(rng.integers(2, 4)), hidden_prob=0.3)
    events = _sample_events(rng, objs, num_events)
    spans = _layout(rng, num_events, num_frames, min_len=max(2, round(1.5 * fps)))
    events = [replace(ev, start=s, end=e) for ev, (s, e) in zip(events, spans, strict=True)]
    return Scene(objs, _sample_background(rng), tuple(events), num_frames, fps, int(rng.integers(8)))


def sample_image(rng: np.random.Generator) -> Scene:
    """A random still scene of 2-3 visible objects."""
    return Scene(_sample_objects(rng, int(rng.integers(2, 4)), 0.0), _sample_background(rng),
                 template=int(rng.integers(8)))


# ------------------------------------------------------------------------------------------ planning

Counts = int | Sequence[int] | dict[str, int]


def _counts(value: Counts) -> dict[str, int]:
    if isinstance(value, int):
        return dict.fromkeys(SPLITS, value)
    if isinstance(value, dict):
        return {s: int(value.get(s, 0)) for s in SPLITS}
    if len(value) != 3:
        raise ValueError(f"counts must be one int or (train, val, test), got {value!r}")
    return dict(zip(SPLITS, (int(v) for v in value), strict=True))


def _check_counts(what: str, value: Counts) -> None:
    if any(n < 0 for n in _counts(value).values()):
        raise ValueError(f"{what} must be >= 0 per split, got {value!r}")


def _swap(rng: np.random.Generator, scene: Scene, tries: int = 20) -> Scene | None:
    n = len(scene.events)
    for _ in range(tries):
        order = rng.permutation(n)
        if (order != np.arange(n)).any() and (other := permute_scene(scene, [int(j) for j in order])) is not None:
            return other
    return None


def _plan_split(rng: np.random.Generator, name: str, split: str, n: int, used: set[str], sample: Any,
                pair_fraction: float) -> list[Item]:
    """Items of one split; order-only pairs first (adjacent), captions unique against ``used``."""
    items: list[Item] = []
    num_pairs = int(n * pair_fraction / 2 + 0.5) if name != "images" else 0
    attempts = 0

    def fresh(*caps: str) -> bool:
        nonlocal attempts
        attempts += 1
        if attempts > 200 * max(n, 1):
            raise RuntimeError(f"could not find {n} distinct {name} captions for {split}; lower the counts")
        return len(set(caps)) == len(caps) and not any(c in used for c in caps)

    for j in range(num_pairs):
        kind = ("reverse", "swap")[j % 2]
        while True:
            a = sample(rng)
            b = reverse_scene(a) if kind == "reverse" else _swap(rng, a)
            if b is not None and fresh(ca := caption(a), cb := caption(b)):
                break
        used.update((ca, cb))
        for scene, cap in ((a, ca), (b, cb)):
            extra = {"order_only": True, "pair_id": f"{name}-{split}-pair{j:04d}", "pair_kind": kind}
            items.append(Item(name, split, len(items), scene, cap, extra))
    while len(items) < n:
        scene = sample(rng)
        if fresh(cap := caption(scene)):
            used.add(cap)
            extra = {} if name == "images" else {"order_only": False}
            items.append(Item(name, split, len(items), scene, cap, extra))
    return items


def plan(
    seed: int = 0,
    *,
    num_images: Counts = PRESETS["demo"]["num_images"],
    num_clips: Counts = PRESETS["demo"]["num_clips"],
    num_long: Counts = PRESETS["demo"]["num_long"],
    clip_seconds: float = 16.0,
    clip_fps: float = 4.0,
    long_seconds: float = 128.0,
    long_fps: float = 2.0,
    pair_fraction: float = 0.5,
    train_pair_fraction: float = 0.0,
) -> dict[str, dict[str, list[Item]]]:
    """Sample every scene and caption without rendering (cheap, deterministic in ``seed``).

    Args:
        seed: Seed of everything.
        num_images, num_clips, num_long: Items per split: one int for every split or ``(train, val, test)``.
        clip_seconds, clip_fps: Length and native frame rate of the short clips.
        long_seconds, long_fps: Same for the long videos.
        pair_fraction: Share of val/test videos that belong to order-only pairs.
        train_pair_fraction: Same for the training split (default none). Training pairs sit next to each
            other in the manifest (and so in the shards), and ``ShardDataset(group_by="pair_id")`` keeps them in
            one batch: each is then the other's hard negative, the only in-batch contrast that needs temporal
            order. (At demo scale this did not make the order-only pairs separable; see the README.)

    Returns:
        ``{set: {split: [Item, ...]}}`` for sets ``images``, ``clips``, ``long``.
    """
    n_clip, n_long = round(clip_seconds * clip_fps), round(long_seconds * long_fps)
    samplers = {
        "images": sample_image,
        "clips": lambda rng: sample_clip(rng, int(rng.integers(2, 4)), n_clip, clip_fps),
        "long": lambda rng: sample_clip(rng, int(rng.integers(6, 11)), n_long, long_fps),
    }
    counts = {"images": _counts(num_images), "clips": _counts(num_clips), "long": _counts(num_long)}
    out: dict[str, dict[str, list[Item]]] = {}
    for set_index, name in enumerate(SETS):
        used: set[str] = set()
        planned = {}
        for split in _PLAN_ORDER:
            rng = np.random.default_rng([seed, set_index, SPLITS.index(split)])
            fraction = train_pair_fraction if split == "train" else pair_fraction
            planned[split] = _plan_split(rng, name, split, counts[name][split], used, samplers[name], fraction)
        out[name] = {split: planned[split] for split in SPLITS}
    return out


# ------------------------------------------------------------------------------------------ writing


def manifest_entry(item: Item) -> dict[str, Any]:
    """The manifest line of an item (media path relative to the set folder, where the manifest lives)."""
    scene = item.scene
    entry: dict[str, Any] = {("image" if item.set == "images" else "video"): item.media, "caption": item.caption}
    if item.set == "long":
        entry["summary"] = item.caption
    entry.update(id=f"{item.set}-{item.split}-{item.index:05d}", split=item.split)
    if item.set == "images":
        entry["background"] = scene.background.colour
        entry["objects"] = [{k: v for k, v in vars(o).items() if k != "visible"} for o in scene.objects]
        return entry
    entry.update(num_frames=scene.num_frames, fps=scene.fps, duration=scene.num_frames / scene.fps, **item.extra)
    sts = states(scene)
    entry["events"] = [
        {"text": phrase(sts[i], ev), "object": ev.obj, "kind": ev.kind, "arg": ev.arg,
         "colour": sts[i][ev.obj].colour, "shape": sts[i][ev.obj].shape,
         "cell": [sts[i][ev.obj].col, sts[i][ev.obj].row],
         "cell_after": [sts[i + 1][ev.obj].col, sts[i + 1][ev.obj].row],
         "start": round(ev.start / scene.fps, 3), "end": round(ev.end / scene.fps, 3),
         "start_frame": ev.start, "end_frame": ev.end}
        for i, ev in enumerate(scene.events)
    ]
    return entry


def _render_job(job: tuple[Scene, str, int, int]) -> None:
    scene, path, size, crf = job
    frames = render_frames(scene, size)
    if path.endswith(".png"):
        from PIL import Image

        Image.fromarray(frames[0]).save(path, optimize=False)
    else:
        from longvivit.data.video_io import encode_video

        encode_video(frames, fps=scene.fps, out=path, crf=crf)


def generate(
    out_dir: str | Path,
    *,
    seed: int = 0,
    size: int = 64,
    num_images: Counts = PRESETS["demo"]["num_images"],
    num_clips: Counts = PRESETS["demo"]["num_clips"],
    num_long: Counts = PRESETS["demo"]["num_long"],
    clip_seconds: float = 16.0,
    clip_fps: float = 4.0,
    long_seconds: float = 128.0,
    long_fps: float = 2.0,
    pair_fraction: float = 0.5,
    train_pair_fraction: float = 0.0,
    crf: int = 23,
    workers: int = 1,
) -> dict[str, Any]:
    """Render and write the three synthetic sets with their manifests and ``stats.json``.

    Args:
        out_dir: Output folder; gets ``{images,clips,long}/{train,val,test}.jsonl``, the media next to them
            (``{set}/{split}/NNNNN.{png,mp4}``) and ``stats.json``.
        seed: Seed of everything: same seed, same scenes, captions, rendered frames, PNG and mp4 bytes (x264
            without macroblock-tree rate control, see :func:`longvivit.data.video_io.x264_options`).
        size: Frame side in pixels (even, >= 16).
        num_images, num_clips, num_long, clip_seconds, clip_fps, long_seconds, long_fps, pair_fraction,
            train_pair_fraction: See :func:`plan`.
        crf: x264 quality of the videos.
        workers: Processes for rendering and encoding.

    Returns:
        ``{"manifests": {set: {split: path}}, "stats": {...}, "stats_path": path, "seconds": float}``.
    """
    if size < 16 or size % 2:
        raise ValueError(f"size must be even and >= 16 (H.264 with yuv420p), got {size}")
    for what, counts in (("num_images", num_images), ("num_clips", num_clips), ("num_long", num_long)):
        _check_counts(what, counts)
    for what, fraction in (("pair_fraction", pair_fraction), ("train_pair_fraction", train_pair_fraction)):
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"{what} must be in [0, 1], got {fraction}")
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be in [0, 51] (x264), got {crf}")
    t0 = time.perf_counter()
    items = plan(seed, num_images=num_images, num_clips=num_clips, num_long=num_long, clip_seconds=clip_seconds,
                 clip_fps=clip_fps, long_seconds=long_seconds, long_fps=long_fps, pair_fraction=pair_fraction,
                 train_pair_fraction=train_pair_fraction)
    out = Path(out_dir)
    jobs = []
    for name, splits in items.items():
        for split, its in splits.items():
            (out / name / split).mkdir(parents=True, exist_ok=True)
            jobs += [(it.scene, str(out / name / it.media), size, crf) for it in its]
    jobs.sort(key=lambda j: -j[0].num_frames)  # longest first balances the pool
    if workers > 1 and len(jobs) > 1:
        # fork: the children only need numpy and PyAV, and spawn would re-import torch in every worker
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with mp.get_context(method).Pool(workers) as pool:
            for _ in pool.imap_unordered(_render_job, jobs, chunksize=2):
                pass
    else:
        for job in jobs:
            _render_job(job)

    manifests: dict[str, dict[str, str]] = {}
    for name, splits in items.items():
        for split, its in splits.items():
            path = out / name / f"{split}.jsonl"
            path.write_text("".join(json.dumps(manifest_entry(it)) + "\n" for it in its), encoding="utf-8")
            manifests.setdefault(name, {})[split] = str(path)
    all_items = [it for splits in items.values() for its in splits.values() for it in its]
    pairs: dict[str, dict[str, dict[str, int]]] = {}
    for it in all_items:
        if it.extra.get("order_only") and it.index % 2 == 0:
            kinds = pairs.setdefault(it.set, {}).setdefault(it.split, {"reverse": 0, "swap": 0})
            kinds[it.extra["pair_kind"]] += 1
    stats = {
        "seed": seed, "size": size,
        "counts": {name: {split: len(its) for split, its in splits.items()} for name, splits in items.items()},
        "order_only_pairs": pairs,
        "order_only_pairs_total": sum(n for sets in pairs.values() for kinds in sets.values() for n in kinds.values()),
        "clips": {"seconds": clip_seconds, "fps": clip_fps, "frames": round(clip_seconds * clip_fps)},
        "long": {"seconds": long_seconds, "fps": long_fps, "frames": round(long_seconds * long_fps)},
        "vocab": sorted({w for it in all_items for w in re.findall(r"[a-z]+", it.caption)}),
        "attributes": {"shapes": list(SHAPES), "colours": list(COLOURS), "backgrounds": list(BACKGROUNDS),
                       "sizes": list(SIZES), "events": [f"moves {d}" for d in DIRECTIONS] + [
                           "grows", "shrinks", "appears", "disappears", "turns <colour>"]},
    }
    stats_path = out / "stats.json"
    stats_path.write_text(json.dumps(stats, indent=1) + "\n", encoding="utf-8")
    return {"manifests": manifests, "stats": stats, "stats_path": str(stats_path),
            "seconds": time.perf_counter() - t0}


def _parse_counts(text: str) -> int | tuple[int, ...]:
    parts = [int(p) for p in text.split(",")]
    if len(parts) not in (1, 3):
        raise argparse.ArgumentTypeError("give N (every split) or TRAIN,VAL,TEST")
    return parts[0] if len(parts) == 1 else tuple(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """``longvivit synth``: generate the synthetic sets. Returns the exit code."""
    parser = argparse.ArgumentParser(prog="longvivit synth", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=64, help="frame side in pixels")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo", help="counts per split")
    for name in ("images", "clips", "long"):
        parser.add_argument(f"--num-{name}", type=_parse_counts, default=None,
                            help=f"{name} per split: N or TRAIN,VAL,TEST (overrides the preset)")
    parser.add_argument("--clip-seconds", type=float, default=16.0)
    parser.add_argument("--clip-fps", type=float, default=4.0)
    parser.add_argument("--long-seconds", type=float, default=128.0)
    parser.add_argument("--long-fps", type=float, default=2.0)
    parser.add_argument("--pair-fraction", type=float, default=0.5,
                        help="share of val/test videos in order-only pairs")
    parser.add_argument("--train-pair-fraction", type=float, default=0.0,
                        help="share of training videos in order-only pairs (hard negatives of each other)")
    parser.add_argument("--crf", type=int, default=23)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    try:
        result = generate(
            args.out, seed=args.seed, size=args.size,
            num_images=args.num_images if args.num_images is not None else preset["num_images"],
            num_clips=args.num_clips if args.num_clips is not None else preset["num_clips"],
            num_long=args.num_long if args.num_long is not None else preset["num_long"],
            clip_seconds=args.clip_seconds, clip_fps=args.clip_fps, long_seconds=args.long_seconds,
            long_fps=args.long_fps, pair_fraction=args.pair_fraction,
            train_pair_fraction=args.train_pair_fraction, crf=args.crf, workers=max(1, args.workers),
        )
    except ValueError as err:  # settings that cannot be rendered: say which, without a traceback
        parser.error(str(err))
    stats = result["stats"]
    print(f"synth: {stats['counts']} ({stats['order_only_pairs_total']} order-only pairs) in {args.out} "
          f"({result['seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
