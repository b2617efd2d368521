"""Manifest builders for public video-text datasets (MSR-VTT, YouCook2, WebVid, HowTo100M, ActivityNet Captions,
VATEX, DiDeMo) and multiple-choice QA files (EgoSchema, NExT-QA).

Each module is a script (``python data/<name>.py --help``) with ``main(argv=None) -> int`` that turns the
dataset's official annotation files plus a folder of downloaded videos into a JSONL manifest in the
project's format (one object a line, ``{"video": ..., "caption": ..., ...}``; see the README, "Data").

This file holds the pieces every builder shares: finding a video by id under a folder, reading a JSON object
too large to load at once, attaching videos to entries, writing the manifest with paths relative to its own
folder as the entries come (a builder never holds the whole manifest), and the missing-video summary.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

# Order = preference when one id exists with several extensions (mp4 decodes fastest with decord). The tail is
# what phones and camcorders uploaded to Flickr (DiDeMo keeps the original files).
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v", ".flv", ".mpg", ".mpeg",
                                     ".3gp", ".wmv", ".mts", ".m2ts", ".ogv")

_MISSING_SHOWN = 10
_CORE_KEYS = ("video", "image", "caption", "start", "end")
_JSON_SPACE = " \t\n\r"
_NUMBER_CHARS = "0123456789+-.eE"
_CUT_MARGIN = 16  # a value cut by the buffer's end fails this close to it ("-Infinit", "\\u00", "fals")
JSON_CHUNK_CHARS = 1 << 20  # characters iter_json_object reads at a time


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


class _JsonReader:
    """A JSON text read piece by piece: one value at a time is decoded, never the whole file."""

    def __init__(self, f: IO[str], chunk_chars: int) -> None:
        self.f, self.chunk, self.buf, self.pos, self.eof = f, chunk_chars, "", 0, False
        self.offset = 0  # characters of the file before self.buf
        self.decoder = json.JSONDecoder()

    def _fill(self, at_least: int) -> bool:
        data = self.f.read(max(self.chunk, at_least))
        if not data:
            self.eof = True
            return False
        self.offset += self.pos
        self.buf = self.buf[self.pos:] + data
        self.pos = 0
        return True

    def peek(self) -> str:
        """The next character that is not white space ("" at the end of the file)."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _JSON_SPACE:
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._fill(0):
                return ""

    def take(self, char: str, where: str) -> None:
        got = self.peek()
        if got != char:
            raise ValueError(f"expected {char!r} {where}, got {got or 'the end of the file'!r}")
        self.pos += 1

    def value(self) -> Any:
        """Decode the next value; a value cut by the end of the buffer is retried with twice as much text."""
        self.peek()
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
                # a number cut by the end of the buffer ("1e" of "1e5") decodes too: take it once a character
                # that cannot go on a number follows
                if self.eof or (end < len(self.buf) and self.buf[end] not in _NUMBER_CHARS):
                    self.pos = end
                    return value
            except json.JSONDecodeError as err:
                # Only an error at the end of the text read so far (or a string still open there) can be the
                # buffer's end; any other is in the file: reading on would load the rest of it (GBs) to say so.
                if self.eof or not (err.pos >= len(self.buf) - _CUT_MARGIN or err.msg.startswith("Unterminated")):
                    raise ValueError(f"{err.msg} at character {self.offset + err.pos} of the file") from None
            self._fill(len(self.buf) - self.pos)


def iter_json_object(path: str | Path, chunk_chars: int | None = None) -> Iterator[tuple[str, Any]]:
    """The ``(key, value)`` pairs of a file holding one JSON object, read piece by piece.

    HowTo100M's ``caption.json`` / ``raw_caption.json`` hold one record per video for 1.2M videos (several GB of
    text, tens of GB as Python objects): ``json.load`` would exhaust the memory of most machines. Memory here is
    bounded by the largest single value.

    Args:
        path: The JSON file (UTF-8, with or without a BOM).
        chunk_chars: Characters read at a time (default :data:`JSON_CHUNK_CHARS`).

    Yields:
        Each key and its decoded value, in file order.

    Raises:
        ValueError: When the file is not one JSON object (with the file name).
    """
    with open(path, encoding="utf-8-sig") as f:
        reader = _JsonReader(f, chunk_chars or JSON_CHUNK_CHARS)
        try:
            reader.take("{", "at the start of the file")
            if reader.peek() == "}":
                return
            while True:
                key = reader.value()
                if not isinstance(key, str):
                    raise ValueError(f"expected a key string, got {key!r}")
                reader.take(":", f"after the key {key!r}")
                yield key, reader.value()
                if reader.peek() == "}":
                    return
                reader.take(",", f"after the value of {key!r}")
        except ValueError as err:
            raise ValueError(f"{path}: not a JSON object: {err}") from None


