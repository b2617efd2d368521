"""``longvivit eval``: zero-shot text-video retrieval of a checkpoint or exported model on shards.

Writes the metrics JSON (``{"t2v": {"R@1", "R@5", "R@10", "MdR", "MnR", "MRR"}, "v2t": {...}, "num_videos",
"num_texts", "chance": {"R@1", "MRR"}, ...}``, recall in percent), optionally the embeddings (``.npy`` + ids)
so that any other tool can recompute the metrics, and, for data sets that mark order-only pairs (the synthetic set:
``pair_id`` in the sample metadata), the pair accuracy and the retrieval restricted to those videos.
The frame-order probes (``--frame-order``) and ``--mask-ratio`` measure how much a model relies on
temporal order and how robust it is to dropped tubelets.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

from longvivit.argtypes import device, fraction, mask_ratio, non_negative_int, output_dir, output_file, positive
from longvivit.data.collate import num_truncated
from longvivit.evaluation.probes import FRAME_ORDERS, apply_frame_order
from longvivit.evaluation.retrieval import (
    DuplicateKeyError,
    RetrievalEvaluator,
    format_metrics,
    pair_accuracy,
    retrieval_metrics,
)
from longvivit.logs import setup_logging
from longvivit.models.masking import video_generator

log = logging.getLogger(__name__)


def _batches(samples: Iterable[dict[str, Any]], batch_size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for s in samples:
        batch.append(s)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def order_only_metrics(evaluator: RetrievalEvaluator, pair_of: dict[str, str]) -> dict[str, Any] | None:
    """Metrics on the order-only subset: videos that come in pairs with the same events in another order.

    Args:
        evaluator: Holds all video and caption embeddings.
        pair_of: Video key -> pair id, for the videos that belong to an order-only pair.

    Returns:
        ``{"pair_accuracy": {...}, "retrieval": {...}}`` or ``None`` when no complete pair was evaluated.
        Pair accuracy is the 2-way T2V choice between the two videos of a pair (chance 50%, both directions);
        retrieval is the usual metrics with only the subset's videos and captions.
    """
    keys = evaluator.video_keys
    members: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        if k in pair_of:
            members[pair_of[k]].append(i)
    pairs = [tuple(v) for v in members.values() if len(v) == 2]
    if not pairs:
        return None
    sim, text_to_video = evaluator.similarity()
    both = pairs + [(b, a) for a, b in pairs]
    subset = sorted({i for p in pairs for i in p})
    remap = torch.full((len(keys),), -1, dtype=torch.long)
    remap[subset] = torch.arange(len(subset))
    rows = remap[text_to_video] >= 0
    sub_sim = sim[rows][:, subset]
    return {
        "num_pairs": len(pairs),
        "pair_accuracy": pair_accuracy(sim, text_to_video, both),
        "retrieval": retrieval_metrics(sub_sim, remap[text_to_video[rows]]),
    }


@torch.no_grad()
def evaluate(
    model: Any,
    samples: Iterable[dict[str, Any]],
    *,
    batch_size: int = 16,
    mask_ratio: float = 0.0,
    frame_order: str = "original",
    seed: int = 0,
    device: str | torch.device = "cpu",
    max_text_length: int | None = None,
    stats: Counter[str] | None = None,
) -> tuple[RetrievalEvaluator, dict[str, str]]:
    """Embed every clip and caption of ``samples`` with ``model``.

    Args:
        model: A :class:`~longvivit.models.model.VideoTextModel` (eval mode).
        samples: Iterator of ``load_clips`` samples.
        batch_size: Clips per forward pass.
        mask_ratio: Tubelet mask ratio at inference (0: exact).
        frame_order: ``original``, ``shuffled``, ``reversed`` or ``single`` (probes).
        seed: Seed of the shuffled probe and of masking (with each clip's key: ``masking.video_generator``).
        device: Where to run.
        max_text_length: Token budget of a caption (default: the text tower's ``max_length``). Comparing
            models trained with different budgets at one budget keeps their numbers comparable.
        stats: Filled, when given, with what the inputs lost: ``padded_clips`` (shorter than the window),
            ``cut_clips`` (longer than it) and ``truncated_captions`` (longer than the text budget).

    Returns:
        ``(evaluator holding the embeddings, {video key: pair id} for order-only pairs)``.
    """
    ev, pair_of = RetrievalEvaluator(), {}
    for batch in _batches(samples, batch_size):
        video = torch.stack([s["video"] for s in batch])  # (B, T, 3, H, W)
        valid = torch.tensor([s["num_valid_frames"] for s in batch])
        keys = [s["key"] for s in batch]
        # Each clip draws its shuffle, then its mask, from its own RNG: the figures do not move with the batch
        # size or the order of the shards.
        gens = [video_generator(seed, key) for key in keys]
        video = apply_frame_order(video, valid, frame_order, generator=gens)
        emb = model.encode_video(video.to(device), mask_ratio=mask_ratio, generator=gens, num_valid_frames=valid)
        captions = [c for s in batch for c in s["captions"]]
        owners = [s["key"] for s in batch for _ in s["captions"]]
        tok = model.text_encoder.tokenize(captions, max_length=max_text_length)
        text = model.encode_text(tok["input_ids"].to(device), tok["attention_mask"].to(device))
        if stats is not None:
            budget = max_text_length or model.text_encoder.cfg.max_length
            stats["padded_clips"] += int((valid < video.shape[1]).sum())  # padded to the window
            stats["cut_clips"] += sum(bool(s.get("cut")) for s in batch)  # only the window's seconds seen
            stats["truncated_captions"] += num_truncated(model.text_encoder.tokenizer, captions, tok["attention_mask"],
                                                         budget)
        ev.add_videos(emb, keys)
        ev.add_texts(text, owners, captions)
        for s in batch:
            meta = s.get("meta") or {}
            if meta.get("order_only") and meta.get("pair_id"):
                pair_of[s["key"]] = str(meta["pair_id"])
    return ev, pair_of


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate as the command-line arguments say and return the metrics dict."""
    from longvivit.config import PreprocessConfig
    from longvivit.data.clips import load_clips
    from longvivit.data.sampling import requested_sampling
    from longvivit.data.shard_specs import expand_shards
    from longvivit.data.shards import TooManyFailuresError
    from longvivit.export import source_preprocess, text_tower_untrained
    from longvivit.models.checkpoint import load_model

    overrides: dict[str, Any] = {}
    if args.num_frames:
        overrides["num_frames"] = args.num_frames
    if args.image_size:  # the spatial position table is resized, as the temporal one is for --num-frames
        overrides["image_size"] = args.image_size
    shards = args.shards[0] if len(args.shards) == 1 else args.shards  # the shell expands unquoted globs
    try:
        expand_shards(shards)  # a typo or a manifest in --shards stops here, before the model loads
        model, msgs = load_model(args.model, **overrides)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"longvivit eval: {err}") from err
    if text_tower_untrained(msgs):
        # a random text projection gives random, unrepeatable retrieval numbers
        raise SystemExit(f"longvivit eval: {args.model} holds a video encoder without its text tower; retrieval "
                         "needs both: evaluate the training checkpoint (.ckpt) or its `longvivit export` folder")
    model.to(args.device)
    cfg = model.video_encoder.cfg
    # Defaults are the model's training settings: an export's preprocessor_config.json (fps, sampling, mean/std),
    # a checkpoint's data hyper-parameters
    base = source_preprocess(args.model, cfg)
    try:  # --fps on a model trained with uniform sampling asks for fps sampling (it was recorded, and unused)
        sampling = requested_sampling(args.fps, args.sampling, base.sampling)
    except ValueError as err:
        raise SystemExit(f"longvivit eval: {err}") from err
    # the window starts where validation started it ("center" for a model trained so; a random start is "first")
    pre = PreprocessConfig(num_frames=cfg.num_frames, fps=args.fps or base.fps, sampling=sampling,
                           start=base.start, image_size=args.image_size or cfg.image_size, mean=base.mean,
                           std=base.std)
    clips = load_clips(shards, preprocess=pre, num_workers=args.workers, max_fail_fraction=args.max_fail_fraction)
    text_budget = args.max_text_length or model.text_encoder.cfg.max_length
    positions = getattr(model.text_encoder.model.config, "max_position_embeddings", None)
    if positions and text_budget > positions:
        raise SystemExit(f"longvivit eval: --max-text-length {text_budget} is more than the text tower's {positions} "
                         "positions")
    counts: Counter[str] = Counter()
    try:
        ev, pair_of = evaluate(model, clips, batch_size=args.batch_size, mask_ratio=args.mask_ratio,
                               frame_order=args.frame_order, seed=args.seed, device=args.device,
                               max_text_length=text_budget, stats=counts)
    except TooManyFailuresError as err:
        raise SystemExit(f"longvivit eval: {err}. With --max-fail-fraction 1 the clips that decode are evaluated "
                         "and the others listed in the JSON's `skipped`") from err
    except DuplicateKeyError as err:
        raise SystemExit(
            f"longvivit eval: two clips have the key {err.keys[0]!r}: the same shard given twice, or shard sets "
            "written from different manifests (make_shards numbers every manifest's lines from 1); evaluate each "
            "set on its own, or write the shards from one manifest"
        ) from err
    skipped, images = clips.skipped, clips.passed_over
    if ev.num_videos == 0:
        found = [f"{len(skipped)} skipped, e.g. {skipped[:3]}"] if skipped else []
        found += [f"{len(images)} image samples, which are not clips"] if images else []
        raise SystemExit(f"longvivit eval: no video clip read from {shards!r}; "
                         + ("; ".join(found) if found else "the shards hold no samples"))
    metrics: dict[str, Any] = ev.compute()
    order = order_only_metrics(ev, pair_of)
    if order is not None:
        metrics["order_only"] = order
    metrics["skipped"] = [{"key": k, "reason": r} for k, r in skipped]
    metrics["passed_over"] = [{"key": k, "reason": r} for k, r in images]
    metrics["settings"] = {
        "model": str(args.model), "shards": shards, "num_frames": cfg.num_frames, "fps": pre.fps,
        "sampling": pre.sampling, "start": pre.start, "mask_ratio": args.mask_ratio, "frame_order": args.frame_order,
        "image_size": pre.image_size, "adaptations": msgs, "padded_clips": counts["padded_clips"],
        "cut_clips": counts["cut_clips"], "max_text_length": text_budget,
        "truncated_captions": counts["truncated_captions"],
    }
    if args.embeddings:
        ev.save_embeddings(args.embeddings)
    return metrics


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="longvivit eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="exported folder or Lightning checkpoint (.ckpt)")
    p.add_argument(
        "--shards", required=True, nargs="+",
        help="shard paths, brace patterns ('s/test-{000000..000009}.tar'), globs or folders of .tar",
    )
    p.add_argument("--num-frames", type=positive(int), default=None, help="frames per clip (default: the model's)")
    p.add_argument("--fps", type=positive(float), default=None,
                   help="default: as trained (an export's preprocessor_config.json, a checkpoint's data settings), "
                        "else 1")
    p.add_argument("--sampling", choices=("fps", "uniform"), default=None,
                   help="default: as trained (export or checkpoint), else fps")
    p.add_argument("--image-size", type=positive(int), default=None, help="default: the model's")
    p.add_argument("--mask-ratio", type=mask_ratio, default=0.0)
    p.add_argument("--max-text-length", type=positive(int), default=None,
                   help="token budget of a caption (default: the model's); longer captions are cut, and counted")
    p.add_argument("--frame-order", choices=FRAME_ORDERS, default="original")
    p.add_argument("--batch-size", type=positive(int), default=16)
    p.add_argument("--workers", type=non_negative_int, default=0, help="decoding processes")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the masks and shuffled frames, drawn per clip key (independent of batch and order)")
    p.add_argument("--max-fail-fraction", type=fraction, default=0.1,
                   help="stop when more than this fraction of the clips cannot be read (default 0.1)")
    p.add_argument("--device", type=device, default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=output_file, default=None, help="write the metrics JSON here")
    p.add_argument("--embeddings", type=output_dir, default=None, help="dump embeddings (.npy) and ids here")
    return p


def _summary(m: dict[str, Any]) -> str:
    lines = format_metrics(m)
    if "order_only" in m:
        o = m["order_only"]
        lines.append(f"order-only: {o['num_pairs']} pairs, 2-way accuracy {o['pair_accuracy']['accuracy']:.1f}% "
                     f"(chance 50), subset T2V R@1 {o['retrieval']['t2v']['R@1']:.2f}")
    settings = m.get("settings", {})
    if settings.get("padded_clips"):
        # uniform sampling ignores the rate: a clip is padded when it holds fewer frames than the window
        short = (f"hold fewer than {settings['num_frames']} frames" if settings.get("sampling") == "uniform" else
                 f"are shorter than {settings['num_frames']} frames at {settings['fps']:g} FPS")
        lines.append(f"{settings['padded_clips']} of {m['num_videos']} clips {short}: padded to the window, the "
                     "padding left out of the encoder's attention and pool")
    if settings.get("cut_clips"):
        seconds = settings["num_frames"] / settings["fps"]
        lines.append(f"{settings['cut_clips']} of {m['num_videos']} clips are longer than {settings['num_frames']} "
                     f"frames at {settings['fps']:g} FPS: only their first {seconds:g} s are seen (--num-frames, "
                     "--fps or --sampling uniform cover more)")
    if settings.get("truncated_captions"):
        lines.append(f"{settings['truncated_captions']} captions are longer than the text budget of "
                     f"{settings['max_text_length']} tokens and were cut (--max-text-length)")
    if m["skipped"]:
        lines.append(f"skipped {len(m['skipped'])} unreadable samples (listed in the JSON)")
    if m.get("passed_over"):
        lines.append(f"passed over {len(m['passed_over'])} image samples: retrieval here is over the video clips "
                     "(listed in the JSON's `passed_over`)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``longvivit eval`` entry point."""
    args = build_parser().parse_args(argv)
    setup_logging()
    metrics = run(args)
    print(_summary(metrics))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(metrics, indent=2) + "\n")
        print(f"metrics -> {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
