"""The report of ``tools/ablate.py``: results table, the paper's findings checked one by one, and the plot.

A finding compares groups of cells (``findings`` in the grid) and is judged against the binomial standard
errors of the numbers it rests on, so a gap inside the noise is reported as "not resolved at this scale".
The report replaces the text between the ``ablate`` markers of its output file and keeps the rest.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ablate import Grid

BEGIN, END = "<!-- ablate:begin -->", "<!-- ablate:end -->"


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
    if all(g == 0 for g, _ in gaps):  # equal numbers lean neither way
        return "not resolved at this scale (no difference measured)"
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


def write_report(grid: Grid, results: list[dict[str, Any]], out: Path, command: str, machine: str,
                 failures: dict[str, str] | None = None) -> None:
    """Write the generated part of the report between the markers of ``out`` (text outside is kept).

    ``failures`` (cell name -> error) are listed under the table: a cell that did not run is said, not dropped.
    """
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
    for name, error in (failures or {}).items():
        lines.append(f"| {name} | failed: {error.splitlines()[0][:160]} |" + " |" * 11)
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
