"""AdamW with decoupled weight decay on matrices only, and a cosine schedule with linear warmup."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import lightning as L
import torch
from torch import nn


@dataclass
class OptimConfig:
    """Optimizer and schedule of one training stage (paper Table 4 values live in the recipes).

    Args:
        lr: Peak learning rate reached after warmup.
        weight_decay: AdamW decoupled weight decay, applied to >= 2-D weights only.
        betas: AdamW betas.
        eps: AdamW epsilon.
        warmup_steps: Linear warmup from 0 to ``lr``.
        total_steps: Length of the cosine; ``None`` uses the trainer's ``max_steps``.
        min_lr_ratio: Final learning rate as a fraction of ``lr``.
        text_lr_scale: Learning rate of the pretrained text transformer as a fraction of ``lr`` (its projection
            into the joint space keeps ``lr``): unlock more of a pretrained text tower without overwriting it
            at the rate a from-scratch video tower needs.
    """

    lr: float = 5e-5
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 1000
    total_steps: int | None = None
    min_lr_ratio: float = 0.0
    text_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ValueError("lr must be > 0, weight_decay and warmup_steps >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError("min_lr_ratio must be in [0, 1]")
        if self.text_lr_scale <= 0:
            raise ValueError("text_lr_scale must be > 0")


def param_groups(
    model: nn.Module,
    weight_decay: float,
    no_decay: set[str] = frozenset(),
    lr: float | None = None,
    lr_scales: Mapping[str, float] | None = None,
) -> list[dict]:
    """Split trainable parameters into decayed (>= 2-D weights) and non-decayed groups.

    Biases, norms (1-D), position tables, class tokens and the temperature are excluded from weight
    decay: decaying them pulls embeddings and the temperature towards zero for no regularisation gain.

    Args:
        model: Module whose trainable parameters are grouped.
        weight_decay: Decay of the first group.
        no_decay: Extra parameter names (as in ``named_parameters``) never decayed, e.g. position tables,
            which are 3-D and would otherwise be caught by the ndim rule.
        lr: Base learning rate; needed with ``lr_scales``.
        lr_scales: Parameter-name prefix -> multiplier of ``lr`` (the longest matching prefix wins).

    Returns:
        Parameter groups for ``torch.optim.AdamW``: ``[decayed, non-decayed]`` (possibly empty), then one group
        per (decay, multiplier) that has parameters, carrying its own ``lr``.
    """
    scales = dict(lr_scales or {})
    if scales and lr is None:
        raise ValueError("lr_scales needs the base lr")
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {(True, 1.0): [], (False, 1.0): []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or name in no_decay or any(name.endswith("." + n) or name == n for n in no_decay)
        prefix = max((k for k in scales if name.startswith(k)), key=len, default=None)
        scale = 1.0 if prefix is None else float(scales[prefix])
        groups.setdefault((not skip, scale), []).append(p)
    out = []
    for (decayed, scale), params in groups.items():
        group: dict = {"params": params, "weight_decay": weight_decay if decayed else 0.0}
        if scale != 1.0:
            group["lr"] = lr * scale
        out.append(group)
    return out


class CosineWithWarmup(torch.optim.lr_scheduler.LambdaLR):
    """Linear warmup to the base lr, then cosine decay to ``min_lr_ratio * lr`` at ``total_steps``.

    The schedule's length is part of its state: a run resumed with another length (``--trainer.max_steps`` raised
    to train longer) follows the new schedule from the step it resumes at, and says so, since the lr then jumps
    (from the old schedule's end to the middle of the new one); ``--model.optim.total_steps`` keeps the old one.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                 min_lr_ratio: float = 0.0) -> None:
        self.warmup_steps, self.total_steps, self.min_lr_ratio = warmup_steps, total_steps, min_lr_ratio
        super().__init__(optimizer, self.factor)

    def factor(self, step: int) -> float:
        """Multiplier of the base lr at ``step``."""
        return _factor(step, self.warmup_steps, self.total_steps, self.min_lr_ratio)

    _SCHEDULE = ("warmup_steps", "total_steps", "min_lr_ratio")

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["schedule"] = {k: state.pop(k) for k in self._SCHEDULE}
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        # The step and last lrs are restored; the schedule stays this run's (the saved one is only compared).
        state = {k: v for k, v in state_dict.items() if k not in self._SCHEDULE}
        saved = state.pop("schedule", None)
        now = {k: getattr(self, k) for k in self._SCHEDULE}
        super().load_state_dict(state)
        if saved is not None and saved != now:
            step = self.last_epoch
            warnings.warn(
                f"resuming at step {step} with another lr schedule than the checkpoint's ({saved} -> {now}): "
                f"the lr factor goes from {_factor(step, **saved):.3g} to {self.factor(step):.3g}; "
                f"--model.optim.total_steps {saved['total_steps']} keeps the checkpoint's schedule",
                RuntimeWarning, stacklevel=2,
            )


def _factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    if step < warmup_steps:
        return (step + 1) / max(1, warmup_steps)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> CosineWithWarmup:
    """Linear warmup to the base lr, then cosine decay to ``min_lr_ratio * lr`` at ``total_steps``."""
    return CosineWithWarmup(optimizer, warmup_steps, total_steps, min_lr_ratio)


def log_learning_rate(module: L.LightningModule, batch_size: int) -> None:
    """Log this step's learning rate (the first parameter group's) as ``train/lr``; nothing for a step run by
    hand, without a trainer or optimizer."""
    if module._trainer is not None and module.trainer.optimizers:
        module.log("train/lr", module.trainer.optimizers[0].param_groups[0]["lr"], batch_size=batch_size)
