"""Video-to-text with a frozen LM: temporal mean pool, Perceiver resampler, gated cross-attention.

The frozen video encoder's token grid is mean-pooled over time (a fixed number of tokens whatever the video
length), resampled by a Perceiver into ``num_latents`` tokens, and read by gated cross-attention layers
inserted before the decoder layers of a frozen Hugging Face causal LM (Flamingo's recipe; docs/captioning.md).
Submodules import torch and transformers, so they are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "CaptionerConfig": "longvivit.captioning.model",
    "VideoToText": "longvivit.captioning.model",
    "load_captioner": "longvivit.captioning.model",
    "load_encoder": "longvivit.captioning.model",
    "CaptioningModule": "longvivit.captioning.module",
    "PerceiverResampler": "longvivit.captioning.resampler",
    "ResamplerConfig": "longvivit.captioning.resampler",
    "GatedCrossAttentionBlock": "longvivit.captioning.xattn",
    "XAttnConfig": "longvivit.captioning.xattn",
    "XAttnLM": "longvivit.captioning.xattn",
    "load_lm": "longvivit.captioning.lm",
    "temporal_mean_pool": "longvivit.captioning.pooling",
    "encode_grid": "longvivit.captioning.pooling",
    "evaluate_qa": "longvivit.captioning.qa",
    "option_scores": "longvivit.captioning.qa",
    "qa_accuracy": "longvivit.captioning.qa",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'longvivit.captioning' has no attribute {name!r}")
