"""Weight adaptation and loading for :class:`~longvivit.models.video_encoder.VideoEncoder`.

This is the one place that changes weights by shape. Any source (our exported folder, a safetensors file,
a Lightning checkpoint, a state dict, a Hugging Face ViT via :mod:`longvivit.models.hf_vit`) is turned into
our key names and then adapted to the target model's config: the 2D patch kernel is inflated to a tubelet
kernel (and resized for coarser patches), the spatial position table is resized to a new grid, the temporal
table is extended (or truncated) to a new number of frames, and the modules of the variants (factorized
temporal branches, adapters, LoRA, attention pooling) are derived or start at their identity initialisation.
Every adaptation is logged and returned as a human-readable message.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from longvivit.config import VideoEncoderConfig
from longvivit.models.files import read_checkpoint, refuse_deepspeed_folder

if TYPE_CHECKING:
    from longvivit.models.video_encoder import VideoEncoder

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]

# A key every VideoEncoder has and no other module of the package does: it locates the encoder inside a
# checkpoint of a larger model (e.g. "model.video_encoder.pos_embed_spatial").
_ANCHOR = "pos_embed_spatial"


# --------------------------------------------------------------------------- tensor operations
def inflate_patch_kernel(w2d: torch.Tensor, t: int, mode: str = "mean") -> torch.Tensor:
    """Turn a 2D patch kernel into a tubelet kernel that embeds a static video like the image.

    Args:
        w2d: (O, C, h, w) Conv2d weight.
        t: Temporal kernel size.
        mode: ``"mean"`` replicates the kernel over time divided by ``t`` (``w3d[:, :, i] = w2d / t``);
            ``"central"`` puts ``w2d`` in slice ``t // 2`` and zeros elsewhere. Both give exactly the
            image's patch embedding on a video whose ``t`` frames are equal.

    Returns:
        (O, C, t, h, w) Conv3d weight.
    """
    if w2d.ndim != 4:
        raise ValueError(f"expected a (O, C, h, w) kernel, got shape {tuple(w2d.shape)}")
    if t < 1:
        raise ValueError(f"temporal kernel size must be >= 1, got {t}")
    if mode == "mean":
        return w2d.unsqueeze(2).repeat(1, 1, t, 1, 1) / t  # (O, C, t, h, w)
    if mode == "central":
        w3d = w2d.new_zeros(w2d.shape[:2] + (t,) + w2d.shape[2:])  # (O, C, t, h, w)
        w3d[:, :, t // 2] = w2d
        return w3d
    raise ValueError(f"inflation mode must be 'mean' or 'central', got {mode!r}")


def resize_patch_kernel(w: torch.Tensor, new_size: tuple[int, int]) -> torch.Tensor:
    """Resample the spatial extent of a patch kernel, for a coarser (or finer) patch of the same content.

    The kernel is resampled and rescaled by the area ratio, so a patch of the image upsampled by an integer
    factor ``f`` (nearest) through the ``f``-times larger kernel gives exactly the original token; shrinking
    sums each ``f x f`` block, which matches an image downsampled by block averaging. Non-integer factors
    are interpolated bilinearly (approximate).

    Args:
        w: (O, C, h, w) or (O, C, t, h, w) kernel.
        new_size: (new_h, new_w).

    Returns:
        The kernel with its last two dimensions of size ``new_size``.
    """
    (h, w_), (nh, nw) = w.shape[-2:], new_size
    if (h, w_) == (nh, nw):
        return w
    lead = w.shape[:-2]
    flat = w.float().reshape(1, -1, h, w_)  # (1, O*C(*t), h, w): every 2D slice resampled alike
    if nh <= h and nw <= w_:
        mode = "area"
    elif nh % h == 0 and nw % w_ == 0:
        mode = "nearest"
    else:
        mode = "bilinear"
    out = F.interpolate(flat, size=(nh, nw), mode=mode) * (h * w_) / (nh * nw)  # (1, O*C(*t), nh, nw)
    return out.reshape(*lead, nh, nw).to(w.dtype)


def collapse_patch_kernel(w3d: torch.Tensor) -> torch.Tensor:
    """(O, C, t, h, w) -> (O, C, h, w): the 2D kernel a tubelet kernel applies to a static video."""
    return w3d.sum(dim=2)


def resize_spatial_pos(
    pos: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int], mode: str = "bicubic"
) -> torch.Tensor:
    """Resample a spatial position table to a new token grid.

    Args:
        pos: (1, old_h * old_w, C) table in row-major (h, w) order.
        old_grid: (old_h, old_w).
        new_grid: (new_h, new_w).
        mode: ``"bicubic"`` or ``"bilinear"`` (``align_corners=False``).

    Returns:
        (1, new_h * new_w, C) table.
    """
    oh, ow = old_grid
    nh, nw = new_grid
    if pos.shape[1] != oh * ow:
        raise ValueError(f"table has {pos.shape[1]} rows but old_grid {old_grid} needs {oh * ow}")
    if (oh, ow) == (nh, nw):
        return pos
    c = pos.shape[-1]
    grid = pos.float().reshape(1, oh, ow, c).permute(0, 3, 1, 2)  # (1, C, oh, ow)
    grid = F.interpolate(grid, size=(nh, nw), mode=mode, align_corners=False)  # (1, C, nh, nw)
    return grid.permute(0, 2, 3, 1).reshape(1, nh * nw, c).to(pos.dtype)  # (1, nh*nw, C)


def extend_temporal_pos(pos: torch.Tensor, new_len: int, mode: str = "repeat") -> torch.Tensor:
    """Grow (or truncate) the temporal position table to ``new_len`` tubelet steps.

    ``"repeat"`` stretches the table: step ``i`` of the new table takes row ``floor(i * old / new)``, which
    is ``repeat_interleave(new // old)`` when ``new`` is a multiple of ``old`` (8 -> 128 steps: each row
    16 times in a row). We stretch rather than tile because it keeps the table's order over the whole
    video: the first and last steps of a long video get the first and last learnt rows, as with
    ``"interpolate"``, so the two modes differ only in smoothness, and in a video slowed down by the
    stretch factor each moment keeps the position row it had in the short clip (its tokens still differ: a
    tubelet then spans repeated frames, and attention runs over more of them). A static video gets the same
    token values under either choice.

    ``"interpolate"`` resamples linearly along time with the same centre-aligned convention
    (``align_corners=False``): old row ``j`` sits at the centre of the span it covered.

    Shrinking (``new_len < old``) keeps the first ``new_len`` rows in both modes, which is what the
    encoder does at run time for clips shorter than its table.

    Args:
        pos: (1, old_len, C) table.
        new_len: Number of rows wanted.
        mode: ``"repeat"`` or ``"interpolate"``.

    Returns:
        (1, new_len, C) table.
    """
    if mode not in ("repeat", "interpolate"):
        raise ValueError(f"temporal extension mode must be 'repeat' or 'interpolate', got {mode!r}")
    if new_len < 1:
        raise ValueError(f"new_len must be >= 1, got {new_len}")
    old_len = pos.shape[1]
    if new_len <= old_len:
        return pos[:, :new_len].clone()
    if mode == "repeat":
        index = torch.arange(new_len, device=pos.device) * old_len // new_len  # (new_len,)
        return pos[:, index].clone()
    line = pos.float().transpose(1, 2)  # (1, C, old_len)
    line = F.interpolate(line, size=new_len, mode="linear", align_corners=False)  # (1, C, new_len)
    return line.transpose(1, 2).to(pos.dtype).contiguous()  # (1, new_len, C)


# --------------------------------------------------------------------------- state-dict adaptation
def _note(messages: list[str], text: str) -> None:
    logger.info(text)
    messages.append(text)


def _square_grid(n: int, what: str) -> tuple[int, int]:
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"cannot infer the grid of a {n}-row {what}; pass source_grid=(h, w)")
    return side, side


def adapt_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    model: VideoEncoder,
    *,
    source_grid: tuple[int, int] | None = None,
    inflate_mode: str = "mean",
) -> tuple[StateDict, list[str]]:
    """Adapt an encoder state dict (our key names) to ``model``'s config, by shape.

    Handles: a missing tubelet kernel (inflated from the 2D one, e.g. an image-stage checkpoint), a
    tubelet kernel of another temporal size (re-inflated), a missing 2D kernel (collapsed from the
    tubelet one), a spatial table for another grid (resized), a temporal table for another number of
    frames (``model.cfg.temporal_extend``, or truncation), a missing temporal table (zeros), and a class
    token present on one side only (dropped, or kept at the model's fresh initialisation).

    Args:
        state_dict: Weights with our key names (prefix already stripped).
        model: The target encoder; its current values fill what the checkpoint cannot provide.
        source_grid: Spatial grid of the checkpoint if not square (otherwise inferred).
        inflate_mode: ``"mean"`` or ``"central"``, see :func:`inflate_patch_kernel`.

    Returns:
        ``(adapted_state_dict, messages)``.

    Raises:
        ValueError: If a remaining tensor has a shape no rule can adapt (e.g. another width).
    """
    cfg = model.cfg
    target = model.state_dict()
    sd: StateDict = dict(state_dict)
    msgs: list[str] = []
    t = cfg.tubelet_size[0]

    k3, k2 = "patch_embed_3d.weight", "patch_embed_2d.weight"
    # frames per temporal step in the source (its tubelet kernel's time size), before the kernel is adapted
    src_t = sd[k3].shape[2] if k3 in sd and sd[k3].ndim == 5 else None
    for key in (k2, k3):
        if key in sd and sd[key].shape[-2:] != target[key].shape[-2:]:
            old = tuple(sd[key].shape[-2:])
            sd[key] = resize_patch_kernel(sd[key], tuple(target[key].shape[-2:]))
            _note(msgs, f"{key.split('.')[0]} resized from patch {old} to {cfg.patch_size} (area-preserving)")
    if k3 not in sd and k2 in sd:
        sd[k3] = inflate_patch_kernel(sd[k2], t, inflate_mode)
        sd.setdefault("patch_embed_3d.bias", sd.get("patch_embed_2d.bias"))
        _note(msgs, f"patch_embed_3d inflated from patch_embed_2d ({inflate_mode}, t={t})")
    elif k3 in sd and sd[k3].shape[2] != t and sd[k3].shape[3:] == target[k3].shape[3:]:
        old_t = sd[k3].shape[2]
        sd[k3] = inflate_patch_kernel(collapse_patch_kernel(sd[k3]), t, inflate_mode)
        _note(msgs, f"patch_embed_3d re-inflated from temporal size {old_t} to {t} ({inflate_mode})")
    if k2 not in sd and k3 in sd:
        sd[k2] = collapse_patch_kernel(sd[k3])
        sd.setdefault("patch_embed_2d.bias", sd.get("patch_embed_3d.bias"))
        _note(msgs, "patch_embed_2d derived from patch_embed_3d (sum over time)")
    for key in ("patch_embed_3d.bias", "patch_embed_2d.bias"):
        if key in sd and sd[key] is None:
            del sd[key]

    ks = "pos_embed_spatial"
    if ks in sd and sd[ks].shape != target[ks].shape and sd[ks].shape[-1] == target[ks].shape[-1]:
        old_grid = source_grid or _square_grid(sd[ks].shape[1], "spatial position table")
        sd[ks] = resize_spatial_pos(sd[ks], old_grid, cfg.grid_size)
        _note(msgs, f"pos_embed_spatial resized from grid {tuple(old_grid)} to {cfg.grid_size} (bicubic)")

    kt = "pos_embed_temporal"
    if kt in sd and src_t is not None and src_t != t and sd[kt].shape[-1] == target[kt].shape[-1]:
        # Another tubelet time size: each step now covers t frames, not src_t. A row per frame, then the mean over
        # each new step's frames (truncating would give the first half of the clip's rows to the whole clip).
        old_len = sd[kt].shape[1]
        per_frame = sd[kt].repeat_interleave(src_t, dim=1)  # (1, old_len * src_t, C)
        steps = max(1, per_frame.shape[1] // t)
        per_frame = per_frame[:, : steps * t] if per_frame.shape[1] >= t else per_frame.repeat(1, t, 1)[:, :t]
        sd[kt] = per_frame.reshape(1, steps, t, -1).mean(dim=2)  # (1, steps, C)
        _note(msgs, f"pos_embed_temporal resampled from {old_len} steps of {src_t} frames to {steps} steps of {t}")
    if kt not in sd:
        sd[kt] = torch.zeros_like(target[kt])
        _note(msgs, "pos_embed_temporal absent from the checkpoint: zero-initialised (static video = image)")
    elif sd[kt].shape[1] != target[kt].shape[1] and sd[kt].shape[-1] == target[kt].shape[-1]:
        old_len, new_len = sd[kt].shape[1], target[kt].shape[1]
        how = "truncated" if new_len < old_len else f"extended ({cfg.temporal_extend})"
        sd[kt] = extend_temporal_pos(sd[kt], new_len, cfg.temporal_extend)
        _note(msgs, f"pos_embed_temporal {how} from {old_len} to {new_len} steps")

    _adapt_variant_modules(sd, target, cfg, msgs)

    cls_keys = ("cls_token", "pos_embed_cls")
    if cfg.cls_token:
        missing_cls = [k for k in cls_keys if k not in sd]
        for k in missing_cls:
            sd[k] = target[k].clone()
        if missing_cls:
            _note(msgs, f"{', '.join(missing_cls)} absent from the checkpoint: fresh initialisation kept")
    else:
        dropped = [k for k in cls_keys if sd.pop(k, None) is not None]
        if dropped:
            _note(msgs, f"{', '.join(dropped)} dropped: the model has cls_token=False")

    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
        for k, v in sd.items()
        if k in target and v.shape != target[k].shape
    ]
    if mismatched:
        raise ValueError(
            "checkpoint tensors do not fit the encoder config (width, depth, heads, mlp_ratio, patch size "
            "and channels must match; frames and image size are adapted):\n  " + "\n  ".join(mismatched)
        )
    return sd, msgs


# Keys of modules an image or joint ViT does not have and that start as the identity when absent.
_NEW_MODULE_KEY = re.compile(r"(^|\.)(adapter\.|lora_[ab]$|temporal_gate$)|^temporal_pool\.")
_TEMPORAL_KEY = re.compile(r"^blocks\.(\d+)\.temporal\.(.+)$")


def _adapt_variant_modules(sd: StateDict, target: Mapping[str, torch.Tensor], cfg: VideoEncoderConfig,
                           msgs: list[str]) -> None:
    """Fill the variant modules a checkpoint lacks, in place (see :mod:`longvivit.models.variants`).

    Factorized temporal branches are copied from their block's spatial weights (as at construction);
    adapters, LoRA factors, temporal gates and the attention pool keep the model's identity initialisation
    (zero up-projection, zero ``B``, ``alpha = 0``, zero query). An attention-pool position table of another
    length is extended like the temporal table.
    """
    copied = 0
    for key in target:
        m = _TEMPORAL_KEY.match(key)
        if m and key not in sd and f"blocks.{m[1]}.{m[2]}" in sd:
            sd[key] = sd[f"blocks.{m[1]}.{m[2]}"].clone()
            copied += 1
    if copied:
        _note(msgs, f"factorized temporal branches initialised from the spatial weights ({copied} tensors)")
    fresh: dict[str, int] = {}
    for key in target:
        if key not in sd and _NEW_MODULE_KEY.search(key):
            sd[key] = target[key].clone()
            kind = next(k for k in ("adapter", "lora", "temporal_gate", "temporal_pool", "temporal") if k in key)
            fresh[kind] = fresh.get(kind, 0) + 1
    if fresh:
        what = ", ".join(f"{k} ({n} tensors)" for k, n in sorted(fresh.items()))
        _note(msgs, f"new modules absent from the checkpoint start at identity initialisation: {what}")
    kp = "temporal_pool.pos"
    if kp in sd and kp in target and sd[kp].shape[1] != target[kp].shape[1]:
        old_len = sd[kp].shape[1]
        sd[kp] = extend_temporal_pos(sd[kp], target[kp].shape[1], cfg.temporal_extend)
        _note(msgs, f"{kp} resized from {old_len} to {target[kp].shape[1]} frames ({cfg.temporal_extend})")


def load_adapted(
    model: VideoEncoder,
    state_dict: Mapping[str, torch.Tensor],
    *,
    strict: bool = True,
    source_grid: tuple[int, int] | None = None,
    inflate_mode: str = "mean",
) -> list[str]:
    """Adapt ``state_dict`` to ``model`` (see :func:`adapt_state_dict`) and load it.

    Args:
        model: Target encoder (modified in place).
        state_dict: Weights with our key names.
        strict: Fail on missing or unexpected keys (default); otherwise load what matches and report.
        source_grid: Spatial grid of the checkpoint if not square.
        inflate_mode: ``"mean"`` or ``"central"``.

    Returns:
        The adaptation messages.
    """
    sd, msgs = adapt_state_dict(state_dict, model, source_grid=source_grid, inflate_mode=inflate_mode)
    target = model.state_dict()
    missing = sorted(set(target) - set(sd))
    unexpected = sorted(set(sd) - set(target))
    if (missing or unexpected) and strict:
        raise ValueError(
            "checkpoint does not match VideoEncoder"
            + (f"\n  missing keys ({len(missing)}): {missing}" if missing else "")
            + (f"\n  unexpected keys ({len(unexpected)}): {unexpected}" if unexpected else "")
            + "\n(pass strict=False to load the rest, or prefix=... if the encoder is inside a larger model)"
        )
    if missing:
        _note(msgs, f"missing keys kept at initialisation: {missing}")
    if unexpected:
        _note(msgs, f"unexpected keys ignored: {unexpected}")
    model.load_state_dict({k: v for k, v in sd.items() if k in target}, strict=False)
    return msgs


# --------------------------------------------------------------------------- sources
def select_encoder_weights(state_dict: Mapping[str, Any], prefix: str | None = None) -> StateDict:
    """Extract the encoder's weights from a (possibly larger) state dict and strip their prefix.

    Args:
        state_dict: Any flat state dict.
        prefix: Key prefix of the encoder, e.g. ``"model.video."``. ``None`` finds it automatically from
            the key ending in ``pos_embed_spatial`` (an error if there are several).

    Returns:
        The encoder's tensors under our key names.
    """
    if prefix is None:
        prefixes = sorted(
            {k[: -len(_ANCHOR)] for k in state_dict if k == _ANCHOR or k.endswith("." + _ANCHOR)}
        )
        if not prefixes:
            raise ValueError(f"no VideoEncoder weights found (no key ending in {_ANCHOR!r})")
        if len(prefixes) > 1:
            raise ValueError(f"several encoders in the checkpoint under prefixes {prefixes}; pass prefix=...")
        prefix = prefixes[0]
    elif prefix and not prefix.endswith("."):
        prefix += "."
    out = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix) and torch.is_tensor(v)}
    if not out:
        raise ValueError(f"no tensors under prefix {prefix!r}")
    return out


def _read_source(
    source: str | Path | Mapping[str, Any],
) -> tuple[Mapping[str, Any], VideoEncoderConfig | None]:
    """Raw flat state dict of a source and, for our exported folders, its config."""
    from safetensors.torch import load_file

    from longvivit.models.video_encoder import CONFIG_NAME, WEIGHTS_NAME

    if isinstance(source, Mapping):
        return source, None
    path = Path(source)
    refuse_deepspeed_folder(path)
    if path.is_dir():
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"{path} has no {WEIGHTS_NAME}")
        cfg_path = path / CONFIG_NAME
        src_cfg = (
            VideoEncoderConfig.from_dict(json.loads(cfg_path.read_text())) if cfg_path.is_file() else None
        )
        return load_file(str(weights)), src_cfg
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.suffix == ".safetensors":
        return load_file(str(path)), None
    obj = read_checkpoint(path)  # Lightning .ckpt or a plain torch file
    if isinstance(obj.get("state_dict"), Mapping):
        return obj["state_dict"], None
    return obj, None


def load_pretrained(
    model: VideoEncoder,
    source: str | Path | Mapping[str, Any],
    *,
    prefix: str | None = None,
    strict: bool = True,
    inflate_mode: str = "mean",
) -> list[str]:
    """Load encoder weights from any of our formats into ``model``, adapting shapes to its config.

    Args:
        model: Target encoder (modified in place).
        source: An exported folder (``config.json`` + ``model.safetensors``), a ``.safetensors`` file, a
            Lightning ``.ckpt`` (read with ``weights_only=True``) or a state dict.
        prefix: Key prefix of the encoder inside the checkpoint; found automatically when ``None``.
        strict: Fail on missing or unexpected keys.
        inflate_mode: How a missing tubelet kernel is built from the 2D one.

    Returns:
        Human-readable messages, one per adaptation.
    """
    raw, src_cfg = _read_source(source)
    sd = select_encoder_weights(raw, prefix)
    return load_adapted(
        model,
        sd,
        strict=strict,
        source_grid=src_cfg.grid_size if src_cfg is not None else None,
        inflate_mode=inflate_mode,
    )
