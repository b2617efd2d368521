"""LongViViT: contrastive pre-training of video-first encoders beyond 16 frames."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from longvivit.config import PreprocessConfig, TextEncoderConfig, VideoEncoderConfig, VideoTextConfig

if TYPE_CHECKING:
    from longvivit.models.video_encoder import VideoEncoder

__version__ = "0.1.0"

__all__ = [
    "PreprocessConfig",
    "TextEncoderConfig",
    "VideoEncoder",
    "VideoEncoderConfig",
    "VideoTextConfig",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # Lazy: tools that only need configs or shard writing (and every spawned worker) skip importing torch.
    if name == "VideoEncoder":
        from longvivit.models.video_encoder import VideoEncoder

        return VideoEncoder
    raise AttributeError(f"module 'longvivit' has no attribute {name!r}")
