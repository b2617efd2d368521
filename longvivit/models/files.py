"""Reading model files safely: torch checkpoints (tensors only), Lightning's DeepSpeed folders, local Hugging Face
folders (pooler or not, quietly)."""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A torch checkpoint (Lightning ``.ckpt`` or plain torch file) as a dict, tensors and plain types only.

    Never unpickles arbitrary objects (``weights_only=True``).

    Raises:
        ValueError: For a file torch cannot read this way (not a checkpoint) or one that holds no dict.
    """
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise ValueError(f"{path} is not a checkpoint torch can read ({type(err).__name__})") from err
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def refuse_deepspeed_folder(path: str | Path) -> None:
    """A clear error for the folder Lightning's DeepSpeed strategy writes as ``last.ckpt``, which would otherwise
    be read as an export folder ("no config.json").

    Raises:
        ValueError: When ``path`` is such a folder, with the command that consolidates it into one ``.ckpt``.
    """
    path = Path(path)
    if path.is_dir() and (path / "latest").is_file() and (path / "checkpoint").is_dir():
        fp32 = path.with_name(path.name.removesuffix(".ckpt") + "-fp32.ckpt")
        raise ValueError(
            f"{path} is a DeepSpeed checkpoint folder (sharded optimizer and model states): consolidate it into one "
            f"checkpoint first, then use that file: python -c \"from lightning.pytorch.utilities.deepspeed import "
            f"convert_zero_checkpoint_to_fp32_state_dict as c; c('{path}', '{fp32}')\""
        )


def saved_without_pooler(folder: str | Path) -> bool:
    """True for a local Hugging Face folder whose safetensors weights hold no ``pooler.`` tensor.

    BERT and ViT build a [CLS] pooler by default that our towers never use; loading a folder saved without it
    with the default makes transformers report its weights as missing (and the converse as unexpected).
    """
    files = sorted(Path(folder).glob("*.safetensors")) if Path(folder).is_dir() else []
    if not files:
        return False  # a hub name, or .bin weights: load as the checkpoint declares
    keys = []
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            keys.extend(st.keys())
    return not any(k.startswith("pooler.") or ".pooler." in k for k in keys)


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    """Load or save a transformers model without its per-call progress bar ("Loading weights: 100%|...").

    The bar suits a multi-GB download, not a local tower that loads in a fraction of a second at every stage,
    evaluation and export; the caller's setting is restored afterwards.
    """
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
