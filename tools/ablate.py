"""One-command ablation of the paper's design space: train every cell of a grid, measure it, write the report.

A grid (``recipes/ablations/<name>.yaml``) names a base recipe, overrides shared by every cell and the
overrides of each cell. Every cell is trained with ``longvivit fit`` from the same image-stage checkpoint on
the same shards with the same budget, then gets:

- zero-shot T2V/V2T retrieval on the test split, in full and on the order-only subset (pairs of videos with
  the same events in another order; ``longvivit.evaluation.evaluate.order_only_metrics``);
- the memory of one training step of its video encoder at a fixed batch, in a child process like
  ``tools/bench_model.py``: peak RSS, and two exact figures that do not depend on the allocator or on the
  runtime's own footprint: the activations saved for backward, and ``train MiB`` = weights + gradients and
  AdamW moments of the trainable parameters + those activations.

Finished cells are stored as ``<run_dir>/cells/<name>.json`` with a hash of everything that defines them
and are not rerun while that hash holds; a killed run resumes at the first unfinished cell (and a cell whose
training finished is not retrained). The report (table, the paper's findings checked one by one, and a
memory-vs-R@1 plot in the style of the paper's Figure 2) replaces the text between the ``ablate`` markers of
``--out`` and keeps anything written outside them.

Usage:
  python tools/ablate.py --grid recipes/ablations/tiny.yaml --out docs/ablations.md
  python tools/ablate.py --grid recipes/ablations/tiny.yaml --only joint lora    # (re)run some cells
  python tools/ablate.py --grid recipes/ablations/tiny.yaml --report-only        # rebuild the report
  python tools/ablate.py --grid recipes/ablations/tiny.yaml --dry-run            # print the fit commands
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from ablate_report import write_report  # noqa: E402
from bench_model import SavedActivations, _rss_bytes  # noqa: E402  (the model benchmark's probes)

MIB = 1024**2


# --------------------------------------------------------------------------- the grid
@dataclass
class Cell:
    """One configuration: a name, a label for the report, a group and dotted recipe overrides.

    ``train: false`` evaluates the image-stage checkpoint itself under the cell's settings: the starting
    point every trained cell is compared with.
    """

    name: str
    label: str = ""
    group: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    train: bool = True


@dataclass
class Grid:
    """A grid file. Unknown keys are an error, like in recipes.

    Attributes:
        base: Recipe every cell starts from.
        run_dir: Where stage 1, the cells' runs and their JSON results go.
        common: Dotted overrides applied to every cell (the shared budget and data).
        cells: The cells.
        stage1: ``{"reuse": [paths], "recipe": path, "args": {...}}``: the first existing ``reuse`` checkpoint,
            else a stage-1 run of ``recipe`` in ``run_dir/stage1`` (trained once, then cached).
        prepare: ``{"data": dir, "shards": dir, "preset": name}``: generate the synthetic set and its shards
            when ``eval.shards`` is missing.
        eval: ``{"shards": path, "batch_size": n}``: the test split.
        measure: ``{"batch": n, "steps": n, "device": "cpu" | "cuda"}``: the memory measurement (on CUDA the
            peak allocated GPU memory is recorded too).
        findings: Which cells answer which of the paper's findings (see :func:`findings`).
        title: Report title.
    """

    base: str
    run_dir: str
    common: dict[str, Any]
    cells: list[Cell]
    stage1: dict[str, Any]
    eval: dict[str, Any]
    measure: dict[str, Any] = field(default_factory=lambda: {"batch": 16, "steps": 2})
    prepare: dict[str, Any] | None = None
    findings: dict[str, Any] = field(default_factory=dict)
    title: str = "Ablations"

    @classmethod
    def load(cls, path: str | Path) -> Grid:
        raw = yaml.safe_load(Path(path).read_text())
        known = set(cls.__dataclass_fields__)
        if unknown := set(raw) - known:
            raise ValueError(f"{path}: unknown grid keys {sorted(unknown)}; known: {sorted(known)}")
        raw["cells"] = [Cell(**c) for c in raw["cells"]]
        names = [c.name for c in raw["cells"]]
        if len(set(names)) != len(names):
            raise ValueError(f"{path}: duplicate cell names in {names}")
        return cls(**raw)


def cli_args(overrides: dict[str, Any]) -> list[str]:
    """Dotted overrides -> LightningCLI arguments (values as YAML/JSON: null, true, [2, 16, 16])."""
    return [f"--{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in overrides.items()]


def effective_config(grid: Grid, cell: Cell) -> dict[str, Any]:
    """The base recipe with the common and the cell's overrides applied (for the settings we report)."""
    cfg = yaml.safe_load((ROOT / grid.base).read_text())
    for key, value in {**grid.common, **cell.args}.items():
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return cfg


