"""Files cut short (an interrupted download or copy): the container declares more bytes than the file holds.

FFmpeg plays what is there without a word, so a cut-off Matroska, WebM or AVI decodes as a shorter video (its
caption still describes the whole one), and decord, reading a cut-off AVI from memory as the loader does, has
crashed the process (SIGSEGV). Three containers say how long they are, so the check reads headers only:

- ISO BMFF (mp4, mov, m4v): every top-level box gives its size; a box that runs past the end was cut.
- Matroska / WebM: the Segment element gives its size (live recordings write "unknown", which passes).
- AVI: each RIFF chunk gives its size (OpenDML files over 1 GB chain several). A writer that cannot seek back
  (FFmpeg writing to a pipe) leaves the placeholder 0xFFFFFFFF and no frame count: no declared size, and a file
  decord aborts on (see :func:`streamed_avi`).

MPEG program and transport streams declare no length and always pass.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

_BMFF_BOXES = frozenset(
    (b"ftyp", b"styp", b"moov", b"mdat", b"moof", b"mfra", b"sidx", b"free", b"skip", b"wide", b"pnot", b"uuid",
     b"meta", b"junk", b"PICT", b"prfl")
)
# Boxes found at the top level of a file; after the last one, bytes of any other kind (a phone maker's trailer,
# padding) are no box, even when they read as a printable name and a size.
_BMFF_TOP_LEVEL = _BMFF_BOXES | frozenset((b"udta", b"pdin", b"emsg", b"prft", b"ssix", b"bloc", b"styp"))
_EBML, _SEGMENT = 0x1A45DFA3, 0x18538067
_RIFF_UNKNOWN = 0xFFFFFFFF  # the size FFmpeg writes first and patches on close, when it can seek
_MAX_CHUNKS = 1_000_000  # a fragmented mp4 has two boxes per fragment; bounds a walk through junk


def cut_off(source: bytes | str | Path) -> str | None:
    """Why the file holds fewer bytes than its container declares, or ``None`` (complete, or no declared size).

    Args:
        source: The file, or its bytes.

    Returns:
        E.g. ``"the mp4 box 'mdat' at byte 48 runs to byte 57400, the file ends at byte 28700"``.
    """
    if isinstance(source, bytes):
        return _cut_off(io.BytesIO(source), len(source))
    with open(source, "rb") as f:
        return _cut_off(f, os.fstat(f.fileno()).st_size)


def streamed_avi(head: bytes) -> str | None:
    """Why ``head`` (the first bytes of a file) starts an AVI decord cannot read, or ``None``.

    An AVI written where its writer could not seek back (``ffmpeg ... -f avi -`` into a pipe) keeps placeholder
    sizes and a frame count of 0: it plays, but decord aborts the process on it (``std::bad_alloc``), so it is read
    with PyAV and the shard writer re-encodes it, as MPEG streams are.
    """
    if head[:4] != b"RIFF" or head[8:12] != b"AVI " or len(head) < 52:
        return None
    total_frames = int.from_bytes(head[48:52], "little") if head[24:28] == b"avih" else None
    if int.from_bytes(head[4:8], "little") == _RIFF_UNKNOWN or total_frames == 0:
        return "a streamed AVI (no sizes or frame count)"
    return None


def _cut_off(f: BinaryIO, size: int) -> str | None:
    head = f.read(12)
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        chunks = _riff_chunks(f, size)
    elif int.from_bytes(head[:4], "big") == _EBML:
        chunks = _matroska_segment(f)
    elif head[4:8] in _BMFF_BOXES:
        chunks = _bmff_boxes(f, size)
    else:
        return None
    for name, start, end in chunks:
        if end > size:
            return f"the {name} at byte {start} runs to byte {end}, the file ends at byte {size}"
    return None


def _bmff_boxes(f: BinaryIO, size: int) -> Iterator[tuple[str, int, int]]:
    pos = 0
    for _ in range(_MAX_CHUNKS):
        if pos + 8 > size:  # a few stray bytes after the last box are no declared length
            return
        f.seek(pos)
        header = f.read(16)
        length, kind = int.from_bytes(header[:4], "big"), header[4:8]
        if length == 1:  # 64-bit size follows
            length = int.from_bytes(header[8:16], "big")
        if length < 8 or kind not in _BMFF_TOP_LEVEL:
            return  # 0: "to the end of the file"; else not a box (a maker's trailer after the last): nothing declared
        yield f"mp4 box {kind.decode('ascii')!r}", pos, pos + length
        pos += length


def _riff_chunks(f: BinaryIO, size: int) -> Iterator[tuple[str, int, int]]:
    pos = 0
    for _ in range(_MAX_CHUNKS):
        f.seek(pos)
        header = f.read(12)
        if len(header) < 12 or header[:4] != b"RIFF":
            return
        length = int.from_bytes(header[4:8], "little")
        if length == _RIFF_UNKNOWN:
            return  # a streamed AVI: its size was never written back, nothing declared
        yield f"AVI chunk {header[8:12].decode('latin-1').strip()!r}", pos, pos + 8 + length
        pos += 8 + length + length % 2  # chunks are padded to an even size


def _matroska_segment(f: BinaryIO) -> Iterator[tuple[str, int, int]]:
    f.seek(0)
    data = f.read(4096)  # the EBML header and the Segment's own header are at the start
    pos = 0
    for _ in range(2):
        element, pos = _vint(data, pos, keep_marker=True)
        length, pos = _vint(data, pos)
        if element is None or length is None:
            return  # unknown size (a live recording) or not parseable: nothing declared
        if element == _SEGMENT:
            yield "Matroska segment", pos, pos + length
            return
        if element != _EBML:
            return
        pos += length


def _vint(data: bytes, pos: int, keep_marker: bool = False) -> tuple[int | None, int]:
    """An EBML variable-length integer at ``pos``: (value, position after it); value ``None`` when unknown/invalid."""
    if pos >= len(data) or data[pos] == 0:
        return None, len(data)
    width = 8 - data[pos].bit_length() + 1  # leading zero bits + 1
    if len(data) < pos + width:
        return None, len(data)
    raw = int.from_bytes(data[pos : pos + width], "big")
    value = raw if keep_marker else raw & ((1 << (7 * width)) - 1)
    if not keep_marker and value == (1 << (7 * width)) - 1:
        return None, pos + width  # all ones: "unknown size"
    return value, pos + width
