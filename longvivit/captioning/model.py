"""Video-to-text: frozen encoder -> temporal mean pool -> Perceiver resampler -> gated xattn -> frozen LM.

A trained model is saved as one folder (:meth:`VideoToText.save_pretrained`)::

    captioner_config.json     CaptionerConfig: sizes, prompt, training and inference mask ratios, which LM
    captioner.safetensors     the trained weights only: resampler.* and xlm.xattn.*
    encoder/                  copy of the frozen video encoder (config.json + model.safetensors)
    preprocessor_config.json  how videos were sampled and preprocessed in training (frames, fps, size...)

The LM is referenced, not copied: it is frozen, so its source (the packaged GGUF or a local HF folder)
reproduces it exactly. A Lightning checkpoint of :class:`~longvivit.captioning.module.CaptioningModule`
holds the same trained weights and refers to the encoder by the path it was trained from;
:func:`load_captioner` reads either.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longvivit.captioning.lm import eos_token_id, load_lm
from longvivit.captioning.pooling import encode_grid, temporal_mean_pool
from longvivit.captioning.resampler import PerceiverResampler, ResamplerConfig
from longvivit.captioning.xattn import XAttnConfig, XAttnLM
from longvivit.config import PreprocessConfig, VideoEncoderConfig
from longvivit.models.files import read_checkpoint, refuse_deepspeed_folder
from longvivit.models.init import load_adapted
from longvivit.models.masking import video_generator
from longvivit.models.model import CONFIG_NAME as VIDEO_TEXT_CONFIG_NAME
from longvivit.models.video_encoder import VideoEncoder

log = logging.getLogger(__name__)

CONFIG_NAME = "captioner_config.json"
WEIGHTS_NAME = "captioner.safetensors"
ENCODER_SUBDIR = "encoder"
PREPROCESS_NAME = "preprocessor_config.json"
IGNORE = -100


@dataclass
class CaptionerConfig:
    """Everything that defines a :class:`VideoToText` model except the trained weights.

    Args:
        encoder: Frozen encoder source: an exported / saved folder or a contrastive ``.ckpt``. ``None``
            builds a randomly initialised ``encoder_preset`` (smoke tests only).
        encoder_preset: Preset used when ``encoder`` is ``None``.
        num_frames: Frames per video fed to the encoder (its temporal table is adapted if needed).
        image_size: Frame side fed to the encoder.
        lm: Local HF causal-LM folder, or ``None`` for the packaged SmolLM2-135M.
        lm_gguf_file: GGUF file inside ``lm`` to load instead of safetensors.
        resampler: Perceiver resampler size.
        xattn: Gated cross-attention placement and size.
        prompt: Text before the caption; the loss covers only the caption and the EOS after it.
        max_length: Token budget of prompt + caption + EOS in training.
        mask_ratio: Fraction of tubelets dropped in training (paper: 0.3).
        eval_mask_ratio: Fraction dropped at inference (validation, :meth:`VideoToText.generate`, QA scoring);
            ``None`` uses ``mask_ratio`` (the paper masks 30% in training and inference). Saved with the model, so
            a reloaded captioner masks as the trained module did; folders written before it was saved read
            ``None``.
        eval_seed: Seed of the inference masks (and sampling) in validation; ``longvivit caption --seed``
            defaults to it, so a saved captioner reproduces its validation captions.
    """

    encoder: str | None = None
    encoder_preset: str = "vit-b16"
    num_frames: int = 16
    image_size: int = 256
    lm: str | None = None
    lm_gguf_file: str | None = None
    resampler: ResamplerConfig = field(default_factory=ResamplerConfig)
    xattn: XAttnConfig = field(default_factory=XAttnConfig)
    prompt: str = "A video of"
    max_length: int = 64
    mask_ratio: float = 0.3
    eval_mask_ratio: float | None = None
    eval_seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.resampler, dict):
            self.resampler = ResamplerConfig(**self.resampler)
        if isinstance(self.xattn, dict):
            self.xattn = XAttnConfig(**self.xattn)
        for name in ("mask_ratio", "eval_mask_ratio"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if self.max_length < 2:
            raise ValueError("max_length must be >= 2")

    @property
    def inference_mask_ratio(self) -> float:
        """The mask ratio at inference: ``eval_mask_ratio``, else ``mask_ratio``."""
        return self.mask_ratio if self.eval_mask_ratio is None else self.eval_mask_ratio

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CaptionerConfig:
        """Inverse of :meth:`to_dict`, also accepting a checkpoint's hyperparameters (extra keys ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def file_generator(seed: int, path: str | Path) -> torch.Generator:
    """The mask RNG of a video file, from the seed and the file's content.

    Not from the path: ``a.mp4``, ``./a.mp4``, its absolute path or a copy elsewhere are the same video and get
    the same mask (and so the same caption or QA scores) from any working directory or machine.
    """
    return video_generator(seed, file_digest(path))


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's content, hex (what :func:`file_generator` seeds from)."""
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def load_encoder(
    source: str | Path | None, num_frames: int, image_size: int, preset: str = "vit-b16"
) -> VideoEncoder:
    """The frozen video encoder of a captioner, in eval mode with no gradients.

    Args:
        source: Exported / saved encoder folder, contrastive Lightning ``.ckpt``, or ``None`` (random preset).
        num_frames: Frames the encoder will see (the temporal position table is extended if needed).
        image_size: Frame side (the spatial table is resized if needed).
        preset: Size of the random encoder when ``source`` is ``None``.
    """
    if source is None:
        log.warning("no encoder given: using a randomly initialised %s encoder", preset)
        enc = VideoEncoder(VideoEncoderConfig.preset(preset, num_frames=num_frames, image_size=image_size))
    elif not Path(source).exists():
        raise FileNotFoundError(f"encoder: no exported folder or checkpoint at {source}")
    else:
        # The encoder as trained, read once: kept (its resized tables) for saving, and adapted from memory.
        with torch.random.fork_rng(devices=[]):  # building it draws random weights: leave the caller's RNG be
            if Path(source).is_dir():
                native = VideoEncoder.from_pretrained(source)
            else:
                from longvivit.models.checkpoint import source_config
                from longvivit.models.init import load_pretrained

                checkpoint = read_checkpoint(source)  # read once, for the config and the weights
                native = VideoEncoder(source_config(source, checkpoint).video)
                load_pretrained(native, checkpoint["state_dict"])
        trained = native.cfg.image_size
        enc = VideoEncoder(native.cfg.replace(num_frames=num_frames, image_size=image_size))
        for msg in load_adapted(enc, native.state_dict(), source_grid=native.cfg.grid_size):
            log.info("encoder from %s: %s", source, msg)
        _keep_native_tables(enc, native)
    if source is not None and trained != image_size:
        # more frames is what the temporal table extension is for; another resolution is not: the frozen
        # encoder never sees the resized spatial table trained
        log.warning("the encoder from %s was trained at %d px and will see %d px frames (its spatial position "
                    "table is resized, and it stays frozen): train the captioner with --model.image_size %d "
                    "unless this is intended", source, trained, image_size, trained)
    return enc.requires_grad_(False).eval()


