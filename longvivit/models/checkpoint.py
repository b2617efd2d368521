"""Load a :class:`VideoTextModel` from any of our sources: a training checkpoint or a saved/exported folder.

Every path goes through :func:`longvivit.models.init.load_pretrained` for the video encoder, so a model
can be loaded at another frame count or image size than it was trained with (temporal table extended,
spatial table resized) and the adaptations are reported.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from longvivit.config import TextEncoderConfig, VideoEncoderConfig, VideoTextConfig
from longvivit.models.files import read_checkpoint, refuse_deepspeed_folder
from longvivit.models.hub import apply_overrides
from longvivit.models.init import load_pretrained
from longvivit.models.model import CONFIG_NAME as MODEL_CONFIG_NAME
from longvivit.models.model import TEXT_SUBDIR, VideoTextModel
from longvivit.models.text_encoder import CONFIG_NAME as TEXT_CONFIG_NAME
from longvivit.models.text_encoder import TextEncoder
from longvivit.models.video_encoder import CONFIG_NAME as VIDEO_CONFIG_NAME

log = logging.getLogger(__name__)

TEXT_PREFIX = "model.text_encoder."
LOGIT_KEY = "model.logit_scale"


def _not_a_video_text_model(source: Path, encoder: object) -> ValueError:
    # A captioner carries only the video encoder; retrieval needs the text tower of the export it came from.
    return ValueError(
        f"{source} is a captioner, not a video-text model (both towers)"
        + (f"; its video encoder came from {encoder}" if encoder else "")
    )


def source_config(source: str | Path, checkpoint: Mapping[str, Any] | None = None) -> VideoTextConfig:
    """The model config a checkpoint or folder was saved with.

    Args:
        source: Lightning ``.ckpt`` written by ``longvivit fit`` or a folder from ``save_pretrained`` / export.
        checkpoint: The ``.ckpt`` already read (:func:`~longvivit.models.files.read_checkpoint`), so that it is
            not read again.

    Returns:
        The config (video, text, temperature settings).
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"no model at {source}")
    refuse_deepspeed_folder(source)
    if source.is_dir():
        if not (source / VIDEO_CONFIG_NAME).is_file():
            from longvivit.captioning.model import CONFIG_NAME as CAPTIONER_CONFIG_NAME  # captioning builds on us

            if (source / CAPTIONER_CONFIG_NAME).is_file():
                raise _not_a_video_text_model(source, None)
            raise FileNotFoundError(f"{source} is not a saved model: no {VIDEO_CONFIG_NAME}")
        video = VideoEncoderConfig.load(source / VIDEO_CONFIG_NAME)
        meta_path = source / MODEL_CONFIG_NAME
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        text_cfg_path = source / TEXT_SUBDIR / TEXT_CONFIG_NAME
        text = None
        if text_cfg_path.is_file():  # build the tower from the folder itself, not from where it was first loaded
            saved = json.loads(text_cfg_path.read_text())
            text = TextEncoderConfig(**{**saved, "name_or_path": str(text_cfg_path.parent)})
        return VideoTextConfig(
            video=video,
            text=text or TextEncoderConfig(embed_dim=video.embed_dim),
            **{k: meta[k] for k in ("init_logit_scale", "max_logit_scale") if k in meta},
        )
    hp = (read_checkpoint(source) if checkpoint is None else checkpoint).get("hyper_parameters", {})
    if "resampler" in hp:
        raise _not_a_video_text_model(source, hp.get("encoder"))
    if "video" not in hp:
        raise ValueError(f"{source} has no model config in its hyper_parameters (not written by longvivit fit?)")
    return VideoTextConfig(
        video=VideoEncoderConfig.from_dict(hp["video"]),
        text=TextEncoderConfig(**hp["text"]),
        init_logit_scale=hp.get("init_logit_scale", 1 / 0.07),
        max_logit_scale=hp.get("max_logit_scale", 100.0),
    )


def load_weights_into(
    model: VideoTextModel, source: str | Path, checkpoint: Mapping[str, Any] | None = None
) -> list[str]:
    """Load both towers and the temperature of ``source`` into ``model``, adapting the video encoder's shapes.

    Args:
        model: Target model (modified in place); its config decides frame count and image size.
        source: Lightning ``.ckpt``, a ``VideoTextModel.save_pretrained`` / export folder, or a folder with
            only a video encoder (the text tower then keeps its initialisation, which is reported).
        checkpoint: The ``.ckpt`` already read, so that it is not read again.

    Returns:
        One message per adaptation or partial load (also logged).
    """
    source = Path(source)
    # A .ckpt is read once for both towers (it can hold GBs of optimizer state).
    if not source.is_dir() and checkpoint is None:
        checkpoint = read_checkpoint(source)
    state = None if checkpoint is None else checkpoint["state_dict"]
    video_source = source if state is None else state
    # the encoder's adaptations are logged where they are made (models.init)
    msgs = [f"video encoder: {m}" for m in load_pretrained(model.video_encoder, video_source)]
    num_encoder_msgs = len(msgs)
    if state is None:
        text_dir = source / TEXT_SUBDIR
        if text_dir.is_dir():
            model.text_encoder.load_state_dict(TextEncoder.from_pretrained(text_dir).state_dict())
            msgs.append(f"text tower loaded from {text_dir}")
        else:
            msgs.append("text tower kept at its initialisation (the folder has no text/ tower)")
        meta_path = source / MODEL_CONFIG_NAME
        if meta_path.is_file():
            with torch.no_grad():
                model.logit_scale.fill_(json.loads(meta_path.read_text())["log_logit_scale"])
    else:
        text = {k[len(TEXT_PREFIX):]: v for k, v in state.items() if k.startswith(TEXT_PREFIX)}
        if text:
            model.text_encoder.load_state_dict(text)
            msgs.append(f"text tower loaded ({len(text)} tensors)")
        else:
            msgs.append("text tower kept at its initialisation (no text tower in the checkpoint)")
        if LOGIT_KEY in state:
            with torch.no_grad():
                model.logit_scale.copy_(state[LOGIT_KEY])
    msgs.append(f"logit scale {model.get_logit_scale().item():.2f}")
    for m in msgs[num_encoder_msgs:]:
        log.info("loaded %s: %s", source, m)
    return msgs


def load_model(source: str | Path, **video_overrides: Any) -> tuple[VideoTextModel, list[str]]:
    """Build the model a checkpoint or folder describes and load its weights.

    Args:
        source: See :func:`load_weights_into`.
        **video_overrides: Changes to the video config, e.g. ``num_frames=128`` to evaluate a 16-frame model on
            long videos (the temporal position table is extended) or ``mask_ratio``.

    Returns:
        ``(model in eval mode, adaptation messages)``.
    """
    source = Path(source)
    checkpoint = read_checkpoint(source) if source.is_file() else None  # read once, for config and weights
    cfg = source_config(source, checkpoint)
    cfg = dataclasses.replace(cfg, video=apply_overrides(cfg.video, video_overrides, source))
    model = VideoTextModel(cfg)
    msgs = load_weights_into(model, source, checkpoint)
    return model.eval(), msgs
