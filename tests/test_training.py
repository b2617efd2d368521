"""The staged training chain through ``longvivit.cli.main`` on tiny generated shards, and exact resume."""

from __future__ import annotations

import csv
import logging
import warnings
from pathlib import Path

import pytest
import torch

from longvivit.cli import main as cli_main
from longvivit.data import make_shards, synthetic

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "tiny"
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict[str, Path]:
    """Synthetic images, clips and long videos at 32 px, written to real webdataset shards."""
    root = tmp_path_factory.mktemp("tinydata")
    synthetic.generate(root / "data", seed=0, size=32, num_images=(16, 4, 4), num_clips=(16, 8, 8),
                       num_long=(8, 4, 4), long_seconds=32.0, long_fps=1.0)
    out = {}
    for name, split in (("images", "train"), ("clips", "train"), ("clips", "val"), ("long", "train"),
                        ("long", "val")):
        dst = root / "shards" / name / split
        assert make_shards.main(["--manifest", str(root / "data" / name / f"{split}.jsonl"), "--out", str(dst),
                                 "--maxcount", "8"]) == 0
        out[f"{name}_{split}"] = dst
    return out


def _fit(recipe: str, run_dir: Path, shards: dict[str, Path], *extra: str) -> Path:
    """Run a tiny recipe for a few steps with all paths inside ``run_dir``; return its checkpoint folder."""
    ckpt_dir = run_dir / "checkpoints"
    args = [
        "fit", "--config", str(RECIPES / recipe),
        "--model.video.image_size", "32", "--data.batch_size", "4", "--data.val_batch_size", "4",
        "--data.num_workers", "0", "--data.shuffle_buffer", "8",
        "--trainer.max_steps", "4", "--data.steps_per_epoch", "2", "--trainer.log_every_n_steps", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", str(run_dir), "--trainer.logger.init_args.save_dir", str(run_dir),
        "--checkpoint.dirpath", str(ckpt_dir),
        *extra,
    ]
    assert cli_main(args) == 0
    return ckpt_dir


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    files = sorted(run_dir.glob("logs/version_*/metrics.csv"))
    assert files, f"no metrics.csv under {run_dir}"
    return [row for f in files for row in csv.DictReader(f.open())]


def _logged(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key)]


def test_stage_chain_image_short_long(shards, tmp_path):
    s1 = _fit("stage1_image.yaml", tmp_path / "s1", shards,
              "--data.image_shards", str(shards["images_train"]), "--data.val_shards", str(shards["clips_val"]),
              "--data.image_batch_size", "4")
    rows = _metrics(tmp_path / "s1")
    assert _logged(rows, "val/t2v_R@1") and _logged(rows, "val/v2t_MRR"), "stage 1 logs retrieval metrics"
    assert _logged(rows, "val/chance_R@1")[0] == pytest.approx(100 / 8)

    s2 = _fit("stage2_short.yaml", tmp_path / "s2", shards,
              "--model.init_from", str(s1 / "last.ckpt"), "--data.train_shards", str(shards["clips_train"]),
              "--data.image_shards", str(shards["images_train"]), "--data.val_shards", str(shards["clips_val"]),
              "--data.image_batch_size", "4")
    rows = _metrics(tmp_path / "s2")
    assert _logged(rows, "train/loss_video") and _logged(rows, "train/loss_image"), "both modalities trained"
    assert _logged(rows, "val/t2v_R@1")

    s3 = _fit("stage3_long.yaml", tmp_path / "s3", shards,
              "--model.init_from", str(s2 / "last.ckpt"), "--model.video.num_frames", "32",
              "--data.train_shards", str(shards["long_train"]), "--data.val_shards", str(shards["long_val"]))
    assert _logged(_metrics(tmp_path / "s3"), "val/t2v_R@1")

    before = torch.load(s2 / "last.ckpt", weights_only=True)
    after = torch.load(s3 / "last.ckpt", weights_only=True)
    sd0, sd1 = before["state_dict"], after["state_dict"]
    # the temporal table was extended 8 -> 16 steps by repetition (stretching) and then left frozen
    t0, t1 = sd0["model.video_encoder.pos_embed_temporal"], sd1["model.video_encoder.pos_embed_temporal"]
    assert t0.shape[1] == 8 and t1.shape[1] == 16
    torch.testing.assert_close(t1, t0.repeat_interleave(2, dim=1))
    assert any("temporal" in m for m in after["longvivit"]["adaptations"]), after["longvivit"]["adaptations"]
    # only the last 4 of 6 blocks (and the head) trained in stage 3
    for i in range(6):
        key = f"model.video_encoder.blocks.{i}.mlp.fc1.weight"
        same = torch.equal(sd0[key], sd1[key])
        assert same == (i < 2), f"block {i} {'changed' if not same else 'unchanged'}"
    assert not torch.equal(sd0["model.video_encoder.proj.weight"], sd1["model.video_encoder.proj.weight"])


