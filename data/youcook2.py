"""YouCook2 -> manifest: one entry per annotated step, or one per full video with the steps as its summary.

Official format (source: YouCook2 release, http://youcook2.eecs.umich.edu/download, readme of
``youcookii_annotations_trainval.json``; Zhou et al. "Towards Automatic Learning of Procedures from Web
Instructional Videos", AAAI 2018)::

    {"database": {"<youtube id>": {"subset": "training" | "validation", "duration": 241.64,
                                   "recipe_type": "212", "video_url": "https://www.youtube.com/watch?v=...",
                                   "annotations": [{"segment": [25, 37], "id": 0,
                                                    "sentence": "cut the onion in half and dice"}, ...]}}}

The official downloader stores videos as ``raw_videos/{training,validation,testing}/{recipe_type}/{id}.{mp4,
mkv,webm}``; any layout works here because videos are found by id anywhere under ``--videos``.

    python data/youcook2.py --annotations youcookii_annotations_trainval.json --videos raw_videos \
        --split validation --mode segments --out youcook2_val_segments.jsonl
    python data/youcook2.py ... --mode full --out youcook2_val_full.jsonl   # summarisation targets
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python data/youcook2.py`: the package lives one folder up
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data import add_common_args, build_manifest, paragraph_fields, read_json  # noqa: E402

_SPLIT_ALIASES = {"train": "training", "training": "training", "val": "validation", "validation": "validation",
                  "test": "testing", "testing": "testing", "all": "all"}


def _ordered_steps(record: dict[str, Any]) -> list[dict[str, Any]]:
    # The release lists steps in temporal order already; sorting guards hand-edited files.
    anns = [a for a in record.get("annotations", []) if (a.get("sentence") or "").strip()]
    return sorted(anns, key=lambda a: (float(a["segment"][0]), int(a.get("id", 0))))


def build_entries(database: dict[str, dict[str, Any]], split: str, mode: str) -> list[dict[str, Any]]:
    """Manifest entries (``"video_id"`` set, path resolved later) for one split.

    Args:
        database: The ``"database"`` mapping of the annotation file.
        split: ``training``, ``validation``, ``testing`` or ``all``.
        mode: ``segments`` (start/end per step, caption = the step sentence) or ``full`` (whole video,
            caption = summary = the steps joined in order).

    Returns:
        Entries in annotation-file order.
    """
    entries: list[dict[str, Any]] = []
    for vid, record in database.items():
        subset = record.get("subset")
        if split != "all" and subset != split:
            continue
        common = {"video_id": vid, "split": subset, "recipe_type": record.get("recipe_type"),
                  "duration": record.get("duration")}
        steps = _ordered_steps(record)
        if not steps:
            continue  # test annotations ship without sentences
        if mode == "segments":
            for ann in steps:
                start, end = (float(t) for t in ann["segment"])
                entries.append({"id": f"{vid}_{ann.get('id', len(entries))}", "caption": ann["sentence"].strip(),
                                "start": start, "end": end, **common})
        else:
            timed = [(float(a["segment"][0]), float(a["segment"][1]), a["sentence"]) for a in steps]
            entries.append({"id": vid, **paragraph_fields(timed), **common})
    return entries


def main(argv: Sequence[str] | None = None) -> int:
    """Build a YouCook2 manifest; see the module docstring. Returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotations", required=True, type=Path, help="youcookii_annotations_trainval.json")
    parser.add_argument("--split", default="validation", choices=sorted(_SPLIT_ALIASES),
                        help="subset to keep (default: validation, the usual evaluation split)")
    parser.add_argument("--mode", choices=("segments", "full"), default="segments",
                        help="segments: one clip per step; full: whole videos with the ordered steps as summary")
    add_common_args(parser)
    args = parser.parse_args(argv)

    data = read_json(args.annotations)
    database = data.get("database") if isinstance(data, dict) else None
    if not isinstance(database, dict) or not all(isinstance(r, dict) and "annotations" in r and "subset" in r
                                                 for r in itertools.islice(database.values(), 10)):
        parser.error(f"{args.annotations}: not the YouCook2 format ({{\"database\": {{id: record}}}} with "
                     "annotations, subset)")
    entries = build_entries(database, _SPLIT_ALIASES[args.split], args.mode)

    # the official downloader's layout: raw_videos/{training,validation,testing}/{recipe_type}/{id}.{ext}
    return build_manifest("youcook2", args, entries, expected=lambda e: (
        args.videos / str(e["split"]) / str(e["recipe_type"]) / f"{e['video_id']}.mp4"))


if __name__ == "__main__":
    sys.exit(main())