def file_digest(path: str | Path) -> str:
    """Content hash of a checkpoint: a cell trained from another image stage at the same path is stale."""
    h = hashlib.sha1()
    with open(ROOT / path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def spec_hash(grid: Grid, cell: Cell, stage1: str, stage1_digest: str = "") -> str:
    """Everything a cell's result depends on; a stored result with another hash is rerun."""
    spec = {"base": (ROOT / grid.base).read_text(), "common": grid.common, "args": cell.args, "stage1": stage1,
            "stage1_digest": stage1_digest, "eval": grid.eval, "measure": grid.measure, "train": cell.train}
    return hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- running
def _fit(args: list[str], run_dir: Path, source: str = "") -> None:
    """``longvivit fit`` in this process, then a marker with the arguments and the time it took.

    ``run_dir`` is emptied first: Lightning would not overwrite an older ``last.ckpt`` (it writes
    ``last-v1.ckpt`` beside it), and old logs would mix with the new ones.
    """
    from longvivit.cli import main as cli_main

    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0, cpu0 = time.time(), _cpu_seconds()
    if cli_main(args) != 0:
        raise RuntimeError(f"longvivit {' '.join(args)} failed")
    done = {"seconds": time.time() - t0, "cpu_seconds": _cpu_seconds() - cpu0, "args": args, "source": source}
    (run_dir / "fit.done").write_text(json.dumps(done))


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (data workers): wall time on a shared machine
    says little about cost, CPU time does."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _fit_done(run_dir: Path, args: list[str], source: str = "") -> bool:
    """Whether ``run_dir`` holds a finished training with exactly these arguments (and initial weights)."""
    done, ckpt = run_dir / "fit.done", run_dir / "checkpoints" / "last.ckpt"
    if not (done.is_file() and ckpt.is_file()):
        return False
    marker = json.loads(done.read_text())
    return marker.get("args") == args and marker.get("source", "") == source


def _out_paths(run_dir: Path) -> dict[str, str]:
    return {"trainer.default_root_dir": str(run_dir), "trainer.logger.init_args.save_dir": str(run_dir),
            "checkpoint.dirpath": str(run_dir / "checkpoints")}


def fit_args(grid: Grid, cell: Cell, run_dir: Path, stage1: str) -> list[str]:
    """The ``longvivit fit`` arguments of one cell, with all outputs inside ``run_dir``."""
    paths = {"model.init_from": str(ROOT / stage1), **_out_paths(run_dir)}
    return ["fit", "--config", str(ROOT / grid.base), *cli_args({**grid.common, **cell.args, **paths})]


def prepare_data(grid: Grid) -> None:
    """Generate the synthetic set and its shards if the evaluation shards are missing."""
    if (ROOT / grid.eval["shards"]).exists() or not grid.prepare:
        return
    from longvivit.data import make_shards, synthetic

    data, shards = ROOT / grid.prepare["data"], ROOT / grid.prepare["shards"]
    print(f"[ablate] generating synthetic data in {data} and shards in {shards}", flush=True)
    if synthetic.main(["--out", str(data), "--preset", grid.prepare.get("preset", "demo")]) != 0:
        raise RuntimeError("synthetic data generation failed")
    for name in ("images", "clips"):
        for split in ("train", "val", "test"):
            manifest = data / name / f"{split}.jsonl"
            if make_shards.main(["--manifest", str(manifest), "--out", str(shards / name / split)]) != 0:
                raise RuntimeError(f"make_shards failed for {manifest}")


def stage1_checkpoint(grid: Grid, run_dir: Path, dry_run: bool = False) -> str:
    """The image-stage checkpoint every cell starts from (reused, cached, or trained now)."""
    for path in grid.stage1.get("reuse") or []:
        if (ROOT / path).is_file():
            return path
    stage_dir = run_dir / "stage1"
    ckpt = stage_dir / "checkpoints" / "last.ckpt"
    shown = str(ckpt.relative_to(ROOT) if ckpt.is_relative_to(ROOT) else ckpt)
    args = ["fit", "--config", str(ROOT / grid.stage1["recipe"]),
            *cli_args({**grid.stage1.get("args", {}), **_out_paths(stage_dir)})]
    if dry_run or _fit_done(stage_dir, args):
        return shown
    print(f"[ablate] training the image stage: longvivit {' '.join(args)}", flush=True)
    _fit(args, stage_dir)
    return shown


_CLIPS: dict[tuple, list] = {}


def evaluate_cell(ckpt: Path, cfg: dict[str, Any], grid: Grid) -> dict[str, Any]:
    """Zero-shot retrieval of a trained cell on the test split, full and order-only (no masking)."""
    import torch

    from longvivit.config import PreprocessConfig
    from longvivit.data.clips import load_clips
    from longvivit.evaluation.evaluate import evaluate, order_only_metrics
    from longvivit.models.checkpoint import load_model

    frames = cfg.get("model", {}).get("video", {}).get("num_frames")
    model, _ = load_model(ckpt, **({"num_frames": frames} if frames else {}))
    video = model.video_encoder.cfg
    data = cfg.get("data", {})
    pre = PreprocessConfig(num_frames=video.num_frames, fps=float(data.get("fps", 1.0)),
                           sampling=data.get("sampling", "fps"), image_size=video.image_size)
    key = (str(ROOT / grid.eval["shards"]), pre.num_frames, pre.fps, pre.sampling, pre.image_size)
    if key not in _CLIPS:  # every cell sees the same decoded clips; decode them once
        _CLIPS[key] = list(load_clips(key[0], preprocess=pre))
    torch.set_grad_enabled(False)
    try:
        ev, pair_of = evaluate(model, _CLIPS[key], batch_size=int(grid.eval.get("batch_size", 32)))
    finally:
        torch.set_grad_enabled(True)
    metrics = ev.compute()
    metrics["order_only"] = order_only_metrics(ev, pair_of)
    return metrics


def measure_cell(cfg: dict[str, Any], grid: Grid) -> dict[str, Any]:
    """Memory of one training step of the cell's video encoder, measured in a child process."""
    model = cfg.get("model", {})
    job = {"video": model.get("video", {}), "peft": model.get("peft"), "trainable_last": model.get("trainable_last"),
           "batch": int(grid.measure.get("batch", 16)), "steps": int(grid.measure.get("steps", 2)),
           "device": grid.measure.get("device", "cpu"), "order_negatives": model.get("order_negatives") or []}
    proc = subprocess.run([sys.executable, __file__, "--measure", json.dumps(job)], capture_output=True, text=True,
                          cwd=ROOT, timeout=float(grid.measure.get("timeout", 900)))
    if proc.returncode != 0:
        raise RuntimeError(f"memory measurement failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _peak_rss_bytes() -> int:
    """High-water RSS since this process's exec (``VmHWM``). ``ru_maxrss`` is not it: Linux carries it over
    exec from the forking parent, so a child of a large harness would report the harness's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # not Linux: the best there is


def measure_worker(job: dict[str, Any]) -> dict[str, Any]:
    """Child side of :func:`measure_cell`: forward + backward + AdamW on NCE against random text features
    (with the cell's order negatives encoded too, as the training step does)."""
    import torch
    import torch.nn.functional as F

    from longvivit import VideoEncoder, VideoEncoderConfig
    from longvivit.loss import NCELoss
    from longvivit.negatives import order_negatives

    torch.manual_seed(0)
    device = torch.device(job.get("device", "cpu"))
    cfg = VideoEncoderConfig.from_dict(job["video"])
    model = VideoEncoder(cfg).to(device)
    if job["peft"]:
        model.set_peft(job["peft"], trainable_last=job["trainable_last"] or 4)
    elif job["trainable_last"] is not None:
        model.freeze(trainable_last=job["trainable_last"])
    params = [p for p in model.parameters() if p.requires_grad]
    n_train, n_all = sum(p.numel() for p in params), model.num_params()
    opt = torch.optim.AdamW(params, lr=1e-4)
    b = job["batch"]
    video = torch.randn(b, cfg.num_frames, cfg.in_chans, cfg.image_size, cfg.image_size, device=device)
    text = F.normalize(torch.randn(b, cfg.embed_dim, device=device), dim=-1)
    kinds = job.get("order_negatives") or []
    base_rss = _rss_bytes()
    saved = SavedActivations(model)
    times = []
    for _ in range(job["steps"]):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with saved:
            feats = F.normalize(model(video), dim=-1)
            extra = F.normalize(model(order_negatives(video, kinds, cfg.tubelet_size[0])), dim=-1) if kinds else None
        loss = NCELoss()(feats, text, 100.0, extra_video_features=extra)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    act = saved.nbytes
    gpu = {"peak_gpu_mib": torch.cuda.max_memory_allocated(device) / MIB} if device.type == "cuda" else {}
    return {
        **gpu,
        "batch": b,
        "trainable_params": n_train,
        "params": n_all,
        "act_mib": act / MIB,
        # weights (4 B) + gradient and AdamW moments of the trainable ones (12 B) + saved activations
        "train_mib": (4 * n_all + 12 * n_train + act) / MIB,
        "peak_rss_mib": _peak_rss_bytes() / MIB,
        "rss_above_model_mib": (_peak_rss_bytes() - base_rss) / MIB,
        "step_s": min(times),
    }


def run_cell(grid: Grid, cell: Cell, run_dir: Path, stage1: str, stage1_digest: str = "") -> dict[str, Any]:
    """Train, evaluate and measure one cell (training skipped if it already finished from the same stage 1)."""
    cell_dir = run_dir / "runs" / cell.name
    cfg, args = effective_config(grid, cell), fit_args(grid, cell, cell_dir, stage1)
    if not cell.train:
        ckpt, fit = ROOT / stage1, {"seconds": 0.0, "cpu_seconds": 0.0}
    else:
        if not _fit_done(cell_dir, args, stage1_digest):  # a changed definition (or stage 1) retrains
            print(f"[ablate] {cell.name}: training", flush=True)
            _fit(args, cell_dir, stage1_digest)
        ckpt = cell_dir / "checkpoints" / "last.ckpt"
        fit = json.loads((cell_dir / "fit.done").read_text())
    t0 = time.time()
    metrics = evaluate_cell(ckpt, cfg, grid)
    eval_s = time.time() - t0
    memory = measure_cell(cfg, grid)
    video = cfg["model"].get("video", {})
    model = cfg["model"]
    return {
        "name": cell.name, "label": cell.label or cell.name, "group": cell.group, "args": cell.args,
        "settings": {
            "backbone": video.get("backbone", "joint"), "mask_ratio": video.get("mask_ratio", 0.0),
            "tubelet_size": video.get("tubelet_size"), "frame_pool": video.get("frame_pool", "mean"),
            "peft": model.get("peft"), "trainable_last": model.get("trainable_last"),
            "adapter_dim": video.get("adapter_dim", 0), "lora_rank": video.get("lora_rank", 0),
            "num_frames": video.get("num_frames"), "fps": cfg.get("data", {}).get("fps", 1.0),
            "trained": cell.train,
        },
        "fit_seconds": fit["seconds"], "fit_cpu_seconds": fit.get("cpu_seconds"), "eval_seconds": eval_s,
        "metrics": metrics, "memory": memory,
    }


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", type=Path, help="grid file, e.g. recipes/ablations/tiny.yaml")
    p.add_argument("--out", type=Path, default=None, help="report (markdown); the PNG goes next to it")
    p.add_argument("--only", nargs="*", default=None, help="run (or rerun) only these cells")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report from stored cells")
    p.add_argument("--dry-run", action="store_true", help="print every cell's fit command and exit")
    p.add_argument("--measure", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure:
        print(json.dumps(measure_worker(json.loads(args.measure))))
        return 0
    if args.grid is None:
        p.error("--grid is required")

    grid = Grid.load(args.grid)
    run_dir = (ROOT / grid.run_dir).resolve()
    cells_dir = run_dir / "cells"
    unknown = set(args.only or []) - {c.name for c in grid.cells}
    if unknown:
        p.error(f"unknown cells {sorted(unknown)}")
    if not args.report_only:
        if not args.dry_run:
            prepare_data(grid)
        stage1 = stage1_checkpoint(grid, run_dir, dry_run=args.dry_run)
        digest = "" if args.dry_run else file_digest(stage1)
        t_start = time.time()
        for cell in grid.cells:
            if args.dry_run:
                print("longvivit " + " ".join(fit_args(grid, cell, run_dir / "runs" / cell.name, stage1)))
                continue
            out = cells_dir / f"{cell.name}.json"
            want = spec_hash(grid, cell, stage1, digest)
            forced = args.only is not None and cell.name in args.only
            if args.only is not None and not forced:
                continue
            if out.is_file() and json.loads(out.read_text()).get("spec") == want and not forced:
                print(f"[ablate] {cell.name}: stored, skipped", flush=True)
                continue
            if forced:  # a rerun retrains too
                (run_dir / "runs" / cell.name / "fit.done").unlink(missing_ok=True)
            t0 = time.time()
            failed = cells_dir / f"{cell.name}.failed.json"
            cells_dir.mkdir(parents=True, exist_ok=True)
            try:
                result = run_cell(grid, cell, run_dir, stage1, digest)
            except (Exception, SystemExit) as err:  # one broken cell must not cost the rest of the grid
                reason = str(err) or type(err).__name__
                print(f"[ablate] {cell.name}: FAILED: {reason}", flush=True)
                out.unlink(missing_ok=True)
                failed.write_text(json.dumps({"name": cell.name, "spec": want, "error": reason}) + "\n")
                continue
            failed.unlink(missing_ok=True)
            result["spec"], result["stage1"] = want, stage1
            out.write_text(json.dumps(result, indent=1) + "\n")
            m = result["metrics"]
            print(f"[ablate] {cell.name}: T2V R@1 {m['t2v']['R@1']:.1f} V2T R@1 {m['v2t']['R@1']:.1f} "
                  f"train {result['memory']['train_mib']:.0f} MiB ({time.time() - t0:.0f} s, "
                  f"{time.time() - t_start:.0f} s so far)", flush=True)
        if args.dry_run:
            return 0
    results = [json.loads((cells_dir / f"{c.name}.json").read_text()) for c in grid.cells
               if (cells_dir / f"{c.name}.json").is_file()]
    failures = {c.name: json.loads((cells_dir / f"{c.name}.failed.json").read_text())["error"] for c in grid.cells
                if (cells_dir / f"{c.name}.failed.json").is_file()}
    missing = [c.name for c in grid.cells if not (cells_dir / f"{c.name}.json").is_file() and c.name not in failures]
    if missing:
        print(f"[ablate] cells not run yet: {missing}", flush=True)
    if args.out:
        command = f"python tools/ablate.py --grid {args.grid} --out {args.out}"
        machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, torch threads {_torch_threads()}"
        write_report(grid, results, args.out, command=command, machine=machine, failures=failures)
        print(f"[ablate] report -> {args.out}", flush=True)
    if failures:
        print(f"[ablate] {len(failures)} cell(s) failed: {sorted(failures)}", flush=True)
    return 1 if failures else 0


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    sys.exit(main())
