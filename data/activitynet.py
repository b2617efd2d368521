"""ActivityNet Captions -> manifest: one entry per video with its paragraph, or one per described event.

Official format (source: ActivityNet Captions release, https://cs.stanford.edu/people/ranjaykrishna/densevid/,
``captions.zip`` with ``train.json``, ``val_1.json``, ``val_2.json``; Krishna et al. "Dense-Captioning Events in
Videos", ICCV 2017)::

    {"v_QOlSCBRmfWY": {"duration": 82.73, "timestamps": [[0.83, 19.86], [17.37, 60.81], [56.26, 79.42]],
                       "sentences": ["A young woman is seen standing in a room.", " She then dances ...", ...]}}

Keys are the YouTube id behind a ``v_`` prefix; times are seconds; events overlap, sentences often start with a
space, and a few events end after ``duration`` (clamped here) or have no length (dropped, counted on stderr).
``val_1.json`` and ``val_2.json`` describe the same videos by two groups of annotators.

Modes:

- ``paragraphs`` (default): the long-video paragraph-to-video retrieval protocol (Zhang et al. ECCV 2018, as used
  by CLIP4Clip and Frozen on ``val_1.json``): one entry per video, caption = its sentences joined in time order,
  with ``steps`` and ``segments`` kept (as ``youcook2.py --mode full``). A video found in several files gets one
  paragraph per file as its captions (``val_1`` + ``val_2``: two queries).
- ``segments``: one entry per event with ``start`` / ``end``.

Videos are ``v_<id>.{mp4,mkv,webm,...}`` (the ActivityNet download) or ``<id>.*`` (a plain youtube-dl download),
anywhere under ``--videos``: both names are looked up.

    python data/activitynet.py --annotations val_1.json --videos activitynet/videos --out anet_val1_para.jsonl
    python data/activitynet.py --annotations train.json --mode segments --videos activitynet/videos \
        --out anet_train_events.jsonl
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python data/activitynet.py`: the package lives one folder up
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data import (  # noqa: E402
    add_annotation_args,
    add_common_args,
    build_manifest,
    first_found,
    paragraph_fields,
    read_annotation_files,
)

PREFIX = "v_"


def video_names(key: str) -> tuple[str, ...]:
    """File stems a video may have on disk: with and without the ``v_`` prefix (the annotation key first)."""
    return (key, key[len(PREFIX):]) if key.startswith(PREFIX) else (key, PREFIX + key)


def events(record: Mapping[str, Any]) -> tuple[list[tuple[float, float, str]], int]:
    """The usable ``(start, end, sentence)`` events of one video, in time order, and how many were dropped.

    An end past the video's duration is clamped to it; an event with no length after that, a blank sentence or
    times that are not numbers are dropped.
    """
    duration = _number(record.get("duration"))
    timestamps, sentences = record.get("timestamps") or [], record.get("sentences") or []
    kept, dropped = [], max(len(timestamps), len(sentences)) - min(len(timestamps), len(sentences))
    for times, sentence in zip(timestamps, sentences, strict=False):
        start, end = (_number(t) for t in times) if isinstance(times, Sequence) and len(times) == 2 else (None, None)
        text = " ".join(sentence.split()) if isinstance(sentence, str) else ""
        if start is None or end is None or not text:
            dropped += 1
            continue
        start = max(start, 0.0)
        if duration is not None:
            end = min(end, duration)
        if end <= start:
            dropped += 1
            continue
        kept.append((start, end, text))
    return sorted(kept, key=lambda e: (e[0], e[1])), dropped  # stable: ties keep the annotation order


def _number(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def build_entries(files: Sequence[tuple[str, Mapping[str, Any]]], mode: str) -> Iterator[dict[str, Any]]:
    """Manifest entries (``"video_id"`` set, path resolved later).

    Args:
        files: ``(split label, annotation mapping)`` per annotation file, in the order given.
        mode: ``paragraphs`` or ``segments``.

    Yields:
        Entries in annotation order (paragraphs: a video's entry where it first appears).
    """
    dropped = 0
    if mode == "segments":
        numbered: dict[str, int] = {}  # ids stay unique when two files describe one video
        for split, database in files:
            for vid, record in database.items():
                evs, lost = events(record)
                dropped += lost
                for start, end, text in evs:
                    n = numbered[vid] = numbered.get(vid, -1) + 1
                    yield {"id": f"{vid}_{n}", "caption": text, "start": start, "end": end, "video_id": vid,
                           "split": split, "duration": _number(record.get("duration"))}
    else:
        paragraphs: dict[str, dict[str, Any]] = {}
        for split, database in files:
            for vid, record in database.items():
                evs, lost = events(record)
                dropped += lost
                if not evs:
                    continue
                fields = paragraph_fields(evs)
                if vid in paragraphs:  # another annotation pass over the same video: one more query
                    paragraphs[vid]["caption"].append(fields["caption"])
                    continue
                paragraphs[vid] = {"id": vid, **fields, "caption": [fields["caption"]], "video_id": vid,
                                   "split": split, "duration": _number(record.get("duration"))}
        for entry in paragraphs.values():
            if len(entry["caption"]) == 1:
                entry["caption"] = entry["caption"][0]
            yield entry
    if dropped:
        print(f"activitynet: {dropped} events without a length, time or sentence dropped", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Build an ActivityNet Captions manifest; see the module docstring. Returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_annotation_args(parser, "train.json, val_1.json and/or val_2.json")
    parser.add_argument("--mode", choices=("paragraphs", "segments"), default="paragraphs",
                        help="paragraphs: whole videos, caption = events in time order; segments: one clip per event")
    add_common_args(parser)
    args = parser.parse_args(argv)
    files = read_annotation_files(parser, args, dict, ("timestamps", "sentences"))

    return build_manifest("activitynet", args, build_entries(files, args.mode),
                          find=lambda e, found: first_found(found, video_names(e["video_id"])))


if __name__ == "__main__":
    sys.exit(main())
