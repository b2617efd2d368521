"""LongViViT: contrastive pre-training of video-first encoders beyond 16 frames."""

from longvivit.config import PreprocessConfig, TextEncoderConfig, VideoEncoderConfig, VideoTextConfig
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
