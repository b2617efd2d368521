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
import math
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
from bench_model import _rss_bytes  # noqa: E402  (the same RSS probe as the model benchmark)

MIB = 1024**2
BEGIN, END = "<!-- ablate:begin -->", "<!-- ablate:end -->"


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


def spec_hash(grid: Grid, cell: Cell, stage1: str) -> str:
    """Everything a cell's result depends on; a stored result with another hash is rerun."""
    spec = {"base": (ROOT / grid.base).read_text(), "common": grid.common, "args": cell.args, "stage1": stage1,
            "eval": grid.eval, "measure": grid.measure, "train": cell.train}
    return hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- running
def _fit(args: list[str], run_dir: Path) -> None:
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
    done = {"seconds": time.time() - t0, "cpu_seconds": _cpu_seconds() - cpu0, "args": args}
    (run_dir / "fit.done").write_text(json.dumps(done))


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (data workers): wall time on a shared machine
    says little about cost, CPU time does."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _fit_done(run_dir: Path, args: list[str]) -> bool:
    """Whether ``run_dir`` holds a finished training with exactly these arguments."""
    done, ckpt = run_dir / "fit.done", run_dir / "checkpoints" / "last.ckpt"
    return done.is_file() and ckpt.is_file() and json.loads(done.read_text()).get("args") == args


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
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in weights:  # weights saved for backward are not activations
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    times = []
    for _ in range(job["steps"]):
        saved.clear()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            feats = F.normalize(model(video), dim=-1)
            extra = F.normalize(model(order_negatives(video, kinds, cfg.tubelet_size[0])), dim=-1) if kinds else None
        loss = NCELoss()(feats, text, 100.0, extra_video_features=extra)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    act = sum(saved.values())
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


def run_cell(grid: Grid, cell: Cell, run_dir: Path, stage1: str) -> dict[str, Any]:
    """Train, evaluate and measure one cell (training skipped if it already finished)."""
    cell_dir = run_dir / "runs" / cell.name
    cfg, args = effective_config(grid, cell), fit_args(grid, cell, cell_dir, stage1)
    if not cell.train:
        ckpt, fit = ROOT / stage1, {"seconds": 0.0, "cpu_seconds": 0.0}
    else:
        if not _fit_done(cell_dir, args):  # a changed definition (or stage 1) retrains
            print(f"[ablate] {cell.name}: training", flush=True)
            _fit(args, cell_dir)
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


# --------------------------------------------------------------------------- report
def r1(res: dict[str, Any]) -> float:
    """Mean of T2V and V2T R@1 on the full test set (percent)."""
    return (res["metrics"]["t2v"]["R@1"] + res["metrics"]["v2t"]["R@1"]) / 2


def _order(res: dict[str, Any]) -> tuple[float, float]:
    """(2-way pair accuracy, subset T2V R@1) on the order-only pairs."""
    o = res["metrics"].get("order_only") or {}
    if not o:
        return float("nan"), float("nan")
    return o["pair_accuracy"]["accuracy"], o["retrieval"]["t2v"]["R@1"]


def _se(percent: float, n: int) -> float:
    """Binomial standard error (points) of a percentage measured on ``n`` independent trials."""
    q = min(max(percent / 100, 1 / n), 1 - 1 / n)  # never 0: a cell at 0% has sampling noise too
    return 100 * math.sqrt(q * (1 - q) / n)


def _r1_se(res: dict[str, Any]) -> float:
    return _se(r1(res), res["metrics"]["num_videos"])


def _pair_se(res: dict[str, Any]) -> float:
    o = res["metrics"].get("order_only") or {}
    return _se(_order(res)[0], max(1, o.get("num_pairs", 1)))  # the two queries of a pair are not independent


def _judge(gaps: list[tuple[float, float]]) -> str:
    """Verdict on claims ``gap >= 0`` given ``(gap, 2 * standard error)`` pairs."""
    if all(g >= 0 for g, _ in gaps):
        return "holds" if all(g >= n for g, n in gaps) else "not resolved at this scale (leans holds, within noise)"
    if any(g <= -n for g, n in gaps):
        return "does not hold"
    return "not resolved at this scale (leans does not hold, within noise)"


