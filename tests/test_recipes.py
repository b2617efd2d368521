"""Every recipe (full scale and tiny) instantiates model, data and trainer through LightningCLI.

Recipes are data, so a typo or a stale key is caught here instead of at the start of a cluster job. The
full-scale recipes build their real ViT-B/16 model; accelerator and devices are overridden to this CPU.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from longvivit.data.datamodule import VideoTextDataModule
from longvivit.training.cli import CaptioningCLI, LongViViTCLI, recipe_task, run_lightning_cli
from longvivit.training.module import ContrastiveModule

ROOT = Path(__file__).resolve().parents[1] / "recipes"
ALL = sorted(p for p in ROOT.rglob("*.yaml") if "cluster" not in p.parts and "ablations" not in p.parts)
STAGES = [p for p in ALL if recipe_task(["--config", str(p)]) == "contrastive"]
CAPTIONING = [p for p in ALL if recipe_task(["--config", str(p)]) == "captioning"]
CLUSTER = sorted((ROOT / "cluster").glob("*.yaml"))
CPU = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.precision", "32-true",
       "--trainer.num_nodes", "1", "--model.init_from", "null"]


@pytest.mark.parametrize("recipe", STAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_recipe_instantiates(recipe, tmp_path):
    cli = run_lightning_cli(["--config", str(recipe), *CPU, "--trainer.default_root_dir", str(tmp_path),
                             "--trainer.logger.init_args.save_dir", str(tmp_path)], run=False)
    cfg = cli.model.model_cfg.video
    assert cli.datamodule.preprocess.num_frames == cfg.num_frames, "data frames follow the model"
    assert cli.datamodule.preprocess.image_size == cfg.image_size
    assert cli.trainer.max_steps > 0


class _ParseOnly(LongViViTCLI):
    """Parses and type-checks a config (unknown keys fail) without building GPU-only strategies."""

    def instantiate_classes(self) -> None:
        pass


class _ParseOnlyCaptioning(CaptioningCLI):
    def instantiate_classes(self) -> None:
        pass


@pytest.mark.parametrize("recipe", CAPTIONING, ids=lambda p: str(p.relative_to(ROOT)))
def test_captioning_recipe_parses_and_links_the_encoder_sizes(recipe):
    """Parsed with the captioning module's typed signature; building it loads the LM (tests/test_captioning*)."""
    from longvivit.captioning.module import CaptioningModule

    assert CAPTIONING, "video_to_text recipes exist"
    cli = _ParseOnlyCaptioning(CaptioningModule, VideoTextDataModule, run=False, args=["--config", str(recipe)])
    assert cli.config.task == "captioning"
    assert cli.config.data.num_frames == cli.config.model.num_frames
    assert cli.config.data.image_size == cli.config.model.image_size


@pytest.mark.parametrize("overlay", CLUSTER, ids=lambda p: p.name)
def test_cluster_overlay_parses_on_top_of_a_stage(overlay):
    cli = _ParseOnly(ContrastiveModule, VideoTextDataModule, run=False,
                     args=["--config", str(ROOT / "stage2_short.yaml"), "--config", str(overlay)])
    assert cli.config.trainer.strategy is not None
    assert cli.config.trainer.devices == 8 and cli.config.trainer.precision == "bf16-mixed"


