"""The LightningDataModule over webdataset shards, and the DataLoader that serves its batches.

Resume semantics. Training streams are infinite (shards resampled with replacement); an "epoch" is
``steps_per_epoch`` batches per rank. Every random choice of a (rank, worker) is seeded from
``(seed, rank, worker, epoch)``, so with the same seed, world size and ``num_workers`` the stream of
epoch ``e`` is the same in every run. :class:`ShardLoader` records the epoch and the batches served
in it; Lightning stores that in checkpoints (the loader has ``state_dict``/``load_state_dict``, and
the DataModule's ``state_dict`` carries the same). On resume the epoch's stream is rebuilt and each
worker drops the raw samples it had already served *before decoding* (tar reading only), so training
continues with the unseen samples of that epoch; a checkpoint taken at the end of an epoch resumes
with the next epoch. The continuation equals the uninterrupted run (tested with Lightning, mid-epoch,
2 workers) when the batches served are a multiple of ``num_workers`` and no sample was corrupt;
otherwise it may differ by a few samples. Changing the seed, world size or ``num_workers`` between
runs gives different (still valid) streams.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Literal

import lightning as L
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader

from longvivit.config import PreprocessConfig
from longvivit.data.collate import load_tokenizer
from longvivit.data.shards import REPORT_ONLY, ShardDataset
from longvivit.distributed import for_this_rank, gather_objects

log = logging.getLogger(__name__)


class ShardLoader(DataLoader):
    """DataLoader over a batching :class:`~longvivit.data.shards.ShardDataset`.

    It drops the report-only items, appends each batch's ``"skipped"`` records to :attr:`skipped`
    (the batch keeps them too), moves a training dataset to its next epoch on every new iterator
    after the first, and cuts a training epoch at exactly ``batches_per_epoch`` batches.

    Args:
        dataset: The dataset (batching is done inside it).
        num_workers: DataLoader worker processes.
        **kwargs: Passed to :class:`torch.utils.data.DataLoader` (``pin_memory``, ``prefetch_factor``...).
    """

    def __init__(self, dataset: ShardDataset, num_workers: int = 0,
                 replays_finished_epoch: Callable[[], bool] | None = None, **kwargs: Any) -> None:
        if dataset.train and kwargs.get("persistent_workers"):
            # Persistent workers keep the dataset copy of the first epoch: every epoch would replay it.
            raise ValueError("persistent_workers=True would repeat the first epoch's stream; leave it off")
        super().__init__(dataset, batch_size=None, num_workers=num_workers, **kwargs)
        self.replays_finished_epoch = replays_finished_epoch or (lambda: False)
        self.skipped: list[tuple[str, str]] = []
        self.batches_seen = 0  # served in the current epoch on this rank (including a resumed prefix)
        self.stream_pos: dict[int, int] = {}  # worker role -> raw samples consumed up to its last served batch

    def __len__(self) -> int:
        n = self.dataset.batches_per_epoch
        if n is None:
            raise TypeError("this loader has no length (an eval stream, or no batches_per_epoch)")
        return n  # the full epoch also after a mid-epoch resume: Lightning counts from the restored step

    def __iter__(self) -> Iterator[Any]:
        ds: ShardDataset = self.dataset
        limit = None
        if ds.train:
            if ds.epoch_started:
                ds.set_epoch(ds.epoch + 1)
            ds.epoch_started = True
            resumed, positions = ds.resume_point()
            self.batches_seen = resumed
            # roles that serve no batch before the next checkpoint keep their resumed position
            self.stream_pos = dict(positions or {})
            if ds.batches_per_epoch is not None:
                limit = ds.batches_per_epoch - resumed
                if limit <= 0:  # the finished epoch of a resume (see load_state_dict): no worker is started
                    return iter(())
        else:
            self.batches_seen = 0
        return self._serve(super().__iter__(), limit)

    def _serve(self, it: Iterator[Any], limit: int | None) -> Iterator[Any]:
        served = 0
        for item in it:
            self.skipped.extend((str(k), str(r)) for k, r in item.get("skipped", ()))  # workers send lists
            if item.get(REPORT_ONLY):
                continue
            if limit is not None and served >= limit:
                break
            served += 1
            self.batches_seen += 1
            if "stream_pos" in item:
                role, pos = item["stream_pos"]
                self.stream_pos[role] = pos
            yield item

    def state_dict(self) -> dict[str, Any]:
        """``{"epoch", "batches_seen", "stream_pos"}`` of a training loader (Lightning saves it in checkpoints).

        ``stream_pos`` maps each worker role to the raw samples its stream had consumed up to its last served
        batch (skipped and other-modality samples included), so a resume fast-forwards exactly.
        """
        return {"epoch": self.dataset.epoch, "batches_seen": self.batches_seen, "stream_pos": dict(self.stream_pos)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`: the rest of that epoch, or the next one if it was complete.

        A complete epoch goes on to the next at once, unless ``replays_finished_epoch()`` says that the first
        iterator will be asked for that finished epoch: Lightning's step-based fit loop (``max_steps``, every recipe)
        resumes a checkpoint taken at an epoch's end by restarting that epoch, finds its batches done and takes a
        new iterator for the next. That first iterator is then empty; rolling over here instead made it the next
        epoch's (thrown away, or one batch trained where no validation runs) and the next epoch the one after:
        a resumed run skipped an epoch of the stream.
        """
        ds: ShardDataset = self.dataset
        epoch, seen = int(state["epoch"]), int(state["batches_seen"])
        positions = state.get("stream_pos")  # absent in checkpoints of earlier versions
        positions = {int(k): int(v) for k, v in positions.items()} if positions is not None else None
        if ds.batches_per_epoch is not None and seen >= ds.batches_per_epoch and not self.replays_finished_epoch():
            epoch, seen, positions = epoch + 1, 0, None
        ds.set_epoch(epoch)
        ds.epoch_started = False
        ds.resume_at = (epoch, seen, positions) if seen else None
        self.batches_seen = seen
        self.stream_pos = dict(positions or {})


