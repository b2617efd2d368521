"""WebVid (2M / 10M) -> manifest: one entry per video, caption = the stock-footage title.

Official format (source: WebVid release, https://github.com/m-bain/webvid, ``results_2M_train.csv``,
``results_2M_val.csv``, ``results_10M_train.csv``; Bain et al. "Frozen in Time", ICCV 2021)::

    videoid,contentUrl,duration,page_dir,name
    21179416,https://ak.picdn.net/shutterstock/videos/21179416/preview/stock-footage-....mp4,PT00H00M11S,\
006001_006050,Aerial shot winter forest

``duration`` is ISO 8601 (``PT00H00M11S``); names holding commas are quoted. The reference download script writes
``{videos}/{page_dir}/{videoid}.mp4``; a flat ``{videos}/{videoid}.mp4`` is accepted as well.

    python data/webvid.py --annotations results_2M_val.csv --videos webvid/videos --out webvid_val.jsonl
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python data/webvid.py`: the package lives one folder up
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data import VideoTally, add_common_args, finish, index_videos, read_csv_rows  # noqa: E402

_ISO_DURATION = re.compile(r"^P(?:(\d+)D)?T?(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?$")
REQUIRED_COLUMNS = ("videoid", "page_dir", "name")


def parse_duration(value: str) -> float | None:
    """Seconds from an ISO 8601 duration (``PT00H01M05S`` -> 65.0); plain numbers pass; else ``None``."""
    value = (value or "").strip()
    try:
        return float(value)
    except ValueError:
        pass
    m = _ISO_DURATION.match(value)
    if not m or not any(m.groups()):
        return None
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in m.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def find_video(videos: Path, row: dict[str, str], found: dict[str, Path] | None = None) -> Path | None:
    """The row's video under ``videos``: the release's ``page_dir/videoid.mp4`` or flat layout first, else any
    video of that id in any sub-folder and with any extension (``found``, from :func:`data.index_videos`)."""
    vid = row["videoid"].strip()
    # a row may lack page_dir (the release's own download script drops such rows)
    for path in (videos / (row.get("page_dir") or "").strip() / f"{vid}.mp4", videos / f"{vid}.mp4"):
        if path.is_file():
            return path
    return (found or {}).get(vid)


def build_entries(rows: Iterator[dict[str, str]], videos: Path, tally: VideoTally, keep_missing: bool,
                  split: str | None = None) -> Iterator[dict[str, Any]]:
    """Manifest entries of WebVid rows, produced one at a time (``results_10M_train.csv`` has 10.7M rows).

    Args:
        rows: Rows of a results CSV.
        videos: The video folder.
        tally: Counts videos asked for and missing.
        keep_missing: Write the rows whose video is missing, at the release layout's path.
        split: Label written into each entry's ``"split"``.

    Yields:
        ``{"video", "caption", "id", "duration"?, "split"?}`` in CSV order.
    """
    seen: set[str] = set()
    found: dict[str, Path] | None = None
    for row in rows:
        vid = (row.get("videoid") or "").strip()
        caption = (row.get("name") or "").strip()
        # The 10M CSV lists a few videos twice (re-crawled with a new title): keep the first.
        if not vid or vid in seen or not caption:
            continue
        seen.add(vid)
        path = find_video(videos, row)
        if path is None:
            if found is None:  # one walk of the tree, only once the release layout misses a video
                found = index_videos(videos)
            path = find_video(videos, row, found)
        tally.add(vid, path is not None)
        if path is None:
            if not keep_missing:
                continue
            path = videos / (row.get("page_dir") or "").strip() / f"{vid}.mp4"
        entry: dict[str, Any] = {"video": str(path), "caption": caption, "id": vid}
        duration = parse_duration(row.get("duration") or "")
        if duration is not None:
            entry["duration"] = duration
        if split:
            entry["split"] = split
        yield entry


def main(argv: Sequence[str] | None = None) -> int:
    """Build a WebVid manifest; see the module docstring. Returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotations", required=True, type=Path, help="results_*.csv")
    parser.add_argument("--split", default=None, help="label written into each entry's 'split' field")
    add_common_args(parser)
    args = parser.parse_args(argv)

    tally = VideoTally()
    rows = read_csv_rows(args.annotations, REQUIRED_COLUMNS)
    entries = build_entries(rows, args.videos, tally, args.keep_missing, args.split)
    return finish("webvid", args, entries, tally)

if __name__ == "__main__":
    sys.exit(main())
