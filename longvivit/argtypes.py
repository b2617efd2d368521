"""Argument types shared by the command lines: bad values stop at parsing with one line, not deep in a run."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

Number = TypeVar("Number", int, float)


def positive(kind: Callable[[str], Number]) -> Callable[[str], Number]:
    """``type=`` for a number that must be > 0 (``0`` must not silently mean "the default")."""

    def parse(text: str) -> Number:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def non_negative_int(text: str) -> int:
    """``type=`` for counts that may be zero (worker processes)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def mask_ratio(text: str) -> float:
    """``type=`` for a tubelet mask ratio in ``[0, 1)``."""
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def fraction(text: str) -> float:
    """``type=`` for a fraction in ``[0, 1]``."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def device(text: str) -> str:
    """``type=`` for a torch device that exists on this machine."""
    import torch

    try:
        dev = torch.device(text)
    except RuntimeError as err:
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: CUDA is not available on this machine; use --device cpu")
    return text


def blocking_file(path: Path) -> Path | None:
    """The first existing non-folder among ``path``'s parents (where a folder would have to be created)."""
    return next((p for p in path.parents if p.exists() and not p.is_dir()), None)


def output_file(text: str) -> Path:
    """``type=`` for a file the command writes when done: refused at parsing when it cannot be written there, not
    after the run (an existing folder, or a file where one of its parent folders would go)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; name the file to write, e.g. {path / 'metrics.json'}")
    blocker = blocking_file(path)
    if blocker is not None:
        raise argparse.ArgumentTypeError(f"cannot write {text}: {blocker} is a file, not a folder")
    return path


def output_dir(text: str) -> Path:
    """``type=`` for a folder the command writes when done: refused at parsing when it is a file, or below one."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; name a folder to write into")
    blocker = blocking_file(path)
    if blocker is not None:
        raise argparse.ArgumentTypeError(f"cannot write into {text}: {blocker} is a file, not a folder")
    return path