class VideoTextDataModule(L.LightningDataModule):
    """Video-text (and optionally image-text) batches from webdataset shards.

    Shard arguments take a path, a brace pattern, a directory of shards (``.tar``, ``.tar.gz``, ``.tgz``) or a list of
    these. A list is one dataset unless ``train_weights`` / ``image_weights`` give one weight per entry, in
    which case each entry is a dataset and batches mix them by weight. With ``image_shards`` the
    training loader is a :class:`~lightning.pytorch.utilities.CombinedLoader` over
    ``{"video": ..., "image": ...}``: every step gets ``batch_size`` clips and ``image_batch_size``
    images, so those two sizes set the image/video ratio.

    Validation and test loaders read every sample exactly once across ranks and workers, in order,
    with all captions (see :class:`~longvivit.data.shards.ShardDataset`); per-rank batch counts can
    differ by a batch, so avoid per-step collectives in ``validation_step``. Resume: see the module
    docstring.

    Args:
        train_shards: Video-text training shards.
        val_shards: Validation shards (video).
        test_shards: Test shards (video).
        image_shards: Image-text training shards, mixed in as a second loader.
        train_weights: One weight per entry of ``train_shards`` to mix several video datasets.
        image_weights: One weight per entry of ``image_shards``.
        batch_size: Clips per training batch (per rank).
        image_batch_size: Images per training batch (default: ``batch_size``).
        val_batch_size: Clips per eval batch (default: ``batch_size``).
        num_workers: DataLoader workers per loader.
        num_frames: Frames per clip.
        fps: Sampling rate in ``"fps"`` mode.
        sampling: ``"fps"`` or ``"uniform"``.
        start: Window start in training (``"first"``, ``"random"``, ``"center"``); eval uses
            ``"first"`` when this is ``"random"``.
        image_size: Frame side after resize and centre crop.
        tokenizer: Text tower name or folder for the tokenizer (``None``: packaged MiniLM).
        max_text_length: Token budget per caption.
        shuffle_buffer: Raw samples in the training shuffle buffer, per worker. It holds encoded
            bytes (a few MB per clip), so memory is about ``shuffle_buffer * num_workers * clip size``.
        seed: Base seed of all data randomness; ``None`` is 0 here, and in ``longvivit fit`` the run's
            ``seed_everything`` (so a seed sweep changes the data stream too; ``--data.seed`` sets it apart).
        steps_per_epoch: Training batches per epoch per rank.
        max_fail_fraction: Fraction of undecodable samples tolerated per worker before raising.
        min_fail_count: Samples seen before that fraction is enforced.
        pin_memory: Pin batches (for GPU training).
        group_by: Metadata field whose adjacent equal values stay together in training video batches (e.g.
            ``"pair_id"``: order-only pairs as each other's hard negatives), see
            :class:`~longvivit.data.shards.ShardDataset`.
    """

    def __init__(
        self,
        train_shards: list[str] | str | None = None,
        val_shards: list[str] | str | None = None,
        test_shards: list[str] | str | None = None,
        image_shards: list[str] | str | None = None,
        train_weights: list[float] | None = None,
        image_weights: list[float] | None = None,
        batch_size: int = 8,
        image_batch_size: int | None = None,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        num_frames: int = 16,
        fps: float = 1.0,
        sampling: Literal["fps", "uniform"] = "fps",
        start: Literal["first", "random", "center"] = "first",
        image_size: int = 256,
        tokenizer: str | None = None,
        max_text_length: int = 64,
        shuffle_buffer: int = 256,
        seed: int | None = None,
        steps_per_epoch: int = 1000,
        max_fail_fraction: float = 0.1,
        min_fail_count: int = 20,
        pin_memory: bool = False,
        group_by: str | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1 or steps_per_epoch < 1 or num_workers < 0:
            raise ValueError("batch_size and steps_per_epoch must be >= 1 and num_workers >= 0")
        for name, shards, weights in (("train", train_shards, train_weights), ("image", image_shards, image_weights)):
            if weights is None:
                continue
            entries = 0 if not shards else 1 if isinstance(shards, str | os.PathLike) else len(shards)
            if len(weights) != entries:
                raise ValueError(f"{name}_weights has {len(weights)} weights for {entries} entries of {name}_shards "
                                 "(one weight per shard set)")
        self.save_hyperparameters()
        self.train_shards, self.val_shards, self.test_shards = train_shards, val_shards, test_shards
        self.image_shards, self.train_weights, self.image_weights = image_shards, train_weights, image_weights
        self.batch_size = batch_size
        self.image_batch_size = image_batch_size or batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.preprocess = PreprocessConfig(
            num_frames=num_frames, fps=fps, sampling=sampling, start=start, image_size=image_size
        )
        self.tokenizer_name, self.max_text_length = tokenizer, max_text_length
        self.shuffle_buffer, self.seed, self.steps_per_epoch = shuffle_buffer, seed or 0, steps_per_epoch
        self.max_fail_fraction, self.min_fail_count = max_fail_fraction, min_fail_count
        self.group_by = group_by
        self._tokenizer: Any = None
        self._train_sets: dict[str, ShardDataset] = {}
        self._train_loaders: dict[str, ShardLoader] = {}
        self._pending_state: dict[str, dict[str, int]] = {}

    # ------------------------------------------------------------------ helpers
    @property
    def tokenizer(self) -> Any:
        """The caption tokenizer, loaded on first use."""
        if self._tokenizer is None:
            # Workers fork after the main process used the Rust tokenizer; its thread pool must stay off.
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            self._tokenizer = load_tokenizer(self.tokenizer_name)
        return self._tokenizer

    def _rank_world(self) -> tuple[int | None, int | None]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        return None, None  # discovered at iteration time (env RANK/WORLD_SIZE or torch.distributed)

    def _dataset(
        self, shards: Any, modality: str, train: bool, batch_size: int, weights: Any = None, name: str = ""
    ) -> ShardDataset:
        rank, world = self._rank_world()
        return ShardDataset(
            shards,
            modality,
            self.preprocess,
            train=train,
            weights=weights,
            batch_size=batch_size,
            tokenizer=self.tokenizer,
            max_text_length=self.max_text_length,
            shuffle_buffer=self.shuffle_buffer,
            seed=self.seed,
            batches_per_epoch=self.steps_per_epoch if train else None,
            max_fail_fraction=self.max_fail_fraction,
            min_fail_count=self.min_fail_count,
            rank=rank,
            world_size=world,
            name=name,
            group_by=self.group_by if train and modality == "video" else None,
        )

    def _loader(self, ds: ShardDataset) -> ShardLoader:
        # The epoch comes from counting iterators, not from trainer.current_epoch: Lightning creates the
        # first iterator of a resumed run before it advances current_epoch past a finished epoch.
        return ShardLoader(ds, num_workers=self.num_workers, pin_memory=self.pin_memory,
                           replays_finished_epoch=self._replays_finished_epoch)

    def _replays_finished_epoch(self) -> bool:
        """Whether the trainer resuming now asks for an iterator of a finished epoch before the next epoch's.

        Lightning's fit loop is ``restarting`` on such a resume when training counts steps (``max_steps``): it
        re-enters the checkpoint's epoch. Counting epochs (``max_epochs``) it goes straight to the next one with the
        first iterator. Read when the training loaders get their checkpoint state, after the loops got theirs.
        """
        loop = getattr(getattr(self, "trainer", None), "fit_loop", None)
        return bool(getattr(loop, "restarting", False))

    # ------------------------------------------------------------------ Lightning hooks
    def train_dataloader(self) -> ShardLoader | CombinedLoader:
        """One loader for videos, or ``CombinedLoader({"video", "image"})`` when images are configured."""
        specs = {
            "video": (self.train_shards, self.train_weights, self.batch_size),
            "image": (self.image_shards, self.image_weights, self.image_batch_size),
        }
        for modality, (shards, weights, bs) in specs.items():
            if shards and modality not in self._train_sets:
                # Kept across calls so the epoch counter survives reload_dataloaders_every_n_epochs.
                self._train_sets[modality] = self._dataset(
                    shards, modality, True, bs, weights, f"{modality}-train"
                )
        if not self._train_sets:
            raise ValueError("no training data: set train_shards and/or image_shards")
        loaders = {m: self._loader(ds) for m, ds in self._train_sets.items()}
        for m, state in self._pending_state.items():
            if m in loaders:
                loaders[m].load_state_dict(state)
        self._pending_state = {}
        self._train_loaders = loaders
        if len(loaders) == 1:
            return next(iter(loaders.values()))
        # Both loaders have steps_per_epoch batches; "min_size" ends the epoch when the first runs out,
        # where "max_size_cycle" would restart it (one wasted batch from a new iterator).
        return CombinedLoader(loaders, mode="min_size")

    def val_dataloader(self) -> ShardLoader | list:
        if not self.val_shards:
            trainer = getattr(self, "trainer", None)
            if trainer is not None and trainer.state.fn == "fit":
                # Training on a set without a held-out split is common (evaluate later with `longvivit eval`):
                # fit runs without validation rather than failing at its first check.
                log.warning("no val_shards: fit runs without validation")
                return []
            raise ValueError("no validation data: set val_shards")
        return self._loader(self._dataset(self.val_shards, "video", False, self.val_batch_size, name="val"))

    def test_dataloader(self) -> ShardLoader:
        if not self.test_shards:
            raise ValueError("no test data: set test_shards")
        return self._loader(self._dataset(self.test_shards, "video", False, self.val_batch_size, name="test"))

    def state_dict(self) -> dict[str, Any]:
        """Per training loader ``{"epoch", "batches_seen", "stream_pos"}`` (plus the seed, checked on load); with
        several ranks, every rank's under ``"per_rank"`` (their streams skip different samples)."""
        state: dict[str, Any] = {m: loader.state_dict() for m, loader in self._train_loaders.items()}
        per_rank = gather_objects(state)
        if len(per_rank) > 1:
            state["per_rank"] = per_rank
        state["seed"] = self.seed
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the training position (this rank's); applied now or when the training loaders are built."""
        mine = for_this_rank(state_dict.get("per_rank"), None)
        if mine is not None:
            state_dict = {**mine, "seed": state_dict.get("seed", self.seed)}
        if state_dict.get("seed", self.seed) != self.seed:
            warnings.warn(
                f"checkpoint data seed {state_dict['seed']} differs from this run's seed {self.seed}: "
                "training continues on a different stream",
                RuntimeWarning,
                stacklevel=2,
            )
        for m, st in state_dict.items():
            if m in ("seed", "per_rank"):
                continue
            if m in self._train_loaders:
                self._train_loaders[m].load_state_dict(st)
            else:
                self._pending_state[m] = st

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """``(key, reason)`` of every sample the training loaders skipped so far in this process."""
        return [rec for loader in self._train_loaders.values() for rec in loader.skipped]
