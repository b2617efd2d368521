"""LongViViT: contrastive pre-training of video-first encoders beyond 16 frames."""

from longvivit.config import PreprocessConfig, TextEncoderConfig, VideoEncoderConfig, VideoTextConfig

__version__ = "0.1.0"

__all__ = [
    "PreprocessConfig",
    "TextEncoderConfig",
    "VideoEncoderConfig",
    "VideoTextConfig",
    "__version__",
]

try:  # the model modules land alongside; keep `import longvivit` working while they do
    from longvivit.models.video_encoder import VideoEncoder  # noqa: F401

    __all__.append("VideoEncoder")
except ImportError:  # pragma: no cover
    pass
