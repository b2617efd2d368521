"""LightningCLI wiring: typed recipes for ``longvivit fit | validate | test``."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning import Trainer
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from longvivit.data.datamodule import VideoTextDataModule
from longvivit.data.shard_specs import expand_shards
from longvivit.training.callbacks import RNGState, Throughput, default_progress_bar
from longvivit.training.module import RESUMING, ContrastiveModule

log = logging.getLogger(__name__)


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": leaf}`` of nested mappings (a jsonargparse Namespace once ``as_dict``-ed)."""
    if not isinstance(tree, Mapping):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


class LongViViTCLI(LightningCLI):
    """LightningCLI whose data follows the model: frame count, image size and tokenizer are linked.

    Linking (rather than duplicating the values in every recipe) means a recipe cannot train a
    16-frame encoder on 256-frame clips by accident: the data module receives the model's sizes.
    """

    task = "contrastive"

    def link_model_to_data(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.video.num_frames", "data.num_frames")
        parser.link_arguments("model.video.image_size", "data.image_size")
        parser.link_arguments("model.text.name_or_path", "data.tokenizer")
        parser.link_arguments("model.text.max_length", "data.max_text_length")

    def before_instantiate_classes(self) -> None:
        # The data stream follows seed_everything unless --data.seed is given: a seed sweep that changed only the
        # model's initialisation and masks would see the same samples in the same order with the same captions.
        config = self.config[self.subcommand] if self.subcommand else self.config
        if "data" in config and "seed" in config["data"] and config["data"]["seed"] is None:
            seed = config.get("seed_everything")
            config["data"]["seed"] = seed if isinstance(seed, int) and not isinstance(seed, bool) else 0

    def _parse_ckpt_path(self) -> None:
        # Lightning lets a resumed checkpoint's hyperparameters replace every model value of the command line and
        # the recipe (lightning#21455), silently: a new --model.save_dir wrote over the first run's folder, a new
        # learning rate was not used. Say which values the checkpoint replaced.
        sub = self.config.get("subcommand")
        if sub:
            self.config[sub]["ckpt_path"] = resolve_ckpt_path(self.config[sub], sub)
        model = self.config[sub].get("model") if sub else None
        given = _flat(model.as_dict()) if hasattr(model, "as_dict") else {}
        super()._parse_ckpt_path()
        model = self.config[sub].get("model") if sub else None
        kept = _flat(model.as_dict()) if hasattr(model, "as_dict") else {}
        replaced = [f"model.{k}: {given[k]!r} -> {kept[k]!r}" for k in sorted(kept)
                    if k in given and given[k] != kept[k]]
        if replaced:
            log.warning("resuming %s: the checkpoint's model settings replace these values of the command line and "
                        "recipe (a resume continues the run as it was; start a new run, or --model.init_from the "
                        "checkpoint, to change them):\n  %s", self.config[sub].get("ckpt_path"), "\n  ".join(replaced))

    def instantiate_classes(self) -> None:
        # The typed configs check their values when built (batch_size 0, mask_ratio 1.0, fps 0...), and the
        # Trainer checks the hardware it is asked for (a GPU recipe on a CPU machine, a precision or strategy
        # the machine lacks): a bad recipe value or override ends in one line naming it, like a misspelled
        # key, not in a traceback.
        config = self.config[self.subcommand] if self.subcommand else self.config
        resuming = RESUMING.set(bool(config.get("ckpt_path")))
        try:
            super().instantiate_classes()
        except (ValueError, FileNotFoundError, MisconfigurationException) as err:
            raise SystemExit(f"longvivit: error: {err}{_hardware_hint(err)}") from err
        finally:
            RESUMING.reset(resuming)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        # Our progress bar unless the recipe names one or turns the bar off (Lightning would add its own, which
        # reads "Epoch 2/-2" for runs that stop at max_steps, i.e. every recipe).
        config = self._get(self.config_init, "trainer", default={})
        callbacks = kwargs.get("callbacks", config.get("callbacks")) or []
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            kwargs["callbacks"] = [*callbacks, default_progress_bar()]
        return super().instantiate_trainer(**kwargs)

    def _require_data(self, subcommand: str, *fields: str, optional: tuple[str, ...] = ()) -> None:
        """One line before any work when the subcommand has nothing to read or a shard path is wrong (else the
        datamodule raises it from inside the Trainer's run, at the end of a traceback, or skips every sample)."""
        dm = self.datamodule
        if dm is None or not all(hasattr(dm, f) for f in fields + optional):
            return
        if not any(getattr(dm, f) for f in fields):
            flags = " or ".join(f"--data.{f}" for f in fields)
            raise SystemExit(f"longvivit: error: {subcommand} has no data to read: set {flags}")
        for f in fields + optional:
            if getattr(dm, f):
                try:
                    expand_shards(getattr(dm, f))
                except (FileNotFoundError, ValueError) as err:
                    hint = " (--data.val_shards null trains without validation)" if f in optional else ""
                    raise SystemExit(f"longvivit: error: --data.{f}: {err}{hint}") from err

    def before_fit(self) -> None:
        self._require_data("fit", "train_shards", "image_shards", optional=("val_shards",))

    def before_validate(self) -> None:
        self._require_data("validate", "val_shards")

    def before_test(self) -> None:
        self._require_data("test", "test_shards")

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--task", choices=tuple(TASKS), default=self.task,
                            help="what the recipe trains; picked before parsing (see run_lightning_cli)")
        self.link_model_to_data(parser)
        # Always-on callbacks (a recipe's trainer.callbacks list adds to these, it cannot drop them):
        # checkpoints with a stable `last.ckpt` for stage chaining and resume, RNG state for exact resume,
        # and clips/s + tokens/s on the progress bar.
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.filename": "step{step:07d}",
                             "checkpoint.auto_insert_metric_name": False})
        parser.add_lightning_class_args(RNGState, "rng_state")
        parser.add_lightning_class_args(Throughput, "throughput")
        parser.set_defaults({
            "trainer.logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                               "init_args": {"save_dir": "runs", "name": "longvivit"}},
        })


