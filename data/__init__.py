"""Manifest builders for public video-text datasets (MSR-VTT, YouCook2, WebVid, HowTo100M).

Each module is a script (``python data/<name>.py --help``) with ``main(argv=None) -> int`` that turns the
dataset's official annotation files plus a folder of downloaded videos into a JSONL manifest in the
project's format (one object a line, ``{"video": ..., "caption": ..., ...}``; see the README, "Data").

This file holds the pieces every builder shares: finding a video by id under a folder, writing the
manifest with paths relative to its own folder, and the missing-video summary on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# Order = preference when one id exists with several extensions (mp4 decodes fastest with decord).
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v", ".flv", ".mpg", ".mpeg")

_MISSING_SHOWN = 10
_CORE_KEYS = ("video", "image", "caption", "start", "end")


def index_videos(root: str | Path, extensions: Iterable[str] = VIDEO_EXTENSIONS) -> dict[str, Path]:
    """Map each video file's stem to its path, searching ``root`` recursively.

    One walk over the tree instead of one ``exists`` per candidate path and extension: datasets lay their
    videos out differently (flat, per split, per recipe) and ids come without an extension.

    Args:
        root: Folder to search.
        extensions: Accepted extensions, most preferred first.

    Returns:
        ``{stem: path}``; when a stem exists with several extensions the earliest in ``extensions`` wins.
    """
    if not Path(root).is_dir():
        # a missing folder would list no video: every video reported missing, exit 0
        raise SystemExit(f"--videos {root}: no such folder (an empty one lets --keep-missing write a manifest "
                         "before the download)")
    rank = {ext.lower(): i for i, ext in enumerate(extensions)}
    found: dict[str, tuple[int, Path]] = {}
    # Linked sub-folders are followed (split folders linked in from other disks are common) and a folder reached
    # twice (a link cycle) is read once. A link to a blob that is not there (git-annex or a Hugging Face snapshot
    # before the fetch) is no video. Name order makes the winner of a stem found in two folders the same on every
    # machine: the first in a depth-first walk.
    stack = [os.fspath(root)]
    seen: set[str] = set()
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in seen:
            continue
        seen.add(real)
        try:
            with os.scandir(folder) as it:
                items = sorted(it, key=lambda e: e.name)
        except OSError as err:
            print(f"--videos: cannot read {folder} ({err.strerror}); skipped", file=sys.stderr)
            continue
        subfolders = []
        for item in items:
            if item.is_dir():
                subfolders.append(item.path)
                continue
            stem, ext = os.path.splitext(item.name)
            r = rank.get(ext.lower())
            if r is None or (item.is_symlink() and not os.path.exists(item.path)):
                continue
            if stem not in found or r < found[stem][0]:
                found[stem] = (r, Path(item.path))
        stack.extend(reversed(subfolders))
    return {stem: path for stem, (_r, path) in found.items()}


def media_ref(path: str | Path, manifest: str | Path) -> str:
    """Path to write in a manifest: relative to the manifest's folder when the file lies under it.

    Relative paths keep a dataset folder movable as a whole; files elsewhere stay absolute so the
    manifest does not break when only it is moved. Links are not resolved: a video that is a link to a
    content-addressed blob (Hugging Face snapshots, git-annex) keeps its own name and extension.
    """
    path = Path(os.path.abspath(path))
    base = Path(os.path.abspath(manifest)).parent
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def write_jsonl(entries: Iterable[Mapping[str, Any]], out: str | Path) -> int:
    """Write one JSON object a line (UTF-8, no ASCII escaping); returns the number of lines."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with out.open("w", encoding="utf-8") as f:
        for entry in entries:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
            n += 1
    return n


def _core_first(entry: Mapping[str, Any]) -> dict[str, Any]:
    # The format's own keys lead each line so a manifest reads the same whatever the dataset.
    head = {k: entry[k] for k in _CORE_KEYS if k in entry}
    return {**head, **{k: v for k, v in entry.items() if k not in head}}


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Arguments every builder takes: the video folder, the output manifest, the missing-video policy."""
    parser.add_argument("--videos", required=True, type=Path, help="folder holding the downloaded videos")
    parser.add_argument("--out", required=True, type=Path, help="output manifest (.jsonl)")
    parser.add_argument(
        "--keep-missing",
        action="store_true",
        help="write entries whose video is missing (at the expected path) instead of skipping them",
    )
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when any video is missing")
    parser.add_argument("--limit", type=int, default=None, help="stop after this many entries (for smoke runs)")


def finish(
    name: str,
    args: argparse.Namespace,
    entries: list[dict[str, Any]],
    missing: list[str],
    num_videos: int,
) -> int:
    """Write the manifest, print the summary on stderr and return the exit code.

    Args:
        name: Dataset name for the summary line.
        args: Parsed arguments (uses ``out``, ``strict``, ``limit``).
        entries: Manifest entries whose ``"video"`` is an absolute or cwd-relative path; rewritten here
            relative to the manifest folder.
        missing: Ids of videos that were not found (each once).
        num_videos: Number of distinct videos the annotations asked for.

    Returns:
        0, or 1 when ``--strict`` and some video is missing.
    """
    if args.limit is not None:
        entries = entries[: args.limit]
    for entry in entries:
        entry["video"] = media_ref(entry["video"], args.out)
    n = write_jsonl((_core_first(e) for e in entries), args.out)
    print(f"{name}: wrote {n} entries to {args.out} ({num_videos - len(missing)}/{num_videos} videos found)",
          file=sys.stderr)
    if missing:
        shown = ", ".join(missing[:_MISSING_SHOWN])
        more = f" (+{len(missing) - _MISSING_SHOWN} more)" if len(missing) > _MISSING_SHOWN else ""
        action = "kept" if args.keep_missing else "skipped"
        print(f"{name}: {len(missing)} videos missing ({action}): {shown}{more}", file=sys.stderr)
    return 1 if (args.strict and missing) else 0

