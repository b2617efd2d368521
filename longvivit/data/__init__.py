"""Data: frame sampling, decoding, webdataset shards, and the LightningDataModule.

``load_clips`` is the public entry point for reading clips (README, "Data"). Heavier pieces
(decord, webdataset, Lightning) are imported on first use, so ``import longvivit.data`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from longvivit.data.sampling import frame_indices

_LAZY = {
    "load_clips": "longvivit.data.clips",
    "ClipIterator": "longvivit.data.clips",
    "ShardDataset": "longvivit.data.shards",
    "SkipLog": "longvivit.data.shards",
    "TooManyFailuresError": "longvivit.data.shards",
    "expand_shards": "longvivit.data.shards",
    "collate": "longvivit.data.collate",
    "load_tokenizer": "longvivit.data.collate",
    "DecodeError": "longvivit.data.decode",
    "SampleError": "longvivit.data.decode",
    "OtherMediaError": "longvivit.data.decode",
    "decode_video": "longvivit.data.decode",
    "decode_video_file": "longvivit.data.decode",
    "decode_image": "longvivit.data.decode",
    "read_frames": "longvivit.data.decode",
    "preprocess_frames": "longvivit.data.decode",
    "ShardLoader": "longvivit.data.datamodule",
    "VideoTextDataModule": "longvivit.data.datamodule",
}

__all__ = ["frame_indices", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'longvivit.data' has no attribute {name!r}")
