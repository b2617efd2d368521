"""Manifests: the list of media + captions a dataset is built from (JSONL or CSV).

One record per line (JSONL) or per row (CSV, same column names)::

    {"video": "clips/a.mp4", "caption": "a dog runs", "start": 3.0, "end": 19.0}
    {"video": "clips/b.mp4", "caption": ["first caption", "second caption"], "id": "b", "split": "val"}
    {"image": "imgs/c.jpg", "caption": "a red car"}

- ``video`` or ``image`` (exactly one): the media path; relative paths resolve against the manifest's folder.
- ``caption`` (alias ``captions``): a string or a list of strings. In CSV a cell holding several captions is
  written as a JSON list (``["first", "second"]``); any other cell (including text that starts with "[" but
  is not a JSON list) is one caption, verbatim. A JSON list was chosen over a separator character because
  captions may contain any character.
- ``start`` / ``end`` (videos only, seconds, optional): a segment of the source video.
- ``id`` (alias ``key``, optional) and any other field (``summary``, ``split``...) are kept in ``meta``.

Bad records never stop a read: each becomes a :class:`ManifestError` carrying its line number and a reason
code, so a shard builder can report it next to the files it rejects.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

MediaKind = Literal["video", "image"]

# Reason codes of manifest-level problems (make_shards adds probe-level ones).
MALFORMED = "malformed_line"
EMPTY_CAPTION = "empty_caption"
BAD_SEGMENT = "bad_segment"

_CORE_FIELDS = ("video", "image", "caption", "captions", "start", "end", "id", "key")


class ManifestReadError(Exception):
    """The manifest as a whole cannot be read (missing, not UTF-8, CSV without a header...)."""


@dataclass
class ManifestEntry:
    """One usable manifest record.

    Args:
        path: Media path exactly as written in the manifest (relative or absolute).
        captions: At least one non-empty caption (whitespace stripped).
        media: ``"video"`` or ``"image"``.
        start: Segment start in seconds (videos only), ``None`` for the beginning.
        end: Segment end in seconds (videos only), ``None`` for the end of the video.
        id: Optional user id (``id`` or ``key`` field).
        meta: Any other fields of the record, preserved verbatim.
        line: 1-based line number in the manifest (0 for entries built in code).
        base_dir: Folder relative paths resolve against (the manifest's folder); ``None`` = current directory.
    """

    path: str
    captions: list[str]
    media: MediaKind = "video"
    start: float | None = None
    end: float | None = None
    id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    line: int = 0
    base_dir: Path | None = None

    @property
    def resolved_path(self) -> Path:
        """Absolute-or-cwd-relative path of the media file."""
        p = Path(self.path).expanduser()
        if p.is_absolute() or self.base_dir is None:
            return p
        return Path(self.base_dir) / p

    def to_record(self, manifest_dir: Path | None = None) -> dict[str, Any]:
        """The JSON record for this entry, with the path rewritten to stay valid from ``manifest_dir``.

        Args:
            manifest_dir: Folder of the manifest being written. A relative path read from another manifest is
                re-expressed relative to it so that it still points at the same file.

        Returns:
            A dict in the manifest schema (caption is a string when there is only one).
        """
        path = self.path
        if manifest_dir is not None and self.base_dir is not None and not Path(path).is_absolute():
            path = os.path.relpath(Path(self.base_dir) / path, manifest_dir)
        rec: dict[str, Any] = {self.media: Path(path).as_posix()}
        rec["caption"] = self.captions[0] if len(self.captions) == 1 else list(self.captions)
        if self.start is not None:
            rec["start"] = self.start
        if self.end is not None:
            rec["end"] = self.end
        if self.id is not None:
            rec["id"] = self.id
        clash = set(self.meta) & set(_CORE_FIELDS)
        if clash:
            raise ValueError(f"meta fields {sorted(clash)} collide with manifest columns")
        rec.update(self.meta)
        return rec


@dataclass(frozen=True)
class ManifestError:
    """A manifest record that could not be used.

    Args:
        line: 1-based line number.
        reason: ``"malformed_line"``, ``"empty_caption"`` or ``"bad_segment"``.
        detail: Human-readable explanation.
        source: The media path of the record when it could be read, else ``None``.
    """

    line: int
    reason: str
    detail: str
    source: str | None = None


class _RecordError(Exception):
    def __init__(self, reason: str, detail: str, source: str | None = None) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.source = reason, detail, source


# ----------------------------------------------------------------------------- record -> entry
def _parse_time(value: Any, name: str, source: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise _RecordError(MALFORMED, f"{name} must be a number, got {value!r}", source)
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise _RecordError(MALFORMED, f"{name} must be a number, got {value!r}", source) from None
    if not math.isfinite(t) or t < 0:
        raise _RecordError(BAD_SEGMENT, f"{name}={value!r} must be a finite number >= 0", source)
    return t


def _parse_captions(value: Any, source: str) -> list[str]:
    if value is None:
        raise _RecordError(EMPTY_CAPTION, "no caption", source)
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(c, str) for c in items):
        raise _RecordError(MALFORMED, "caption must be a string or a list of strings", source)
    captions = [c.strip() for c in items if c.strip()]
    if not captions:
        raise _RecordError(EMPTY_CAPTION, "caption is empty", source)
    return captions


def parse_record(record: Any, line: int = 0, base_dir: Path | None = None) -> ManifestEntry:
    """Validate one decoded record and build its entry.

    Args:
        record: The decoded JSON object (or CSV row with JSON-list captions already decoded).
        line: Line number, kept on the entry.
        base_dir: Folder relative paths resolve against.

    Returns:
        The entry.

    Raises:
        _RecordError: With a reason code; :func:`read_manifest` turns it into a :class:`ManifestError`.
    """
    if not isinstance(record, dict):
        raise _RecordError(MALFORMED, f"expected a JSON object, got {type(record).__name__}")
    kinds = [k for k in ("video", "image") if record.get(k) not in (None, "")]
    if len(kinds) != 1:
        raise _RecordError(MALFORMED, "needs exactly one of 'video' or 'image'")
    media: MediaKind = kinds[0]  # type: ignore[assignment]
    path = record[media]
    if not isinstance(path, str):
        raise _RecordError(MALFORMED, f"'{media}' must be a path string, got {path!r}")
    if "caption" in record and "captions" in record:
        raise _RecordError(MALFORMED, "give 'caption' or 'captions', not both", path)
    captions = _parse_captions(record.get("caption", record.get("captions")), path)
    start = _parse_time(record.get("start"), "start", path)
    end = _parse_time(record.get("end"), "end", path)
    if media == "image" and (start is not None or end is not None):
        raise _RecordError(MALFORMED, "start/end apply to videos only", path)
    if start is not None and end is not None and start >= end:
        raise _RecordError(BAD_SEGMENT, f"start ({start}) must be before end ({end})", path)
    if "id" in record and "key" in record:
        raise _RecordError(MALFORMED, "give 'id' or 'key', not both", path)
    uid = record.get("id", record.get("key"))
    if uid is not None and not isinstance(uid, (str, int)):
        raise _RecordError(MALFORMED, f"id must be a string or integer, got {uid!r}", path)
    meta = {k: v for k, v in record.items() if k not in _CORE_FIELDS}
    return ManifestEntry(
        path=path, captions=captions, media=media, start=start, end=end,
        id=None if uid in (None, "") else str(uid), meta=meta, line=line, base_dir=base_dir,
    )


# ----------------------------------------------------------------------------- readers
def _format_of(path: Path, fmt: str | None) -> str:
    fmt = fmt or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    if fmt not in ("csv", "jsonl"):
        raise ValueError(f"fmt must be 'csv' or 'jsonl', got {fmt!r}")
    return fmt


def _jsonl_records(text: str):
    for i, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            yield i, json.loads(raw)
        except json.JSONDecodeError as err:
            yield i, _RecordError(MALFORMED, f"invalid JSON: {err.msg} (column {err.colno})")


def _csv_records(text: str, name: str):
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        header = []
    header = [h.strip() for h in header]
    if not {"video", "image"} & set(header):
        raise ManifestReadError(f"{name}: CSV header needs a 'video' or 'image' column, got {header}")
    line = reader.line_num + 1  # first physical line of the next row (a quoted cell may span lines)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            yield line, _RecordError(MALFORMED, f"CSV: {err}")
            line = reader.line_num + 1
            continue
        this, line = line, reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(header):
            yield this, _RecordError(MALFORMED, f"{len(row)} cells for {len(header)} header columns")
            continue
        rec: dict[str, Any] = {k: v for k, v in zip(header, row, strict=False) if v != ""}
        for col in ("caption", "captions"):
            cell = rec.get(col)
            if isinstance(cell, str) and cell.lstrip().startswith("["):
                # A JSON list holds several captions; text that merely starts with "[" stays one caption.
                with contextlib.suppress(json.JSONDecodeError):
                    rec[col] = json.loads(cell)
        yield this, rec


def read_manifest(
    path: str | Path, fmt: Literal["jsonl", "csv"] | None = None
) -> tuple[list[ManifestEntry], list[ManifestError]]:
    """Read a JSONL or CSV manifest.

    Args:
        path: The manifest file. ``.csv`` files are read as CSV, anything else as JSONL.
        fmt: Force ``"jsonl"`` or ``"csv"``.

    Returns:
        ``(entries, errors)`` in file order. Blank lines are skipped; every other line yields exactly one
        entry or one error.

    Raises:
        ManifestReadError: The file cannot be opened or decoded, or a CSV lacks a usable header.
    """
    path = Path(path)
    kind = _format_of(path, fmt)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestReadError(f"cannot read manifest {path}: {err}") from err
    base_dir = path.resolve().parent
    records = _csv_records(text, str(path)) if kind == "csv" else _jsonl_records(text)
    entries: list[ManifestEntry] = []
    errors: list[ManifestError] = []
    for line, rec in records:
        try:
            if isinstance(rec, _RecordError):
                raise rec
            entries.append(parse_record(rec, line=line, base_dir=base_dir))
        except _RecordError as err:
            errors.append(ManifestError(line=line, reason=err.reason, detail=err.detail, source=err.source))
    return entries, errors


# ----------------------------------------------------------------------------- writer
def write_manifest(
    entries: list[ManifestEntry], path: str | Path, fmt: Literal["jsonl", "csv"] | None = None
) -> Path:
    """Write entries as a manifest (atomically: a reader never sees a half-written file).

    Relative paths of entries read from another manifest are rewritten so they still point at the same files
    from the new manifest's folder; paths of entries built in code (``base_dir=None``) are written as given.
    In CSV, several captions become a JSON list cell and non-string meta values are JSON-encoded (they read
    back as strings).

    Args:
        entries: Entries to write, in order.
        path: Output file; ``.csv`` selects CSV, anything else JSONL.
        fmt: Force ``"jsonl"`` or ``"csv"``.

    Returns:
        The written path.
    """
    path = Path(path)
    kind = _format_of(path, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest_dir = path.resolve().parent
    records = [e.to_record(manifest_dir) for e in entries]
    buf = io.StringIO(newline="")
    if kind == "jsonl":
        for rec in records:
            buf.write(json.dumps(rec, ensure_ascii=False) + "\n")
    else:
        columns: list[str] = []
        for rec in records:
            columns += [k for k in rec if k not in columns]
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for rec in records:
            cap = rec["caption"]
            if isinstance(cap, str) and cap.lstrip().startswith("["):
                rec["caption"] = [cap]  # written as a list so the reader cannot mistake it for one
            writer.writerow({
                k: v if isinstance(v, str) or v is None else json.dumps(v, ensure_ascii=False)
                for k, v in rec.items()
            })
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    os.replace(tmp, path)
    return path
