"""DiDeMo -> manifest: one entry per video with its descriptions as a paragraph, or one per described moment.

Official format (source: DiDeMo release, https://github.com/LisaAnne/LocalizingMoments, ``data/train_data.json``,
``val_data.json``, ``test_data.json``; Hendricks et al. "Localizing Moments in Video with Natural Language",
ICCV 2017)::

    [{"annotation_id": 24662, "description": "the girl jumps off the bed",
      "video": "54445519@N00_2495737481_9cf5b6e23f.mov", "times": [[3, 3], [3, 3], [2, 3], [3, 3]],
      "download_link": "https://www.flickr.com/...", "num_segments": 6}, ...]

Videos are cut in 5-second chunks (the last may be shorter, videos over 30 s were cut at 30 s); ``times`` holds
each annotator's first and last chunk, so ``[3, 3]`` is 15-20 s. The moment used here is the pair most
annotators chose (the first of those on a tie): ``start = 5 * first``, ``end = 5 * (last + 1)``, which
make_shards clamps to the video's length.

Modes:

- ``paragraphs`` (default): paragraph-to-video retrieval (Zhang et al. ECCV 2018, as used by CLIP4Clip and
  Frozen on ``test_data.json``): one entry per video, caption = its descriptions joined in the order of their
  moments, with ``steps`` and ``segments`` kept.
- ``segments``: one entry per description with ``start`` / ``end`` and the annotators' ``times``.

Videos keep the Flickr name of the ``video`` field with its extension (``.mov``, ``.avi``, ``.mp4``, ...) or get a
converted one appended (``<video>.mp4``, as the AWS download script writes them); both are looked up anywhere
under ``--videos``.

    python data/didemo.py --annotations test_data.json --videos didemo/videos --out didemo_test_para.jsonl
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python data/didemo.py`: the package lives one folder up
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data import (  # noqa: E402
    add_annotation_args,
    add_common_args,
    build_manifest,
    first_found,
    paragraph_fields,
    read_annotation_files,
)

CHUNK_SECONDS = 5.0


def moment(times: Sequence[Any]) -> tuple[float, float] | None:
    """``(start, end)`` in seconds of the chunk pair most annotators chose; ``None`` without a valid pair."""
    pairs = [(int(t[0]), int(t[1])) for t in times
             if isinstance(t, Sequence) and len(t) == 2 and all(isinstance(x, int | float) for x in t)]
    pairs = [(first, last) for first, last in pairs if 0 <= first <= last]
    if not pairs:
        return None
    (first, last), _ = Counter(pairs).most_common(1)[0]  # Counter keeps first-seen order on ties
    return first * CHUNK_SECONDS, (last + 1) * CHUNK_SECONDS


def video_names(video: str) -> tuple[str, ...]:
    """File stems a video may have: the field itself (``<video>.mp4`` converted) and the field's own stem."""
    return (video, Path(video).stem) if Path(video).suffix else (video,)


def build_entries(files: Sequence[tuple[str, Sequence[Mapping[str, Any]]]], mode: str) -> Iterator[dict[str, Any]]:
    """Manifest entries (``"video_id"`` = the ``video`` field, path resolved later).

    Args:
        files: ``(split label, annotation list)`` per annotation file.
        mode: ``paragraphs`` or ``segments``.

    Yields:
        Entries in annotation order (paragraphs: a video's entry where it first appears).
    """
    dropped = 0
    per_video: dict[str, tuple[str, list[tuple[float, float, str]]]] = {}
    for split, records in files:
        for n, record in enumerate(records):
            video = str(record.get("video") or "").strip()
            text = " ".join(str(record.get("description") or "").split())
            span = moment(record.get("times") or [])
            if not video or not text or span is None:
                dropped += 1
                continue
            if mode == "segments":
                yield {"id": str(record.get("annotation_id", f"{split}_{n}")), "caption": text,
                       "start": span[0], "end": span[1], "video_id": video, "split": split,
                       "times": record.get("times")}
            else:
                per_video.setdefault(video, (split, []))[1].append((*span, text))
    for video, (split, steps) in per_video.items():
        ordered = sorted(steps, key=lambda s: (s[0], s[1]))  # stable: equal moments keep the annotation order
        yield {"id": Path(video).stem, **paragraph_fields(ordered), "video_id": video, "split": split}
    if dropped:
        print(f"didemo: {dropped} annotations without a video, description or valid times dropped", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Build a DiDeMo manifest; see the module docstring. Returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_annotation_args(parser, "train_data.json, val_data.json and/or test_data.json")
    parser.add_argument("--mode", choices=("paragraphs", "segments"), default="paragraphs",
                        help="paragraphs: whole videos, caption = descriptions in moment order; segments: one clip "
                             "per description")
    add_common_args(parser)
    args = parser.parse_args(argv)
    files = read_annotation_files(parser, args, list, ("video", "description", "times"),
                                  label=lambda path: path.stem.removesuffix("_data"))

    return build_manifest("didemo", args, build_entries(files, args.mode),
                          find=lambda e, found: first_found(found, video_names(e["video_id"])),
                          expected=lambda e: args.videos / e["video_id"])


if __name__ == "__main__":
    sys.exit(main())
