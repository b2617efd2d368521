"""Perceiver resampler (Flamingo): a fixed set of learned latents reads the pooled video tokens.

Each layer lets the latents attend to the concatenation ``[inputs; latents]`` (so they also exchange
information among themselves), followed by a feed-forward block; both residual, both pre-LayerNorm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


@dataclass
class ResamplerConfig:
    """Size of the :class:`PerceiverResampler`.

    Args:
        depth: Number of (attention, feed-forward) layers. Paper: 3.
        hidden: Width of the latents and of the output tokens. Paper: 1024.
        heads: Attention heads. Paper: 8.
        ff_dim: Hidden size of the feed-forward block. Paper: 4096.
        num_latents: Output tokens; ``None`` uses the encoder's number of spatial tokens (256 at 256 px).
        dim_head: Per-head width; ``None`` uses ``hidden // heads``.
    """

    depth: int = 3
    hidden: int = 1024
    heads: int = 8
    ff_dim: int = 4096
    num_latents: int | None = None
    dim_head: int | None = None

    def __post_init__(self) -> None:
        if min(self.depth, self.hidden, self.heads, self.ff_dim) < 1:
            raise ValueError("resampler depth, hidden, heads and ff_dim must be >= 1")
        if self.dim_head is None and self.hidden % self.heads:
            raise ValueError(f"resampler hidden={self.hidden} is not divisible by heads={self.heads}; "
                             "set dim_head explicitly")
        if self.num_latents is not None and self.num_latents < 1:
            raise ValueError("num_latents must be >= 1 (or None for the number of spatial tokens)")

    @property
    def head_dim(self) -> int:
        return self.dim_head or self.hidden // self.heads


def feed_forward(dim: int, hidden: int) -> nn.Sequential:
    """Pre-LayerNorm MLP with GELU, as in Flamingo's resampler and gated cross-attention."""
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class PerceiverAttention(nn.Module):
    """Latents attend to ``[inputs; latents]``; masked inputs are excluded from the keys.

    Args:
        dim: Width of inputs and latents.
        heads: Attention heads.
        dim_head: Per-head width.
    """

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.norm_inputs = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: Tensor, latents: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B, N, D) inputs, (B, L, D) latents, optional (B, N) bool keep-mask -> (B, L, D) update."""
        x, latents = self.norm_inputs(x), self.norm_latents(latents)
        q = self.to_q(latents)  # (B, L, h*d)
        k, v = self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1)  # (B, N+L, h*d) each
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in (q, k, v))
        attn_mask = None
        if mask is not None:
            # The latents are always valid keys, so no query row is ever fully masked.
            keep = torch.cat([mask, mask.new_ones(mask.shape[0], latents.shape[1])], dim=1)  # (B, N+L)
            attn_mask = keep[:, None, None, :]  # (B, 1, 1, N+L), broadcast over heads and queries
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, h, L, d)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


class PerceiverResampler(nn.Module):
    """Maps a variable set of visual tokens to ``num_latents`` tokens of width ``cfg.hidden``.

    Args:
        input_dim: Width of the incoming tokens (the encoder width).
        cfg: Resampler size.
        num_latents: Number of latent queries when ``cfg.num_latents`` is ``None``.
    """

    def __init__(self, input_dim: int, cfg: ResamplerConfig, num_latents: int | None = None) -> None:
        super().__init__()
        n = cfg.num_latents or num_latents
        if not n:
            raise ValueError("give cfg.num_latents or num_latents")
        self.cfg, self.num_latents = cfg, int(n)
        self.input_proj = nn.Linear(input_dim, cfg.hidden)
        self.latents = nn.Parameter(torch.randn(self.num_latents, cfg.hidden) * 0.02)
        self.layers = nn.ModuleList(
            nn.ModuleList([
                PerceiverAttention(cfg.hidden, cfg.heads, cfg.head_dim),
                feed_forward(cfg.hidden, cfg.ff_dim),
            ])
            for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.hidden)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Resample visual tokens.

        Args:
            x: (B, N, input_dim) tokens.
            mask: Optional (B, N) bool, ``True`` where a token holds information (see
                :func:`~longvivit.captioning.pooling.temporal_mean_pool`).

        Returns:
            (B, num_latents, hidden) tokens.
        """
        x = self.input_proj(x)  # (B, N, hidden)
        latents = self.latents.unsqueeze(0).expand(x.shape[0], -1, -1)  # (B, L, hidden)
        for attn, ff in self.layers:
            latents = latents + attn(x, latents, mask)
            latents = latents + ff(latents)
        return self.norm(latents)

    def no_weight_decay(self) -> set[str]:
        """The latent queries are embeddings, not weights to shrink."""
        return {"latents"}