def read_json(path: str | Path) -> Any:
    """A JSON file small enough to load (UTF-8; a BOM, as editors on Windows write it, is accepted)."""
    with open(path, encoding="utf-8-sig") as f:
        return json.load(f)


def read_csv_rows(path: str | Path, required: Sequence[str]) -> Iterator[dict[str, str]]:
    """Rows of an annotation CSV as dicts (quoted fields may hold commas and line breaks).

    Raises:
        ValueError: When the header lacks one of the ``required`` columns (with the file and the header).
    """
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a CSV saved by Excel starts with a BOM
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}; header is {reader.fieldnames}")
        yield from reader


def add_annotation_args(parser: argparse.ArgumentParser, files: str) -> None:
    """``--annotations`` (one or more files, named in ``files``) and ``--split`` (the label of every entry)."""
    parser.add_argument("--annotations", nargs="+", required=True, type=Path, help=files)
    parser.add_argument("--split", default=None, help="label written into each entry (default: from the file name)")


def read_annotation_files(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    shape: type[dict] | type[list],
    fields: Sequence[str],
    label: Callable[[Path], str] = lambda path: path.stem,
) -> list[tuple[str, Any]]:
    """Each ``--annotations`` file's split label and decoded JSON.

    Args:
        parser: For the usage error a file of another dataset gets (checked on its first records).
        args: Parsed arguments (``annotations``, ``split``).
        shape: ``dict`` for ``{id: record}`` files, ``list`` for a list of records.
        fields: Keys every record has.
        label: Split label of a file when ``--split`` is not given.

    Returns:
        ``[(split label, data)]`` in the order given.
    """
    files = []
    for path in args.annotations:
        data = read_json(path)
        records = data.values() if isinstance(data, dict) else data
        if not isinstance(data, shape) or not all(isinstance(r, dict) and all(f in r for f in fields)
                                                  for r in itertools.islice(records, 10)):
            kind = "{id: record}" if shape is dict else "a list of records"
            parser.error(f"{path}: not the expected format ({kind} with {', '.join(fields)})")
        files.append((args.split or label(path), data))
    return files


def summarise_steps(sentences: Sequence[str]) -> str:
    """Join step sentences in order into one summary: ``"cut the onion. fry it."``."""
    steps = [s.strip().rstrip(".").strip() for s in sentences]
    return " ".join(f"{s}." for s in steps if s)


def paragraph_fields(steps: Sequence[tuple[float, float, str]]) -> dict[str, Any]:
    """Fields of a whole-video entry made of timed steps (YouCook2 full videos, ActivityNet and DiDeMo paragraphs).

    Args:
        steps: ``(start, end, sentence)`` in time order, sentences not blank.

    Returns:
        ``{"caption", "summary", "steps", "segments"}``: caption = summary = the sentences joined in order; the
        steps and their ``[start, end]`` kept for dense captioning and temporal probes.
    """
    summary = summarise_steps([text for _, _, text in steps])
    return {"caption": summary, "summary": summary, "steps": [text.strip() for _, _, text in steps],
            "segments": [[float(start), float(end)] for start, end, _ in steps]}


def qa_entry(question: Any, options: Sequence[Any], answer: Any, qid: str) -> dict[str, Any]:
    """A multiple-choice record as ``longvivit.captioning.qa.read_qa_jsonl`` reads it (without its video).

    Args:
        question: The question text.
        options: Candidate answers in order.
        answer: Index of the right option (an int or a string of digits), or ``None`` when unknown.
        qid: The question's id.

    Returns:
        ``{"question", "options", "answer", "id"}`` (``answer`` left out when unknown).

    Raises:
        ValueError: For a blank question or option, fewer than 2 options, or an answer that is no index into them.
    """
    if not isinstance(question, str) or not question.strip():
        raise ValueError("no question")
    texts = [o.strip() if isinstance(o, str) else "" for o in options]
    if len(texts) < 2 or not all(texts):
        raise ValueError(f"needs 2 or more non-blank options, got {list(options)!r}")
    entry: dict[str, Any] = {"question": question.strip(), "options": texts}
    if answer is not None:
        index = answer if type(answer) is int else int(answer) if str(answer).strip().isdigit() else -1
        if not 0 <= index < len(texts):
            raise ValueError(f"answer {answer!r} is not an index into {len(texts)} options")
        entry["answer"] = index
    entry["id"] = qid
    return entry


