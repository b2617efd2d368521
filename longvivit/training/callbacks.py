"""Callbacks: throughput on the progress bar, and RNG state in checkpoints for exact resume."""

from __future__ import annotations

import random
import time
from typing import Any

import lightning as L
import numpy as np
import torch


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
            module.log("clips_s", world * stats["clips"] / dt, prog_bar=True, on_step=True, logger=True)
            module.log("tokens_s", world * stats["tokens"] / dt, prog_bar=True, on_step=True, logger=True)
        self._last = now


class RNGState(L.Callback):
    """Saves and restores Python, NumPy and torch RNG states so that a resumed run draws the same masks.

    Lightning restores model, optimizer, scheduler and loop counters; without the RNG states the random
    tubelet masks after a resume would differ from an uninterrupted run.
    """

    def on_save_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint["rng_states"] = {
            "python": random.getstate(),
            "numpy": _numpy_state_to_tensors(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def on_load_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict) -> None:
        states = checkpoint.get("rng_states")
        if not states:
            return
        # Restored at train start: Lightning seeds and builds loaders after loading the checkpoint.
        self._pending = states

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        states = getattr(self, "_pending", None)
        if not states:
            return
        random.setstate(_as_python_state(states["python"]))
        name, keys, pos, has_gauss, cached = states["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(states["torch"])
        if states["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])
        self._pending = None


def _numpy_state_to_tensors() -> tuple:
    # Tensors and plain Python values only, so the checkpoint loads with torch.load(weights_only=True).
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))


def _as_python_state(state: Any) -> tuple:
    # A checkpoint loaded with weights_only=True returns lists where random.getstate() gave tuples.
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
