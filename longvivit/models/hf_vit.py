"""Hugging Face ``transformers`` ViT weights into a :class:`~longvivit.models.video_encoder.VideoEncoder`.

:func:`config_from_hf_vit` builds a matching config, :func:`load_hf_vit` renames the ViT's keys to ours and
hands them to :func:`~longvivit.models.init.load_adapted`, which inflates, resizes and logs like for any other
source. Nothing is downloaded: a local folder or a loaded model is required.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from longvivit.config import VideoEncoderConfig
from longvivit.models.files import no_progress_bars, saved_without_pooler
from longvivit.models.init import StateDict, _note, load_adapted

if TYPE_CHECKING:
    from longvivit.models.video_encoder import VideoEncoder


def _hf_config_dict(hf_config: Any) -> dict[str, Any]:
    if isinstance(hf_config, (str, Path)):
        return json.loads((Path(hf_config) / "config.json").read_text())
    if isinstance(hf_config, Mapping):
        return dict(hf_config)
    return hf_config.to_dict()


def _pair(v: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def config_from_hf_vit(hf_config: Any, **overrides: Any) -> VideoEncoderConfig:
    """An encoder config that reproduces a Hugging Face ViT.

    Args:
        hf_config: A ``transformers.ViTConfig``, its dict, or a model folder holding ``config.json``.
        **overrides: Fields to set on top, e.g. ``num_frames=16`` or ``embed_dim=512``.

    Returns:
        The config (class token on, HF's LayerNorm epsilon, tubelet ``(2, p, p)``).
    """
    d = _hf_config_dict(hf_config)
    if d.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"HF ViT uses hidden_act={d['hidden_act']!r}; our MLP implements exact 'gelu' only")
    ph, pw = _pair(d.get("patch_size", 16))
    fields = {
        "image_size": _pair(d.get("image_size", 224))[0],
        "tubelet_size": (2, ph, pw),
        "in_chans": d.get("num_channels", 3),
        "width": d["hidden_size"],
        "depth": d["num_hidden_layers"],
        "heads": d["num_attention_heads"],
        "mlp_ratio": d["intermediate_size"] / d["hidden_size"],
        "qkv_bias": d.get("qkv_bias", True),
        "layer_norm_eps": d.get("layer_norm_eps", 1e-12),
        "cls_token": True,
    }
    return VideoEncoderConfig(**{**fields, **overrides})


def _check_hf_compatible(d: dict[str, Any], cfg: VideoEncoderConfig) -> None:
    wanted = {
        "hidden_act": ("gelu", d.get("hidden_act")),
        "hidden_size (width)": (cfg.width, d.get("hidden_size")),
        "num_hidden_layers (depth)": (cfg.depth, d.get("num_hidden_layers")),
        "num_attention_heads (heads)": (cfg.heads, d.get("num_attention_heads")),
        "intermediate_size (width * mlp_ratio)": (int(cfg.width * cfg.mlp_ratio), d.get("intermediate_size")),
        "qkv_bias": (cfg.qkv_bias, d.get("qkv_bias", True)),
        "num_channels (in_chans)": (cfg.in_chans, d.get("num_channels", 3)),
        "patch_size": (cfg.patch_size, _pair(d.get("patch_size", 16))),
    }
    problems = [
        f"{name}: encoder {ours!r}, HF {theirs!r}"
        for name, (ours, theirs) in wanted.items()
        if ours != theirs
    ]
    eps = d.get("layer_norm_eps", 1e-12)
    if not math.isclose(eps, cfg.layer_norm_eps, rel_tol=1e-6):
        problems.append(f"layer_norm_eps: encoder {cfg.layer_norm_eps!r}, HF {eps!r}")
    if problems:
        raise ValueError(
            "the Hugging Face ViT does not match the encoder config:\n  "
            + "\n  ".join(problems)
            + "\nbuild the config with longvivit.models.hf_vit.config_from_hf_vit(hf_config, ...)"
        )


def _hf_vit_to_ours(sd: Mapping[str, torch.Tensor], depth: int, qkv_bias: bool) -> tuple[StateDict, set[str]]:
    """Rename HF ViT tensors to ours and return them with the HF keys used.

    Accepts the legacy (``encoder.layer.i.attention.attention.query``) and the transformers-5
    (``layers.i.attention.q_proj``) layouts.
    """
    sd = {k.removeprefix("vit."): v for k, v in sd.items()}  # ViTForImageClassification wraps a ViTModel
    used: set[str] = set()

    def pick(*names: str) -> torch.Tensor:
        for name in names:
            if name in sd:
                used.add(name)
                return sd[name]
        raise KeyError(f"HF ViT weights lack {names[0]!r} (also tried {list(names[1:])})")

    out: StateDict = {
        "patch_embed_2d.weight": pick("embeddings.patch_embeddings.projection.weight"),
        "patch_embed_2d.bias": pick("embeddings.patch_embeddings.projection.bias"),
        "cls_token": pick("embeddings.cls_token"),
        "norm.weight": pick("layernorm.weight"),
        "norm.bias": pick("layernorm.bias"),
    }
    pos = pick("embeddings.position_embeddings")  # (1, 1 + H'*W', C): class position first
    out["pos_embed_cls"] = pos[:, :1]
    out["pos_embed_spatial"] = pos[:, 1:]
    # (ours, legacy HF, transformers-5 HF) sub-module names inside one layer
    renames = [
        ("norm1", "layernorm_before", "layernorm_before"),
        ("norm2", "layernorm_after", "layernorm_after"),
        ("attn.proj", "attention.output.dense", "attention.o_proj"),
        ("mlp.fc1", "intermediate.dense", "mlp.fc1"),
        ("mlp.fc2", "output.dense", "mlp.fc2"),
    ]
    for i in range(depth):
        old, new = f"encoder.layer.{i}.", f"layers.{i}."
        for ours, legacy, v5 in renames:
            for param in ("weight", "bias"):
                out[f"blocks.{i}.{ours}.{param}"] = pick(f"{old}{legacy}.{param}", f"{new}{v5}.{param}")
        params = ("weight", "bias") if qkv_bias else ("weight",)
        for param in params:
            parts = [
                pick(f"{old}attention.attention.{legacy}.{param}", f"{new}attention.{v5}.{param}")
                for legacy, v5 in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj"))
            ]
            out[f"blocks.{i}.attn.qkv.{param}"] = torch.cat(parts, dim=0)  # (3*C, C) rows q, k, v
    return out, {"vit." + k for k in used} | used


def load_hf_vit(model: VideoEncoder, path_or_model: Any, *, inflate_mode: str = "mean") -> list[str]:
    """Load a Hugging Face ``transformers`` ViT into the encoder (both patch paths, blocks, final norm).

    The 2D patch kernel also initialises the tubelet kernel by inflation, the position table is split into
    the class and spatial tables (resized if the grid differs), and the temporal table is set to zero, so the
    patch tokens of a static video reproduce the image's. The class token does not, past one tubelet step:
    under joint attention it attends over T' copies of every patch, which weighs the patches T' times more
    against itself than in the image model (a static 8-frame clip: class-token features ~0.2 off, pooled
    embedding ~0.01). ``head_norm`` and ``proj`` keep their initialisation.

    Args:
        model: Target encoder; its config must match the ViT (see :func:`config_from_hf_vit`), including
            ``layer_norm_eps`` (HF uses 1e-12).
        path_or_model: A local folder loadable by ``ViTModel.from_pretrained`` or a loaded HF ViT model.
        inflate_mode: ``"mean"`` or ``"central"``.

    Returns:
        Human-readable messages, one per adaptation.
    """
    if isinstance(path_or_model, (str, Path)):
        path = Path(path_or_model)
        if not path.is_dir():
            raise FileNotFoundError(f"{path} is not a local Hugging Face model folder")
        from transformers import ViTModel
        from transformers.utils import logging as hf_logging

        # The pooler is never used; building it only where the weights have it keeps transformers' load
        # report quiet (it lists the unused tensors below). A task head (ViTForImageClassification's classifier)
        # is not part of ViTModel: transformers' report of it is replaced by one line of ours.
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            with no_progress_bars():
                hf, info = ViTModel.from_pretrained(str(path), add_pooling_layer=not saved_without_pooler(path),
                                                    local_files_only=True, output_loading_info=True)
        finally:
            hf_logging.set_verbosity(verbosity)
        if info.get("missing_keys"):  # the report was silenced: a ViT without its weights must not pass quietly
            raise ValueError(f"{path} lacks ViT weights: {sorted(info['missing_keys'])[:8]}")
    else:
        hf = path_or_model
    d = _hf_config_dict(hf.config)
    cfg = model.cfg
    _check_hf_compatible(d, cfg)
    hf_sd = hf.state_dict()
    sd, used = _hf_vit_to_ours(hf_sd, cfg.depth, cfg.qkv_bias)
    msgs: list[str] = []
    heads = [a for a in d.get("architectures") or [] if a != "ViTModel"]
    if heads:
        _note(msgs, f"the folder's task head ({', '.join(heads)}) is not used: only the ViT backbone is loaded")
    ignored = sorted(k for k in hf_sd if k not in used)
    if ignored:
        _note(msgs, f"HF weights not used (pooler/classifier): {ignored}")
    current = model.state_dict()
    for key in ("head_norm.weight", "head_norm.bias", "proj.weight"):
        sd[key] = current[key].clone()
    _note(msgs, "head_norm and proj are not in a ViT checkpoint: fresh initialisation kept")
    ph, pw = _pair(d.get("patch_size", 16))
    size = _pair(d.get("image_size", 224))
    msgs += load_adapted(model, sd, source_grid=(size[0] // ph, size[1] // pw), inflate_mode=inflate_mode)
    return msgs