def findings(spec: dict[str, Any], by: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    """The paper's four findings checked on the cells ``spec`` names: ``[(claim, verdict, evidence)]``.

    ``spec``: ``order: {joint: cell, frame: [cells]}``, ``masking: {backbone: [mask-0 cell, masked cell]}``
    (must include ``joint``), ``peft: {full: cell, peft: [cells]}``. A gap counts as resolved when it exceeds
    two binomial standard errors of the difference (test videos, or order pairs, as trials).
    """
    out = []

    def have(*names: str) -> bool:
        return all(n in by for n in names)

    def noise(*cells: dict[str, Any], se=_r1_se) -> float:
        return 2 * math.sqrt(sum(se(c) ** 2 for c in cells))

    o = spec.get("order", {})
    claim = "(a) joint space-time attention >= frame-level on order-sensitive retrieval"
    if o and have(o["joint"], *o["frame"]):
        j, jr = _order(by[o["joint"]]), by[o["joint"]]
        gaps = [(j[0] - _order(by[f])[0], noise(jr, by[f], se=_pair_se)) for f in o["frame"]]
        ev = f"order-pair accuracy (chance 50%): joint {j[0]:.1f}, " + ", ".join(
            f"{f} {_order(by[f])[0]:.1f}" for f in o["frame"]) + f" (2 SE of a gap ~{gaps[0][1]:.0f}); subset " \
            "T2V R@1: joint " + f"{j[1]:.1f}, " + ", ".join(f"{f} {_order(by[f])[1]:.1f}" for f in o["frame"])
        out.append((claim, _judge(gaps), ev))
    m = spec.get("masking", {})
    claim = "(b) 75% masking within ~2 points R@1 of no masking, with >= 2.5x memory saving"
    if "joint" in m and have(*m["joint"]):
        a, b = by[m["joint"][0]], by[m["joint"][1]]
        d, ratio = r1(b) - r1(a), a["memory"]["train_mib"] / b["memory"]["train_mib"]
        act = a["memory"]["act_mib"] / b["memory"]["act_mib"]
        rss = a["memory"]["peak_rss_mib"] / b["memory"]["peak_rss_mib"]
        acc = _judge([(d + 2, noise(a, b))])
        verdict = acc if ratio >= 2.5 else f"does not hold (memory); accuracy part: {acc}"
        out.append((claim, verdict, f"mean R@1 {r1(a):.1f} -> {r1(b):.1f} ({d:+.1f}, 2 SE {noise(a, b):.1f}); "
                    f"train memory {ratio:.2f}x smaller (activations {act:.2f}x; process peak RSS {rss:.2f}x, "
                    "mostly the PyTorch runtime at this size)"))
    claim = "(c) joint space-time attention is the most robust to masking"
    if "joint" in m and len(m) > 1 and all(have(*v) for v in m.values()):
        drops = {k: r1(by[v[0]]) - r1(by[v[1]]) for k, v in m.items()}
        gaps = [(drops[k] - drops["joint"], noise(*(by[c] for c in m["joint"] + v))) for k, v in m.items()
                if k != "joint"]
        out.append((claim, _judge(gaps), "R@1 lost by 75% masking: " + ", ".join(
            f"{k} {d:+.1f}" for k, d in drops.items()) + f" (2 SE of a difference of drops ~{gaps[0][1]:.0f})"))
    pf = spec.get("peft", {})
    claim = "(d) parameter-efficient image-to-video adaptation loses to full tuning"
    if pf and have(pf["full"], *pf["peft"]):
        full = by[pf["full"]]
        gaps = [(r1(full) - r1(by[c]), noise(full, by[c])) for c in pf["peft"]]
        out.append((claim, _judge(gaps), f"mean R@1: full tuning {r1(full):.1f}, " + ", ".join(
            f"{c} {r1(by[c]):.1f}" for c in pf["peft"]) + f" (2 SE of a gap ~{gaps[0][1]:.0f})"))
    return out


def _tuning(s: dict[str, Any]) -> str:
    if s["peft"] == "adapter":
        return f"adapters d={s['adapter_dim']}"
    if s["peft"] == "lora":
        return f"LoRA r={s['lora_rank']}"
    if s["peft"] == "last_k":
        return f"last {s['trainable_last'] or 4} blocks"
    return "full" if s.get("trained", True) else "none (image stage)"


def plot(results: list[dict[str, Any]], masking: dict[str, list[str]], path: Path) -> None:
    """Memory vs mean R@1, one point per cell, arrows from each backbone's mask-0 cell to its masked cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {r["name"]: r for r in results}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups = sorted({r["group"] for r in results})
    for i, g in enumerate(groups):
        pts = [r for r in results if r["group"] == g]
        ax.scatter([r["memory"]["train_mib"] for r in pts], [r1(r) for r in pts], label=g or "cells",
                   marker="osD^v"[i % 5], s=40)
        for r in pts:
            ax.annotate(r["name"], (r["memory"]["train_mib"], r1(r)), fontsize=7, xytext=(4, 3),
                        textcoords="offset points")
    for a, b in masking.values():
        if a in by and b in by:
            ax.annotate("", xy=(by[b]["memory"]["train_mib"], r1(by[b])),
                        xytext=(by[a]["memory"]["train_mib"], r1(by[a])),
                        arrowprops={"arrowstyle": "->", "color": "gray", "lw": 0.8})
    if results:
        ax.axhline(results[0]["metrics"]["chance"]["R@1"], color="k", ls=":", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_xlabel("training-step memory of the video encoder, MiB (weights + optimiser state + activations)")
    ax.set_ylabel("zero-shot R@1, mean of T2V and V2T (%)")
    ax.set_title("memory vs retrieval (arrows: 75% masking)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(grid: Grid, results: list[dict[str, Any]], out: Path, command: str, machine: str) -> None:
    """Write the generated part of the report between the markers of ``out`` (text outside is kept)."""
    png = out.with_suffix(".png")
    plot(results, grid.findings.get("masking", {}), png)
    by = {r["name"]: r for r in results}
    first = results[0] if results else None
    common = ", ".join(f"`{k}={v if isinstance(v, str) else json.dumps(v)}`" for k, v in grid.common.items())
    lines = [BEGIN, "", f"Generated by `{command}` on {machine}.", "",
             f"Every cell: `{grid.base}` + {common} + its own overrides, initialised from the image stage "
             f"`{first['stage1'] if first else '?'}`. Retrieval: zero-shot on `{grid.eval['shards']}`, no masking "
             "at test time; *order pairs*: 2-way text-to-video choice between two videos with the same events in "
             "another order (chance 50%), and T2V R@1 among those videos only. Memory: one training step of the "
             f"video encoder at batch {grid.measure.get('batch', 16)} (`train MiB` = weights + gradients and AdamW "
             "moments of trainable parameters + activations saved for backward, exact; peak RSS of the "
             "measuring process includes the PyTorch runtime).", ""]
    if first:
        c = first["metrics"]["chance"]
        lines += [f"{first['metrics']['num_videos']} test videos, {first['metrics']['num_texts']} captions: "
                  f"chance R@1 {c['R@1']:.2f}%, MRR {c['MRR']:.3f}.", ""]
    lines += ["| cell | backbone | mask | tuning | trainable params | train MiB | act MiB | peak RSS MiB | "
              "T2V R@1 | V2T R@1 | order pairs % | order T2V R@1 | fit CPU min |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        s, mem, m = r["settings"], r["memory"], r["metrics"]
        bb = s["backbone"] + (f" ({s['frame_pool']} pool)" if s["backbone"] == "frame" else "")
        if s.get("tubelet_size") and list(s["tubelet_size"]) != [2, 16, 16]:
            bb += " " + "x".join(map(str, s["tubelet_size"]))
        pa, ot = _order(r)
        lines.append(f"| {r['label']} | {bb} | {s['mask_ratio']:g} | {_tuning(s)} | {mem['trainable_params']:,} | "
                     f"{mem['train_mib']:.0f} | {mem['act_mib']:.0f} | {mem['peak_rss_mib']:.0f} | "
                     f"{m['t2v']['R@1']:.1f} | {m['v2t']['R@1']:.1f} | {pa:.1f} | {ot:.1f} | "
                     f"{(r.get('fit_cpu_seconds') or 0) / 60:.1f} |")
    lines += ["", "### The paper's findings at this scale", ""]
    for claim, verdict, evidence in findings(grid.findings, by):
        lines.append(f"- **{claim}: {verdict}.** {evidence}.")
    lines += ["", f"![memory vs R@1]({png.name})", "", END]
    text = out.read_text() if out.is_file() else f"# {grid.title}\n\n{BEGIN}\n{END}\n"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + "\n".join(lines) + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


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
        t_start = time.time()
        for cell in grid.cells:
            if args.dry_run:
                print("longvivit " + " ".join(fit_args(grid, cell, run_dir / "runs" / cell.name, stage1)))
                continue
            out = cells_dir / f"{cell.name}.json"
            want = spec_hash(grid, cell, stage1)
            forced = args.only is not None and cell.name in args.only
            if args.only is not None and not forced:
                continue
            if out.is_file() and json.loads(out.read_text()).get("spec") == want and not forced:
                print(f"[ablate] {cell.name}: stored, skipped", flush=True)
                continue
            if forced:  # a rerun retrains too
                (run_dir / "runs" / cell.name / "fit.done").unlink(missing_ok=True)
            t0 = time.time()
            result = run_cell(grid, cell, run_dir, stage1)
            result["spec"], result["stage1"] = want, stage1
            cells_dir.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=1) + "\n")
            m = result["metrics"]
            print(f"[ablate] {cell.name}: T2V R@1 {m['t2v']['R@1']:.1f} V2T R@1 {m['v2t']['R@1']:.1f} "
                  f"train {result['memory']['train_mib']:.0f} MiB ({time.time() - t0:.0f} s, "
                  f"{time.time() - t_start:.0f} s so far)", flush=True)
        if args.dry_run:
            return 0
    results = [json.loads((cells_dir / f"{c.name}.json").read_text()) for c in grid.cells
               if (cells_dir / f"{c.name}.json").is_file()]
    missing = [c.name for c in grid.cells if not (cells_dir / f"{c.name}.json").is_file()]
    if missing:
        print(f"[ablate] cells not run yet: {missing}", flush=True)
    if args.out:
        command = f"python tools/ablate.py --grid {args.grid} --out {args.out}"
        machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, torch threads {_torch_threads()}"
        write_report(grid, results, args.out, command=command, machine=machine)
        print(f"[ablate] report -> {args.out}", flush=True)
    return 0


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    sys.exit(main())
