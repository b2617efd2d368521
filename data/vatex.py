"""VATEX -> manifest: one entry per 10-second clip with its ten English captions.

Official format (source: VATEX release, https://eric-xw.github.io/vatex-website/download.html,
``vatex_training_v1.0.json``, ``vatex_validation_v1.0.json``, ``vatex_public_test_english_v1.1.json``; Wang et al.
"VATEX: A Large-Scale, High-Quality Multilingual Dataset for Video-and-Language Research", ICCV 2019)::

    [{"videoID": "Ptf_2VRj-V0_000122_000132",
      "enCap": ["A man is playing a guitar ...", ...],    # 10: five regular, five parallel to the Chinese
      "chCap": ["...", ...]}, ...]                        # absent from the public test file

``videoID`` is ``<YouTube id>_<start>_<end>`` with whole seconds padded to six digits; the YouTube id itself may
hold ``_`` and ``-``. Only the English captions are used. The private test file has no captions and gives no
entries.

A video on disk is either the trimmed clip named by ``videoID`` (what most download scripts write) or the full
YouTube video named by its id, in which case the entry gets ``start`` / ``end``; any extension, any sub-folder.

    python data/vatex.py --annotations vatex_public_test_english_v1.1.json --videos vatex/videos \
        --out vatex_test.jsonl
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python data/vatex.py`: the package lives one folder up
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data import add_annotation_args, add_common_args, build_manifest, read_annotation_files  # noqa: E402

_CLIP_ID = re.compile(r"^(?P<youtube_id>.+)_(?P<start>\d+)_(?P<end>\d+)$")
# a split label from the release's file names
_SPLITS = (("training", "train"), ("validation", "val"), ("public_test", "test"), ("private_test", "private_test"))


def parse_clip_id(video_id: str) -> tuple[str, float, float] | None:
    """``(youtube_id, start, end)`` of a VATEX ``videoID``; ``None`` when it does not have that form."""
    m = _CLIP_ID.match(video_id)
    if m is None or int(m["end"]) <= int(m["start"]):
        return None
    return m["youtube_id"], float(int(m["start"])), float(int(m["end"]))


def split_of(path: Path) -> str:
    """``train`` / ``val`` / ``test`` / ``private_test`` from a release file name, else the file's stem."""
    return next((label for word, label in _SPLITS if word in path.stem), path.stem)


def build_entries(files: Sequence[tuple[str, Any]]) -> Iterator[dict[str, Any]]:
    """Manifest entries (path resolved later): ``{"id", "caption", "youtube_id", "clip_start", "clip_end", "split"}``.

    Args:
        files: ``(split label, decoded annotation list)`` per file.

    Yields:
        One entry per clip with English captions, first occurrence of a ``videoID`` kept.
    """
    seen: set[str] = set()
    uncaptioned = 0
    for split, records in files:
        for record in records:
            vid = str(record.get("videoID") or "").strip()
            captions = [" ".join(c.split()) for c in record.get("enCap") or [] if isinstance(c, str)]
            captions = [c for c in captions if c]
            if not vid or vid in seen:
                continue
            seen.add(vid)
            if not captions:
                uncaptioned += 1
                continue
            entry: dict[str, Any] = {"id": vid, "caption": captions if len(captions) > 1 else captions[0],
                                     "split": split}
            clip = parse_clip_id(vid)
            if clip is not None:
                entry.update(youtube_id=clip[0], clip_start=clip[1], clip_end=clip[2])
            yield entry
    if uncaptioned:
        print(f"vatex: {uncaptioned} clips without English captions skipped (the private test set has none)",
              file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Build a VATEX manifest; see the module docstring. Returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_annotation_args(parser, "vatex_training_v1.0.json, vatex_validation_v1.0.json and/or "
                                "vatex_public_test_english_v1.1.json")
    add_common_args(parser)
    args = parser.parse_args(argv)
    files = read_annotation_files(parser, args, list, ("videoID",), label=split_of)

    def find(entry: dict[str, Any], found: Mapping[str, Path]) -> Path | None:
        # the trimmed clip first; the full video next, cut by start/end at shard time
        if entry["id"] in found:
            return found[entry["id"]]
        full = found.get(entry.get("youtube_id", ""))
        if full is not None:
            entry.update(start=entry["clip_start"], end=entry["clip_end"])
        return full

    return build_manifest("vatex", args, build_entries(files), key="id", find=find)


if __name__ == "__main__":
    sys.exit(main())
