"""NExT-QA (multiple choice) -> QA file, one question a line, as ``longvivit.captioning.qa.read_qa_jsonl`` reads it.

Official format (source: NExT-QA release, https://github.com/doc-doc/NExT-QA, ``dataset/nextqa/{train,val,
test}.csv`` and ``map_vid_vidorID.json``; Xiao et al. "NExT-QA: Next Phase of Question-Answering to Explaining
Temporal Actions", CVPR 2021)::

    video,frame_count,width,height,question,answer,qid,type,a0,a1,a2,a3,a4
    4010069381,369,640,480,how do the two man play the instrument,0,6,CH,roll the handle,tap their feet,...

``answer`` is the index of the right option among ``a0``..``a4``; ``qid`` numbers the questions of one video, so
the id written here is ``<video>_<qid>``; ``type`` is the question type (CW/CH causal, TN/TC/TP temporal, DC/DL/DO
descriptive), kept for per-type accuracy. NExT-GQA's CSVs, which give the answer as the option's text, are read
too. ``map_vid_vidorID.json`` maps a video to its place in the release's ``NExTVideo`` folder::

    {"4010069381": "1025/4010069381", ...}   ->   NExTVideo/1025/4010069381.mp4

Videos are looked up by file name (the map's, else the video id) anywhere under ``--videos`` and with any
extension; the map gives the path written with ``--keep-missing``.

Output lines: ``{"video", "question", "options", "answer", "id", "video_id", "qid", "type"}``.

    python data/nextqa.py --annotations val.csv --map map_vid_vidorID.json --videos NExTVideo --out nextqa_val.jsonl
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python data/nextqa.py`: the package lives one folder up
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data import add_common_args, build_manifest, qa_entry, read_csv_rows, read_json  # noqa: E402

OPTION_COLUMNS = ("a0", "a1", "a2", "a3", "a4")
REQUIRED_COLUMNS = ("video", "question", "answer", "qid", *OPTION_COLUMNS)


def answer_index(answer: str, options: Sequence[str]) -> str | int:
    """The answer as an index: NExT-QA gives one, NExT-GQA the option's text (matched ignoring case and spaces)."""
    answer = answer.strip()
    if answer.isdigit():
        return answer
    texts = [" ".join(o.split()).lower() for o in options]
    text = " ".join(answer.split()).lower()
    return texts.index(text) if text in texts else answer  # an unknown text fails in qa_entry, named


def build_entries(rows: Iterator[Mapping[str, str]]) -> Iterator[dict[str, Any]]:
    """QA records (video resolved later) with ``"video_id"`` naming the video.

    Yields:
        One record per well-formed row, in CSV order; a malformed one is named on stderr and skipped.
    """
    seen: set[str] = set()
    for row in rows:
        vid, qid = (row.get("video") or "").strip(), (row.get("qid") or "").strip()
        key = f"{vid}_{qid}"
        if not vid or key in seen:
            continue
        seen.add(key)
        options = [row.get(c) or "" for c in OPTION_COLUMNS]
        try:
            entry = qa_entry(row.get("question"), options, answer_index(row.get("answer") or "", options), key)
        except ValueError as err:
            print(f"nextqa: {key}: {err}; skipped", file=sys.stderr)
            continue
        entry.update(video_id=vid, qid=qid, type=(row.get("type") or "").strip() or None)
        yield entry


def main(argv: Sequence[str] | None = None) -> int:
    """Build a NExT-QA QA file; see the module docstring. Returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotations", required=True, type=Path, help="train.csv, val.csv or test.csv")
    parser.add_argument("--map", type=Path, default=None, help="map_vid_vidorID.json ({video: 'folder/vidorid'})")
    add_common_args(parser)
    args = parser.parse_args(argv)

    where: dict[str, str] = {str(k): str(v) for k, v in read_json(args.map).items()} if args.map else {}
    # the map names the file (<folder>/<vidor id>); its stem is what the index knows
    return build_manifest(
        "nextqa", args, build_entries(read_csv_rows(args.annotations, REQUIRED_COLUMNS)),
        find=lambda e, found: found.get(Path(where.get(e["video_id"], e["video_id"])).name),
        expected=lambda e: args.videos / f"{where.get(e['video_id'], e['video_id'])}.mp4")


if __name__ == "__main__":
    sys.exit(main())
