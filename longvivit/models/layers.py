"""Transformer building blocks shared by every encoder variant: attention, MLP, pre-norm block, DropPath.

They carry no video-specific logic, so the joint, factorized and frame-level backbones (and the
adapter/LoRA wrappers) can all reuse or subclass them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

# Resolved lazily: None = not tried yet, False = unavailable, otherwise xformers.ops.
_XFORMERS_OPS: Any = None


def _xformers_ops() -> Any | None:
    """``xformers.ops`` if it imports, else None (checked once; the fallback is logged once at debug)."""
    global _XFORMERS_OPS
    if _XFORMERS_OPS is None:
        try:
            import xformers.ops as xops

            _XFORMERS_OPS = xops
        except Exception as err:  # ImportError, or a broken build raising something else at import
            logger.debug("xformers unavailable (%s); attention uses torch SDPA", err)
            _XFORMERS_OPS = False
    return _XFORMERS_OPS or None


def masked_mean(x: torch.Tensor, keep: torch.Tensor | None, dim: int) -> torch.Tensor:
    """Mean of ``x`` over ``dim`` counting only the kept entries (every entry without ``keep``); 0 where none is.

    Args:
        x: (..., C) features, ``dim`` one of the leading dimensions (tokens, frames, steps).
        keep: Optional bool of ``x``'s shape without its last dimension: the entries to average (real frames,
            visible tokens).
        dim: The dimension averaged away.
    """
    if keep is None:
        return x.mean(dim=dim)
    w = keep.to(x.dtype).unsqueeze(-1)  # (..., 1)
    return (x * w).sum(dim=dim) / w.sum(dim=dim).clamp(min=1)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection.

    Args:
        dim: Token width.
        heads: Number of heads; ``dim`` must be divisible by it.
        qkv_bias: Bias on the fused qkv projection.
        attn_impl: ``"sdpa"`` (``torch.nn.functional.scaled_dot_product_attention``) or ``"xformers"``
            (``memory_efficient_attention``; used only when xformers imports and the input is on CUDA,
            otherwise SDPA is used silently).
    """

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True, attn_impl: str = "sdpa") -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.attn_impl = attn_impl
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Attend over all tokens, or over the valid ones.

        Args:
            x: (B, N, C) tokens.
            valid: Optional (B, N) bool of the tokens that may be attended to (``False``: padding). Every query
                still gets an output; those of padding tokens are meaningless and left to the caller to drop.
                With a mask, attention runs through SDPA whatever ``attn_impl`` says.

        Returns:
            (B, N, C) tokens.
        """
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim)  # (B, N, 3, h, d)
        use_xformers = self.attn_impl == "xformers" and x.is_cuda and valid is None
        xops = _xformers_ops() if use_xformers else None
        if xops is not None:
            q, k, v = qkv.unbind(2)  # each (B, N, h, d): xformers' native layout
            out = xops.memory_efficient_attention(q, k, v)  # (B, N, h, d)
        else:
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, h, N, d)
            mask = None if valid is None else valid[:, None, None, :]  # (B, 1, 1, N): keys each query may see
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)  # (B, N, h, d)
        return self.proj(out.reshape(b, n, c))


class Mlp(nn.Module):
    """Two-layer feed-forward block.

    Args:
        dim: Input and output width.
        hidden: Hidden width.
        act: Activation constructor; exact (erf) GELU as in ViT and BERT.
    """

    def __init__(self, dim: int, hidden: int, act: Callable[[], nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DropPath(nn.Module):
    """Stochastic depth: zero a residual branch for a random subset of samples during training.

    Args:
        p: Probability of dropping the branch for a sample. Kept samples are rescaled by ``1 / (1 - p)``
            so the expectation is unchanged and evaluation needs no correction.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        # One Bernoulli draw per sample, broadcast over every other dimension.
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``.

    ``adapter`` is an optional residual module applied to the block output (set by
    :mod:`longvivit.models.variants`); it is ``None`` in a plain ViT.

    Args:
        dim: Token width.
        heads: Attention heads.
        mlp_ratio: MLP hidden width relative to ``dim``.
        qkv_bias: Bias on the fused qkv projection.
        eps: LayerNorm epsilon.
        attn_impl: ``"sdpa"`` or ``"xformers"`` (see :class:`Attention`).
        drop_path: Stochastic depth rate of both residual branches.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        eps: float = 1e-6,
        attn_impl: str = "sdpa",
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, qkv_bias=qkv_bias, attn_impl=attn_impl)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)
        self.adapter: nn.Module | None = None

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, C) -> (B, N, C); ``valid``: optional (B, N) bool of the tokens attention may read."""
        x = x + self.drop_path(self.attn(self.norm1(x), valid))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x if self.adapter is None else self.adapter(x)
