"""Random tubelet masking: the memory lever of the recipe (the paper drops 75% of tokens in stage 3).

Kept tokens stay in their original (time-major) order, so anything that groups tokens by frame after masking
still works; the count kept is ``ceil((1 - r) * N)`` so that a ratio never empties a clip.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from longvivit.config import num_kept_tokens

Generators = torch.Generator | Sequence[torch.Generator] | None


def video_generator(seed: int, name: str) -> torch.Generator:
    """The RNG of one video at inference (its mask, its shuffled frames), from the seed and the video's name
    only (a shard sample's key; for a video file, the digest of its content, see
    ``longvivit.captioning.model.file_generator``): a video draws the same whichever place it has among the inputs
    or in a batch, so masked or shuffled evaluations do not move with the batch size, the world size or the data
    order."""
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def mask_noise(rows: int, n: int, generator: Generators, device: torch.device) -> torch.Tensor:
    """(rows, n) uniform noise on ``device`` whose argsort picks the tokens to keep.

    Args:
        rows: Samples masked independently.
        n: Tokens per sample.
        generator: ``None``, one RNG (may live on another device), or one per row, so that a sample's mask does
            not depend on its place in the batch (a generator listed for several rows draws them in turn).
        device: Where the noise is returned.
    """
    if isinstance(generator, Sequence):
        if len(generator) != rows:
            raise ValueError(f"{len(generator)} generators for {rows} samples")
        return torch.stack([torch.rand(n, generator=g, device=g.device).to(device) for g in generator])
    noise_device = generator.device if generator is not None else device
    return torch.rand(rows, n, generator=generator, device=noise_device).to(device)


def valid_steps(num_valid_frames: torch.Tensor, tubelet_t: int, steps: int) -> torch.Tensor:
    """(B,) real frame counts -> (B, T') bool: tubelet steps whose first frame is a real one (not padding).

    A step that starts on a real frame is kept even when later frames in it are padding: every clip then
    keeps at least its first step.
    """
    starts = torch.arange(steps, device=num_valid_frames.device) * tubelet_t  # (T',)
    return starts.unsqueeze(0) < num_valid_frames.clamp(min=1).unsqueeze(1)  # (B, T')


def random_masking(
    x: torch.Tensor, mask_ratio: float, generator: Generators = None, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep a uniformly random subset of tokens per sample, in their original order.

    Args:
        x: (B, N, C) tokens, position embeddings already added.
        mask_ratio: Fraction of tokens to drop, in [0, 1).
        generator: Optional RNG for reproducible masks (may live on another device than ``x``), or one per
            sample, so that a sample's mask does not depend on its place in the batch.
        valid: Optional (B, N) bool, ``False`` for tokens of padding frames: those are dropped first, so a clip
            shorter than the window keeps its real tokens (all of them when they are fewer than ``N_keep``).
            The draws are the same as without it, so clips without padding get the same masks.

    Returns:
        ``(kept, ids_keep)``: (B, N_keep, C) tokens and their (B, N_keep) sorted indices into ``N``.
    """
    b, n, c = x.shape
    keep = num_kept_tokens(n, mask_ratio)
    noise = mask_noise(b, n, generator, x.device)  # (B, N) in [0, 1)
    if valid is not None:
        noise = noise + (~valid).to(noise.dtype) * 2.0  # padding sorts after every real token
    # Sorting the kept indices keeps the time-major order, so tokens stay grouped by frame.
    ids_keep = noise.argsort(dim=1)[:, :keep].sort(dim=1).values  # (B, N_keep)
    kept = x.gather(1, ids_keep.unsqueeze(-1).expand(-1, -1, c))  # (B, N_keep, C)
    return kept, ids_keep


def scatter_kept(kept: torch.Tensor, ids_keep: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Put kept tokens back at their places among ``n``: the inverse of :func:`random_masking`.

    Args:
        kept: (B, N_keep, C) tokens (after the transformer, say).
        ids_keep: (B, N_keep) their indices into ``n``.
        n: Tokens per sample before masking.

    Returns:
        ``(tokens, visible)``: (B, n, C) with zeros where masked, and the (B, n) bool of kept places.
    """
    b, _, c = kept.shape
    tokens = kept.new_zeros(b, n, c).scatter(1, ids_keep.unsqueeze(-1).expand(-1, -1, c), kept)  # (B, n, C)
    visible = torch.zeros(b, n, dtype=torch.bool, device=kept.device).scatter(1, ids_keep, True)  # (B, n)
    return tokens, visible
