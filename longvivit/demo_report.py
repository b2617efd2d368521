"""``runs/demo/report.md``: data stats, per-stage retrieval beside chance, order probes, and plots."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

STAGES = ("stage1", "stage2", "stage3")


def _loss_curves(out: Path) -> dict[str, list[tuple[int, float]]]:
    curves: dict[str, list[tuple[int, float]]] = {}
    for stage in STAGES:
        for f in sorted((out / stage).glob("logs/version_*/metrics.csv")):
            for row in csv.DictReader(f.open()):
                for key in ("train/loss_video", "train/loss_image"):
                    if row.get(key):
                        curves.setdefault(f"{stage} {key.split('_')[-1]}", []).append(
                            (int(row["step"]), float(row[key])))
    return curves


def _plots(out: Path, results: dict[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    curves = _loss_curves(out)
    if curves:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for label, pts in curves.items():
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label)
        ax.set_xlabel("step (within stage)")
        ax.set_ylabel("NCE loss")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "loss_curves.png", dpi=110)
        plt.close(fig)
        names.append("loss_curves.png")
    evals = results.get("eval", {})
    panels = [(name, title, [(s, evals[f"{s}/{name}/original"]) for s in STAGES if f"{s}/{name}/original" in evals])
              for name, title in (("clips", "16-frame test clips"), ("long", "long test videos"))]
    panels = [p for p in panels if p[2]]
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
        width, colors = 0.25, ("tab:blue", "tab:orange", "tab:green")
        for ax, (_, title, rows) in zip(axes[0], panels, strict=True):
            for j, k in enumerate(("R@1", "R@5", "R@10")):
                ax.bar([i + (j - 1) * width for i in range(len(rows))], [m["t2v"][k] for _, m in rows], width,
                       color=colors[j], label=f"T2V {k}")
                # chance of each K in its bar colour: a random ranking of the same candidates
                ax.axhline(rows[0][1]["chance"][k], color=colors[j], ls="--", lw=1)
            ax.set_xticks(range(len(rows)), [s for s, _ in rows])
            ax.set_ylabel("%")
            ax.set_title(f"zero-shot T2V, {title} (dashed: chance)", fontsize=10)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "recall_by_stage.png", dpi=110)
        plt.close(fig)
        names.append("recall_by_stage.png")
    return names


def _cells(d: dict[str, float]) -> list[str]:
    return [f"{d[k]:.1f}" for k in ("R@1", "R@5", "R@10")] + [f"{d['MRR']:.3f}"]


def _fmt(m: dict[str, Any]) -> str:
    oo = m.get("order_only")
    pair = f"{oo['pair_accuracy']['accuracy']:.1f}" if oo else "-"
    return "| " + " | ".join([*_cells(m["t2v"]), *_cells(m["v2t"]), pair]) + " |"


def _chance_row(chance: dict[str, float]) -> str:
    """A random ranking of the same candidates, in both directions (approximate for V2T with several captions)."""
    return "| chance | - | " + " | ".join([*_cells(chance), *_cells(chance), "50.0"]) + " |"


def _probe_section(results: dict[str, Any]) -> list[str]:
    """The order probe: 2-way accuracy on many order-only pairs, with its binomial standard error."""
    evals, probe = results.get("eval", {}), results.get("probe")
    rows = [(stage, order, evals[f"{stage}/probe/{order}"]["order_only"]["pair_accuracy"])
            for stage in STAGES for order in ("original", "shuffled")
            if evals.get(f"{stage}/probe/{order}", {}).get("order_only")]
    if not rows:
        return []
    lines = [f"## Order probe: {probe['pairs'] if probe else '?'} order-only pairs of 16-frame clips", "",
             "Each caption of a pair ranks its own clip above its partner (same events, other order; for `reverse` "
             "pairs the very same frames backwards). Chance is 50%; a gap of more than two standard errors (SE, "
             "binomial) is an order signal. The test split's pairs above give a few dozen queries (SE ~6 points), "
             "too few to see a small effect; these clips come from another seed and share no caption with the "
             "main set.", "",
             "| stage | frames | 2-way % | SE | queries |", "|---|---|---|---|---|"]
    for stage, order, acc in rows:
        p, n = acc["accuracy"] / 100, acc["num_queries"]
        se = 100 * math.sqrt(p * (1 - p) / n) if n else float("nan")
        lines.append(f"| {stage} | {order} | {acc['accuracy']:.1f} | {se:.1f} | {n} |")
    return [*lines, ""]


def write_report(out: Path, results: dict[str, Any]) -> Path:
    """Write ``out/report.md`` (and its PNGs) from the demo's recorded results.

    Args:
        out: Demo folder.
        results: What :class:`longvivit.demo.Demo` recorded (data stats, evals, timings, export path).

    Returns:
        Path of the report.
    """
    plots = _plots(out, results)
    evals = results.get("eval", {})
    lines = ["# LongViViT demo report", ""]
    total = results.get("total_seconds")
    if total:
        lines += [f"Total time: {total / 60:.1f} min on this machine.", ""]
    data = results.get("data", {})
    lines += ["## Data", "", "Synthetic order-sensitive video-text set (rendered and encoded to H.264 here).", ""]
    counts = data.get("counts") or {}
    if counts:
        lines += ["| set | train | val | test |", "|---|---|---|---|"]
        for name, per in counts.items():
            if isinstance(per, dict):
                lines.append(f"| {name} | " + " | ".join(str(per.get(s, "-")) for s in ("train", "val", "test")) + " |")
        lines.append("")
    for key in ("order_only_pairs", "pairs"):
        if key in data:
            lines += [f"Order-only pairs: `{data[key]}`", ""]
    shards = results.get("shards", {})
    if shards:
        lines += ["| shards | samples | rejected | hours |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['written']} | {v['rejected']} | {v['hours']:.2f} |" for k, v in shards.items()]
        lines.append("")
    titles = (("clips", "16-frame test clips (stage 2's task)"), ("long", "long test videos (stage 3's task)"))
    for name, title in titles:
        lines += [f"## Zero-shot retrieval: {title}", ""]
        some = next((m for k, m in evals.items() if f"/{name}/" in k), None)
        if some:
            budget = results.get("eval_text_budget")
            lines += [f"{some['num_videos']} videos, {some['num_texts']} captions; the last row is chance (a random "
                      "ranking); order-only: 2-way accuracy between the two clips of a pair "
                      "(chance 50%)." + (f" Every stage reads captions up to {budget} tokens." if budget else ""), ""]
        lines += ["| stage | frames | T2V R@1 | R@5 | R@10 | MRR | V2T R@1 | R@5 | R@10 | MRR | order-only 2-way % |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for stage in STAGES:
            for order in ("original", "shuffled"):
                m = evals.get(f"{stage}/{name}/{order}")
                if m:
                    lines.append(f"| {stage} | {order} " + _fmt(m))
        if some:
            lines.append(_chance_row(some["chance"]))
        lines.append("")
    lines += ["Shuffled = the same clips with their frames in random order at evaluation: a model that uses temporal "
              "order loses accuracy, a bag-of-frames model does not.", ""]
    lines += _probe_section(results)
    for p in plots:
        lines += [f"![{p}]({p})", ""]
    if results.get("export"):
        lines += ["## Exported model", "", f"`{results['export']}`", ""]
    cap = results.get("caption")
    if cap:
        lines += ["## Video-to-text (frozen encoder -> resampler -> gated cross-attention -> frozen SmolLM2-135M)", ""]
        if cap.get("train_loss_first_last"):
            first, last = cap["train_loss_first_last"]
            lines.append(f"Caption loss over the tiny recipe: {first:.3f} -> {last:.3f}.")
        generated = cap.get("generated") or "(none: the video did not decode)"
        lines += ["", f"- video: `{cap['video']}`", f"- reference: {cap.get('reference')}",
                  f"- generated: {generated}", f"- model: `{cap['model']}`", ""]
        if cap.get("num_clips"):
            n, k = cap["num_clips"], cap["distinct"]
            lines.append(f"Captions of {n} test clips: {k} distinct.")
            if k <= max(1, n // 8):
                lines.append("At this scale the captioner writes (nearly) the same caption for every clip: the tiny "
                             "recipe's steps teach it the captions' language, not yet to read the video. The path "
                             "is the paper's (and tested: tests/test_captioning*.py); its scale is not.")
            lines.append("")
    if results.get("timings"):
        lines += ["## Timings", "", "| step | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in results["timings"].items()]
        lines.append("")
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
