"""tools/ablate.py: grids are validated data, findings are judged right, and a grid runs end to end and resumes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import ablate  # noqa: E402
import ablate_report  # noqa: E402

GRIDS = sorted((ROOT / "recipes" / "ablations").glob("*.yaml"))


# --------------------------------------------------------------------------- grids are data
@pytest.mark.parametrize("grid_path", GRIDS, ids=lambda p: p.name)
def test_every_cell_of_every_grid_parses_as_a_recipe(grid_path, monkeypatch):
    """A typo in a cell's overrides must fail here, not after the cells before it trained for an hour."""
    from longvivit.data.datamodule import VideoTextDataModule
    from longvivit.training.cli import LongViViTCLI
    from longvivit.training.module import ContrastiveModule

    class ParseOnly(LongViViTCLI):
        def instantiate_classes(self) -> None:
            pass

    monkeypatch.setattr(sys, "argv", ["longvivit"])
    grid = ablate.Grid.load(grid_path)
    parser = None
    for cell in grid.cells:
        args = ablate.fit_args(grid, cell, Path("/tmp/unused"), "stage1.ckpt")[1:]  # without "fit"
        if parser is None:  # building the parser is the slow part: once per grid
            parser = ParseOnly(ContrastiveModule, VideoTextDataModule, run=False, args=args).parser
        config = parser.parse_args(args)  # exits (SystemExit) on an unknown or mistyped key
        for key, value in {**grid.common, **cell.args}.items():
            got = config
            for part in key.split("."):
                got = got[part]
            want = tuple(value) if isinstance(value, list) else value
            assert (tuple(got) if isinstance(got, list) else got) == want, (cell.name, key)
    for names in grid.findings.get("masking", {}).values():
        assert set(names) <= {c.name for c in grid.cells}


def test_grid_rejects_unknown_keys_and_duplicate_cells(tmp_path):
    good = {"base": "b.yaml", "run_dir": "r", "common": {}, "stage1": {}, "eval": {"shards": "s"},
            "cells": [{"name": "a"}]}
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({**good, "cell": []}))
    with pytest.raises(ValueError, match="unknown grid keys"):
        ablate.Grid.load(path)
    path.write_text(yaml.safe_dump({**good, "cells": [{"name": "a"}, {"name": "a"}]}))
    with pytest.raises(ValueError, match="duplicate"):
        ablate.Grid.load(path)


def test_cli_args_and_effective_config():
    assert ablate.cli_args({"a.b": None, "c": [4, 16, 16], "d": True, "e": "x", "f": 0.75}) == [
        "--a.b=null", "--c=[4, 16, 16]", "--d=true", "--e=x", "--f=0.75"]
    grid = ablate.Grid.load(ROOT / "recipes" / "ablations" / "tiny.yaml")
    cell = next(c for c in grid.cells if c.name == "factorized_m75")
    cfg = ablate.effective_config(grid, cell)
    assert cfg["model"]["video"]["backbone"] == "factorized" and cfg["model"]["video"]["mask_ratio"] == 0.75
    assert cfg["model"]["video"]["width"] == 128 and cfg["data"]["fps"] == 0.5  # base + common


# --------------------------------------------------------------------------- verdicts
def _result(name: str, r1: float, pair: float = 50.0, train_mib: float = 100.0, n: int = 2000) -> dict:
    """A stored cell with ``n`` test videos and ``n`` order pairs."""
    ret = {"R@1": r1}
    return {"name": name, "metrics": {"num_videos": n, "t2v": ret, "v2t": ret, "order_only": {
        "num_pairs": n, "pair_accuracy": {"accuracy": pair}, "retrieval": {"t2v": {"R@1": pair / 2}}}},
        "memory": {"train_mib": train_mib, "act_mib": train_mib / 2, "peak_rss_mib": 500.0}}


SPEC = {"order": {"joint": "j", "frame": ["f"]}, "masking": {"joint": ["j", "j75"], "frame": ["f", "f75"]},
        "peft": {"full": "j", "peft": ["lora"]}}


def _cells(*results: dict) -> dict[str, dict]:
    return {r["name"]: r for r in results}


def test_findings_hold_when_the_numbers_say_so():
    by = _cells(_result("j", 40, pair=80, train_mib=300), _result("j75", 42, train_mib=100),
                _result("f", 30, pair=50), _result("f75", 20), _result("lora", 35))
    assert [v for _, v, _ in ablate_report.findings(SPEC, by)] == ["holds"] * 4