def _keep_native_tables(enc: VideoEncoder, native: VideoEncoder) -> None:
    """Remember the encoder as trained (its config and the tables resized for this captioner's frames and size),
    so that a saved captioner holds the encoder as it came: a 128-frame encoder used at 16 frames keeps its
    128-frame temporal table for long-video inference (the truncated table cannot give it back)."""
    current = enc.state_dict()
    changed = {k: v.detach().clone() for k, v in native.state_dict().items() if v.shape != current[k].shape}
    enc.native = (native.cfg, changed) if changed or native.cfg != enc.cfg else None


def save_encoder(enc: VideoEncoder, directory: Path) -> None:
    """Write a captioner's frozen encoder as it was trained (see :func:`_keep_native_tables`)."""
    native = getattr(enc, "native", None)
    if native is None:
        enc.save_pretrained(directory)
        return
    cfg, tables = native
    copy = VideoEncoder(cfg)
    copy.load_state_dict({**enc.state_dict(), **tables})
    copy.save_pretrained(directory)


class VideoToText(nn.Module):
    """Frozen video encoder and frozen causal LM joined by a trainable resampler and gated cross-attention.

    Args:
        cfg: The model description.
        encoder: The video encoder (frozen here).
        lm: A Hugging Face causal LM (frozen and wrapped here).
        tokenizer: Its tokenizer (needs a pad token; see :func:`~longvivit.captioning.lm.load_lm`).

    Attributes:
        encoder: :class:`VideoEncoder`, eval mode, no gradients.
        resampler: :class:`PerceiverResampler` (trained).
        xlm: :class:`XAttnLM` holding the frozen LM (``xlm.lm``) and the trained blocks (``xlm.xattn``).
    """

    def __init__(self, cfg: CaptionerConfig, encoder: VideoEncoder, lm: nn.Module, tokenizer: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder.requires_grad_(False).eval()
        self.resampler = PerceiverResampler(encoder.cfg.width, cfg.resampler, encoder.cfg.num_spatial_tokens)
        self.xlm = XAttnLM(lm, cfg.resampler.hidden, cfg.xattn)
        self.tokenizer = tokenizer
        self.eos_id = eos_token_id(tokenizer)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id)

    @classmethod
    def build(cls, cfg: CaptionerConfig) -> VideoToText:
        """Load the encoder and the LM named in ``cfg`` and build fresh resampler and cross-attention."""
        encoder = load_encoder(cfg.encoder, cfg.num_frames, cfg.image_size, cfg.encoder_preset)
        lm, tokenizer = load_lm(cfg.lm, cfg.lm_gguf_file)
        return cls(cfg, encoder, lm, tokenizer)

    def train(self, mode: bool = True) -> VideoToText:
        """Only resampler and cross-attention follow ``mode``; encoder and LM stay in eval mode."""
        super().train(mode)
        self.encoder.eval()
        self.xlm.train(mode)
        return self

    # ----------------------------------------------------------------- trained weights
    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Resampler and cross-attention tensors, keyed as in :meth:`state_dict`."""
        out = {f"resampler.{k}": v for k, v in self.resampler.state_dict().items()}
        out.update({f"xlm.xattn.{k}": v for k, v in self.xlm.xattn.state_dict().items()})
        return out

    def load_trainable_state_dict(self, state: dict[str, Tensor]) -> None:
        """Load :meth:`trainable_state_dict` output; missing or unexpected keys are an error."""
        expected = set(self.trainable_state_dict())
        if set(state) != expected:
            missing, extra = sorted(expected - set(state))[:5], sorted(set(state) - expected)[:5]
            raise KeyError(f"captioner weights do not match the model: missing {missing}, unexpected {extra}")
        self.load_state_dict(state, strict=False)

    def no_weight_decay(self) -> set[str]:
        """Latent queries and tanh gates are not decayed (decay would pull the gates back to 0)."""
        names = {f"resampler.{n}" for n in self.resampler.no_weight_decay()}
        for i in range(len(self.xlm.xattn)):
            names |= {f"xlm.xattn.{i}.attn_gate", f"xlm.xattn.{i}.ff_gate"}
        return names

    # ----------------------------------------------------------------- vision
    def visual_tokens(
        self,
        video: Tensor,
        num_valid_frames: Tensor | None = None,
        mask_ratio: float | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
    ) -> Tensor:
        """Video -> resampled visual tokens the LM cross-attends to.

        Args:
            video: (B, T, 3, H, W) normalised frames.
            num_valid_frames: Optional (B,) real frame counts; padding frames are hidden from the encoder's
                attention and not pooled.
            mask_ratio: Tubelets dropped at random; ``None`` uses ``cfg.mask_ratio``.
            generator: Optional RNG for reproducible masks, or one per video.

        Returns:
            (B, num_latents, resampler hidden).
        """
        ratio = self.cfg.mask_ratio if mask_ratio is None else float(mask_ratio)
        with torch.no_grad():  # the encoder is frozen: no activations kept for backward
            # (B, T', S, C), (B, T', S): padding steps are not visible
            grid, visible = encode_grid(self.encoder, video, ratio, generator, num_valid_frames)
            pooled, keep = temporal_mean_pool(grid, visible)  # (B, S, C), (B, S)
        return self.resampler(pooled, keep)

    # ----------------------------------------------------------------- text
    def _context_ids(self, context: str) -> list[int]:
        ids = list(self.tokenizer(context).input_ids) if context else []
        # A target needs at least one token before it to be predicted from.
        bos = self.tokenizer.bos_token_id
        return ids or [bos if bos is not None else self.eos_id]

    def build_text(
        self, contexts: list[str], targets: list[str], add_eos: bool = True, max_length: int | None = None
    ) -> dict[str, Tensor]:
        """Tokenise ``context + " " + target (+ EOS)`` per sample, right-padded, labels on the target only.

        Args:
            contexts: Prompt (or question) per sample; tokenised with the tokenizer's special tokens.
            targets: Text to score or learn per sample.
            add_eos: End each target with the EOS token (training: the model learns where to stop).
            max_length: Truncate the target so the sequence fits (``None``: no limit).

        Returns:
            ``{"input_ids", "attention_mask", "labels"}``, each (B, S) long; labels are -100 off the target.
        """
        rows, labels = [], []
        for ctx, tgt in zip(contexts, targets, strict=True):
            c = self._context_ids(ctx)
            sep = "" if not ctx or ctx.endswith((" ", "\n")) else " "
            t = list(self.tokenizer(sep + tgt, add_special_tokens=False).input_ids)
            if add_eos:
                t.append(self.eos_id)
            if max_length is not None:
                t = t[: max(0, max_length - len(c))]
            rows.append(c + t)
            labels.append([IGNORE] * len(c) + t)
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        lab = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        att = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (r, lb) in enumerate(zip(rows, labels, strict=True)):
            ids[i, : len(r)], lab[i, : len(r)], att[i, : len(r)] = torch.tensor(r), torch.tensor(lb), 1
        return {"input_ids": ids, "attention_mask": att, "labels": lab}

    def token_nll(self, media: Tensor, text: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Per-sequence summed negative log-likelihood of the labelled tokens and their count.

        Args:
            media: (B_v, M, hidden) visual tokens; the text batch may be a multiple of B_v (consecutive
                repeats of each video).
            text: Output of :meth:`build_text`.

        Returns:
            ``(nll_sum, num_tokens)``, each (B,), float and long.
        """
        dev = media.device
        ids, att, lab = (text[k].to(dev) for k in ("input_ids", "attention_mask", "labels"))
        logits = self.xlm(media, input_ids=ids, attention_mask=att, use_cache=False).logits  # (B, S, V)
        target = lab[:, 1:]  # token t is predicted at position t - 1
        nll = F.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), target.flatten(), ignore_index=IGNORE, reduction="none"
        ).view_as(target)  # (B, S-1)
        return nll.sum(dim=1), (target != IGNORE).sum(dim=1)

    def caption_loss(
        self,
        video: Tensor,
        captions: list[str],
        num_valid_frames: Tensor | None = None,
        mask_ratio: float | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
    ) -> Tensor:
        """Mean ``-log p(w_t | w_<t, V)`` over the caption tokens (and EOS) of the batch."""
        media = self.visual_tokens(video, num_valid_frames, mask_ratio, generator)
        prompts = [self.cfg.prompt] * len(captions)
        text = self.build_text(prompts, captions, max_length=self.cfg.max_length)
        nll, count = self.token_nll(media, text)
        return nll.sum() / count.sum().clamp(min=1)

    @torch.no_grad()
    def generate(
        self,
        video: Tensor,
        num_valid_frames: Tensor | None = None,
        max_new_tokens: int = 32,
        num_beams: int = 1,
        mask_ratio: float | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        prompt: str | None = None,
        *,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 50,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
    ) -> list[str]:
        """Caption videos with the LM's KV cache: greedy search, beam search, or sampling.

        Long-video summarisation is the same call with a model trained on summaries and a larger
        ``max_new_tokens``. Decoding options are HF ``generate``'s (see
        :class:`~longvivit.captioning.decoding.DecodingConfig`), except that sampling draws from ``generator``:
        with one generator per video (:func:`~longvivit.models.masking.video_generator`) a video's sampled
        caption, like its mask, does not depend on the rest of the batch.

        Args:
            video: (B, T, 3, H, W) normalised frames.
            num_valid_frames: Optional (B,) real frame counts.
            max_new_tokens: Tokens generated at most.
            num_beams: Beam search width (1: greedy search, or sampling with ``do_sample``).
            mask_ratio: Tubelets dropped; ``None`` is the ratio the model was trained to caption with
                (``cfg.inference_mask_ratio``).
            generator: RNG of the masks and then of the sampling, one for the batch or one per video;
                ``None`` uses the global RNG.
            prompt: Text before the caption (``None``: the training prompt).
            do_sample, temperature, top_k, top_p, repetition_penalty, no_repeat_ngram_size: As in HF ``generate``.

        Returns:
            One string per video, special tokens removed.
        """
        from longvivit.captioning.decoding import DecodingConfig, generate_kwargs

        decoding = DecodingConfig(
            max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=do_sample, temperature=temperature,
            top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
        )  # checked before the encoder runs
        ratio = self.cfg.inference_mask_ratio if mask_ratio is None else mask_ratio
        media = self.visual_tokens(video, num_valid_frames, ratio, generator)
        prompt = self.cfg.prompt if prompt is None else prompt
        ids = torch.tensor([self._context_ids(prompt)], device=media.device)
        ids = ids.expand(media.shape[0], -1)  # (B, P): one prompt for all, so no padding is needed
        out = self.xlm.generate(
            media,
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
            **generate_kwargs(decoding, generator),
        )  # (B, P + new)
        texts = self.tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
        return [t.strip() for t in texts]

    # ----------------------------------------------------------------- persistence
    def save_pretrained(self, directory: str | Path, preprocess: PreprocessConfig | None = None) -> Path:
        """Write the folder described in the module docstring; returns it."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_encoder(self.encoder, directory / ENCODER_SUBDIR)
        cfg = dataclasses.replace(self.cfg, encoder=ENCODER_SUBDIR)
        if cfg.lm is not None and Path(cfg.lm).exists():
            cfg.lm = str(Path(cfg.lm).resolve())  # the folder may be used from another working directory
        (directory / CONFIG_NAME).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        state = {k: v.detach().contiguous().cpu() for k, v in self.trainable_state_dict().items()}
        save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
        pre = preprocess or PreprocessConfig(num_frames=self.cfg.num_frames, image_size=self.cfg.image_size)
        (directory / PREPROCESS_NAME).write_text(json.dumps(dataclasses.asdict(pre), indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, **overrides: Any) -> VideoToText:
        """Load a folder written by :meth:`save_pretrained`.

        Args:
            directory: The folder.
            **overrides: ``CaptionerConfig`` fields to change, e.g. ``lm=...`` (a copy of the same LM
                elsewhere), ``num_frames=...`` or ``mask_ratio=...``.
        """
        from safetensors.torch import load_file

        directory = Path(directory)
        cfg = CaptionerConfig.from_dict(json.loads((directory / CONFIG_NAME).read_text()))
        cfg = dataclasses.replace(cfg, **overrides)
        if cfg.encoder is not None and not Path(cfg.encoder).is_absolute():
            cfg.encoder = str(directory / cfg.encoder)
        model = cls.build(cfg)
        model.load_trainable_state_dict(load_file(str(directory / WEIGHTS_NAME)))
        return model.eval()


def read_preprocess(source: str | Path) -> PreprocessConfig | None:
    """The saved preprocessing of a captioner folder, if any."""
    path = Path(source) / PREPROCESS_NAME
    if not path.is_file():
        return None
    return PreprocessConfig(**json.loads(path.read_text()))


def load_captioner(source: str | Path, **overrides: Any) -> VideoToText:
    """Load a captioner from a saved folder or a ``CaptioningModule`` Lightning checkpoint.

    Args:
        source: Folder from :meth:`VideoToText.save_pretrained` or a ``.ckpt`` from ``longvivit fit`` with a
            captioning recipe (read with ``weights_only=True``; its encoder path must still exist).
        **overrides: ``CaptionerConfig`` fields to change.

    Returns:
        The model in eval mode.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"no captioner at {source}")
    refuse_deepspeed_folder(source)
    if source.is_dir():
        if not (source / CONFIG_NAME).is_file():
            hint = ""
            if (source / VIDEO_TEXT_CONFIG_NAME).is_file():
                hint = (f" (it is a video-text export: train a captioner on it with `longvivit fit --config "
                        f"recipes/video_to_text.yaml --model.encoder {source}`)")
            raise ValueError(f"{source} is not a captioner folder: no {CONFIG_NAME}{hint}")
        return VideoToText.from_pretrained(source, **overrides)
    ckpt = read_checkpoint(source)
    hp = ckpt.get("hyper_parameters", {})
    if "resampler" not in hp:
        raise ValueError(f"{source} is not a captioning checkpoint (no resampler in its hyper_parameters)")
    cfg = dataclasses.replace(CaptionerConfig.from_dict(hp), **overrides)
    model = VideoToText.build(cfg)
    prefix = "model."
    model.load_trainable_state_dict(
        {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    )
    return model.eval()
