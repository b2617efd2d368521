"""Random tubelet masking: the memory lever of the recipe (the paper drops 75% of tokens in stage 3).

Kept tokens stay in their original (time-major) order, so anything that groups tokens by frame after masking
still works; the count kept is ``ceil((1 - r) * N)`` so that a ratio never empties a clip.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def num_kept_tokens(num_tokens: int, mask_ratio: float) -> int:
    """Tokens left after masking: ``ceil((1 - r) * N)``, at least one.

    The small tolerance stops float error from adding a token, e.g. ``(1 - 0.7) * 10 = 3.0000000000000004``.
    """
    return max(1, math.ceil((1.0 - mask_ratio) * num_tokens - 1e-9))


def random_masking(
    x: torch.Tensor, mask_ratio: float, generator: torch.Generator | Sequence[torch.Generator] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep a uniformly random subset of tokens per sample, in their original order.

    Args:
        x: (B, N, C) tokens, position embeddings already added.
        mask_ratio: Fraction of tokens to drop, in [0, 1).
        generator: Optional RNG for reproducible masks (may live on another device than ``x``), or one per
            sample, so that a sample's mask does not depend on its place in the batch.

    Returns:
        ``(kept, ids_keep)``: (B, N_keep, C) tokens and their (B, N_keep) sorted indices into ``N``.
    """
    b, n, c = x.shape
    keep = num_kept_tokens(n, mask_ratio)
    if isinstance(generator, Sequence):
        if len(generator) != b:
            raise ValueError(f"{len(generator)} generators for {b} samples")
        noise = torch.stack([torch.rand(n, generator=g, device=g.device).to(x.device) for g in generator])  # (B, N)
    else:
        noise_device = generator.device if generator is not None else x.device
        noise = torch.rand(b, n, generator=generator, device=noise_device).to(x.device)  # (B, N)
    # Sorting the kept indices keeps the time-major order, so tokens stay grouped by frame.
    ids_keep = noise.argsort(dim=1)[:, :keep].sort(dim=1).values  # (B, N_keep)
    kept = x.gather(1, ids_keep.unsqueeze(-1).expand(-1, -1, c))  # (B, N_keep, C)
    return kept, ids_keep