def test_findings_that_fail_are_reported_as_such():
    by = _cells(_result("j", 40, pair=50, train_mib=200), _result("j75", 30, train_mib=100),
                _result("f", 30, pair=60), _result("f75", 29), _result("lora", 45))
    claims = ablate_report.findings(SPEC, by)
    assert [v for _, v, _ in claims] == ["does not hold", "does not hold (memory); accuracy part: does not hold",
                                         "does not hold", "does not hold"]
    assert "-10.0" in claims[1][2] and "2.00x" in claims[1][2]
    del by["f75"]
    assert len(ablate_report.findings(SPEC, by)) == 3  # (c) needs every masked pair: skipped, not guessed


def test_gaps_within_sampling_noise_are_not_resolved():
    # The same gaps as a clear "holds", measured on 64 videos and 16 pairs: too few to tell.
    by = _cells(_result("j", 40, pair=60, train_mib=300, n=64), _result("j75", 36, train_mib=100, n=64),
                _result("f", 35, pair=50, n=16), _result("f75", 30, n=64), _result("lora", 35, n=64))
    verdicts = [v for _, v, _ in ablate_report.findings(SPEC, by)]
    assert verdicts == ["not resolved at this scale (leans holds, within noise)",
                        "not resolved at this scale (leans does not hold, within noise)",
                        "not resolved at this scale (leans holds, within noise)",
                        "not resolved at this scale (leans holds, within noise)"]



def test_equal_numbers_lean_neither_way():
    # LoRA 6.2 against full tuning 6.2 was reported as "loses to full tuning: ... leans holds".
    by = _cells(_result("j", 40, pair=60, n=64), _result("j75", 36, n=64), _result("f", 35, pair=50, n=16),
                _result("f75", 30, n=64), _result("lora", 40, n=64))
    assert ablate_report.findings(SPEC, by)[3][1] == "not resolved at this scale (no difference measured)"

# --------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny_shards(tmp_path_factory) -> Path:
    """Synthetic images and clips at 32 px in real webdataset shards."""
    from longvivit.data import make_shards, synthetic

    root = tmp_path_factory.mktemp("ablate_data")
    synthetic.generate(root / "data", seed=0, size=32, num_images=(8, 2, 2), num_clips=(8, 2, 8),
                       num_long=(1, 1, 1), long_seconds=32.0, long_fps=1.0)
    for name, split in (("images", "train"), ("clips", "train"), ("clips", "test")):
        assert make_shards.main(["--manifest", str(root / "data" / name / f"{split}.jsonl"),
                                 "--out", str(root / "shards" / name / split)]) == 0
    return root / "shards"


