"""MSR-VTT -> manifest (the 1k-A retrieval test split by default).

Official formats this reads (sources: the MSR-VTT 10K release readme, "MSR-VTT: A Large Video Description
Dataset for Bridging Video and Language", Xu et al. CVPR 2016; the JSFusion 1k-A split (Yu et al. ECCV 2018)
as redistributed in msrvtt_data.zip by CLIP4Clip, https://github.com/ArrowLuo/CLIP4Clip#data-preparing):

- ``MSRVTT_data.json`` / ``train_val_videodatainfo.json`` / ``test_videodatainfo.json``:
  ``{"info": {...}, "videos": [{"id", "video_id": "video7010", "category", "url", "start time", "end time",
  "split": "train" | "validate" | "test"}], "sentences": [{"sen_id", "video_id", "caption"}]}``, 20 captions
  per video.
- ``MSRVTT_JSFUSION_test.csv``: header ``key,vid_key,video_id,sentence`` (e.g. ``ret0,msr9770,video9770,a
  person is connecting something to system``), one row per 1k-A test video. ``MSRVTT_train.9k.csv`` /
  ``MSRVTT_train.7k.csv`` (column ``video_id``) select training videos the same way.

Videos are ``{video_id}.mp4`` (any video extension, any sub-folder) under ``--videos``.

    python data/msrvtt.py --annotations MSRVTT_JSFUSION_test.csv MSRVTT_data.json \
        --videos MSRVTT/videos/all --out msrvtt_1ka.jsonl

A CSV decides which videos are listed (in its order); a JSON supplies all captions of each video. With a
CSV only, each video gets the CSV sentence; with a JSON only, ``--split`` picks the official split.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python data/msrvtt.py`: the package lives one folder up
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data import add_common_args, build_manifest, read_json  # noqa: E402

SPLITS = ("train", "validate", "test", "all")


def read_jsfusion_csv(path: str | Path) -> list[tuple[str, str | None]]:
    """Read a JSFusion/CLIP4Clip split CSV.

    Returns:
        ``[(video_id, sentence or None)]`` in file order, one per row (``sentence`` is absent from the
        train CSVs).
    """
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a CSV saved by Excel starts with a BOM
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "video_id" not in reader.fieldnames:
            raise ValueError(f"{path}: expected a 'video_id' column, got {reader.fieldnames}")
        rows = []
        for row in reader:
            vid = (row.get("video_id") or "").strip()
            if not vid:
                print(f"msrvtt: {path}: line {reader.line_num}: no video_id, row skipped", file=sys.stderr)
                continue
            rows.append((vid, (row.get("sentence") or "").strip() or None))
        return rows


def read_annotation_json(paths: Sequence[str | Path]) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """Merge MSR-VTT annotation JSONs.

    Returns:
        ``(videos, captions)``: video records by ``video_id`` (file order kept) and each video's captions
        ordered by ``sen_id``. A sentence found in several files (``MSRVTT_data.json`` is the union of the
        ``*_videodatainfo.json`` files) counts once.
    """
    videos: dict[str, dict[str, Any]] = {}
    sentences: dict[str, dict[tuple[int, str], None]] = {}  # an ordered set per video
    for path in paths:
        data = read_json(path)
        if "videos" not in data or "sentences" not in data:
            raise ValueError(f"{path}: not an MSR-VTT annotation file (needs 'videos' and 'sentences')")
        for video in data["videos"]:
            videos.setdefault(video["video_id"], video)
        for sen in data["sentences"]:
            caption = str(sen.get("caption") or "").strip()
            if caption:  # a blank caption is no query
                sentences.setdefault(sen["video_id"], {})[(int(sen.get("sen_id", 0)), caption)] = None
    captions = {vid: [c for _, c in sorted(items, key=lambda x: x[0])] for vid, items in sentences.items()}
    return videos, captions


def build_entries(
    csv_rows: list[tuple[str, str | None]] | None,
    videos: dict[str, dict[str, Any]],
    captions: dict[str, list[str]],
    split: str | None,
) -> list[dict[str, Any]]:
    """Manifest entries (without the resolved video path) for the selected videos.

    Args:
        csv_rows: Rows of a split CSV, or ``None`` to select by ``split`` from the JSON.
        videos: Video records from the JSON (may be empty when only a CSV is given).
        captions: Captions per video from the JSON (may be empty).
        split: Official split when selecting from the JSON (``"all"`` for every video).

    Returns:
        One entry per video: ``{"id", "caption", "split", ...}``.
    """
    entries: list[dict[str, Any]] = []
    if csv_rows is not None:
        seen: set[str] = set()
        for vid, sentence in csv_rows:
            if vid in seen:  # the 9k/7k CSVs can repeat ids; one entry per video
                continue
            seen.add(vid)
            caps = captions.get(vid) or ([sentence] if sentence else [])
            if not caps:
                print(f"msrvtt: no caption for {vid}, skipped", file=sys.stderr)
                continue
            entry: dict[str, Any] = {"id": vid, "caption": caps if len(caps) > 1 else caps[0]}
            if sentence:
                entry["jsfusion_sentence"] = sentence  # the single 1k-A query, kept for the 1-caption protocol
            entry["split"] = split or videos.get(vid, {}).get("split", "test")
            entries.append(entry)
        return entries
    for vid, video in videos.items():
        if split not in (None, "all") and video.get("split") != split:
            continue
        caps = captions.get(vid, [])
        if not caps:
            continue
        entry = {"id": vid, "caption": caps, "split": video.get("split"), "category": video.get("category")}
        entries.append({k: v for k, v in entry.items() if v is not None})
    return entries


def main(argv: Sequence[str] | None = None) -> int:
    """Build an MSR-VTT manifest; see the module docstring. Returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotations", nargs="+", required=True, type=Path,
                        help="MSRVTT_JSFUSION_test.csv and/or MSRVTT_data.json (or *_videodatainfo.json)")
    parser.add_argument("--split", choices=SPLITS, default=None,
                        help="official split when no CSV is given (default: test); with a CSV, the split label")
    add_common_args(parser)
    args = parser.parse_args(argv)

    csv_paths = [p for p in args.annotations if p.suffix.lower() == ".csv"]
    json_paths = [p for p in args.annotations if p.suffix.lower() == ".json"]
    if len(csv_paths) > 1 or len(csv_paths) + len(json_paths) != len(args.annotations):
        parser.error("give at most one .csv and any number of .json annotation files")
    csv_rows = read_jsfusion_csv(csv_paths[0]) if csv_paths else None
    videos, captions = read_annotation_json(json_paths) if json_paths else ({}, {})
    split = args.split if (args.split or csv_rows is not None) else "test"
    entries = build_entries(csv_rows, videos, captions, split)

    return build_manifest("msrvtt", args, entries, key="id")


if __name__ == "__main__":
    sys.exit(main())
