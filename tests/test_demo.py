"""A miniature of `make demo` (same code path, tiny sizes): data -> shards -> 3 stages -> eval -> report."""

from __future__ import annotations

import json

import pytest

from longvivit import demo

pytestmark = pytest.mark.integration


def test_mini_demo_writes_a_report_with_every_stage(tmp_path):
    out = tmp_path / "demo"
    assert demo.main(["--out", str(out), "--scale", "mini"]) == 0
    report = (out / "report.md").read_text()
    results = json.loads((out / "results.json").read_text())
    for stage in ("stage1", "stage2", "stage3"):
        assert (out / stage / "checkpoints" / "last.ckpt").is_file()
        assert f"| {stage} | original |" in report and f"| {stage} | shuffled |" in report
        m = results["eval"][f"{stage}/clips/original"]
        assert m["num_videos"] == 8 and m["chance"]["R@1"] == pytest.approx(100 / 8)
        assert "order_only" in m, "the synthetic test split carries order-only pairs"
    assert "stage3/long/original" in results["eval"] and "stage2/long/original" in results["eval"]
    # the order probe: its own order-only pairs, every clip in a pair, reported with a standard error
    assert results["probe"]["pairs"] + results["probe"]["dropped_pairs"] == 4
    for stage in ("stage2", "stage3"):
        for order in ("original", "shuffled"):
            acc = results["eval"][f"{stage}/probe/{order}"]["order_only"]["pair_accuracy"]
            assert acc["num_queries"] == 2 * results["probe"]["pairs"]
    assert "## Order probe" in report and "stage1/probe/original" not in results["eval"]
    assert (out / "loss_curves.png").stat().st_size > 1000 and (out / "recall_by_stage.png").stat().st_size > 1000
    # a rerun skips what is complete (resumable demo) and rewrites the report
    assert demo.main(["--out", str(out), "--scale", "mini"]) == 0


def test_report_shows_the_generated_caption_as_text(tmp_path):
    from longvivit.demo_report import write_report

    caption = {"video": "clips/test/00000.mp4", "reference": "the red circle grows",
               "generated": "the red circle grows, then it shrinks", "train_loss_first_last": (5.0, 1.0),
               "model": "runs/demo/captioner"}
    report = write_report(tmp_path, {"caption": caption}).read_text()
    assert "- generated: the red circle grows, then it shrinks\n" in report  # not the {path: caption} JSON
    report = write_report(tmp_path, {"caption": {**caption, "generated": None}}).read_text()
    assert "- generated: (none: the video did not decode)" in report
    # One example read as success while every clip got the same caption: the report says how many differ.
    report = write_report(tmp_path, {"caption": {**caption, "num_clips": 16, "distinct": 1}}).read_text()
    assert "Captions of 16 test clips: 1 distinct." in report and "not yet to read the video" in report
    report = write_report(tmp_path, {"caption": {**caption, "num_clips": 16, "distinct": 12}}).read_text()
    assert "Captions of 16 test clips: 12 distinct." in report and "not yet to read the video" not in report


def test_report_tables_give_both_directions_at_every_k_beside_chance(tmp_path):
    import torch

    from longvivit.demo_report import write_report
    from longvivit.evaluation.retrieval import retrieval_metrics

    # 10 videos, one caption each; a similarity that ranks the right video first for captions 0-3 only
    sim = torch.eye(10)[[0, 1, 2, 3, 5, 6, 7, 8, 9, 0]]
    m = retrieval_metrics(sim, torch.arange(10))
    evals = {f"{s}/{name}/original": m for s in ("stage2", "stage3") for name in ("clips", "long")}
    report = write_report(tmp_path, {"eval": evals}).read_text()
    header = "| stage | frames | T2V R@1 | R@5 | R@10 | MRR | V2T R@1 | R@5 | R@10 | MRR | order-only 2-way % |"
    assert report.count(header) == 2
    t, v = m["t2v"], m["v2t"]
    row = (f"| stage2 | original | {t['R@1']:.1f} | {t['R@5']:.1f} | {t['R@10']:.1f} | {t['MRR']:.3f} | "
           f"{v['R@1']:.1f} | {v['R@5']:.1f} | {v['R@10']:.1f} | {v['MRR']:.3f} | - |")
    assert row in report
    # chance of a random ranking of 10 candidates: R@1 10%, R@5 50%, R@10 100%, MRR H_10 / 10
    assert report.count("| chance | - | 10.0 | 50.0 | 100.0 | 0.293 | 10.0 | 50.0 | 100.0 | 0.293 | 50.0 |") == 2
    assert (tmp_path / "recall_by_stage.png").stat().st_size > 1000
