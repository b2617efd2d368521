"""The joint video-text model: both towers and the learned temperature.

Like open_clip's ``CLIP``, the model only returns normalised features and the logit scale; the contrastive
loss (and its gather across ranks) lives in :mod:`longvivit.loss`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longvivit.config import VideoTextConfig
from longvivit.models.masking import Generators
from longvivit.models.text_encoder import TextEncoder
from longvivit.models.video_encoder import VideoEncoder

CONFIG_NAME = "video_text_config.json"
TEXT_SUBDIR = "text"


class VideoTextModel(nn.Module):
    """Video encoder + text tower + learnable ``logit_scale`` (stored as a log, like CLIP).

    Args:
        cfg: Both towers' configs and the temperature settings.
        video_encoder: A built video encoder to use instead of ``VideoEncoder(cfg.video)``.
        text_encoder: A built text tower to use instead of ``TextEncoder(cfg.text)`` (e.g. a tiny random
            one from :meth:`TextEncoder.from_config`). Its ``embed_dim`` must match the video one.

    Attributes:
        video_encoder: :class:`VideoEncoder`.
        text_encoder: :class:`TextEncoder`.
        logit_scale: Scalar parameter, log of 1/temperature.
    """

    def __init__(
        self,
        cfg: VideoTextConfig | None = None,
        video_encoder: VideoEncoder | None = None,
        text_encoder: TextEncoder | None = None,
    ) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else VideoTextConfig()
        self.video_encoder = video_encoder if video_encoder is not None else VideoEncoder(cfg.video)
        self.text_encoder = text_encoder if text_encoder is not None else TextEncoder(cfg.text)
        if self.text_encoder.embed_dim != self.video_encoder.cfg.embed_dim:
            raise ValueError(
                f"text embed_dim {self.text_encoder.embed_dim} != video embed_dim {self.video_encoder.cfg.embed_dim}"
            )
        # keep cfg describing the towers actually held, whichever way they were built
        self.cfg = dataclasses.replace(cfg, video=self.video_encoder.cfg, text=self.text_encoder.cfg)
        if not 0 < self.cfg.init_logit_scale <= self.cfg.max_logit_scale:
            raise ValueError(
                f"need 0 < init_logit_scale ({self.cfg.init_logit_scale}) <= max_logit_scale "
                f"({self.cfg.max_logit_scale})"
            )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(self.cfg.init_logit_scale)))

    # ----------------------------------------------------------------- encoders
    def get_logit_scale(self) -> Tensor:
        """1/temperature, exponentiated and clamped at ``cfg.max_logit_scale`` (CLIP's 100).

        Past the clamp the gradient to ``logit_scale`` is zero, so the temperature stops falling.
        """
        return self.logit_scale.exp().clamp(max=self.cfg.max_logit_scale)

    def encode_video(
        self,
        video: Tensor,
        mask_ratio: float | None = None,
        generator: Generators = None,
        num_valid_frames: Tensor | None = None,
    ) -> Tensor:
        """(B, T, 3, H, W) normalised frames -> (B, embed_dim) L2-normalised features.

        Args:
            video: Frames.
            mask_ratio: Fraction of tubelets dropped; ``None`` uses the encoder's training ratio in training mode
                and none in eval mode.
            generator: Optional RNG of the masks, or one per video (``masking.video_generator``).
            num_valid_frames: Optional (B,) real frames per clip, the rest padding (see :meth:`VideoEncoder.forward`).
        """
        emb = self.video_encoder(video, mask_ratio=mask_ratio, generator=generator, num_valid_frames=num_valid_frames)
        return F.normalize(emb, dim=-1)

    def encode_image(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) normalised images -> (B, embed_dim) L2-normalised features (2D patch path)."""
        return F.normalize(self.video_encoder.encode_image(images), dim=-1)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, L) tokens from ``text_encoder.tokenize`` -> (B, embed_dim) L2-normalised features."""
        return F.normalize(self.text_encoder(input_ids, attention_mask), dim=-1)

    def forward(
        self,
        video: Tensor | None = None,
        images: Tensor | None = None,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        mask_ratio: float | None = None,
        num_valid_frames: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Features for whichever inputs are given, plus the logit scale.

        Args:
            video: (B, T, 3, H, W) frames, or ``None``.
            images: (B, 3, H, W) images, or ``None`` (not together with ``video``).
            input_ids: (B, L) caption tokens, or ``None``.
            attention_mask: (B, L); defaults to all ones.
            mask_ratio: Tubelet mask ratio for ``video``; ``None`` = the encoder's default.
            num_valid_frames: Optional (B,) real frames of each ``video`` clip (the rest pads the window).

        Returns:
            ``{"video_features" | "image_features": (B, D), "text_features": (B, D), "logit_scale": ()}``
            with only the keys whose inputs were given; features are L2-normalised and the scale is
            already exponentiated and clamped.
        """
        if video is not None and images is not None:
            raise ValueError("pass video or images, not both: they are separate batches")
        if video is None and images is None and input_ids is None:
            raise ValueError("nothing to encode: pass video, images and/or input_ids")
        out: dict[str, Tensor] = {}
        if video is not None:
            out["video_features"] = self.encode_video(video, mask_ratio=mask_ratio, num_valid_frames=num_valid_frames)
        if images is not None:
            out["image_features"] = self.encode_image(images)
        if input_ids is not None:
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            out["text_features"] = self.encode_text(input_ids, attention_mask)
        out["logit_scale"] = self.get_logit_scale()
        return out

    # ----------------------------------------------------------------- optimiser hooks
    def no_weight_decay(self) -> set[str]:
        """Full parameter names to exclude from weight decay: ``logit_scale`` and the video tables."""
        return {"logit_scale"} | {f"video_encoder.{n}" for n in self.video_encoder.no_weight_decay()}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing in both towers."""
        self.video_encoder.set_grad_checkpointing(enable)
        self.text_encoder.set_grad_checkpointing(enable)

    # ----------------------------------------------------------------- persistence
    def save_pretrained(self, directory: str | Path) -> Path:
        """Video encoder files in ``directory``, the text tower in ``directory/text/``, and
        ``video_text_config.json`` with the temperature settings and the learned scale.

        Returns:
            The directory.
        """
        directory = Path(directory)
        self.video_encoder.save_pretrained(directory)
        self.text_encoder.save_pretrained(directory / TEXT_SUBDIR)
        meta: dict[str, Any] = {
            "init_logit_scale": self.cfg.init_logit_scale,
            "max_logit_scale": self.cfg.max_logit_scale,
            "logit_scale": self.get_logit_scale().item(),  # readable 1/temperature
            "log_logit_scale": self.logit_scale.item(),  # the raw parameter, restored exactly
        }
        (directory / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, **video_overrides: object) -> VideoTextModel:
        """Load a folder written by :meth:`save_pretrained`.

        Args:
            directory: The folder.
            **video_overrides: Passed to :meth:`VideoEncoder.from_pretrained`, e.g. ``num_frames=128`` to
                extend a short-clip model to long videos.

        Returns:
            The model in eval mode, with the saved logit scale.
        """
        directory = Path(directory)
        meta = json.loads((directory / CONFIG_NAME).read_text())
        video = VideoEncoder.from_pretrained(directory, **video_overrides)
        text = TextEncoder.from_pretrained(directory / TEXT_SUBDIR)
        cfg = VideoTextConfig(
            video=video.cfg,
            text=text.cfg,
            init_logit_scale=meta["init_logit_scale"],
            max_logit_scale=meta["max_logit_scale"],
        )
        model = cls(cfg, video_encoder=video, text_encoder=text)
        with torch.no_grad():
            model.logit_scale.fill_(meta["log_logit_scale"])
        return model.eval()
