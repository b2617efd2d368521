"""Turn a manifest into webdataset shards: probe every input, reject the bad ones with a reason, write tars.

Usage::

    python tools/make_shards.py --manifest data/train.jsonl --out shards/train --maxcount 1000 --workers 4

Sample format (what :mod:`longvivit.data.shards` reads): per sample ``{key}.{ext}`` (the video or image bytes;
ext one of mp4 avi mkv webm mov m4v jpg jpeg png: ``longvivit.data.formats.STORED_VIDEO_EXTS``, anything else is
re-encoded to mp4), ``{key}.json`` (captions, media, ext, duration,
fps, num_frames, width, height of the *stored* bytes, source, start, end, line, meta) and ``{key}.txt`` (the
first caption). Keys are ``{line:06d}_{name}`` with only ``[A-Za-z0-9_-]`` (webdataset splits at dots).

How a run goes, and why it can be interrupted and rerun safely:

1. Stale ``*.tmp`` files of an earlier, interrupted run are removed.
2. Every manifest entry is probed in worker processes (``--workers``, at least one), each serving one input at a
   time: a probe that kills its process (a decoder crash, the OOM killer) rejects that input as ``crashed``, one that
   runs past ``--timeout`` seconds (default an hour) is killed and its input rejected as ``timed_out``, and the
   run goes on. decord opens the video, counts frames and decodes the first and last GOP; PyAV reads every
   packet of the stream (``--verify decode``: also decodes every frame once, pictures not converted, ~50x the
   CPU). A video cut off, with a hole, shorter than its container states (or, with ``--verify decode``, damaged
   inside a frame) is rejected as ``damaged``. Videos are stored byte for byte unless they must be re-encoded:
   a ``start``/``end`` segment (always cut), ``--fps`` / ``--short-side`` (only ever lowers rate or size), a
   container outside the list above, an MPEG program/transport stream or an AVI written to a pipe (decord
   misreads them), a variable frame rate, a file decord cannot open, frames decord counts differently from
   FFmpeg (a stream-copy cut), or ``--reencode`` (normalises everything to H.264 mp4); the json's
   ``reencoded_because`` names the reason found in the file. Re-encoded videos stream through PyAV (never the
   whole video in RAM) into ``OUT/.staging/``, so a rerun reuses encodes finished before an interruption.
3. Accepted samples, in manifest order, are cut into shards: a new shard starts when ``--maxcount`` samples or
   ``--maxsize`` bytes would be exceeded. The assignment only depends on the inputs and options.
4. Each shard is written to ``NAME.tar.tmp`` and renamed when complete, then ``NAME.index.json`` records its
   keys and a fingerprint of each sample's inputs (source file, entry, options: comparing them needs no
   decoding or re-encoding). A rerun keeps a complete shard that holds exactly the next samples of the plan
   (unless ``--overwrite``), rewrites the others and deletes numbered shards beyond the plan, so every good
   input ends up in exactly one shard, exactly once.
5. ``OUT/rejects.jsonl`` (``{"line", "source", "reason", "detail"}``) and ``OUT/stats.json`` are written.

Exit status: 0 when at least one sample is in the shards; 1 when nothing could be written; 2 when the
manifest is unreadable (one line on stderr says why).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tarfile
from collections import Counter
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from longvivit.argtypes import positive
from longvivit.data.isolated import map_isolated
from longvivit.data.manifest import ManifestEntry, ManifestReadError, read_manifest
from longvivit.data.shard_probe import CRASHED, TIMED_OUT, Reject, Sample, ShardOptions, probe_entry


# ----------------------------------------------------------------------------- planning and writing
def plan_shards(
    samples: list[Sample], maxcount: int, maxsize: int | None, existing: dict[int, list[str]] | None = None
) -> list[list[Sample]]:
    """Cut samples (in order) into shards of at most ``maxcount`` samples and about ``maxsize`` bytes.

    A sample larger than ``maxsize`` gets a shard of its own; samples are never split.

    Args:
        samples: Accepted samples in manifest order.
        maxcount: Samples per shard.
        maxsize: Approximate bytes per shard, or ``None``.
        existing: Shard number -> sample fingerprints of complete shards already on disk (written with the
            same maxcount/maxsize). A shard that holds exactly the next samples is kept as it is: re-encoded
            sizes may differ by a few bytes between runs and must not re-cut finished shards.

    Returns:
        The shards, each a list of samples.
    """
    existing = existing or {}
    shards: list[list[Sample]] = []
    i = 0
    while i < len(samples):
        known = existing.get(len(shards))
        if known and [s.fingerprint for s in samples[i : i + len(known)]] == known:
            group = samples[i : i + len(known)]
        else:
            group, size = [], 1024  # the tar end-of-archive blocks
            for s in samples[i:]:
                if group and (len(group) >= maxcount or (maxsize is not None and size + s.size > maxsize)):
                    break
                group.append(s)
                size += s.size
        shards.append(group)
        i += len(group)
    return shards


def _add_member(tf: tarfile.TarFile, name: str, size: int, fileobj) -> None:
    # Fixed owner/mtime: the same samples always give byte-identical shards (whatever --workers).
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    tf.addfile(info, fileobj)


def write_shard(path: Path, group: list[Sample], plan: dict[str, Any]) -> dict[str, Any]:
    """Write one shard atomically (``.tmp`` then rename), then its ``.index.json``; returns the index."""
    import io

    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        with tarfile.open(fileobj=fh, mode="w", format=tarfile.GNU_FORMAT) as tf:
            for s in group:
                with open(s.media_path, "rb") as media:
                    _add_member(tf, f"{s.key}.{s.ext}", os.fstat(media.fileno()).st_size, media)
                for ext, data in (("json", s.json_bytes()), ("txt", s.txt_bytes())):
                    _add_member(tf, f"{s.key}.{ext}", len(data), io.BytesIO(data))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    index = {"shard": path.name, "keys": [s.key for s in group], "samples": [s.fingerprint for s in group],
             "plan": plan, "bytes": path.stat().st_size}
    _write_json_atomic(_index_path(path), index)
    return index


def _index_path(shard: Path) -> Path:
    return shard.with_name(shard.name[: -len(".tar")] + ".index.json")


def _complete_shards(out: Path, prefix: str, plan: dict[str, Any]) -> dict[int, list[str]]:
    """Shard number -> sample fingerprints of the shards a rerun may keep (tar and index agree)."""
    found = {}
    for k, path in _numbered_shards(out, prefix).items():
        try:
            index = json.loads(_index_path(path).read_text())
            if index["plan"] == plan and path.stat().st_size == index["bytes"]:
                found[k] = list(index["samples"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def _write_json_atomic(path: Path, obj: Any, lines: bool = False) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if lines:
        tmp.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in obj))
    else:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _numbered_shards(out: Path, prefix: str) -> dict[int, Path]:
    found = {}
    for p in out.glob(f"{prefix}-*.tar"):
        num = p.name[len(prefix) + 1 : -len(".tar")]
        if len(num) == 6 and num.isdigit():
            found[int(num)] = p
    return found


# ----------------------------------------------------------------------------- CLI
def _parse_size(text: str) -> int:
    units = {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
    t = text.strip().lower().removesuffix("b")
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a byte size: {text!r} (e.g. 500000000, 500MB, 2G)") from None
    if value < 1:
        raise argparse.ArgumentTypeError("--maxsize must be positive")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="make_shards", description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", required=True, type=Path, help="JSONL or CSV manifest")
    p.add_argument("--out", required=True, type=Path, help="output folder for the shards")
    p.add_argument("--maxcount", type=positive(int), default=1000, help="samples per shard (default 1000)")
    p.add_argument("--maxsize", type=_parse_size, default=None, help="bytes per shard, e.g. 1G (default: none)")
    p.add_argument("--workers", type=positive(int), default=1, help="parallel probe/encode processes (default 1)")
    p.add_argument("--fps", type=positive(float), default=None, help="re-encode videos above this frame rate")
    p.add_argument("--short-side", type=positive(int), default=None,
                   help="re-encode videos (resize images) whose short side is larger than this")
    p.add_argument("--min-seconds", type=float, default=0.0, help="reject videos shorter than this")
    p.add_argument("--prefix", default="shard", help="shard file prefix (default 'shard')")
    p.add_argument("--overwrite", action="store_true", help="rewrite shards even when complete")
    p.add_argument("--crf", type=int, default=23, help="x264 quality of re-encoded videos (lower = better)")
    p.add_argument("--reencode", action="store_true",
                   help="re-encode every video to H.264 mp4 (MPEG streams, variable-rate and other videos decord "
                        "misreads are re-encoded without it)")
    p.add_argument("--timeout", type=positive(float), default=3600.0,
                   help="seconds one input may take to probe and re-encode before its worker is killed and the input "
                        "rejected as timed_out (default 3600: a decoder stuck on damaged bytes would stall the run)")
    p.add_argument("--verify", choices=("demux", "decode"), default="demux",
                   help="how a video stored as it is gets checked: demux (default) reads every packet (cut-off "
                        "files, holes, hidden frames); decode also decodes every frame once (damage inside frames; "
                        "~50x the CPU of demux, e.g. 2 s for 5 minutes of 360p)")
    return p


def _probe_all(entries: list[ManifestEntry], opts: ShardOptions, workers: int,
               timeout: float | None = None) -> list[Sample | Reject]:
    from tqdm import tqdm

    def crashed(entry: ManifestEntry, how: str) -> Reject:
        if how.startswith("timed out"):
            return Reject(entry.line, entry.path, TIMED_OUT, f"probing it {how} (--timeout): a decoder stuck on "
                          "damaged bytes, or a re-encode longer than the limit")
        return Reject(entry.line, entry.path, CRASHED, f"probing it crashed its process ({how}): a decoder bug "
                      "on damaged bytes, or a frame too large for memory")

    with tqdm(total=len(entries), desc="probe", unit="file", disable=None) as bar:
        return map_isolated(partial(probe_entry, opts=opts), entries, workers, crashed, bar.update, timeout)


def main(argv: list[str] | None = None) -> int:
    """Run the shard builder.

    Args:
        argv: Command-line arguments (``None`` = ``sys.argv[1:]``).

    Returns:
        0 when at least one sample was written, 1 when none could be, 2 when the manifest is unreadable.
    """
    args = build_parser().parse_args(argv)
    if not args.prefix or not all(c.isascii() and (c.isalnum() or c in "-_") for c in args.prefix):
        print(f"make_shards: --prefix must use only [A-Za-z0-9_-], got {args.prefix!r}", file=sys.stderr)
        return 2
    try:
        entries, errors = read_manifest(args.manifest)
    except (ManifestReadError, ValueError) as err:
        print(f"make_shards: {err}", file=sys.stderr)
        return 2
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    staging = out / ".staging"
    if args.overwrite:
        shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(exist_ok=True)
    for stale in [*out.glob("*.tmp"), *staging.glob("*.tmp")]:
        stale.unlink(missing_ok=True)

    opts = ShardOptions(staging=str(staging), fps=args.fps, short_side=args.short_side,
                        min_seconds=args.min_seconds, crf=args.crf, reencode=args.reencode, verify=args.verify)
    results = _probe_all(entries, opts, args.workers, args.timeout)
    samples = [r for r in results if isinstance(r, Sample)]
    rejects = [Reject(e.line, e.source, e.reason, e.detail) for e in errors]
    rejects += [r for r in results if isinstance(r, Reject)]
    rejects.sort(key=lambda r: r.line)

    plan = {"maxcount": args.maxcount, "maxsize": args.maxsize}
    existing = {} if args.overwrite else _complete_shards(out, args.prefix, plan)
    groups = plan_shards(samples, args.maxcount, args.maxsize, existing)
    names: list[str] = []
    written = skipped = 0
    for k, group in enumerate(groups):
        path = out / f"{args.prefix}-{k:06d}.tar"
        names.append(path.name)
        if existing.get(k) == [s.fingerprint for s in group]:
            skipped += 1
            continue
        write_shard(path, group, plan)
        written += 1
    for k, path in _numbered_shards(out, args.prefix).items():
        if k >= len(groups):  # left by an earlier run with more shards: would duplicate samples
            path.unlink()
            _index_path(path).unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)

    _write_json_atomic(out / "rejects.jsonl", [asdict(r) for r in rejects], lines=True)
    videos = [s for s in samples if s.info["media"] == "video"]
    stats = {
        "manifest": str(args.manifest), "written": len(samples), "videos": len(videos),
        "images": len(samples) - len(videos), "rejected": len(rejects),
        "rejected_by_reason": dict(sorted(Counter(r.reason for r in rejects).items())),
        "hours": sum(s.info["duration"] for s in videos) / 3600,
        "frames": sum(s.info["num_frames"] for s in videos),
        "bytes": sum((out / n).stat().st_size for n in names), "shards": len(names),
        "shards_written": written, "shards_skipped": skipped, "shard_names": names,
        "pattern": f"{args.prefix}-{{000000..{len(names) - 1:06d}}}.tar" if names else None,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    # Kept, but said: the same clip twice is twice the weight in training, and ties in retrieval.
    source = {e.line: e.resolved_path.resolve() for e in entries}
    seen: dict[tuple, int] = {}
    repeats = []
    for sm in samples:
        what = (source[sm.line], sm.info["media"], sm.info["start"], sm.info["end"])
        if what in seen:
            repeats.append((seen[what], sm.line))
        seen.setdefault(what, sm.line)
    stats["repeated_inputs"] = len(repeats)
    others = sorted(p.name for p in out.glob("*.tar") if p.name not in names)
    stats["other_tars_in_out"] = others
    _write_json_atomic(out / "stats.json", stats)
    if repeats:
        print(f"make_shards: warning: {len(repeats)} inputs repeat an earlier one (same file and segment; lines "
              f"{', '.join(f'{b} = {a}' for a, b in repeats[:3])}{'...' if len(repeats) > 3 else ''}): each copy is "
              "a sample", file=sys.stderr)
    if others:
        print(f"make_shards: warning: {out} also holds {len(others)} other .tar files ({', '.join(others[:3])}"
              f"{'...' if len(others) > 3 else ''}; an earlier run with another --prefix?): giving the folder as "
              f"shards reads them too; the pattern of this run is {stats['pattern']}", file=sys.stderr)
    if not samples:
        print(f"make_shards: nothing written: all {len(rejects)} inputs rejected (see {out / 'rejects.jsonl'})",
              file=sys.stderr)
        return 1
    print(f"make_shards: {len(samples)} samples in {len(names)} shards ({written} written, {skipped} "
          f"already complete), {len(rejects)} rejected -> {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