@pytest.mark.integration
@pytest.mark.slow  # four tiny trainings through longvivit.cli.main, two measurement processes: ~1 min
def test_grid_runs_end_to_end_resumes_and_reports(tiny_shards, tmp_path, capsys):
    small = {"model.video.image_size": 32, "model.video.depth": 2, "data.batch_size": 4, "data.num_workers": 0,
             "data.shuffle_buffer": 8, "trainer.max_steps": 2, "data.steps_per_epoch": 2,
             "trainer.limit_val_batches": 0, "trainer.enable_progress_bar": False,
             "trainer.enable_model_summary": False, "data.val_shards": str(tiny_shards / "clips" / "test")}
    base = tmp_path / "stage2.yaml"  # a private copy: a recipe edited meanwhile would (rightly) rerun the cells
    base.write_text((ROOT / "recipes" / "tiny" / "stage2_short.yaml").read_text())
    grid = {
        "base": str(base),
        "run_dir": str(tmp_path / "run"),
        "stage1": {"reuse": [str(tmp_path / "absent.ckpt")], "recipe": "recipes/tiny/stage1_image.yaml",
                   "args": {**small, "data.image_shards": str(tiny_shards / "images" / "train")}},
        "common": {**small, "data.train_shards": str(tiny_shards / "clips" / "train"), "data.image_shards": None,
                   "model.video.num_frames": 8, "data.fps": 0.5, "model.text.unlocked_layers": 0},
        "eval": {"shards": str(tiny_shards / "clips" / "test"), "batch_size": 4},
        "measure": {"batch": 2, "steps": 1},
        "cells": [
            {"name": "start", "group": "reference", "train": False},  # the image stage itself
            {"name": "joint", "group": "backbone", "args": {}},
            {"name": "fact_lora", "group": "peft", "args": {
                "model.video.backbone": "factorized", "model.video.mask_ratio": 0.75, "model.video.lora_rank": 2,
                "model.peft": "lora"}},
            {"name": "frame", "group": "backbone", "args": {"model.video.backbone": "frame",
                                                            "model.video.frame_pool": "attention"}},
        ],
        "findings": {"order": {"joint": "joint", "frame": ["frame"]}, "peft": {"full": "joint",
                                                                               "peft": ["fact_lora"]}},
    }
    grid_path = tmp_path / "grid.yaml"
    grid_path.write_text(yaml.safe_dump(grid))
    report = tmp_path / "docs" / "ablations.md"
    report.parent.mkdir()
    report.write_text("# Mine\n\nhand-written intro\n\n<!-- ablate:begin -->\nold\n<!-- ablate:end -->\n\nnotes\n")

    assert ablate.main(["--grid", str(grid_path), "--out", str(report)]) == 0
    cells = tmp_path / "run" / "cells"
    results = {p.stem: json.loads(p.read_text()) for p in cells.glob("*.json")}
    assert set(results) == {"start", "joint", "fact_lora", "frame"}
    assert not (tmp_path / "run" / "runs" / "start").exists()  # evaluated, never trained
    for r in results.values():
        m = r["metrics"]
        assert m["num_videos"] == 8 and 0 <= m["t2v"]["R@1"] <= 100
        assert m["order_only"] is not None and m["order_only"]["num_pairs"] >= 1
        assert r["memory"]["train_mib"] > r["memory"]["act_mib"] > 0
    lora = results["fact_lora"]["memory"]
    assert lora["trainable_params"] < results["joint"]["memory"]["trainable_params"]
    # 75% tube masking keeps 1 of 4 positions per step: far fewer activations than the unmasked joint model
    assert lora["act_mib"] < results["joint"]["memory"]["act_mib"]

    text = report.read_text()
    assert text.startswith("# Mine\n\nhand-written intro") and text.rstrip().endswith("notes")
    assert "\nold\n" not in text and "| fact_lora | factorized | 0.75 | LoRA r=2 |" in text
    assert "(a) joint space-time attention" in text and "(d) parameter-efficient" in text
    assert (tmp_path / "docs" / "ablations.png").stat().st_size > 0

    # Resumable: a second run trains nothing and reuses every stored cell.
    stamps = {p: p.stat().st_mtime_ns for p in cells.glob("*.json")}
    capsys.readouterr()
    assert ablate.main(["--grid", str(grid_path), "--out", str(report)]) == 0
    assert capsys.readouterr().out.count("stored, skipped") == 4
    assert stamps == {p: p.stat().st_mtime_ns for p in cells.glob("*.json")}
    # Changing a cell's definition reruns that cell only, its training included.
    grid["cells"][1]["args"] = {"model.video.mask_ratio": 0.5}
    grid_path.write_text(yaml.safe_dump(grid))
    assert ablate.main(["--grid", str(grid_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("stored, skipped") == 3 and "joint: training" in out
    assert json.loads((cells / "joint.json").read_text())["settings"]["mask_ratio"] == 0.5
    # ...from a clean run folder: the evaluated last.ckpt is the new training's, not the first run's
    ckpts = sorted(p.name for p in (tmp_path / "run" / "runs" / "joint" / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and not any(n.startswith("last-v") for n in ckpts)
    hp = torch.load(tmp_path / "run" / "runs" / "joint" / "checkpoints" / "last.ckpt", weights_only=True)
    assert hp["hyper_parameters"]["video"]["mask_ratio"] == 0.5
    # A cell that fails is recorded and said in the report; the others still run (one broken cell used to end
    # the grid with no report).
    grid["cells"].append({"name": "bad", "group": "backbone", "args": {"model.video.tubelet_size": [3, 16, 16]}})
    grid_path.write_text(yaml.safe_dump(grid))
    assert ablate.main(["--grid", str(grid_path), "--out", str(report)]) == 1
    out = capsys.readouterr().out
    assert "bad: FAILED" in out and out.count("stored, skipped") == 4
    assert "| bad | failed: " in report.read_text() and "| joint |" in report.read_text()


def test_a_cell_trained_from_another_image_stage_at_the_same_path_is_stale(tmp_path):
    # The cells' key held the image-stage checkpoint's path: replacing the checkpoint kept every cell.
    ckpt = tmp_path / "stage1.ckpt"
    ckpt.write_bytes(b"first image stage")
    first = ablate.file_digest(ckpt)
    ckpt.write_bytes(b"second image stage")
    assert ablate.file_digest(ckpt) != first
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    (run / "fit.done").write_text(json.dumps({"args": ["fit"], "source": first}))
    assert ablate._fit_done(run, ["fit"], first) and not ablate._fit_done(run, ["fit"], ablate.file_digest(ckpt))

