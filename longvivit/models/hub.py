"""An encoder's folder (``config.json`` + ``model.safetensors``), as written and read by
:meth:`VideoEncoder.save_pretrained <longvivit.models.video_encoder.VideoEncoder.save_pretrained>` and
:meth:`~longvivit.models.video_encoder.VideoEncoder.from_pretrained`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from longvivit.config import VideoEncoderConfig

if TYPE_CHECKING:
    from longvivit.models.video_encoder import VideoEncoder

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# Fields fixed by the trained weights that no adaptation can change: an override of one either fails to load or
# (heads, layer_norm_eps) loads and silently computes something else.
FIXED_FIELDS = ("width", "depth", "heads", "mlp_ratio", "in_chans", "embed_dim", "qkv_bias", "layer_norm_eps")


def save_encoder_folder(model: VideoEncoder, directory: str | Path) -> Path:
    """Write ``model``'s config and weights (safetensors, on the CPU) to ``directory``, created if needed."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.cfg.save(directory / CONFIG_NAME)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    return directory


def apply_overrides(cfg: VideoEncoderConfig, overrides: dict[str, object], source: object) -> VideoEncoderConfig:
    """``cfg`` with the load-time ``overrides``; a ValueError for one of :data:`FIXED_FIELDS` that differs."""
    fixed = {k: (getattr(cfg, k), v) for k, v in overrides.items() if k in FIXED_FIELDS and getattr(cfg, k) != v}
    if fixed:
        said = ", ".join(f"{k}={new!r} (trained with {old!r})" for k, (old, new) in fixed.items())
        raise ValueError(f"cannot load {source} with {said}: the weights fix these; frames, image size, tubelet, "
                         "backbone, adapters/LoRA and training settings can be changed on load")
    return cfg.replace(**overrides) if overrides else cfg


def load_encoder_folder(cls: type[VideoEncoder], directory: str | Path, **overrides: object) -> VideoEncoder:
    """An encoder of class ``cls`` built from the folder's config (with ``overrides``) and its weights adapted to
    fit, in eval mode, with ``adaptations`` and the export's ``preprocess`` settings set."""
    from longvivit.export import load_preprocess_config
    from longvivit.models.files import refuse_deepspeed_folder
    from longvivit.models.init import load_pretrained

    refuse_deepspeed_folder(directory)
    if Path(directory).is_file():
        raise NotADirectoryError(
            f"{directory} is a file: VideoEncoder.from_pretrained reads a folder; a training checkpoint loads "
            "with longvivit.models.checkpoint.load_model(path), or becomes a folder with `longvivit export`"
        )
    raw = json.loads((Path(directory) / CONFIG_NAME).read_text())
    if raw.get("model_type") == "vit":  # a Hugging Face ViT folder: its image weights, inflated to video
        from longvivit.models.hf_vit import config_from_hf_vit, load_hf_vit

        model = cls(config_from_hf_vit(raw, **overrides))
        model.adaptations = tuple(load_hf_vit(model, directory))
        model.preprocess = None
        return model.eval()
    if raw.get("model_type", "longvivit").split("-")[0] != "longvivit":  # an export says longvivit-video-encoder
        raise ValueError(f"{directory} holds a Hugging Face {raw['model_type']!r} model; VideoEncoder.from_pretrained "
                         "reads LongViViT encoder folders and Hugging Face ViT folders")
    cfg = apply_overrides(VideoEncoderConfig.from_dict(raw), overrides, directory)
    model = cls(cfg)
    model.adaptations = tuple(load_pretrained(model, directory))
    # An export also says how its frames were sampled: extract_features takes the rate from it.
    model.preprocess = load_preprocess_config(directory)
    return model.eval()