def first_found(found: Mapping[str, Path], names: Iterable[str]) -> Path | None:
    """The video of the first of ``names`` (file stems a dataset's videos go by) in an :func:`index_videos` map."""
    return next((found[name] for name in names if name in found), None)


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
    """Write one JSON object a line (UTF-8, no ASCII escaping); returns the number of lines.

    The lines go to a temporary file renamed at the end, so a build that fails half-way (entries are written as
    they are produced) leaves no truncated manifest behind.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    n = 0
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for entry in entries:
                f.write(json.dumps(entry, ensure_ascii=False) + "\n")
                n += 1
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
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


@dataclass
class VideoTally:
    """The distinct videos the annotations asked for, and those not found (first-seen order)."""

    asked: set[str] = field(default_factory=set)
    missing: dict[str, None] = field(default_factory=dict)  # an ordered set

    def add(self, video_id: str, found: bool) -> None:
        """Count one lookup of ``video_id``."""
        self.asked.add(video_id)
        if not found:
            self.missing.setdefault(video_id)


def attach_videos(
    entries: Iterable[dict[str, Any]],
    tally: VideoTally,
    find: Callable[[dict[str, Any]], Path | None],
    expected: Callable[[dict[str, Any]], Path],
    keep_missing: bool,
    key: str = "video_id",
) -> Iterator[dict[str, Any]]:
    """Give each entry its video (``"video"`` first); the ones whose video is missing are dropped or kept.

    Args:
        entries: Entries without a path; ``entry[key]`` names the video.
        tally: Counts videos asked for and missing.
        find: The video file of an entry, or ``None``; it may add fields to the entry (``start`` / ``end`` when
            the file found is the longer video the entry is cut from).
        expected: Where the video of an entry would be (written with ``--keep-missing``).
        keep_missing: Write entries whose video is missing, at the expected path.
        key: Field naming the video in the summary.

    Yields:
        ``{"video": path, **entry}`` without the fields whose value is ``None``.
    """
    for entry in entries:
        path = find(entry)
        tally.add(str(entry[key]), path is not None)
        if path is None:
            if not keep_missing:
                continue
            path = expected(entry)
        yield {"video": str(path), **{k: v for k, v in entry.items() if v is not None}}


def build_manifest(
    name: str,
    args: argparse.Namespace,
    entries: Iterable[dict[str, Any]],
    key: str = "video_id",
    find: Callable[[dict[str, Any], Mapping[str, Path]], Path | None] | None = None,
    expected: Callable[[dict[str, Any]], Path] | None = None,
) -> int:
    """Find each entry's video under ``--videos``, write the manifest and the summary; the exit code.

    Args:
        name: Dataset name for the summary line.
        args: Parsed common arguments (:func:`add_common_args`).
        entries: Entries without a path; ``entry[key]`` names the video.
        key: Field naming the video.
        find: The video of an entry given the :func:`index_videos` map of ``--videos`` (default: the file whose
            stem is ``entry[key]``); it may add fields to the entry, as in :func:`attach_videos`.
        expected: Where a missing video would be (default: ``--videos/<entry[key]>.mp4``).

    Returns:
        0, or 1 when ``--strict`` and some video is missing.
    """
    found = index_videos(args.videos)
    tally = VideoTally()
    kept = attach_videos(
        entries, tally,
        find=(lambda e: found.get(str(e[key]))) if find is None else (lambda e: find(e, found)),
        expected=expected or (lambda e: args.videos / f"{e[key]}.mp4"),
        keep_missing=args.keep_missing, key=key)
    return finish(name, args, kept, tally)


def finish(name: str, args: argparse.Namespace, entries: Iterable[dict[str, Any]], tally: VideoTally) -> int:
    """Write the manifest as the entries come, print the summary on stderr and return the exit code.

    Args:
        name: Dataset name for the summary line.
        args: Parsed arguments (uses ``out``, ``strict``, ``keep_missing``, ``limit``).
        entries: Manifest entries whose ``"video"`` is an absolute or cwd-relative path; rewritten here
            relative to the manifest folder. A generator is read only as far as ``--limit`` needs.
        tally: Filled while ``entries`` is read; with ``--limit`` it covers what was read.

    Returns:
        0, or 1 when ``--strict`` and some video is missing.
    """
    if args.limit is not None:
        entries = itertools.islice(entries, args.limit)
    n = write_jsonl((_core_first({**e, "video": media_ref(e["video"], args.out)}) for e in entries), args.out)
    missing, num_videos = list(tally.missing), len(tally.asked)
    print(f"{name}: wrote {n} entries to {args.out} ({num_videos - len(missing)}/{num_videos} videos found)",
          file=sys.stderr)
    if missing:
        shown = ", ".join(missing[:_MISSING_SHOWN])
        more = f" (+{len(missing) - _MISSING_SHOWN} more)" if len(missing) > _MISSING_SHOWN else ""
        action = "kept" if args.keep_missing else "skipped"
        print(f"{name}: {len(missing)} videos missing ({action}): {shown}{more}", file=sys.stderr)
    return 1 if (args.strict and missing) else 0
