"""Throughput of our clip loader against a naive one that decodes every frame, side by side in one run.

Both loaders read the same webdataset shard through a torch DataLoader with the same number of
workers, sample the same frames (``frame_indices``: 16 frames at 1 FPS from the start by default)
and apply the same transform (short side to 256, centre crop, normalise). They differ only in the
decoding:

  ours   decord on the bytes in memory, ``get_batch`` of the sampled indices only (decord decodes
         forward from the nearest keyframe and skips the colour conversion of frames not asked for)
  naive  PyAV decodes every frame of the video and converts each to RGB (what
         ``torchvision.io.read_video`` does), then keeps the sampled frames. It keeps only those in
         memory, so it is, if anything, faster than a loader that stacks the whole video.

Videos: 640x360, 30 FPS H.264 (``encode_video``, x264 veryfast, crf 23), low-entropy content (a
checkerboard and a moving square) so generation stays quick; 1-minute and 5-minute videos are built
by remuxing 10-second encoded chunks (no re-encode), then cached under ``--cache-dir``.

What bounds the speed-up: keyframes are ~8 s apart (x264's default GOP of 250 frames), so to return
frames 0, 30, ..., 450 decord still decodes, without converting, every frame of the first 16 s. On a
1-minute video the saving is therefore about (60 s / 16 s) x (decode + convert) / decode: roughly
8x for this content; it grows with video length (5 minutes: 20-45x). Wall-clock figures on a shared
machine are noisy, which is why each cell is the median of interleaved runs and CPU time per clip is
reported next to them.

Usage:
  python tools/bench_data.py --quick      # 2 one-minute + 1 five-minute video, 1 run per cell (~1.5 min)
  python tools/bench_data.py              # 4 one-minute + 2 five-minute videos, median of 3 (~5 min)
  python tools/bench_data.py --json       # figures as JSON on stdout (the table goes to stderr)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

FPS, HEIGHT, WIDTH, CHUNK_SECONDS = 30, 360, 640, 10


# ---------------------------------------------------------------------------------------------- videos
def _chunk_frames(seed: int) -> np.ndarray:
    """(T, H, W, 3) uint8: a coloured checkerboard with a square moving over it, ``CHUNK_SECONDS`` long."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    board = ((xx // 40 + yy // 40) % 2 * 30)[..., None] + rng.integers(40, 200, 3)  # (H, W, 3)
    frames = np.repeat(board.astype(np.uint8)[None], CHUNK_SECONDS * FPS, axis=0)
    side = 60
    for t in range(len(frames)):
        x = (t * 4 + seed * 37) % (WIDTH - side)
        y = int((HEIGHT - side) * (0.5 + 0.4 * np.sin(t / 15 + seed)))
        frames[t, y : y + side, x : x + side] = (250, 200, 30)
    return frames


def concat_videos(chunks: list[bytes]) -> bytes:
    """Join H.264 mp4s encoded with identical settings into one mp4 by remuxing (no re-encode)."""
    import av

    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as dst:
        ost, offset = None, 0
        for data in chunks:
            with av.open(io.BytesIO(data)) as src:
                ist = src.streams.video[0]
                if ost is None:
                    ost = dst.add_stream_from_template(ist)
                end = offset
                for pkt in src.demux(ist):
                    if pkt.dts is None:  # the demuxer's final flush packet
                        continue
                    pkt.pts += offset
                    pkt.dts += offset
                    end = max(end, pkt.pts + (pkt.duration or 0))
                    pkt.stream = ost
                    dst.mux(pkt)
                offset = end
    return out.getvalue()


def make_videos(cache: Path, num_1min: int, num_5min: int, log) -> dict[str, list[Path]]:
    """Create (or reuse) the benchmark videos; returns ``{"1 min": [...], "5 min": [...]}``."""
    from longvivit.data.video_io import encode_video

    cache.mkdir(parents=True, exist_ok=True)
    pool_size = 6  # distinct 10 s chunks; videos are different rotations of them
    chunk_paths = [cache / f"chunk{i}.mp4" for i in range(pool_size)]
    for i, path in enumerate(chunk_paths):
        if not path.exists():
            t = time.perf_counter()
            encode_video(_chunk_frames(i), fps=FPS, out=path.with_suffix(".tmp"))
            path.with_suffix(".tmp").rename(path)
            log(f"  encoded chunk {i + 1}/{pool_size} in {time.perf_counter() - t:.1f} s")
    chunks = [p.read_bytes() for p in chunk_paths]
    videos: dict[str, list[Path]] = {"1 min": [], "5 min": []}
    for label, minutes, count in (("1 min", 1, num_1min), ("5 min", 5, num_5min)):
        for k in range(count):
            path = cache / f"{minutes}min_{k}.mp4"
            if not path.exists():
                n = minutes * 60 // CHUNK_SECONDS
                path.write_bytes(concat_videos([chunks[(k + j) % pool_size] for j in range(n)]))
            videos[label].append(path)
    return videos


