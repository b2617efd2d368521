"""The main job on embedded data (``make demo``): synthetic data -> shards -> stages 1, 2, 3 -> eval -> report.

Everything runs on a laptop CPU with no download: the synthetic order-sensitive set is rendered here, the
text tower and LM come from PyPI packages. Each step is skipped when its output is already complete, so an
interrupted demo continues where it stopped (``--fresh`` starts over).

    python -m longvivit.demo --out runs/demo            # what `make demo` runs
    python -m longvivit.demo --out /tmp/mini --scale mini   # seconds-scale miniature (CI)
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longvivit.demo_report import write_report
from longvivit.logs import setup_logging
from longvivit.paths import recipes_dir

RECIPES = recipes_dir() / "tiny"
SETS = ("images", "clips", "long")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Scale:
    """Sizes of one demo scale; ``demo`` is what `make demo` runs, ``mini`` the CI miniature."""

    size: int
    synth: dict[str, Any]
    steps: tuple[int, int, int]  # stage 1, 2, 3
    steps_per_epoch: tuple[int, int, int]
    batch: tuple[int, int, int]
    long_frames: int
    caption_steps: int
    probe_pairs: int  # order probe: this many extra order-only test pairs (2 queries each)


SCALES = {
    "demo": Scale(size=64, synth={"preset": "demo"}, steps=(80, 450, 80), steps_per_epoch=(40, 100, 40),
                  batch=(48, 24, 8), long_frames=128, caption_steps=60, probe_pairs=256),
    "mini": Scale(size=32, synth={"num_images": (16, 4, 4), "num_clips": (16, 8, 8), "num_long": (4, 4, 4),
                                  "long_seconds": 32.0, "long_fps": 1.0},
                  steps=(3, 3, 2), steps_per_epoch=(3, 3, 2), batch=(4, 4, 2), long_frames=32, caption_steps=0,
                  probe_pairs=4),
}


class Demo:
    """Runs the demo steps in ``out`` and records what each produced for the report."""

    def __init__(self, out: Path, scale: Scale, workers: int = 1) -> None:
        self.out, self.scale, self.workers = out, scale, workers
        self.t0 = time.time()
        self.timings: dict[str, float] = {}
        self.results: dict[str, Any] = {"scale": scale.__dict__ | {"synth": str(scale.synth)}}

    def banner(self, text: str) -> None:
        print(f"\n=== [{time.time() - self.t0:6.0f}s] {text}", flush=True)

    def _timed(self, name: str, fn, *args: Any) -> Any:
        self.banner(name)
        t = time.time()
        value = fn(*args)
        self.timings[name] = time.time() - t
        return value

    # ------------------------------------------------------------------ data
    def data(self) -> None:
        from longvivit.data import make_shards, synthetic

        data = self.out / "data"
        if not (data / "stats.json").is_file():
            kwargs = dict(self.scale.synth)
            preset = kwargs.pop("preset", None)
            if preset:
                kwargs.update(synthetic.PRESETS[preset])
            synthetic.generate(data, seed=0, size=self.scale.size, workers=self.workers, **kwargs)
        self.results["data"] = json.loads((data / "stats.json").read_text())
        shard_stats = {}
        for name in SETS:
            for split in SPLITS:
                dst = self.shards(name, split)
                rc = make_shards.main(["--manifest", str(data / name / f"{split}.jsonl"), "--out", str(dst),
                                       "--maxcount", "256", "--workers", str(self.workers)])
                if rc != 0:
                    raise RuntimeError(f"make_shards failed for {name}/{split} (exit {rc})")
                stats = json.loads((dst / "stats.json").read_text())
                shard_stats[f"{name}/{split}"] = {k: stats[k] for k in ("written", "rejected", "hours", "shards")}
        self.results["shards"] = shard_stats
        self.probe_data()

    def probe_data(self) -> None:
        """The order probe: ``probe_pairs`` order-only pairs of 16-frame clips (another seed, nothing else).

        The test split's 32 pairs give 64 queries, so a 2-way accuracy there has a standard error of ~6 points;
        the probe's 512 queries bring it to ~2. Pairs whose captions occur in the main set are dropped.
        """
        from longvivit.data import make_shards, synthetic

        if not self.scale.probe_pairs:
            return
        root, n = self.out / "probe", 2 * self.scale.probe_pairs
        manifest = root / "clips" / "test.jsonl"
        if not manifest.is_file():
            synthetic.generate(root, seed=1, size=self.scale.size, workers=self.workers, num_images=0,
                               num_clips=(0, 0, n), num_long=0, pair_fraction=1.0)
            seen = {json.loads(line)["caption"] for split in SPLITS
                    for line in (self.out / "data" / "clips" / f"{split}.jsonl").read_text().splitlines()}
            entries = [json.loads(line) for line in manifest.read_text().splitlines()]
            clash = {e["pair_id"] for e in entries if e["caption"] in seen}
            manifest.write_text("".join(json.dumps(e) + "\n" for e in entries if e["pair_id"] not in clash))
        dst = self.shards("probe", "test")
        if make_shards.main(["--manifest", str(manifest), "--out", str(dst), "--maxcount", "256",
                             "--workers", str(self.workers)]) != 0:
            raise RuntimeError("make_shards failed for the order probe")
        kept = len(manifest.read_text().splitlines())
        self.results["probe"] = {"pairs": kept // 2, "dropped_pairs": self.scale.probe_pairs - kept // 2}

    def shards(self, name: str, split: str) -> Path:
        return self.out / "shards" / name / split

    # ------------------------------------------------------------------ training
    def fit(self, stage: int, recipe: str, *extra: str) -> Path:
        from longvivit.cli import main as cli_main

        run = self.out / f"stage{stage}"
        ckpt = run / "checkpoints" / "last.ckpt"
        if ckpt.is_file():
            print(f"stage {stage}: {ckpt} exists, skipped (use --fresh to retrain)")
            return ckpt
        i = stage - 1
        args = [
            "fit", "--config", str(RECIPES / recipe),
            "--model.video.image_size", str(self.scale.size),
            "--trainer.max_steps", str(self.scale.steps[i]),
            # the epochs that max_steps spans: without it Lightning's progress bar reads "Epoch 4/-2"
            "--trainer.max_epochs", str(math.ceil(self.scale.steps[i] / self.scale.steps_per_epoch[i])),
            "--data.steps_per_epoch", str(self.scale.steps_per_epoch[i]),
            "--data.batch_size", str(self.scale.batch[i]), "--data.val_batch_size", str(self.scale.batch[i]),
            "--data.num_workers", str(self.workers),
            "--trainer.log_every_n_steps", str(max(1, min(10, self.scale.steps[i] // 5))),
            "--trainer.default_root_dir", str(run), "--trainer.logger.init_args.save_dir", str(run),
            "--checkpoint.dirpath", str(run / "checkpoints"),
            *extra,
        ]
        if cli_main(args) != 0:
            raise RuntimeError(f"stage {stage} failed")
        return ckpt

    def train(self) -> dict[str, Path]:
        s, b = self.shards, self.scale.batch
        c1 = self._timed("stage 1: image-text (2D path)", self.fit, 1, "stage1_image.yaml",
                         "--data.image_shards", str(s("images", "train")), "--data.val_shards", str(s("clips", "val")),
                         "--data.image_batch_size", str(b[0]))
        c2 = self._timed("stage 2: images + 16-frame clips (inflated from stage 1)", self.fit, 2, "stage2_short.yaml",
                         "--model.init_from", str(c1), "--data.train_shards", str(s("clips", "train")),
                         "--data.image_shards", str(s("images", "train")), "--data.val_shards", str(s("clips", "val")),
                         "--data.image_batch_size", str(b[1]))
        c3 = self._timed(f"stage 3: {self.scale.long_frames}-frame long videos, mask 0.75, last 4 blocks",
                         self.fit, 3, "stage3_long.yaml", "--model.init_from", str(c2),
                         "--model.video.num_frames", str(self.scale.long_frames),
                         "--data.train_shards", str(s("long", "train")), "--data.val_shards", str(s("long", "val")))
        return {"stage1": c1, "stage2": c2, "stage3": c3}

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, ckpts: dict[str, Path]) -> None:
        import torch

        from longvivit.data.clips import load_clips
        from longvivit.evaluation.evaluate import evaluate, order_only_metrics
        from longvivit.models.checkpoint import load_model, source_config

        evals: dict[str, dict[str, Any]] = {}
        # Every stage reads captions with the longest text budget among them (stage 3's: the long videos'
        # summaries need it): at its own 32 tokens stage 2 would lose the later events of every summary, and the
        # stage comparison would measure the budget, not the encoders.
        budget = self.results["eval_text_budget"] = max(source_config(c).text.max_length for c in ckpts.values())
        sets = [("clips", 16), ("long", self.scale.long_frames)]
        if self.scale.probe_pairs:
            sets.append(("probe", 16))
        for stage, ckpt in ckpts.items():
            for name, frames in sets:
                # the image stage has a zero temporal table and time-symmetric tubelets: it cannot tell a clip
                # from its reversal, so long videos and the order probe start at stage 2
                if stage == "stage1" and name != "clips":
                    continue
                model, _ = load_model(ckpt, num_frames=frames)
                for order in ("original", "shuffled"):
                    clips = load_clips(str(self.shards(name, "test")), num_frames=frames,
                                       image_size=self.scale.size)
                    with torch.no_grad():
                        ev, pairs = evaluate(model, clips, batch_size=8, frame_order=order, max_text_length=budget)
                    m = ev.compute()
                    order_m = order_only_metrics(ev, pairs)
                    if order_m:
                        m["order_only"] = order_m
                    evals[f"{stage}/{name}/{order}"] = m
                    t = m["t2v"]
                    print(f"{stage:7s} {name:5s} {order:9s} T2V R@1 {t['R@1']:6.2f} (chance {m['chance']['R@1']:.2f})"
                          + (f"  order-only 2-way {order_m['pair_accuracy']['accuracy']:.1f}%" if order_m else ""))
        self.results["eval"] = evals

    # ------------------------------------------------------------------ export and captioning
    def export(self, ckpt: Path) -> Path | None:
        try:
            from longvivit import export
        except ImportError:
            print("export: not available in this version, skipped")
            return None
        dst = self.out / "export"
        metrics = self.out / "eval_stage3_long.json"
        metrics.write_text(json.dumps(self.results["eval"].get("stage3/long/original", {})))
        rc = export.main(["--ckpt", str(ckpt), "--out", str(dst), "--metrics", str(metrics), "--overwrite",
                          "--data-stats", str(self.out / "data" / "stats.json")])
        if rc != 0:
            raise RuntimeError("export failed")
        self.results["export"] = str(dst)
        return dst

    def caption(self, export: Path | None) -> None:
        """Tiny video-to-text recipe on the exported encoder, then caption 16 test clips.

        Skipped at ``caption_steps=0`` (the CI miniature: the path has its own tests, and loading the 135M LM
        dominates a miniature's time).
        """
        if export is None or self.scale.caption_steps == 0:
            return
        from longvivit.captioning import cli as caption_cli
        from longvivit.captioning.model import WEIGHTS_NAME as CAPTIONER_WEIGHTS
        from longvivit.cli import main as cli_main

        run, saved = self.out / "captioning", self.out / "captioner"
        steps = str(self.scale.caption_steps)
        if not (saved / CAPTIONER_WEIGHTS).is_file():
            args = ["fit", "--config", str(RECIPES / "video_to_text.yaml"), "--model.encoder", str(export),
                    "--model.image_size", str(self.scale.size), "--model.save_dir", str(saved),
                    "--trainer.max_steps", steps, "--trainer.max_epochs", "1", "--data.steps_per_epoch", steps,
                    "--trainer.check_val_every_n_epoch", "1", "--trainer.limit_val_batches", "1",
                    "--data.num_workers", str(self.workers),
                    "--data.train_shards", str(self.shards("clips", "train")),
                    "--data.val_shards", str(self.shards("clips", "val")),
                    "--trainer.default_root_dir", str(run), "--trainer.logger.init_args.save_dir", str(run),
                    "--checkpoint.dirpath", str(run / "checkpoints")]
            if cli_main(args) != 0:
                raise RuntimeError("video-to-text training failed")
        losses = [float(r["train/loss"]) for f in sorted(run.glob("logs/version_*/metrics.csv"))
                  for r in csv.DictReader(f.open()) if r.get("train/loss")]
        # Several test clips, not one: whether the captions differ from clip to clip is what says if the
        # captioner reads the video or only writes the captions' most likely sentence.
        tests = sorted((self.out / "data" / "clips" / "test").glob("*.mp4"))[:16]
        out = self.out / "caption_example.json"
        caption_cli.main(["--model", str(saved), "--video", *map(str, tests), "--out", str(out)])
        captions = json.loads(out.read_text())["captions"]
        manifest = {json.loads(line)["video"]: json.loads(line)["caption"]
                    for line in (self.out / "data" / "clips" / "test.jsonl").read_text().splitlines()}
        self.results["caption"] = {
            "video": str(tests[0]), "generated": captions.get(str(tests[0])),
            "reference": manifest.get(f"test/{tests[0].name}"),
            "num_clips": len(captions), "distinct": len(set(captions.values())),
            "train_loss_first_last": (losses[0], losses[-1]) if losses else None, "model": str(saved),
        }

    def run(self) -> Path:
        self._timed("data: synthetic set and shards", self.data)
        ckpts = self.train()
        self._timed("evaluation on the test splits (original and shuffled frames)", self.evaluate, ckpts)
        export = self._timed("export the stage-3 encoder", self.export, ckpts["stage3"])
        self._timed("video-to-text: tiny recipe with the frozen encoder and SmolLM2-135M", self.caption, export)
        self.results["timings"] = self.timings
        self.results["total_seconds"] = time.time() - self.t0
        (self.out / "results.json").write_text(json.dumps(self.results, indent=2, default=str) + "\n")
        report = write_report(self.out, self.results)
        self.banner(f"done: {report}")
        return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m longvivit.demo`` entry point (``make demo``)."""
    p = argparse.ArgumentParser(prog="longvivit.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--scale", choices=sorted(SCALES), default="demo")
    p.add_argument("--workers", type=int, default=1, help="data loader / shard workers")
    p.add_argument("--fresh", action="store_true", help="delete --out first")
    args = p.parse_args(argv)
    setup_logging()
    if args.fresh and args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    Demo(args.out, SCALES[args.scale], args.workers).run()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
