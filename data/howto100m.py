"""HowTo100M -> manifest: short clips from ASR segments (stage 1) or full videos with summaries (stage 2).

Official format (source: HowTo100M release readme, https://www.di.ens.fr/willow/research/howto100m/,
https://github.com/antoine77340/howto100m; Miech et al. ICCV 2019): ``caption.json`` (stop words removed)
and ``raw_caption.json`` (unprocessed) map each YouTube id to its ASR segments::

    {"<video_id>": {"start": [0.0, 3.4, ...], "end": [3.4, 7.9, ...], "text": ["...", "...", ...]}}

Times are seconds. Videos are ``{video_id}.{mp4,webm,mkv,...}`` anywhere under ``--videos``.

The paper's stage-2 data pairs full-length HowTo100M videos with LLM summaries; those come as a JSON object
``{"<video_id>": "summary"}``, a JSON list or JSONL of ``{"video_id": ..., "summary": ...}`` records, or JSONL
of one-key objects.

    python data/howto100m.py --captions raw_caption.json --min-duration 4 --videos ht100m --out asr.jsonl
    python data/howto100m.py --summaries summaries.jsonl --videos ht100m --out full.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python data/howto100m.py`: the package lives one folder up
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data import add_common_args, build_manifest, iter_json_object  # noqa: E402

_ID_KEYS = ("video_id", "videoid", "id", "video")
_TEXT_KEYS = ("summary", "caption", "text")


def asr_segments(record: dict[str, Sequence[Any]]) -> list[tuple[float, float, str]]:
    """Clean ``(start, end, text)`` segments of one video, in time order.

    Empty or non-string texts (NaN in some dumps) and segments with ``end <= start`` are dropped.
    """
    lengths = {k: len(record[k]) for k in ("start", "end", "text")}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"start, end and text lists of different lengths {lengths}")
    out = []
    for start, end, text in zip(record["start"], record["end"], record["text"], strict=True):
        if not isinstance(text, str) or not text.strip():
            continue
        start, end = float(start), float(end)
        if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
            continue
        out.append((start, end, " ".join(text.split())))
    return sorted(out, key=lambda s: s[0])


def merge_segments(segments: list[tuple[float, float, str]], min_duration: float) -> list[tuple[float, float, str]]:
    """Merge consecutive segments until each spans at least ``min_duration`` seconds.

    ASR lines are often 1-3 s, too short to sample 16 frames at 1 FPS. A leftover tail shorter than the
    minimum joins the previous clip so no speech is dropped.

    Args:
        segments: ``(start, end, text)`` in time order.
        min_duration: Minimum clip length in seconds; ``<= 0`` returns the segments unchanged.

    Returns:
        Merged ``(start, end, text)`` with texts joined by a space.
    """
    if min_duration <= 0:
        return list(segments)
    merged: list[tuple[float, float, str]] = []
    cur: list[tuple[float, float, str]] = []
    for seg in segments:
        cur.append(seg)
        start, end = cur[0][0], max(s[1] for s in cur)
        if end - start >= min_duration:
            merged.append((start, end, " ".join(s[2] for s in cur)))
            cur = []
    if cur:
        tail = (cur[0][0], max(s[1] for s in cur), " ".join(s[2] for s in cur))
        if merged:
            p_start, p_end, p_text = merged.pop()
            tail = (p_start, max(p_end, tail[1]), f"{p_text} {tail[2]}")
        merged.append(tail)
    return merged


def read_summaries(path: str | Path) -> dict[str, str]:
    """Read ``{video_id: summary}`` from a JSON object, a JSON list of records or JSONL (see module doc)."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
        records = [data] if isinstance(data, dict) else list(data)
    except json.JSONDecodeError:  # JSONL
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    out: dict[str, str] = {}
    for rec in records:
        vid = next((str(rec[k]) for k in _ID_KEYS if k in rec), None)
        summary = next((rec[k] for k in _TEXT_KEYS if k in rec), None)
        if vid is not None and isinstance(summary, str):
            out.setdefault(vid, summary.strip())
        elif vid is None:  # {video_id: summary, ...} or {video_id: {"summary": ...}, ...}
            for key, value in rec.items():
                if isinstance(value, dict):
                    value = next((value[k] for k in _TEXT_KEYS if k in value), None)
                if not isinstance(value, str):
                    raise ValueError(f"{path}: the summary of {key!r} is not text ({type(value).__name__})")
                out.setdefault(str(key), value.strip())
        else:
            raise ValueError(f"{path}: record for {vid!r} has no summary (keys {sorted(rec)})")
    return out


def build_asr_entries(
    captions: Mapping[str, Mapping[str, Sequence[Any]]] | Iterable[tuple[str, Mapping[str, Sequence[Any]]]],
    min_duration: float,
) -> Iterator[dict[str, Any]]:
    """One entry per (merged) ASR segment: ``{"id", "video_id", "caption", "start", "end"}``.

    Args:
        captions: ``{video_id: {"start", "end", "text"}}`` or its ``(video_id, record)`` pairs as
            :func:`data.iter_json_object` reads them from a file too large to load.
        min_duration: See :func:`merge_segments`.

    Yields:
        Entries in file order, one video after the other.
    """
    for vid, record in captions.items() if isinstance(captions, Mapping) else captions:
        try:
            segments = asr_segments(record)
        except (KeyError, TypeError, ValueError) as err:  # one broken record must not stop the build; it is named
            print(f"howto100m: {vid}: {err}; video skipped", file=sys.stderr)
            continue
        for i, (start, end, text) in enumerate(merge_segments(segments, min_duration)):
            yield {"id": f"{vid}_{i:04d}", "video_id": vid, "caption": text,
                   "start": round(start, 3), "end": round(end, 3)}


def build_summary_entries(summaries: dict[str, str]) -> list[dict[str, Any]]:
    """One whole-video entry per summary: ``{"id", "video_id", "caption", "summary"}``."""
    return [{"id": vid, "video_id": vid, "caption": s, "summary": s} for vid, s in summaries.items() if s]


def main(argv: Sequence[str] | None = None) -> int:
    """Build a HowTo100M manifest; see the module docstring. Returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--captions", type=Path, help="caption.json / raw_caption.json (ASR clips)")
    source.add_argument("--summaries", type=Path, help="JSON/JSONL of {video_id: summary} (full videos)")
    parser.add_argument("--min-duration", type=float, default=0.0,
                        help="merge consecutive ASR segments until each clip spans this many seconds")
    parser.add_argument("--split", default=None, help="label written into each entry's 'split' field")
    add_common_args(parser)
    args = parser.parse_args(argv)

    if args.captions is not None:
        entries: Iterable[dict[str, Any]] = build_asr_entries(iter_json_object(args.captions), args.min_duration)
    else:
        entries = build_summary_entries(read_summaries(args.summaries))
    if args.split:
        entries = ({**e, "split": args.split} for e in entries)

    return build_manifest("howto100m", args, entries)


if __name__ == "__main__":
    sys.exit(main())
