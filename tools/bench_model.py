"""Peak memory and step time of a full training step of the video encoder, side by side in one run.

Each configuration runs in its own process (so peak RSS is that configuration's alone). The parent
polls the child's RSS and kills it above ``--cap-gib``: an out-of-memory becomes a "does not fit" row,
not a crash. A step is forward + backward + AdamW on an NCE loss against fixed random text features
(the text tower is not what is measured).

Memory columns (of the measured step, which follows one warm-up step: AdamW allocates its two moments in its
first step, after backward has freed the activations, so a first step's peak holds no optimizer state):
  peak    peak RSS of the process (includes the Python/torch runtime, ~0.3-0.5 GiB)
  fixed   RSS after the warm-up step: weights, gradients and AdamW moments, plus what the allocator kept of the
          warm-up's activations (the measured step frees the gradients before its forward, set_to_none)
  act     peak - fixed: a lower bound of the step's activation memory (RSS: noisy for small cases)
  saved   bytes of the tensors autograd saved for backward (weights excluded), counted exactly: the activation
          memory ratios use this column. With gradient checkpointing (cases ``*_gc``) the blocks save nothing
          through autograd's hooks (their inputs are held by the checkpoint, their activations recomputed in
          backward): the column then misses the block inputs, and ``act`` is the figure to compare

Time: the measured step. Ratios use the step's CPU time (all threads of the process), which other processes on
a shared machine disturb far less than wall time; wall time is printed beside it. CPU only (the memory columns
are RSS): GPU timings and bf16 are not measured by this script.

Usage:
  python tools/bench_model.py            # full grid, ViT-B/16 at 256 px (~15 min on 2 cores)
  python tools/bench_model.py --quick    # smaller grid (a couple of minutes)
  python tools/bench_model.py --json     # figures as JSON on stdout
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

GIB = 1024**3


@dataclass
class Case:
    """One benchmark configuration."""

    name: str
    model: str = "ours"  # "ours" | "vivit" (transformers.VivitModel, the peer a user would pick)
    frames: int = 16
    batch: int = 8
    mask: float = 0.0
    trainable_last: int | None = None
    grad_checkpointing: bool = False
    preset: str = "vit-b16"
    image_size: int = 256
    warmup: int = 1
    steps: int = 1
    result: dict = field(default_factory=dict)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class SavedActivations:
    """Counts the bytes of the tensors autograd saves for backward inside ``with`` (weights excluded): a step's
    activation memory, exactly, whatever the allocator caches. Each ``with`` starts the count afresh."""

    def __init__(self, model: object) -> None:
        self._weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self._saved: dict[int, int] = {}

    def _pack(self, t: object) -> object:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in self._weights:  # weights saved for backward are not activations
            self._saved[ptr] = t.untyped_storage().nbytes()
        return t

    def __enter__(self) -> SavedActivations:
        import torch

        self._saved.clear()
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)

    @property
    def nbytes(self) -> int:
        return sum(self._saved.values())


def run_case(case: Case) -> dict:
    """Run one configuration in this process and return its figures."""
    import torch
    import torch.nn.functional as F

    from longvivit import VideoEncoder, VideoEncoderConfig

    torch.manual_seed(0)
    cfg = VideoEncoderConfig.preset(case.preset, image_size=case.image_size, num_frames=case.frames)
    if case.model == "ours":
        model = VideoEncoder(cfg)
        if case.trainable_last is not None:
            model.freeze(trainable_last=case.trainable_last)
        model.set_grad_checkpointing(case.grad_checkpointing)

        def embed(video: torch.Tensor) -> torch.Tensor:
            return model(video, mask_ratio=case.mask)
    else:
        from transformers import VivitConfig, VivitModel

        hf_cfg = VivitConfig(
            image_size=case.image_size, num_frames=case.frames, tubelet_size=list(cfg.tubelet_size),
            hidden_size=cfg.width, num_hidden_layers=cfg.depth, num_attention_heads=cfg.heads,
            intermediate_size=int(cfg.width * cfg.mlp_ratio), hidden_act="gelu",
        )
        vivit = VivitModel(hf_cfg, add_pooling_layer=False)
        head = torch.nn.Sequential(torch.nn.LayerNorm(cfg.width), torch.nn.Linear(cfg.width, cfg.embed_dim))
        model = torch.nn.ModuleDict({"vivit": vivit, "head": head})

        def embed(video: torch.Tensor) -> torch.Tensor:
            tokens = vivit(pixel_values=video).last_hidden_state  # (B, 1 + N, C)
            return head(tokens[:, 1:].mean(1))

    params = [p for p in model.parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=1e-4)
    video = torch.randn(case.batch, case.frames, 3, case.image_size, case.image_size)
    text = F.normalize(torch.randn(case.batch, cfg.embed_dim), dim=-1)
    labels = torch.arange(case.batch)
    # without a warm-up step, estimate the state the first step allocates: grads (4 B) + AdamW moments (8 B)
    fixed = _rss_bytes() + 12 * n_train
    saved = SavedActivations(model)
    times, cpu_times = [], []
    for i in range(case.warmup + case.steps):
        if i == case.warmup and i > 0:
            fixed = _rss_bytes()  # weights, grads and AdamW moments, all allocated by now
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        with saved:
            logits = 100.0 * F.normalize(embed(video), dim=-1) @ text.T
            loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        loss.backward()
        opt.step()
        if i >= case.warmup:
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    visible = cfg.num_tokens - int(cfg.num_tokens * case.mask) if case.model == "ours" else cfg.num_tokens
    return {
        "step_s": min(times),
        "step_cpu_s": min(cpu_times),
        "peak_gib": peak / GIB,
        "fixed_gib": fixed / GIB,
        "act_gib": max(0, peak - fixed) / GIB,
        "saved_gib": saved.nbytes / GIB,
        "trainable_params": n_train,
        "visible_tokens": visible,
        "tokens_per_s": case.batch * visible / min(times),
    }


def run_isolated(case: Case, cap_gib: float, timeout_s: float) -> dict:
    """Run ``case`` in a child process; a child above the memory cap is killed and reported."""
    import psutil

    cmd = [sys.executable, __file__, "--worker", json.dumps(asdict(case))]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child, peak, start = psutil.Process(proc.pid), 0, time.time()
    while proc.poll() is None:
        try:
            peak = max(peak, child.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        if peak > cap_gib * GIB:
            proc.kill()
            proc.wait()
            return {"error": f"does not fit (> {cap_gib:g} GiB)"}
        if time.time() - start > timeout_s:
            proc.kill()
            proc.wait()
            return {"error": f"timeout (> {timeout_s:.0f} s)"}
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode != 0:
        last = (err.strip().splitlines() or ["?"])[-1]
        return {"error": f"failed: {last[:120]}"}
    return json.loads(out.strip().splitlines()[-1])


def grid(quick: bool, preset: str, image_size: int) -> list[Case]:
    """The configurations of a run; names are what the ratio table refers to."""
    b = 2 if quick else 8
    cases = [Case(f"mask{m:g}_16f_b{b}", mask=m, batch=b) for m in ((0.0, 0.75) if quick else (0.0, 0.5, 0.75, 0.9))]
    cases.append(Case(f"vivit_16f_b{b}", model="vivit", batch=b))
    frames = (16, 64) if quick else (16, 64, 128, 256)
    cases += [Case(f"mask0.75_{f}f_b1", frames=f, batch=1, mask=0.75) for f in frames]
    cases += [Case(f"mask0_{f}f_b1", frames=f, batch=1, mask=0.0) for f in ((16,) if quick else (16, 64))]
    cases.append(Case(f"mask0.75_{frames[-1]}f_b1_last4", frames=frames[-1], batch=1, mask=0.75, trainable_last=4))
    # gradient checkpointing (stage 3 turns it on): memory saved against the recompute's time
    cases.append(Case(f"mask0_16f_b{b}_gc", batch=b, grad_checkpointing=True))
    cases.append(Case(f"mask0.75_{frames[-1]}f_b1_gc", frames=frames[-1], batch=1, mask=0.75, grad_checkpointing=True))
    for c in cases:
        c.preset, c.image_size = preset, image_size
    return cases


def ratios(results: dict[str, dict], quick: bool) -> list[tuple[str, float | None, str]]:
    """Targets of the foundation issue as (label, value, target) rows."""
    b = 2 if quick else 8
    top = 64 if quick else 256

    def r(a: str, b_: str, key: str, inv: bool = False) -> float | None:
        x, y = results.get(a, {}), results.get(b_, {})
        if key not in x or key not in y or not y[key] or not x[key]:
            return None
        return y[key] / x[key] if inv else x[key] / y[key]

    m0, m75, viv = f"mask0_16f_b{b}", f"mask0.75_16f_b{b}", f"vivit_16f_b{b}"
    return [
        ("16f: peak mem mask0 / mask0.75", r(m0, m75, "peak_gib"), ">= 2.5"),
        ("16f: activation mem (saved) mask0 / mask0.75", r(m0, m75, "saved_gib"), ">= 3.5 (token limit 4)"),
        ("16f: step CPU time mask0 / mask0.75", r(m0, m75, "step_cpu_s"), ">= 3.5"),
        ("VivitModel / ours mask0: step CPU time", r(viv, m0, "step_cpu_s"), ">= 1.0 (no slower)"),
        ("VivitModel / ours mask0: peak mem", r(viv, m0, "peak_gib"), ">= 1.0 (no larger)"),
        ("VivitModel / ours mask0.75: step CPU time", r(viv, m75, "step_cpu_s"), ">= 3.5"),
        (f"act mem (saved) {top}f / 16f at mask0.75", r(f"mask0.75_{top}f_b1", "mask0.75_16f_b1", "saved_gib"),
         f"{top // 16} +- 25% (linear)"),
        (f"{top}f mask0.75 last-4 trained: peak GiB", results.get(f"mask0.75_{top}f_b1_last4", {}).get("peak_gib"),
         "<= 4"),
        ("16f mask0: act mem (RSS) plain / grad checkpointing", r(m0, f"{m0}_gc", "act_gib"), "(no target)"),
        ("16f mask0: step CPU time grad checkpointing / plain", r(f"{m0}_gc", m0, "step_cpu_s"),
         "(expected ~1.3: one more forward)"),
        (f"{top}f mask0.75: act mem (RSS) plain / grad checkpointing",
         r(f"mask0.75_{top}f_b1", f"mask0.75_{top}f_b1_gc", "act_gib"), "(no target)"),
        (f"{top}f mask0.75: step CPU time grad checkpointing / plain",
         r(f"mask0.75_{top}f_b1_gc", f"mask0.75_{top}f_b1", "step_cpu_s"), "(expected ~1.3: one more forward)"),
    ]


def plot(results: dict[str, dict], path: Path) -> None:
    """Activation and peak memory vs frames, one line per mask ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for mask, style in ((0.0, "o-"), (0.75, "s-")):
        pts = sorted(
            (int(k.split("_")[1][:-1]), v["peak_gib"])
            for k, v in results.items()
            if k.startswith(f"mask{mask:g}_") and k.endswith("_b1") and "peak_gib" in v
        )
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=f"mask {mask:g} (peak RSS)")
    ax.set_xlabel("frames (batch 1)")
    ax.set_ylabel("GiB")
    ax.set_xscale("log", base=2)
    ax.set_title("ViT-B/16 training step memory vs frames")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller grid, a couple of minutes")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--preset", default="vit-b16")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--cap-gib", type=float, default=18.0, help="kill a configuration above this RSS")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per configuration")
    p.add_argument("--only", nargs="*", help="run only these case names")
    p.add_argument("--plot", type=Path, default=None, help="write the memory-vs-frames PNG here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        case = Case(**json.loads(args.worker))
        print(json.dumps(run_case(case)))
        return 0

    cases = grid(args.quick, args.preset, args.image_size)
    if args.only:
        cases = [c for c in cases if c.name in args.only]
    results: dict[str, dict] = {}
    for c in cases:
        t0 = time.time()
        results[c.name] = run_isolated(c, args.cap_gib, args.timeout)
        print(f"[{time.time() - t0:6.1f}s] {c.name}: {results[c.name]}", file=sys.stderr, flush=True)

    rows = ratios(results, args.quick)
    if args.json:
        print(json.dumps({"preset": args.preset, "image_size": args.image_size, "cases": results,
                          "ratios": {label: value for label, value, _ in rows}}, indent=2))
    else:
        print(f"\n{args.preset} @ {args.image_size}px, {os.cpu_count()} CPU cores")
        print(f"{'case':<28}{'step s':>9}{'CPU s':>9}{'peak GiB':>10}{'fixed':>8}{'act':>8}{'saved':>8}{'tokens':>8}"
              f"{'tok/s':>9}")
        for name, res in results.items():
            if "error" in res:
                print(f"{name:<28}  {res['error']}")
                continue
            print(f"{name:<28}{res['step_s']:>9.2f}{res['step_cpu_s']:>9.2f}{res['peak_gib']:>10.2f}{res['fixed_gib']:>8.2f}"
                  f"{res['act_gib']:>8.2f}{res['saved_gib']:>8.2f}{res['visible_tokens']:>8}{res['tokens_per_s']:>9.0f}")
        print(f"\n{'ratio':<58}{'value':>8}  target")
        for label, value, target in rows:
            shown = f"{value:8.2f}" if value is not None else "     n/a"
            print(f"{label:<58}{shown}  {target}")
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
