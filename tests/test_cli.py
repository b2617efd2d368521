"""The ``longvivit`` entry points: the console script's ``main`` and ``python -m longvivit``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from longvivit.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_main_lists_the_commands_and_refuses_an_unknown_one(capsys):
    assert main(["--help"]) == 0
    said = capsys.readouterr().out
    assert all(f"  {c}" in said for c in ("fit", "validate", "test", "export", "eval", "caption"))
    assert main([]) == 2
    assert main(["evaluate"]) == 2 and "unknown command 'evaluate'" in capsys.readouterr().err


def test_python_dash_m_longvivit_runs_the_console_script():
    # `python -m longvivit eval ...` (no console script on PATH: a notebook kernel, a cluster job) said
    # "No module named longvivit.__main__"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "longvivit", "eval", "--help"], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--frame-order" in done.stdout


def test_importing_the_dash_m_module_runs_nothing(monkeypatch):
    # longvivit/__main__.py called sys.exit(main()) at import: pydoc, a test collector or any
    # `import longvivit.__main__` ran the CLI with the importer's argv and exited.
    import importlib

    monkeypatch.setattr(sys, "argv", ["pytest", "fit", "--no-such-flag"])
    sys.modules.pop("longvivit.__main__", None)
    module = importlib.import_module("longvivit.__main__")
    assert module.main is main