def write_shard(paths: list[Path], out: Path) -> str:
    """One shard in the agreed sample format holding the given videos."""
    import decord
    import webdataset as wds

    out.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(out)) as sink:
        for i, path in enumerate(paths):
            vr = decord.VideoReader(str(path), num_threads=1)
            n, fps = len(vr), float(vr.get_avg_fps())
            info = {
                "captions": [f"benchmark video {path.stem}"],
                "media": "video",
                "ext": "mp4",
                "duration": n / fps,
                "fps": fps,
                "num_frames": n,
                "width": WIDTH,
                "height": HEIGHT,
                "source": str(path),
                "start": None,
                "end": None,
                "line": i + 1,
            }
            sink.write(
                {
                    "__key__": f"{i:06d}_{path.stem}",
                    "mp4": path.read_bytes(),
                    "json": json.dumps(info).encode(),
                    "txt": info["captions"][0].encode(),
                }
            )
    return str(out)


# ---------------------------------------------------------------------------------------------- loaders
def _naive_dataset(urls: list[str], cfg):
    """IterableDataset: every sample of the shards once (split over workers), decoded frame by frame."""
    import torch
    import webdataset as wds

    class NaiveDataset(torch.utils.data.IterableDataset):
        def __iter__(self):
            import av

            from longvivit.data.decode import preprocess_frames
            from longvivit.data.sampling import frame_indices

            info = torch.utils.data.get_worker_info()
            worker, workers = (info.id, info.num_workers) if info else (0, 1)
            samples = wds.tarfile_samples([{"url": u} for u in urls])
            for i, sample in enumerate(samples):
                if i % workers != worker:
                    continue
                with av.open(io.BytesIO(sample["mp4"])) as container:
                    stream = container.streams.video[0]
                    idx, valid = frame_indices(
                        stream.frames,
                        float(stream.average_rate),
                        cfg.num_frames,
                        cfg.fps,
                        cfg.sampling,
                        cfg.start,
                    )
                    wanted, kept = set(idx), {}
                    for j, frame in enumerate(container.decode(stream)):
                        rgb = frame.to_ndarray(format="rgb24")  # every frame decoded and converted
                        if j in wanted:
                            kept[j] = rgb
                frames = np.stack([kept[j] for j in idx])  # (T, H, W, 3)
                video = preprocess_frames(frames, cfg.image_size, cfg.mean, cfg.std)
                yield {"key": sample["__key__"], "video": video, "num_valid_frames": valid}

    return NaiveDataset()


@dataclass
class Row:
    video: str
    loader: str
    workers: int
    clips: int
    seconds: float
    clips_per_s: float
    frames_per_s: float
    cpu_s_per_clip: float
    speedup: float | None = None
    cpu_speedup: float | None = None


def _row(video: str, loader: str, workers: int, runs: list[tuple[int, float, float]], num_frames: int) -> Row:
    """Totals over the runs; rates are the median run's (robust to a burst of background load).

    ``runs`` hold ``measure``'s figures: clips after each worker's first, whose wall time gives the rate;
    CPU time is over every clip of a run (``workers`` more)."""
    rate = float(np.median([clips / secs for clips, secs, _ in runs]))
    cpu = float(np.median([cpu / (clips + max(workers, 1)) for clips, _, cpu in runs]))
    clips, secs = sum(r[0] for r in runs), sum(r[1] for r in runs)
    return Row(video, loader, workers, clips, secs, rate, rate * num_frames, cpu)


def measure(kind: str, urls: list[str], cfg, workers: int) -> tuple[int, float, float]:
    """Read every clip of ``urls`` once with ``workers`` DataLoader workers.

    The wall clock starts when every worker has delivered its first clip (the DataLoader takes them in
    turn) and the clips counted are the later ones, so the loaders are compared at their steady rate
    whatever their clip counts (worker start-up, a second or two, used to weigh more on the naive loader's
    few clips). CPU time cannot be split that way (the workers' is only known once they are reaped): it
    covers the whole run, start-up included, divided over every clip.

    Returns:
        ``(clips after each worker's first, their wall seconds, CPU seconds of the whole run)``; CPU
        time of this process and its (reaped) workers, which, unlike wall time, barely depends on what else
        the machine is running.
    """
    import resource

    import torch

    from longvivit.data.shards import REPORT_ONLY, ShardDataset

    if kind == "ours":
        ds = ShardDataset(
            urls,
            "video",
            cfg,
            train=False,
            batch_size=None,
            rank=0,
            world_size=1,
            eval_split="sample",
            max_fail_fraction=0.0,
            min_fail_count=1,
        )
    else:
        ds = _naive_dataset(urls, cfg)

    def cpu() -> float:
        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    cpu0 = cpu()
    clips, start = 0, None
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
    for item in loader:
        if item.get(REPORT_ONLY):
            continue
        assert item["video"].shape == (cfg.num_frames, 3, cfg.image_size, cfg.image_size)
        clips += 1
        if clips == max(workers, 1):  # every worker has started and delivered its first clip: the clock starts
            start = time.perf_counter()
    if clips <= max(workers, 1):
        raise ValueError(f"{clips} clips with {workers} workers: a rate needs more than one clip per worker")
    secs = time.perf_counter() - start if start is not None else 0.0
    del loader  # workers are joined when the iterator ends; their CPU time is then in RUSAGE_CHILDREN
    return clips - max(workers, 1), secs, cpu() - cpu0