def test_resume_equals_uninterrupted(shards, tmp_path):
    common = ("--data.train_shards", str(shards["clips_train"]), "--data.val_shards", str(shards["clips_val"]),
              "--data.image_shards", "null",
              "--model.init_from", "null", "--trainer.limit_val_batches", "0")
    _fit("stage2_short.yaml", tmp_path / "full", shards, *common, "--trainer.max_steps", "6",
         "--data.steps_per_epoch", "4")
    ckpt = _fit("stage2_short.yaml", tmp_path / "part", shards, *common, "--trainer.max_steps", "3",
                "--data.steps_per_epoch", "4")
    _fit("stage2_short.yaml", tmp_path / "part", shards, *common, "--trainer.max_steps", "6",
         "--data.steps_per_epoch", "4", "--ckpt_path", str(ckpt / "last.ckpt"))
    full = _logged(_metrics(tmp_path / "full"), "train/loss_video")
    resumed = _logged(_metrics(tmp_path / "part"), "train/loss_video")
    assert len(full) == 6 and len(resumed) == 6, (full, resumed)
    # steps 4-6 after the resume (mid-epoch) equal the uninterrupted run: same weights, optimizer,
    # schedule, RNG (dropout) and data position
    assert resumed == pytest.approx(full, rel=1e-4, abs=1e-5)


def test_fit_without_val_shards_trains_without_validation(shards, tmp_path, caplog):
    # A training set with no held-out split (evaluated later with `longvivit eval`) used to fail at the first
    # validation check; validate itself still needs the shards.
    with warnings.catch_warnings(record=True) as record, caplog.at_level(logging.WARNING, "longvivit"):
        warnings.simplefilter("always")
        ckpt = _fit("stage2_short.yaml", tmp_path / "noval", shards, "--model.init_from", "null",
                    "--data.train_shards", str(shards["clips_train"]), "--data.image_shards", "null",
                    "--data.val_shards", "null")
    # said once, from our logger (as a warning it was attributed to Lightning's trainer/call.py)
    assert [r.name for r in caplog.records if "no val_shards: fit runs without validation" in r.message] == [
        "longvivit.data.datamodule"]
    # Lightning's warnings that no user of these modules can act on are not printed (among them its notice of
    # the empty validation loader, which is the point of this run)
    noise = ("args parameter", "in eval mode at the start", "has `__len__` defined", "LeafSpec",
             "Total length of `list`")
    assert not [str(w.message) for w in record if any(n in str(w.message) for n in noise)]
    assert (ckpt / "last.ckpt").is_file()
    rows = _metrics(tmp_path / "noval")
    assert _logged(rows, "train/loss_video") and not _logged(rows, "val/t2v_R@1")
    with pytest.raises(SystemExit, match="validate has no data to read: set --data.val_shards"):
        cli_main(["validate", "--config", str(RECIPES / "stage2_short.yaml"), "--model.init_from", "null",
                  "--model.video.image_size", "32", "--data.train_shards", str(shards["clips_train"]),
                  "--data.image_shards", "null", "--data.val_shards", "null",
                  "--trainer.default_root_dir", str(tmp_path / "v"), "--trainer.logger.init_args.save_dir",
                  str(tmp_path / "v"), "--checkpoint.dirpath", str(tmp_path / "v" / "c")])


