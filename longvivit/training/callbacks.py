"""Callbacks: the progress bar and throughput on it, and RNG state in checkpoints for exact resume."""

from __future__ import annotations

import math
import random
import time
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE

from longvivit.distributed import for_this_rank, gather_objects


class StepsRichProgressBar(RichProgressBar):
    """Lightning's rich bar for runs that stop at ``max_steps``: "Epoch 2/7", not "Epoch 2/-2".

    Recipes set ``max_steps`` and leave ``max_epochs`` unset (Lightning's -1), which Lightning 2.6 prints as
    the last epoch "-2" (fixed upstream in Lightning PR #21924). The last epoch is taken from the steps
    instead; the bar only displays it, so nothing about when training stops depends on it.
    """

    def get_metrics(self, trainer: L.Trainer, module: L.LightningModule) -> dict[str, Any]:
        return _without_version(super().get_metrics(trainer, module))

    def _get_train_description(self, current_epoch: int) -> str:
        description = super()._get_train_description(current_epoch)
        trainer = self.trainer
        if trainer.max_epochs is None or trainer.max_epochs < 0:
            last = _last_epoch_from_steps(trainer)
            description = f"Epoch {current_epoch}" + ("" if last is None else f"/{last}")
            description = f"{description:{len(self.validation_description)}}"
        return description


class StepsTQDMProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar (without ``rich``), with the same metrics as ``StepsRichProgressBar``."""

    def get_metrics(self, trainer: L.Trainer, module: L.LightningModule) -> dict[str, Any]:
        return _without_version(super().get_metrics(trainer, module))


def default_progress_bar() -> ProgressBar:
    """The bar the CLI adds when a recipe names none: rich where it is installed, as in Lightning."""
    return StepsRichProgressBar() if _RICH_AVAILABLE else StepsTQDMProgressBar()


def _without_version(items: dict[str, Any]) -> dict[str, Any]:
    # The logger's version ("v_num: 0.000" on the rich bar) says nothing the run folder does not.
    items.pop("v_num", None)
    return items


def _last_epoch_from_steps(trainer: L.Trainer) -> int | None:
    """Index of the epoch in which ``max_steps`` optimizer steps are reached, or None when unknowable."""
    batches = trainer.num_training_batches
    if not trainer.max_steps or trainer.max_steps < 0 or not math.isfinite(batches) or batches < 1:
        return None
    steps_per_epoch = max(1, int(batches) // max(1, trainer.accumulate_grad_batches))
    return math.ceil(trainer.max_steps / steps_per_epoch) - 1


class Throughput(L.Callback):
    """Logs clips/s and visible tokens/s of training to the progress bar.

    The module reports per batch how many clips (videos + images) and how many tokens entered the
    transformer (after masking) in ``module.last_batch_stats``; the rate is over wall time between
    consecutive batch ends, so data loading stalls show up as lower throughput.
    """

    def __init__(self) -> None:
        self._last: float | None = None

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        now = time.perf_counter()
        stats = getattr(module, "last_batch_stats", None)
        if self._last is not None and stats:
            dt = max(now - self._last, 1e-9)
            world = trainer.world_size
            logged = bool(trainer.loggers)  # Lightning warns at every step about logger=True without a logger
            module.log("clips_s", world * stats["clips"] / dt, prog_bar=True, on_step=True, logger=logged)
            module.log("tokens_s", world * stats["tokens"] / dt, prog_bar=True, on_step=True, logger=logged)
        self._last = now


class RNGState(L.Callback):
    """Saves and restores Python, NumPy and torch RNG states so that a resumed run draws the same masks.

    Lightning restores model, optimizer, scheduler and loop counters; without the RNG states the random
    tubelet masks after a resume would differ from an uninterrupted run. Each rank's states are kept
    (``rng_states_per_rank``), and ranks draw apart: ``seed_everything`` gives every rank the same seed, which
    would give the same tubelet masks to the i-th clip of every rank.
    """

    def on_save_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict) -> None:
        states = {
            "python": random.getstate(),
            "numpy": _numpy_state_to_tensors(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        per_rank = gather_objects(states)
        checkpoint["rng_states"] = per_rank[0]  # what earlier versions read
        if len(per_rank) > 1:
            checkpoint["rng_states_per_rank"] = per_rank

    def on_load_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict) -> None:
        own = for_this_rank(checkpoint.get("rng_states_per_rank"), None)
        states = own or checkpoint.get("rng_states")
        if not states:
            return
        # Restored at train start: Lightning seeds and builds loaders after loading the checkpoint. Without this
        # rank's own states (an older checkpoint, another world size) every rank gets rank 0's: drawn apart then.
        self._pending, self._exact = states, own is not None

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        states = getattr(self, "_pending", None)
        if states:
            random.setstate(_as_python_state(states["python"]))
            name, keys, pos, has_gauss, cached = states["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
            torch.set_rng_state(states["torch"])
            if states["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(states["cuda"])
            self._pending = None
            if self._exact:
                return
        if trainer.world_size > 1:  # after the (identical) initialisation, which DDP broadcasts anyway
            base = int(torch.randint(2**31, (1,))) if states else torch.initial_seed()
            torch.manual_seed(base + 1_000_003 * trainer.global_rank)


def _numpy_state_to_tensors() -> tuple:
    # Tensors and plain Python values only, so the checkpoint loads with torch.load(weights_only=True).
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))


def _as_python_state(state: Any) -> tuple:
    # A checkpoint loaded with weights_only=True returns lists where random.getstate() gave tuples.
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
