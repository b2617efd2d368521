"""The ``longvivit`` console script.

``fit | validate | test`` go to LightningCLI (typed recipes: a typo is an error). The other
subcommands are plain tools, each owned by the module that implements it; they are imported
lazily so that ``longvivit --help`` stays fast and importing this module has no side effects.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence

from longvivit.logs import setup_logging

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")

# subcommand -> (module with main(argv) -> int, one-line help)
TOOLS: dict[str, tuple[str, str]] = {
    "export": ("longvivit.export", "export a checkpoint to a self-describing hub folder"),
    "eval": ("longvivit.evaluation.evaluate", "zero-shot retrieval of a model on shards (metrics JSON)"),
    "caption": ("longvivit.captioning.cli", "caption a video (or shards) with a video-to-text model"),
    "shards": ("longvivit.data.make_shards", "build webdataset shards from a manifest (= tools/make_shards.py)"),
    "synth": ("longvivit.data.synthetic", "generate the order-sensitive synthetic video-text set"),
}


def _usage() -> str:
    lines = ["usage: longvivit <command> [options]", "", "commands:"]
    lines += [f"  {c:<9} LightningCLI {c} (e.g. --config recipes/stage1_image.yaml)" for c in LIGHTNING_COMMANDS[:3]]
    lines += [f"  {name:<9} {help_}" for name, (_, help_) in TOOLS.items()]
    lines += ["", "Run `longvivit <command> --help` for the options of one command."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``longvivit`` script.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv[1:]``.

    Returns:
        Process exit code.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command in LIGHTNING_COMMANDS:
        from longvivit.training.cli import run_lightning_cli

        if not logging.getLogger().handlers:  # a caller (the demo, pytest) that configured logging keeps its own
            # what `init_from` inflated, resized or extended, and the validation metrics, on the console
            setup_logging(fmt="%(levelname)s %(name)s: %(message)s", package_level=logging.INFO)
        run_lightning_cli([command, *rest])
        return 0
    if command in TOOLS:
        module = importlib.import_module(TOOLS[command][0])
        return int(module.main(rest) or 0)
    print(f"longvivit: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