def test_checkpoint_metrics_are_validation_after_training_not_the_sanity_check(shards, tmp_path):
    # Lightning's sanity check runs two validation batches before step 0; its numbers were stored as the
    # checkpoint's (and the model card's) validation "at step N" when no real validation ran.
    common = ("--model.init_from", "null", "--data.train_shards", str(shards["clips_train"]),
              "--data.val_shards", str(shards["clips_val"]), "--data.image_shards", "null",
              "--trainer.num_sanity_val_steps", "1")
    ckpt = _fit("stage2_short.yaml", tmp_path / "a", shards, *common, "--trainer.max_steps", "1",
                "--data.steps_per_epoch", "5")
    assert torch.load(ckpt / "last.ckpt", weights_only=True)["longvivit"]["metrics"] is None
    ckpt = _fit("stage2_short.yaml", tmp_path / "b", shards, *common, "--trainer.max_steps", "2",
                "--data.steps_per_epoch", "2")
    metrics = torch.load(ckpt / "last.ckpt", weights_only=True)["longvivit"]["metrics"]
    assert metrics is not None and metrics["num_videos"] > 0


def test_fit_console_shows_adaptations_metrics_and_the_epochs_max_steps_spans(shards, tmp_path):
    # The console of `longvivit fit` as a user sees it (a new process, nothing configured logging): what
    # init_from adapted and the validation metrics were logged at INFO and never shown, and Lightning's bar
    # read "Epoch 1/-2" with "v_num: 0.000" for every recipe (they stop at max_steps, max_epochs unset).
    import subprocess
    import sys

    src = _fit("stage2_short.yaml", tmp_path / "src", shards, "--model.init_from", "null",
               "--data.train_shards", str(shards["clips_train"]), "--data.image_shards", "null",
               "--data.val_shards", "null")
    run = tmp_path / "run"
    args = [
        "fit", "--config", str(RECIPES / "stage2_short.yaml"), "--model.init_from", str(src / "last.ckpt"),
        "--model.video.image_size", "32", "--model.video.num_frames", "8",
        "--data.train_shards", str(shards["clips_train"]), "--data.image_shards", "null",
        "--data.val_shards", str(shards["clips_val"]), "--data.batch_size", "4", "--data.val_batch_size", "4",
        "--data.num_workers", "0", "--data.shuffle_buffer", "8", "--trainer.max_steps", "3",
        "--data.steps_per_epoch", "2", "--trainer.log_every_n_steps", "1", "--trainer.enable_model_summary",
        "false", "--trainer.default_root_dir", str(run), "--trainer.logger.init_args.save_dir", str(run),
        "--checkpoint.dirpath", str(run / "checkpoints"),
    ]
    proc = subprocess.run([sys.executable, "-m", "longvivit.cli", *args], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    adapted = [line for line in out.splitlines() if "pos_embed_temporal truncated from 8 to 4" in line]
    assert adapted == ["INFO longvivit.models.init: pos_embed_temporal truncated from 8 to 4 steps"], out[-3000:]
    assert "INFO longvivit.models.checkpoint: loaded" in out and "text tower loaded" in out
    assert out.count("val retrieval at step 2:") == 1 and "T2V R@1" in out  # not the sanity check's
    assert "Epoch 1/1" in out and "/-2" not in out and "v_num" not in out, out[-3000:]


def test_image_stage_checkpoint_holds_the_inflated_tubelet_kernel_without_validation(shards, tmp_path):
    # The image stage trains the 2D kernel only; the tubelet kernel was synced to it before validations alone,
    # so a stage 1 run without validation (or a checkpoint saved after the last one) handed stage 2 a random or
    # stale tubelet kernel, and init_from, finding one, did not inflate.
    from longvivit.models.init import inflate_patch_kernel

    ckpt = _fit("stage1_image.yaml", tmp_path / "s1", shards, "--data.image_shards", str(shards["images_train"]),
                "--data.val_shards", "null", "--data.image_batch_size", "4")
    sd = torch.load(ckpt / "last.ckpt", weights_only=True)["state_dict"]
    key = "model.video_encoder.patch_embed_{}.{}"
    t = torch.load(ckpt / "last.ckpt", weights_only=True)["longvivit"]["model_config"]["video"]["tubelet_size"][0]
    assert torch.equal(sd[key.format("3d", "weight")], inflate_patch_kernel(sd[key.format("2d", "weight")], t))
    assert torch.equal(sd[key.format("3d", "bias")], sd[key.format("2d", "bias")])


def test_resume_does_not_need_the_previous_stage_checkpoint(shards, tmp_path, caplog):
    # A resume re-read init_from although the checkpoint replaces those weights: once the previous stage's
    # checkpoint had been moved or cleaned away, the run could not be resumed (and `--model.init_from null`
    # lost the stage chain from the new checkpoints).
    src = _fit("stage2_short.yaml", tmp_path / "src", shards, "--model.init_from", "null",
               "--data.train_shards", str(shards["clips_train"]), "--data.image_shards", "null",
               "--data.val_shards", "null")
    moved = tmp_path / "stage2.ckpt"
    (src / "last.ckpt").rename(moved)
    common = ("--model.video.num_frames", "16",
              "--data.train_shards", str(shards["long_train"]), "--data.val_shards", "null",
              "--data.image_shards", "null")
    ckpt = _fit("stage3_long.yaml", tmp_path / "s3", shards, *common, "--model.init_from", str(moved),
                "--trainer.max_steps", "2")
    adaptations = torch.load(ckpt / "last.ckpt", weights_only=True)["longvivit"]["adaptations"]
    assert adaptations
    moved.unlink()
    with caplog.at_level(logging.INFO, "longvivit"):
        _fit("stage3_long.yaml", tmp_path / "s3", shards, *common, "--model.init_from", str(moved),
             "--trainer.max_steps", "3", "--ckpt_path", str(ckpt / "last.ckpt"))
    assert any("is gone; the checkpoint being resumed holds the weights" in r.message for r in caplog.records)
    meta = torch.load(ckpt / "last.ckpt", weights_only=True)["longvivit"]
    assert meta["init_from"] == str(moved) and meta["adaptations"] == adaptations  # the chain is still recorded
    # without a checkpoint to resume, a missing init_from is an error as before
    with pytest.raises(SystemExit, match="init_from: no checkpoint or model folder"):
        _fit("stage3_long.yaml", tmp_path / "s3b", shards, *common, "--model.init_from", str(moved))


def test_captions_longer_than_the_text_budget_and_clips_longer_than_the_window_are_said(shards, tmp_path, caplog):
    # Captions longer than the text budget lost their later words, and clips longer than the frame window were
    # trained on their first seconds only, both silently.
    with caplog.at_level(logging.WARNING, "longvivit"):
        _fit("stage2_short.yaml", tmp_path / "t", shards, "--model.init_from", "null", "--model.text.max_length",
             "8", "--model.video.num_frames", "8", "--data.train_shards", str(shards["clips_train"]),
             "--data.image_shards", "null", "--data.val_shards", "null", "--trainer.max_steps", "2")
    said = [r.message for r in caplog.records if "longer than the text budget of 8 tokens" in r.message]
    assert len(said) == 1, said  # once per run, not per step
    cut = [r.message for r in caplog.records if "are longer than 8 frames at 1 FPS (8 s)" in r.message]
    assert len(cut) == 1 and "their first seconds only" in cut[0], cut  # 16 s clips, first-frame windows
    assert _logged(_metrics(tmp_path / "t"), "train/truncated_fraction")[0] > 0


def test_a_resume_names_the_model_values_its_checkpoint_replaces(shards, tmp_path, caplog):
    # Lightning replaces the command line's model values by the checkpoint's on a resume, silently: a new
    # learning rate or save folder given with --ckpt_path was not used and nothing said so.
    common = ("--model.init_from", "null", "--data.train_shards", str(shards["clips_train"]),
              "--data.image_shards", "null", "--data.val_shards", "null")
    ckpt = _fit("stage2_short.yaml", tmp_path / "run", shards, *common, "--trainer.max_steps", "2")
    with caplog.at_level(logging.WARNING, "longvivit"):
        _fit("stage2_short.yaml", tmp_path / "run", shards, *common, "--trainer.max_steps", "3",
             "--model.optim.lr", "0.5", "--ckpt_path", str(ckpt / "last.ckpt"))
    said = [r.message for r in caplog.records if "the checkpoint's model settings replace" in r.message]
    assert len(said) == 1 and "model.optim.lr: 0.5 -> " in said[0], said
    assert "model.video" not in said[0]  # values the command line left as they were are not listed
    caplog.clear()
    with caplog.at_level(logging.WARNING, "longvivit"):
        _fit("stage2_short.yaml", tmp_path / "run", shards, *common, "--trainer.max_steps", "4",
             "--ckpt_path", str(ckpt / "last.ckpt"))
    assert not [r for r in caplog.records if "the checkpoint's model settings replace" in r.message]


def test_ckpt_path_last_resumes_the_interrupted_run_not_a_new_one(shards, tmp_path, caplog):
    # With a logger and no --checkpoint.dirpath (the GPU recipes, README's resume command) Lightning looked for
    # last.ckpt in this run's new version_N folder: it never found the interrupted run's and trained from step 0.
    common = ("--model.init_from", "null", "--data.train_shards", str(shards["clips_train"]),
              "--data.image_shards", "null", "--data.val_shards", "null")
    run = tmp_path / "run"
    first = _fit("stage2_short.yaml", run, shards, *common, "--trainer.max_steps", "2")
    with pytest.raises(SystemExit, match=r"^longvivit: error: --ckpt_path last needs --checkpoint.dirpath"):
        _fit("stage2_short.yaml", run, shards, *common, "--trainer.max_steps", "4", "--ckpt_path", "last",
             "--checkpoint.dirpath", "null")
    # resolved to the file before anything is built: the checkpoint's model settings apply, as with its path
    with caplog.at_level(logging.INFO, "longvivit"):
        _fit("stage2_short.yaml", run, shards, *common, "--trainer.max_steps", "4", "--ckpt_path", "last",
             "--model.optim.lr", "0.5")
    assert [r.message for r in caplog.records if r.message.startswith("--ckpt_path last: resuming")] == [
        f"--ckpt_path last: resuming {first / 'last.ckpt'}"]
    assert any("model.optim.lr: 0.5 -> " in r.message for r in caplog.records)
    assert torch.load(first / "last.ckpt", weights_only=True)["global_step"] == 4
    steps = [int(r["step"]) for r in _metrics(run) if r.get("train/loss_video")]
    # two steps, then two after them (started over it logged 0, 1 again and trained four); Lightning logs a step
    # resumed at an epoch's end one higher
    assert len(steps) == 4 and steps[:2] == [0, 1] and min(steps[2:]) >= 2, steps
    # the learning rate is logged, and the warmup goes on where it stopped (tiny stage 2: 1e-3 over 20 steps)
    assert _logged(_metrics(run), "train/lr") == pytest.approx([1e-3 * k / 20 for k in (1, 2, 3, 4)])


@pytest.mark.parametrize(("command", "ckpt", "message"), [
    ("fit", "{tmp}/gone.ckpt", r"--ckpt_path: no checkpoint at .*gone.ckpt$"),
    ("validate", "last", r"--ckpt_path last: no last.ckpt in .*empty to validate$"),
])
def test_a_checkpoint_that_is_not_there_ends_in_one_line(shards, tmp_path, command, ckpt, message):
    # A mistyped --ckpt_path was a 20-frame FileNotFoundError from inside the Trainer after the model was built;
    # validate/test with `last` and nothing saved yet scored the untrained model.
    with pytest.raises(SystemExit, match=f"^longvivit: error: {message}"):
        cli_main([command, "--config", str(RECIPES / "stage2_short.yaml"), "--model.init_from", "null",
                  "--data.train_shards", str(shards["clips_train"]), "--data.image_shards", "null",
                  "--data.val_shards", str(shards["clips_val"]), "--trainer.logger", "false",
                  "--checkpoint.dirpath", str(tmp_path / "empty"), "--ckpt_path", ckpt.format(tmp=tmp_path)])


def test_accumulation_says_it_adds_no_negatives_and_validate_names_the_checkpoints_step(shards, tmp_path, caplog):
    # README counted accumulate_grad_batches into the global batch, but each batch's NCE is computed on its own:
    # K accumulated batches of B are not one contrastive batch of K*B. And `validate --ckpt_path` printed its
    # retrieval "at step 0" for any checkpoint (Lightning restores no step counter outside fit).
    common = ("--model.init_from", "null", "--data.train_shards", str(shards["clips_train"]),
              "--data.image_shards", "null", "--data.val_shards", str(shards["clips_val"]),
              "--trainer.limit_val_batches", "0")
    with caplog.at_level(logging.INFO, "longvivit"), warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ckpt = _fit("stage2_short.yaml", tmp_path / "acc", shards, *common, "--trainer.max_steps", "1",
                    "--trainer.accumulate_grad_batches", "2", "--trainer.logger", "false")
    # the throughput on the progress bar did not warn at every step that there is no logger
    assert not [w for w in record if "have no logger configured" in str(w.message)]
    said = [r.message for r in caplog.records if "accumulate_grad_batches=2" in r.message]
    assert len(said) == 1 and "contrasts 4 clips with each other" in said[0], said
    assert torch.load(ckpt / "last.ckpt", weights_only=True)["global_step"] == 1
    caplog.clear()
    with caplog.at_level(logging.INFO, "longvivit"):
        cli_main(["validate", "--config", str(RECIPES / "stage2_short.yaml"), "--model.video.image_size", "32",
                  "--data.val_shards", str(shards["clips_val"]), "--data.val_batch_size", "4",
                  "--data.num_workers", "0", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                  "--trainer.default_root_dir", str(tmp_path / "v"), "--ckpt_path", str(ckpt / "last.ckpt")])
    assert [r.message.split(":")[0] for r in caplog.records if "retrieval at" in r.message] == [
        "val retrieval at step 1"]


def test_ckpt_path_last_finds_a_deepspeed_checkpoint_folder(tmp_path):
    # DeepSpeed saves each checkpoint as a folder named like the file (last.ckpt/): it is a checkpoint too.
    from longvivit.training.cli import resolve_ckpt_path

    (tmp_path / "ck" / "last.ckpt").mkdir(parents=True)
    config = {"ckpt_path": "last", "checkpoint": {"dirpath": str(tmp_path / "ck")}, "trainer": {"logger": None}}
    assert resolve_ckpt_path(config, "fit") == str(tmp_path / "ck" / "last.ckpt")
    assert resolve_ckpt_path({**config, "ckpt_path": str(tmp_path / "ck" / "last.ckpt")}, "fit") == str(
        tmp_path / "ck" / "last.ckpt")