_LAST = re.compile(r"^last(-v?\d+)?\.ckpt$")
# Values of --ckpt_path that Lightning resolves itself (from the running trainer or the cluster environment).
_LIGHTNING_CKPT_WORDS = ("best", "hpc", "registry")


def _last_checkpoint(folder: Path) -> Path | None:
    """The newest ``last.ckpt`` (or ``last-vN.ckpt``) in ``folder``, as Lightning names them; None if there is none.

    A DeepSpeed checkpoint is a folder of that name.
    """
    found = [p for p in folder.glob("last*.ckpt") if _LAST.match(p.name)] if folder.is_dir() else []
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def resolve_ckpt_path(config: Mapping[str, Any], subcommand: str) -> str | None:
    """``--ckpt_path`` as a file, checked before anything is built.

    ``last`` is the newest ``last.ckpt`` in ``--checkpoint.dirpath`` (in ``<default_root_dir>/checkpoints`` without
    a logger). Lightning resolves it only inside ``fit``, in the folder of *this* run: with a logger and no
    ``checkpoint.dirpath`` (the GPU recipes) that is a new ``<save_dir>/<name>/version_N/checkpoints`` on every
    run, so ``--ckpt_path last`` never found the interrupted run's checkpoint and trained from step 0 again, with
    one warning. It also skipped reading the checkpoint's model settings, which a file path applies. A ``fit``
    with ``last`` and no checkpoint yet starts from step 0 (a requeued job's first start); ``validate``/``test``
    would score an untrained model, so they stop.

    Args:
        config: The subcommand's parsed config (``ckpt_path``, ``checkpoint``, ``trainer``).
        subcommand: ``fit``, ``validate`` or ``test``.

    Returns:
        The checkpoint file, a word Lightning resolves itself, or None (start from scratch).

    Raises:
        SystemExit: One line for a path that does not exist, or ``last`` that cannot find a previous run.
    """
    ckpt = config.get("ckpt_path")
    if ckpt is None or ckpt in _LIGHTNING_CKPT_WORDS:
        return ckpt
    if ckpt != "last":
        if not Path(ckpt).exists() and "://" not in str(ckpt):  # a DeepSpeed checkpoint is a folder
            raise SystemExit(f"longvivit: error: --ckpt_path: no checkpoint at {ckpt}")
        return ckpt
    trainer = config.get("trainer") or {}
    dirpath = (config.get("checkpoint") or {}).get("dirpath")
    logger = trainer.get("logger")
    if dirpath is None:
        if logger is not False and logger != []:
            raise SystemExit(
                "longvivit: error: --ckpt_path last needs --checkpoint.dirpath (the folder the interrupted run saved "
                "its checkpoints in): without it every run saves them in a new <save_dir>/<name>/version_N/"
                "checkpoints, so 'last' would never find the previous run's and training would start over from step 0"
            )
        dirpath = Path(trainer.get("default_root_dir") or Path.cwd()) / "checkpoints"
    found = _last_checkpoint(Path(dirpath))
    if found is not None:
        log.info("--ckpt_path last: resuming %s", found)
        return str(found)
    if subcommand != "fit":
        raise SystemExit(f"longvivit: error: --ckpt_path last: no last.ckpt in {dirpath} to {subcommand}")
    log.warning("--ckpt_path last: no last.ckpt in %s yet, training starts from step 0", dirpath)
    return None


