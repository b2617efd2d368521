"""Read every clip of some shards once, in order: the evaluation and feature-extraction entry point.

:func:`load_clips` wraps a finite, ordered :class:`~longvivit.data.shards.ShardDataset` (eval regime) and
returns a :class:`ClipIterator` that drops the report-only items of the stream and keeps what was skipped, with
the reason, in ``skipped``, and the image samples it passed over in ``passed_over``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from longvivit.config import PreprocessConfig
from longvivit.data.shards import REPORT_ONLY, ShardDataset, ShardSpec


class ClipIterator:
    """Iterator returned by :func:`load_clips`.

    Attributes:
        skipped: ``(key, reason)`` of the samples that could not be used (corrupt video, no caption...).
        passed_over: ``(key, reason)`` of the image samples of mixed shards: not clips, so not yielded, and not
            failures either (they do not count against ``max_fail_fraction``).

    Both are complete once the iterator is exhausted.
    """

    def __init__(self, dataset: ShardDataset, num_workers: int) -> None:
        self.dataset = dataset
        self.skipped: list[tuple[str, str]] = []
        self.passed_over: list[tuple[str, str]] = []
        if num_workers > 0:
            source: Any = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=num_workers)
        else:
            source = dataset
        self._it = iter(source)

    def __iter__(self) -> ClipIterator:
        return self

    def __next__(self) -> dict[str, Any]:
        while True:
            item = next(self._it)
            # A worker's records cross the DataLoader as lists: back to the (key, reason) tuples of a 0-worker read
            self.skipped.extend((str(k), str(r)) for k, r in item.pop("skipped", ()))
            self.passed_over.extend((str(k), str(r)) for k, r in item.pop("passed_over", ()))
            if item.get(REPORT_ONLY):
                continue
            return {
                "key": item["key"],
                "video": item["video"],
                "captions": item["captions"],
                "num_valid_frames": int(item["num_valid_frames"]),
                "meta": item.get("meta", {}),
                "duration": item.get("duration"),
                "cut": bool(item.get("cut", False)),
            }


def load_clips(
    urls: ShardSpec,
    num_frames: int = 16,
    fps: float = 1.0,
    image_size: int = 256,
    sampling: Literal["fps", "uniform"] = "fps",
    start: Literal["first", "center"] = "first",
    num_workers: int = 0,
    max_fail_fraction: float = 0.1,
    min_fail_count: int = 20,
    preprocess: PreprocessConfig | None = None,
    rank: int | None = 0,
    world_size: int | None = 1,
) -> ClipIterator:
    """Read every video clip of some shards once, in order, decoded and preprocessed.

    Args:
        urls: Shard specification (path, brace pattern, glob, directory, ``file:`` URL, ``pipe:`` command, or a list;
            see :func:`~longvivit.data.shard_specs.expand_shards`).
        num_frames: Frames per clip.
        fps: Sampling rate in ``"fps"`` mode.
        image_size: Output side (short-side resize, centre crop).
        sampling: ``"fps"`` or ``"uniform"``.
        start: ``"first"`` (paper) or ``"center"``.
        num_workers: Decoding processes. With workers the order is the workers' round-robin
            (the shard order exactly when no sample is skipped).
        max_fail_fraction: Raise :class:`TooManyFailuresError` above this fraction of bad samples.
        min_fail_count: Samples seen before the fraction applies.
        preprocess: Full settings; overrides the five preceding arguments when given (a ``"random"`` start in it
            reads from the first frame: every clip is read once, deterministically).
        rank: Read only this rank's share (default 0 of 1: everything).
        world_size: Number of ranks sharing the read.

    Raises:
        ValueError: For an invalid setting (``start="random"``, ``fps <= 0``, ``num_frames < 1``...) or a
            manifest or video file given as ``urls``.
        TypeError: For a frame count or size that is not a whole number (``16.0`` is taken as ``16``), or an ``fps``
            that is not a number.
        FileNotFoundError: When ``urls`` names no existing shard.

    Returns:
        An iterator of ``{"key": str, "video": (T, 3, H, W) float32, "captions": [str], "meta": dict,
        "num_valid_frames": int, "duration": float | None, "cut": bool}`` (``duration``: the source's length in
        seconds when the shard records it, as make_shards does; ``cut``: the window leaves part of it unseen); its
        ``skipped`` attribute lists the skipped samples and why, its ``passed_over`` the image samples of mixed
        shards, which are not clips.
    """
    if preprocess is None and start not in ("first", "center"):
        # PreprocessConfig takes "random" (training); read here it became "first" without a word
        raise ValueError(f"start must be 'first' or 'center' (load_clips reads every clip once, deterministically), "
                         f"got {start!r}")
    # PreprocessConfig checks the sizes are whole numbers (16.0 is 16) and fps a number, before any decode
    preprocess = preprocess or PreprocessConfig(
        num_frames=num_frames, fps=fps, image_size=image_size, sampling=sampling, start=start
    )
    ds = ShardDataset(
        urls,
        "video",
        preprocess,
        train=False,
        batch_size=None,
        max_fail_fraction=max_fail_fraction,
        min_fail_count=min_fail_count,
        rank=rank,
        world_size=world_size,
        eval_split="sample",
        name="load_clips",
    )
    return ClipIterator(ds, num_workers)
