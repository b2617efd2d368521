"""``longvivit export`` of a captioning checkpoint: the self-contained captioner folder, safetensors and JSON only.

A ``CaptioningModule`` checkpoint holds only the trained tensors and names its frozen encoder by an absolute path,
so it is tied to the machine it was trained on. The folder written here is the one ``model.save_dir`` writes at
the end of ``fit`` (a copy of the encoder, the trained tensors, the training data's preprocessing), so a run
whose recipe had no ``save_dir`` (the full recipe) or that stopped early still gets one.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import torch

from longvivit.captioning.model import CONFIG_NAME, load_captioner


def is_captioner_checkpoint(source: str | Path) -> bool:
    """Whether ``source`` is a ``CaptioningModule`` Lightning checkpoint (its hyperparameters name a resampler).

    Reads the file memory-mapped with ``weights_only=True``; anything torch cannot read that way is not one.
    """
    source = Path(source)
    if not source.is_file():
        return False
    try:
        ckpt = torch.load(str(source), map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError):
        return False
    return isinstance(ckpt, dict) and "resampler" in (ckpt.get("hyper_parameters") or {})


def export_captioner(source: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write the captioner folder of a ``CaptioningModule`` checkpoint (layout in :mod:`longvivit.captioning.model`).

    The folder is built beside ``out`` and moved into place only once complete.

    Args:
        source: ``.ckpt`` written by ``longvivit fit`` with a captioning recipe (its encoder path must exist).
        out: Destination folder; must not exist or be empty unless ``overwrite``.
        overwrite: Replace a previous captioner folder in ``out`` (it must hold ``captioner_config.json``).

    Returns:
        The folder.

    Raises:
        FileExistsError: ``out`` is in use and ``overwrite`` is off, or it is not a captioner folder.
    """
    from longvivit.export import source_preprocess

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file; --out names the folder to write")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass --overwrite to replace a previous export")
        if not (out / CONFIG_NAME).is_file():
            raise FileExistsError(f"{out} is not a captioner folder (no {CONFIG_NAME}); not replacing it")
    model = load_captioner(source)
    # the frames as the captioner was trained: the checkpoint's data settings, as `longvivit caption` reads them
    pre = source_preprocess(source, model.encoder.cfg)
    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, pre)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out