def test_typo_in_recipe_is_an_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "tiny" / "stage1_image.yaml").read_text().replace("mask_ratio:", "mask_ratoi:"))
    with pytest.raises(SystemExit):
        _ParseOnly(ContrastiveModule, VideoTextDataModule, run=False, args=["--config", str(bad)])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["--data.batch_size", "0"], "batch_size and steps_per_epoch must be >= 1"),
        (["--model.video.mask_ratio", "1.0"], r"mask_ratio must be in \[0, 1\)"),
        (["--data.fps", "0"], "fps must be > 0"),
    ],
)
def test_a_value_the_configs_reject_ends_in_one_line(tmp_path, override, message):
    recipe = ROOT / "tiny" / "stage2_short.yaml"
    with pytest.raises(SystemExit, match=f"longvivit: error: {message}"):
        run_lightning_cli(["--config", str(recipe), *CPU, "--trainer.default_root_dir", str(tmp_path),
                           "--trainer.logger.init_args.save_dir", str(tmp_path), *override], run=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize(
    "override",
    [["--config", str(ROOT / "cluster" / "deepspeed_zero2.yaml")], ["--trainer.accelerator", "gpu"],
     ["--trainer.accelerator", "cuda"],
     ["--config", str(ROOT / "cluster" / "fsdp.yaml"), "--trainer.accelerator", "cpu", "--trainer.devices", "1"]],
    ids=["deepspeed-overlay", "gpu", "cuda", "fsdp-overlay-on-cpu"],
)
def test_a_gpu_recipe_on_a_cpu_machine_ends_in_one_line_with_the_cpu_flags(tmp_path, override):
    recipe = ROOT / "tiny" / "stage2_short.yaml"
    hint = "^longvivit: error: [^\n]*; this machine has no CUDA GPU, so a run here needs --trainer.accelerator cpu"
    with pytest.raises(SystemExit, match=hint):
        run_lightning_cli(["--config", str(recipe), "--model.init_from", "null", "--trainer.default_root_dir",
                           str(tmp_path), "--trainer.logger.init_args.save_dir", str(tmp_path), *override], run=False)


@pytest.mark.parametrize(
    ("command", "override", "flags"),
    [("fit", ["--data.train_shards", "null", "--data.image_shards", "null"],
      "--data.train_shards or --data.image_shards"),
     ("validate", ["--data.val_shards", "null"], "--data.val_shards"),
     ("test", [], "--data.test_shards")],
)
def test_a_command_without_its_data_ends_in_one_line_before_any_work(tmp_path, command, override, flags):
    recipe = ROOT / "tiny" / "stage2_short.yaml"
    with pytest.raises(SystemExit, match=f"longvivit: error: {command} has no data to read: set {flags}$"):
        run_lightning_cli([command, "--config", str(recipe), *CPU, "--model.init_from", "null",
                           "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir",
                           str(tmp_path), "--checkpoint.dirpath", str(tmp_path / "ck"), *override])
    assert not (tmp_path / "ck").exists()


def test_lightning_lines_are_printed_once_after_our_logging_setup():
    # `import lightning` gives its logger a console handler and keeps it propagating: with the root handler of
    # a command (demo, eval, export, caption) every Lightning line came out twice.
    code = ("from longvivit.logs import setup_logging; setup_logging(); "
            "import lightning; lightning.seed_everything(3)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert (out.stdout + out.stderr).count("Seed set to 3") == 1, out.stderr


def test_longvivit_fit_from_a_shell_does_not_warn_about_its_own_args(tmp_path, monkeypatch, recwarn):
    monkeypatch.setattr(sys, "argv", ["longvivit", "fit", "--config", "x.yaml"])  # as the console script sees it
    run_lightning_cli(["--config", str(ROOT / "tiny" / "stage2_short.yaml"), *CPU,
                       "--trainer.default_root_dir", str(tmp_path),
                       "--trainer.logger.init_args.save_dir", str(tmp_path)], run=False)
    assert not [w for w in recwarn if "args parameter" in str(w.message)]


@pytest.mark.parametrize(
    ("override", "message"),
    [(["--data.train_shards", "{tmp}/no-such-folder"], "--data.train_shards: no shard at .*no-such-folder$"),
     (["--data.val_shards", "{tmp}/manifest.jsonl"],
      r"--data.val_shards: .*manifest.jsonl is not a webdataset shard.*\(--data.val_shards null trains without"),
     (["--model.init_from", "{tmp}/nothing.ckpt"], "init_from: no checkpoint or model folder at .*nothing.ckpt$")],
    ids=["missing-shards", "manifest-as-shards", "missing-init-from"],
)
def test_a_wrong_path_in_fit_ends_in_one_line_before_training(tmp_path, override, message):
    recipe = ROOT / "tiny" / "stage2_short.yaml"
    (tmp_path / "manifest.jsonl").write_text("{}\n")
    (tmp_path / "t.tar").write_bytes(b"")  # exists: only the wrong path is reported
    with pytest.raises(SystemExit, match=f"longvivit: error: {message}"):
        run_lightning_cli(["fit", "--config", str(recipe), *CPU, "--data.train_shards", str(tmp_path / "t.tar"),
                           "--data.image_shards", "null", "--data.val_shards", "null",
                           "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir",
                           str(tmp_path), "--checkpoint.dirpath", str(tmp_path / "ck"),
                           *[a.format(tmp=tmp_path) for a in override]])
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize(("flags", "seed"), [([], 0), (["--seed_everything", "7"], 7),
                                             (["--seed_everything", "7", "--data.seed", "3"], 3),
                                             (["--seed_everything", "false"], 0)])
def test_the_data_stream_follows_seed_everything_unless_set_apart(tmp_path, flags, seed):
    # --seed_everything changed the model's initialisation and masks but not the data: a seed sweep saw the same
    # samples in the same order with the same captions.
    cli = run_lightning_cli(["--config", str(ROOT / "tiny" / "stage2_short.yaml"), *CPU, *flags,
                             "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"], run=False)
    assert cli.datamodule.seed == seed


@pytest.mark.parametrize(("flags", "message"), [
    (["--data.train_weights", "[1, 2]"], r"train_weights has 2 weights for 1 entries of train_shards"),
    (["--data.image_shards", "null", "--data.image_weights", "[1]"], r"image_weights has 1 weights for 0 entries"),
])
def test_mixing_weights_that_do_not_match_the_shard_sets_end_in_one_line(tmp_path, flags, message):
    # A length mismatch was an 18-frame traceback from inside the Trainer; weights without shards were ignored.
    with pytest.raises(SystemExit, match=r"^longvivit: error: .*" + message):
        run_lightning_cli(["--config", str(ROOT / "tiny" / "stage2_short.yaml"), *CPU, *flags,
                           "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"], run=False)


def test_every_recipe_ships_in_the_wheel():
    # package-data named `longvivit/recipes/**`, a folder that does not exist: a wheel carried no recipe, and the
    # demo (which found them next to the package) could not run from one.
    import fnmatch
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    from longvivit.paths import recipes_dir

    setup = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setup["package-dir"]["longvivit.recipes"] == "recipes" and "longvivit.recipes" in setup["packages"]
    patterns = setup["package-data"]["longvivit.recipes"]
    for recipe in ROOT.rglob("*.yaml"):
        rel = recipe.relative_to(ROOT).as_posix()
        assert any(fnmatch.fnmatch(rel, p) and rel.count("/") == p.count("/") for p in patterns), rel
    assert recipes_dir() == ROOT


@pytest.mark.parametrize("recipe", ["stage2_short.yaml", "stage2_short_masked.yaml"])
def test_a_smaller_batch_size_also_shrinks_the_image_batch(recipe, tmp_path):
    # The stage-2 recipes set image_batch_size to 64 beside batch_size 64: `--data.batch_size 2` (a CPU try, or
    # halving the batch to fit a GPU) still put 64 images in every step.
    cli = run_lightning_cli(["--config", str(ROOT / recipe), *CPU, "--data.batch_size", "2",
                             "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"], run=False)
    assert cli.datamodule.image_batch_size == 2
