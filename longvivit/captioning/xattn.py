"""Gated cross-attention dense layers (Flamingo's GATED XATTN-DENSE) inserted into a frozen HF causal LM.

Each chosen decoder layer of the LM is replaced by :class:`XAttnDecoderLayer`, which first lets the text
hidden states attend to the visual tokens through a :class:`GatedCrossAttentionBlock` and then calls the
original layer with every argument untouched. Both residual branches of the block are scaled by
``tanh(gate)`` with gates initialised at 0, so at initialisation the LM computes exactly what it computed
before (bit-identical logits).

The visual tokens of the current batch are set on the wrappers for the duration of a forward pass or a
``generate()`` call by :meth:`XAttnLM.visual_context`. Cross-attention is position-wise over the text (every
text token sees all visual tokens, nothing is cached), so it is the same whether the LM runs on the whole
sequence or one new token at a time with a KV cache.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from longvivit.captioning.resampler import feed_forward

# Where decoder layers live in common HF causal LMs, tried in order (Llama/Mistral/Qwen/Gemma/SmolLM2, GPT-2,
# GPT-NeoX, OPT); anything else falls back to the largest ModuleList of num_hidden_layers modules.
_LAYER_PATHS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers")


@dataclass
class XAttnConfig:
    """Where and how big the gated cross-attention layers are.

    Args:
        every: Insert a block before every ``every``-th decoder layer, starting with the first (1: all).
        heads: Attention heads.
        dim_head: Per-head width.
        ff_mult: Feed-forward hidden size relative to the LM width.
    """

    every: int = 1
    heads: int = 8
    dim_head: int = 64
    ff_mult: float = 4.0

    def __post_init__(self) -> None:
        if self.every < 1 or self.heads < 1 or self.dim_head < 1 or self.ff_mult <= 0:
            raise ValueError("xattn every, heads and dim_head must be >= 1 and ff_mult > 0")


class GatedCrossAttentionBlock(nn.Module):
    """``x += tanh(a) * xattn(LN(x), media); x += tanh(b) * FF(x)`` with ``a = b = 0`` at init.

    Args:
        dim: LM hidden size (queries).
        media_dim: Width of the visual tokens (keys and values).
        heads: Attention heads.
        dim_head: Per-head width.
        ff_mult: Feed-forward hidden size relative to ``dim``.
    """

    def __init__(
        self, dim: int, media_dim: int, heads: int = 8, dim_head: int = 64, ff_mult: float = 4.0
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(media_dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)
        self.attn_gate = nn.Parameter(torch.zeros(1))
        self.ff = feed_forward(dim, max(1, int(dim * ff_mult)))
        self.ff_gate = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, media: Tensor, media_mask: Tensor | None = None) -> Tensor:
        """(B, S, dim) text states, (B, M, media_dim) visual tokens, (B, M) keep-mask -> (B, S, dim)."""
        q = self.to_q(self.norm(x))  # (B, S, h*d)
        k, v = self.to_kv(media).chunk(2, dim=-1)  # (B, M, h*d) each
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in (q, k, v))
        mask = None if media_mask is None else media_mask[:, None, None, :]  # (B, 1, 1, M)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, h, S, d)
        x = x + self.attn_gate.tanh() * self.to_out(rearrange(attn, "b h n d -> b n (h d)"))
        return x + self.ff_gate.tanh() * self.ff(x)


class XAttnDecoderLayer(nn.Module):
    """A decoder layer preceded by a gated cross-attention block; the layer's call passes through untouched.

    The block is held outside the module tree (in a list) so that it is registered once, under
    :attr:`XAttnLM.xattn`, and not also inside the frozen LM: the LM's parameters stay exactly the LM's.

    Args:
        layer: The original decoder layer.
        block: The cross-attention block applied to its input hidden states.
    """

    def __init__(self, layer: nn.Module, block: GatedCrossAttentionBlock) -> None:
        super().__init__()
        self.layer = layer
        self._block = [block]
        self.media: Tensor | None = None
        self.media_mask: Tensor | None = None

    @property
    def block(self) -> GatedCrossAttentionBlock:
        return self._block[0]

    def __getattr__(self, name: str) -> Any:
        # Some HF models read attributes of their layers in the loop (e.g. ``attention_type`` for
        # sliding-window layers); the wrapper answers for the layer it wraps.
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "layer":
                raise
            return getattr(self.layer, name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.media is not None:
            if args:
                args = (self._cross_attend(args[0]), *args[1:])
            else:
                kwargs["hidden_states"] = self._cross_attend(kwargs["hidden_states"])
        return self.layer(*args, **kwargs)

    def _cross_attend(self, hidden: Tensor) -> Tensor:
        media, mask = self.media, self.media_mask
        b = hidden.shape[0]
        if media.shape[0] != b:
            # generate() with beams (or several QA options) repeats each sample consecutively.
            if b % media.shape[0]:
                raise ValueError(f"text batch {b} is not a multiple of the visual batch {media.shape[0]}")
            media = media.repeat_interleave(b // media.shape[0], dim=0)
            mask = None if mask is None else mask.repeat_interleave(b // mask.shape[0], dim=0)
        dtype = self.block.to_q.weight.dtype
        # Casting back keeps the LM's own dtype; with the gates at 0 both casts are exact round trips.
        return self.block(hidden.to(dtype), media.to(dtype), mask).to(hidden.dtype)


def find_decoder_layers(lm: nn.Module) -> tuple[nn.Module, str]:
    """Locate the ModuleList of decoder layers of a Hugging Face causal LM.

    Args:
        lm: E.g. ``LlamaForCausalLM`` (``model.layers``) or ``GPT2LMHeadModel`` (``transformer.h``).

    Returns:
        ``(parent module, attribute name)`` of the ModuleList.
    """
    for path in _LAYER_PATHS:
        *parents, name = path.split(".")
        parent: Any = lm
        for p in parents:
            parent = getattr(parent, p, None)
        if isinstance(getattr(parent, name, None), nn.ModuleList):
            return parent, name
    n_layers = getattr(getattr(lm, "config", None), "num_hidden_layers", None)
    best: tuple[int, nn.Module, str] | None = None
    for mod_name, module in lm.named_modules():
        if isinstance(module, nn.ModuleList) and (n_layers is None or len(module) == n_layers):
            parent_name, _, attr = mod_name.rpartition(".")
            if best is None or len(module) > best[0]:
                best = (len(module), lm.get_submodule(parent_name), attr)
    if best is None:
        raise ValueError(f"cannot find the decoder layers of {type(lm).__name__}; looked at {_LAYER_PATHS}")
    return best[1], best[2]


def lm_hidden_size(lm: nn.Module) -> int:
    """Hidden size of an HF LM (``hidden_size``, or GPT-2's ``n_embd``)."""
    cfg = lm.config
    for key in ("hidden_size", "n_embd", "d_model"):
        if getattr(cfg, key, None):
            return int(getattr(cfg, key))
    return int(lm.get_input_embeddings().embedding_dim)


class XAttnLM(nn.Module):
    """A frozen HF causal LM with trainable gated cross-attention blocks before every k-th decoder layer.

    Args:
        lm: The causal LM; it is frozen (``requires_grad=False``, eval mode) and its layers are wrapped
            in place.
        media_dim: Width of the visual tokens (the resampler's ``hidden``).
        cfg: Placement and size of the blocks.

    Attributes:
        lm: The wrapped LM.
        xattn: The trainable blocks, in layer order.
        wrapped: Indices of the decoder layers that got a block.
    """

    def __init__(self, lm: nn.Module, media_dim: int, cfg: XAttnConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.lm = lm.requires_grad_(False).eval()
        parent, name = find_decoder_layers(lm)
        layers: nn.ModuleList = getattr(parent, name)
        dim = lm_hidden_size(lm)
        self.wrapped = list(range(0, len(layers), cfg.every))
        self.xattn = nn.ModuleList(
            GatedCrossAttentionBlock(dim, media_dim, cfg.heads, cfg.dim_head, cfg.ff_mult)
            for _ in self.wrapped
        )
        self._wrappers: list[XAttnDecoderLayer] = []
        for block, i in zip(self.xattn, self.wrapped, strict=True):
            wrapper = XAttnDecoderLayer(layers[i], block)
            layers[i] = wrapper
            self._wrappers.append(wrapper)

    def train(self, mode: bool = True) -> XAttnLM:
        """Only the cross-attention blocks follow ``mode``; the frozen LM stays in eval mode (no dropout)."""
        super().train(mode)
        self.lm.eval()
        return self

    @contextlib.contextmanager
    def visual_context(self, media: Tensor, media_mask: Tensor | None = None) -> Iterator[None]:
        """Make ``media`` the visual tokens every wrapped layer attends to, for the ``with`` body.

        Args:
            media: (B, M, media_dim) visual tokens; the text batch may be a multiple of ``B`` (beams,
                QA options).
            media_mask: Optional (B, M) bool, ``True`` for valid tokens.
        """
        for w in self._wrappers:
            w.media, w.media_mask = media, media_mask
        try:
            yield
        finally:
            for w in self._wrappers:
                w.media, w.media_mask = None, None

    def forward(self, media: Tensor | None = None, media_mask: Tensor | None = None, **lm_kwargs: Any) -> Any:
        """Run the LM (``input_ids``, ``attention_mask``...) with ``media``; ``None`` runs the plain LM."""
        if media is None:
            return self.lm(**lm_kwargs)
        with self.visual_context(media, media_mask):
            return self.lm(**lm_kwargs)

    def generate(self, media: Tensor, media_mask: Tensor | None = None, **gen_kwargs: Any) -> Tensor:
        """``lm.generate(**gen_kwargs)`` with the visual tokens set (KV cache and beams work as usual)."""
        with self.visual_context(media, media_mask):
            return self.lm.generate(**gen_kwargs)

    def gates(self) -> dict[str, list[float]]:
        """Current ``tanh(gate)`` values per block (0 at init): how much each block changes the LM."""
        return {
            "attn": [float(b.attn_gate.detach().tanh()) for b in self.xattn],
            "ff": [float(b.ff_gate.detach().tanh()) for b in self.xattn],
        }
