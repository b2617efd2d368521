"""An encoder's folder (``config.json`` + ``model.safetensors``), as written and read by
:meth:`VideoEncoder.save_pretrained <longvivit.models.video_encoder.VideoEncoder.save_pretrained>` and
:meth:`~longvivit.models.video_encoder.VideoEncoder.from_pretrained`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from longvivit.config import VideoEncoderConfig

if TYPE_CHECKING:
    from longvivit.models.video_encoder import VideoEncoder

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def save_encoder_folder(model: VideoEncoder, directory: str | Path) -> Path:
    """Write ``model``'s config and weights (safetensors, on the CPU) to ``directory``, created if needed."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.cfg.save(directory / CONFIG_NAME)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    return directory


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
    cfg = VideoEncoderConfig.load(Path(directory) / CONFIG_NAME)
    if overrides:
        cfg = cfg.replace(**overrides)
    model = cls(cfg)
    model.adaptations = tuple(load_pretrained(model, directory))
    # An export also says how its frames were sampled: extract_features takes the rate from it.
    model.preprocess = load_preprocess_config(directory)
    return model.eval()
