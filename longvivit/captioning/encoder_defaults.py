"""What a video-to-text recipe leaves unset comes from the frozen encoder: frames, image size, fps and sampling.

The captioner should see frames as its frozen encoder was trained on them. An export records that in its
``preprocessor_config.json`` and a contrastive checkpoint in its data hyper-parameters
(:func:`longvivit.export.recorded_preprocess`); a bare saved encoder records only its frames and size (its config),
and the frame rate is then the paper's 1 FPS. A value the user sets still wins: ``fit`` then warns where it departs
from the encoder's (another image size: ``load_encoder``; another frame rate or sampling:
:func:`~longvivit.captioning.module.sampling_mismatch`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from longvivit.config import PreprocessConfig

log = logging.getLogger(__name__)

#: Recipe keys filled from the encoder when unset (``None``): on the model (linked into the data) and on the data.
MODEL_KEYS = ("num_frames", "image_size")
DATA_KEYS = ("fps", "sampling")


def encoder_preprocess(source: str | Path | None) -> PreprocessConfig | None:
    """How the frozen encoder at ``source`` saw its training frames, or ``None`` when there is none to read.

    Args:
        source: Export folder, saved encoder folder or contrastive ``.ckpt`` (``None``: a random encoder).

    Returns:
        Frames and image size of the encoder's config (or its export's record), fps and sampling as recorded,
        else 1 FPS from the first frame. ``None`` for no source or one that cannot be read as an encoder: building
        the captioner then says what is wrong with it.
    """
    if source is None or not Path(source).exists():
        return None
    from longvivit.export import source_preprocess
    from longvivit.models.checkpoint import source_config

    try:
        return source_preprocess(source, source_config(source).video)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        log.debug("no preprocessing read from the encoder %s: %s", source, err)
        return None


def fill_from_encoder(config: Any) -> dict[str, Any]:
    """Fill a parsed captioning recipe's unset frames, image size, fps and sampling from its encoder, in place.

    Args:
        config: The parsed recipe (a jsonargparse namespace with ``model`` and ``data``); ``None`` marks a value
            the user did not set. ``model.num_frames`` / ``model.image_size`` are copied into the data as the
            recipe's links do.

    Returns:
        ``{"model.num_frames": 16, ...}``, the values filled.
    """
    model, data = config["model"], config["data"]
    unset = [f"model.{k}" for k in MODEL_KEYS if model[k] is None] + [f"data.{k}" for k in DATA_KEYS if data[k] is None]
    if not unset:
        return {}
    trained = encoder_preprocess(model["encoder"])
    pre = trained or PreprocessConfig()
    filled: dict[str, Any] = {}
    for key in unset:
        section, name = key.split(".")
        value = getattr(pre, name)
        config[section][name] = filled[key] = value
        if section == "model":
            data[name] = value  # what the link would have copied
    if trained is not None:
        log.info("from the frozen encoder %s: %s", model["encoder"], ", ".join(f"{k}={v}" for k, v in filled.items()))
    return filled
