"""Helpers of the dataset-builder tests: placeholder videos, reading what a builder wrote.

The video folders hold placeholder files: the builders only check that a video exists, they never decode.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `data` is a top-level folder of the repo, not part of the installed package
    sys.path.insert(0, str(ROOT))

FIX = Path(__file__).parent / "fixtures"


def touch(root: Path, *relpaths: str) -> None:
    """Placeholder video files at ``root / relpath``."""
    for rel in relpaths:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x00\x00\x00\x18ftypisom placeholder")


def read_manifest(path: Path) -> list[dict]:
    """The JSON objects of a JSONL file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def resolve(manifest: Path, entry: dict) -> Path:
    """The absolute path of an entry's video."""
    return (manifest.parent / entry["video"]).resolve()