def machine() -> dict:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 one-minute and 1 five-minute video")
    p.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    p.add_argument(
        "--cache-dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "longvivit_bench_data"
    )
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--num-frames", type=int, default=16)
    p.add_argument("--fps", type=float, default=1.0)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument(
        "--trials", type=int, default=None, help="runs per cell, median reported (default 3, quick 1)"
    )
    p.add_argument(
        "--min-clips", type=int, default=32, help="clips per run of our loader (shard listed again)"
    )
    args = p.parse_args(argv)

    from longvivit.config import PreprocessConfig

    def log(msg: str) -> None:
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    n1, n5 = (2, 1) if args.quick else (4, 2)
    log(f"videos in {args.cache_dir} ({n1} x 1 min, {n5} x 5 min, {WIDTH}x{HEIGHT} @ {FPS} FPS)")
    t = time.perf_counter()
    videos = make_videos(args.cache_dir, n1, n5, log)
    log(f"  ready in {time.perf_counter() - t:.1f} s")
    cfg = PreprocessConfig(num_frames=args.num_frames, fps=args.fps, image_size=args.image_size)

    trials = args.trials or (1 if args.quick else 3)
    rows: list[Row] = []
    for label, paths in videos.items():
        shard = write_shard(paths, args.cache_dir / "shards" / f"{label.replace(' ', '')}-000000.tar")
        # Our loader is fast: list the shard several times so worker start-up does not dominate; the naive
        # one gets at least two clips a worker (its rate is taken after each worker's first).
        repeat = max(1, -(-args.min_clips // len(paths)))
        for workers in args.workers:
            naive_repeat = max(1, -(-2 * workers // len(paths)))
            runs: dict[str, list[tuple[int, float, float]]] = {"naive": [], "ours": []}
            for _ in range(trials):  # interleaved, so both loaders see the same background load
                runs["naive"].append(measure("naive", [shard] * naive_repeat, cfg, workers))
                runs["ours"].append(measure("ours", [shard] * repeat, cfg, workers))
            naive = _row(label, "naive (PyAV, every frame)", workers, runs["naive"], cfg.num_frames)
            ours = _row(label, "ours (decord, sampled frames)", workers, runs["ours"], cfg.num_frames)
            ours.speedup = ours.clips_per_s / naive.clips_per_s
            ours.cpu_speedup = naive.cpu_s_per_clip / ours.cpu_s_per_clip
            rows += [naive, ours]
            log(
                f"  {label}, {workers} worker(s): naive {naive.clips_per_s:.2f} clips/s, "
                f"ours {ours.clips_per_s:.2f} clips/s ({ours.speedup:.1f}x; "
                f"CPU per clip {ours.cpu_speedup:.1f}x)"
            )

    header = (
        f"{'video':<6} | {'loader':<30} | {'workers':>7} | {'clips':>5} | {'seconds':>7} | {'clips/s':>7} | "
        f"{'frames/s':>8} | {'CPU s/clip':>10} | {'vs naive':>8} | {'vs naive (CPU)':>14}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        ratio = f"{r.speedup:.1f}x" if r.speedup is not None else ""
        cpu_ratio = f"{r.cpu_speedup:.1f}x" if r.cpu_speedup is not None else ""
        lines.append(
            f"{r.video:<6} | {r.loader:<30} | {r.workers:>7} | {r.clips:>5} | {r.seconds:>7.1f} | "
            f"{r.clips_per_s:>7.2f} | {r.frames_per_s:>8.1f} | {r.cpu_s_per_clip:>10.3f} | {ratio:>8} | "
            f"{cpu_ratio:>14}"
        )
    info = machine()
    setup = (
        f"{cfg.num_frames} frames at {cfg.fps:g} FPS from the start, {cfg.image_size} px; "
        f"{info['cores']} CPU cores ({info['cpu']}), load average {os.getloadavg()[0]:.1f}\n"
        f"clips/s and CPU s/clip: median of {trials} run(s); frames/s: sampled frames delivered per second; "
        f"clips, seconds, clips/s: after every worker's first clip (start-up left out); "
        f"CPU s/clip: CPU time of the loader process and its workers per clip, start-up included"
    )
    log("")
    log("\n".join(lines))
    log(setup)
    if args.json:
        print(
            json.dumps(
                {
                    "machine": info,
                    "config": asdict(cfg),
                    "quick": args.quick,
                    "trials": trials,
                    "load_average": os.getloadavg(),
                    "rows": [asdict(r) for r in rows],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