class CaptioningCLI(LongViViTCLI):
    """The same CLI for video-to-text recipes (``task: captioning``): the frozen encoder's sizes feed the data.

    Frames, image size, fps and sampling left unset follow what the frozen encoder was trained on
    (:mod:`longvivit.captioning.encoder_defaults`); a value the recipe or command line sets wins.
    """

    task = "captioning"

    def link_model_to_data(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.num_frames", "data.num_frames")
        parser.link_arguments("model.image_size", "data.image_size")
        parser.set_defaults({"data.fps": None, "data.sampling": None})  # None: not set, the encoder's

    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()
        from longvivit.captioning.encoder_defaults import fill_from_encoder

        fill_from_encoder(self.config[self.subcommand] if self.subcommand else self.config)


TASKS = {"contrastive": LongViViTCLI, "captioning": CaptioningCLI}


def recipe_task(args: Sequence[str]) -> str:
    """The ``task`` a command line asks for: ``--task X`` or a top-level ``task:`` in a ``--config`` file.

    The module class must be known before LightningCLI builds its parser, so the task is read first;
    the parser then also accepts (and checks) the same key.
    """
    import yaml

    task = "contrastive"
    args = list(args)
    for i, a in enumerate(args):
        value = a.split("=", 1)[1] if "=" in a else (args[i + 1] if i + 1 < len(args) else "")
        if a.split("=", 1)[0] == "--config" and Path(value).is_file():
            task = (yaml.safe_load(Path(value).read_text()) or {}).get("task", task)
        elif a.split("=", 1)[0] == "--task":
            task = value
    if task not in TASKS:
        raise SystemExit(f"longvivit: unknown task {task!r}; choose one of {sorted(TASKS)}")
    return task


# Lightning warnings that every run of these modules would print and that no user can act on.
_NOT_ACTIONABLE = (
    # `longvivit fit ...` hands its own argv (less the command) to LightningCLI as `args`; Lightning warns
    # whenever `args` is given while sys.argv has arguments, which is every run from the shell or the demo.
    "LightningCLI's args parameter is intended",
    # By design: a locked text tower keeps its frozen layers in eval mode (no dropout in a fixed feature
    # extractor), and the captioner's encoder and LM are frozen in eval mode.
    r"Found \d+ module\(s\) in eval mode at the start of training",
    # The shard loaders have a length (steps per epoch, for the progress bar) and split shards across workers
    # themselves, which is what this warning asks for.
    "Your `IterableDataset` has `__len__` defined",
    # A fit without val_shards has an empty validation loader on purpose (the datamodule says so once).
    "Total length of `list` across ranks is zero",
    # Retrieval metrics are computed once from embeddings gathered across ranks (identical on every rank), so
    # Lightning's advice to average them over ranks does not apply.
    r".*when logging on epoch level in distributed setting to accumulate the metric across devices",
    # Lightning's own use of a torch API that torch deprecated.
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)


def _hardware_hint(err: Exception) -> str:
    import torch

    msg = str(err).lower()
    if isinstance(err, MisconfigurationException | ValueError) and not torch.cuda.is_available() and any(
        w in msg for w in ("gpu", "cuda", "deepspeed")
    ):
        return ("; this machine has no CUDA GPU, so a run here needs --trainer.accelerator cpu --trainer.devices 1 "
                "--trainer.strategy auto --trainer.precision 32-true (the recipes in recipes/tiny/ are CPU-sized)")
    return ""


def run_lightning_cli(args: Sequence[str], run: bool = True) -> LongViViTCLI:
    """Run ``fit | validate | test`` with ``args`` and return the CLI object.

    Args:
        args: Subcommand first (``["fit", "--config", ...]``); without ``run``, no subcommand.
        run: ``False`` only instantiates model, data and trainer (recipe checks).
    """
    task = recipe_task(args)
    if task == "captioning":
        from longvivit.captioning.module import CaptioningModule as module_class
    else:
        module_class = ContrastiveModule
    with warnings.catch_warnings():
        for message in _NOT_ACTIONABLE:
            warnings.filterwarnings("ignore", message=message)
        return TASKS[task](
            module_class,
            VideoTextDataModule,
            args=list(args),
            run=run,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"parser_mode": "omegaconf"},
        )
