"""LightningModule for video-to-text training (paper stage 3): only the resampler and cross-attention learn.

Driven by ``longvivit fit --config recipes/video_to_text.yaml`` (recipes with ``task: captioning``) on the
same :class:`~longvivit.data.datamodule.VideoTextDataModule` as contrastive training; the batch's BERT token
ids are ignored and captions are tokenised with the LM's tokenizer. Validation reports the caption loss and,
with ``val_generate``, CIDEr / BLEU-4 / ROUGE-L of generated captions against all references.

Checkpoints hold only the trained tensors (the frozen encoder and LM are rebuilt from their sources, which
the hyperparameters name), so a checkpoint of a 135M-parameter LM run stays a few MB at tiny scale.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from longvivit.captioning.encoder_defaults import encoder_preprocess
from longvivit.captioning.model import CaptionerConfig, VideoToText
from longvivit.captioning.resampler import ResamplerConfig
from longvivit.captioning.xattn import XAttnConfig
from longvivit.config import PreprocessConfig, VideoEncoderConfig
from longvivit.data.collate import valid_frame_counts
from longvivit.distributed import stop_buffer_broadcast
from longvivit.models.masking import video_generator
from longvivit.training.optim import OptimConfig, cosine_with_warmup, log_learning_rate, param_groups

log = logging.getLogger(__name__)

_DEFAULT_RESAMPLER, _DEFAULT_XATTN = ResamplerConfig(), XAttnConfig()
_DEFAULT_OPTIM = OptimConfig(lr=4e-5, weight_decay=1e-4, warmup_steps=2000)


def _as(cls: type, value: Any) -> Any:
    return cls(**value) if isinstance(value, dict) else dataclasses.replace(value)


def sampling_mismatch(source: str, encoder: VideoEncoderConfig, data: PreprocessConfig) -> str | None:
    """Why the captioning data's frames are not sampled as the frozen encoder's training frames were, or ``None``.

    Args:
        source: The encoder source (export folder or contrastive checkpoint); one that records no sampling (a bare
            saved folder) gives ``None``.
        encoder: The encoder's config.
        data: The captioning data's preprocessing.
    """
    from longvivit.export import recorded_preprocess

    trained = recorded_preprocess(source, encoder)
    if trained is None:
        return None
    sampling, fps = trained.sampling, trained.fps
    if sampling == data.sampling and (sampling == "uniform" or fps == data.fps):
        return None
    return (f"the frozen encoder from {source} was trained on frames sampled {sampling} at {fps:g} fps, the captioning "
            f"data samples them {data.sampling} at {data.fps:g} fps: set --data.sampling {sampling} --data.fps "
            f"{fps:g} unless this is intended")


class CaptioningModule(L.LightningModule):
    """Trains :class:`~longvivit.captioning.model.VideoToText` with ``-log p(w_t | w_<t, V)`` on captions.

    Args:
        encoder: Frozen encoder source: exported folder or ``.ckpt`` of the contrastive model (``None``: a
            random ``encoder_preset``, for smoke tests).
        num_frames: Frames per clip the encoder sees (linked to ``data.num_frames`` by the CLI); ``None``: as the
            encoder was trained (:func:`~longvivit.captioning.encoder_defaults.encoder_preprocess`, 16 without one).
        image_size: Frame side (linked to ``data.image_size``); ``None``: the encoder's (256 without one).
        encoder_preset: Encoder size when ``encoder`` is ``None``.
        lm: Local HF causal-LM folder; ``None`` is the packaged SmolLM2-135M.
        lm_gguf_file: GGUF file inside ``lm``.
        resampler: Perceiver resampler size (paper: 3 layers, hidden 1024, 8 heads, FF 4096).
        xattn: Gated cross-attention placement/size (paper: before every LM layer).
        prompt: Text before each caption; the loss covers the caption and its EOS only.
        max_length: Token budget per training sequence (prompt + caption + EOS). Named apart from the
            data module's ``max_text_length``, which sizes the contrastive text tower's (unused) tokens.
        mask_ratio: Tubelet mask ratio in training (paper: 0.3).
        eval_mask_ratio: Mask ratio in validation/test; ``None`` uses ``mask_ratio`` (paper: masked at
            inference too). Eval masks come from a fixed seed, so validation is reproducible.
        optim: AdamW and schedule (paper: lr 4e-5, 2k warmup, wd 1e-4).
        val_generate: Generate captions in validation and score them with pycocoevalcap.
        max_new_tokens: Generation budget in validation.
        num_beams: Beams in validation generation (1: greedy).
        save_dir: Where to write the trained model folder at the end of ``fit`` (``None``: not written).
        eval_seed: Seed of the evaluation masks.
    """

    def __init__(
        self,
        encoder: str | None = None,
        num_frames: int | None = None,
        image_size: int | None = None,
        encoder_preset: str = "vit-b16",
        lm: str | None = None,
        lm_gguf_file: str | None = None,
        resampler: ResamplerConfig = _DEFAULT_RESAMPLER,
        xattn: XAttnConfig = _DEFAULT_XATTN,
        prompt: str = "A video of",
        max_length: int = 64,
        mask_ratio: float = 0.3,
        eval_mask_ratio: float | None = None,
        optim: OptimConfig = _DEFAULT_OPTIM,
        val_generate: bool = True,
        max_new_tokens: int = 32,
        num_beams: int = 1,
        save_dir: str | None = None,
        eval_seed: int = 0,
    ) -> None:
        super().__init__()
        # Copies: the defaults are shared instances. Dicts come from checkpoints' hyperparameters.
        resampler = _as(ResamplerConfig, resampler)
        xattn = _as(XAttnConfig, xattn)
        optim = _as(OptimConfig, optim)
        if encoder is not None and Path(encoder).exists():
            # absolute: the checkpoint names it, and is used from other working directories (`caption --model`)
            encoder = str(Path(encoder).resolve())
        if num_frames is None or image_size is None:
            trained = encoder_preprocess(encoder) or PreprocessConfig()
            num_frames = trained.num_frames if num_frames is None else num_frames
            image_size = trained.image_size if image_size is None else image_size
        self.model_cfg = CaptionerConfig(
            encoder=encoder, encoder_preset=encoder_preset, num_frames=num_frames, image_size=image_size,
            lm=lm, lm_gguf_file=lm_gguf_file, resampler=resampler, xattn=xattn, prompt=prompt,
            max_length=max_length, mask_ratio=mask_ratio, eval_mask_ratio=eval_mask_ratio, eval_seed=eval_seed,
        )
        # Plain types only: checkpoints must load with torch.load(weights_only=True).
        self.save_hyperparameters({
            **self.model_cfg.to_dict(),  # eval_mask_ratio and eval_seed too: a saved captioner masks as validation did
            "optim": dataclasses.asdict(optim),
            "val_generate": val_generate,
            "max_new_tokens": max_new_tokens,
            "num_beams": num_beams,
            "save_dir": save_dir,
        })
        self.optim_cfg = optim
        self.eval_mask_ratio = self.model_cfg.inference_mask_ratio
        self.val_generate, self.max_new_tokens, self.num_beams = val_generate, max_new_tokens, num_beams
        self.save_dir, self.eval_seed = save_dir, eval_seed
        self.model = VideoToText.build(self.model_cfg)
        self.last_batch_stats: dict[str, float] = {}
        self._predictions: dict[str, str] = {}
        self._references: dict[str, list[str]] = {}
        self.last_scores: dict[str, Any] | None = None

    def train(self, mode: bool = True) -> CaptioningModule:
        """Lightning switches the whole module to train mode; the frozen encoder and LM must stay in eval."""
        super().train(mode)
        self.model.train(mode)
        return self

    # ----------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        captions = [caps[0] for caps in batch["captions"]]
        nvf = valid_frame_counts(batch)
        loss = self.model.caption_loss(batch["video"], captions, nvf, self.model_cfg.mask_ratio)
        bs = len(captions)
        # averaged over ranks: each rank's loss covers its own captions (the value a single process would log)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs, sync_dist=True)
        log_learning_rate(self, bs)
        visible = self.model.encoder.cfg.visible_tokens(batch["video"].shape[1], self.model_cfg.mask_ratio)
        self.last_batch_stats = {"clips": bs, "tokens": bs * visible}
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.optim_cfg
        no_decay = {f"model.{n}" for n in self.model.no_weight_decay()}
        groups = param_groups(self, cfg.weight_decay, no_decay)  # frozen parameters are skipped
        opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
        total = cfg.total_steps or (self.trainer.max_steps if self.trainer.max_steps > 0 else None)
        if total is None:
            total = int(self.trainer.estimated_stepping_batches)
        sched = cosine_with_warmup(opt, cfg.warmup_steps, total, cfg.min_lr_ratio)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ----------------------------------------------------------------- evaluation
    def _eval_generators(self, batch: dict[str, Any]) -> list[torch.Generator]:
        # One per video, from its key: its mask does not depend on the batch size, its place in the batch or the
        # number of ranks, so validation scores compare across runs (CPU noise, moved to the model's device).
        return [video_generator(self.eval_seed, key) for key in batch["key"]]

    def setup(self, stage: str) -> None:
        # the recipe links frames and size into the data, but not the frame rate: say when it differs from the encoder's
        data = getattr(getattr(self.trainer, "datamodule", None), "preprocess", None)
        if stage == "fit" and data is not None and self.model_cfg.encoder is not None:
            message = sampling_mismatch(self.model_cfg.encoder, self.model.encoder.cfg, data)
            if message:
                log.warning(message)

    def on_fit_start(self) -> None:
        stop_buffer_broadcast(self.trainer.strategy.model)

    def on_validation_epoch_start(self) -> None:
        self._predictions, self._references = {}, {}
        self._loss_sum, self._loss_count = 0.0, 0

    on_test_epoch_start = on_validation_epoch_start

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        video, nvf = batch["video"], valid_frame_counts(batch)
        first = [caps[0] for caps in batch["captions"]]
        gen = self._eval_generators(batch)
        loss = self.model.caption_loss(video, first, nvf, self.eval_mask_ratio, gen)
        # summed here and gathered once at the epoch's end: a per-step sync_dist hangs DDP when a rank has no batch
        self._loss_sum, self._loss_count = self._loss_sum + float(loss) * len(first), self._loss_count + len(first)
        if self.val_generate:
            preds = self.model.generate(video, nvf, self.max_new_tokens, self.num_beams, self.eval_mask_ratio,
                                        self._eval_generators(batch))
            for key, pred, refs in zip(batch["key"], preds, batch["captions"], strict=True):
                self._predictions[key], self._references[key] = pred, list(refs)

    test_step = validation_step

    def _score(self, stage: str) -> None:
        preds, refs = self._predictions, self._references
        loss_sum, count = self._loss_sum, self._loss_count
        if self.trainer.world_size > 1:
            import torch.distributed as dist

            gathered: list[Any] = [None] * self.trainer.world_size
            dist.all_gather_object(gathered, (preds, refs, loss_sum, count))
            preds = {k: v for p, *_ in gathered for k, v in p.items()}
            refs = {k: v for _, r, *_ in gathered for k, v in r.items()}
            loss_sum, count = sum(g[2] for g in gathered), sum(g[3] for g in gathered)
        if count:  # every rank holds the same gathered value: nothing to reduce
            self.log(f"{stage}/loss", loss_sum / count, batch_size=count, sync_dist=False)
        if not self.val_generate or not preds:
            return
        from longvivit.evaluation.captioning_metrics import caption_scores

        scores = caption_scores(preds, refs)
        self.log_dict({f"{stage}/{k}": float(scores[k]) for k in ("CIDEr", "BLEU-4", "ROUGE-L")})
        if self.trainer.sanity_checking:
            # Lightning's sanity check runs a batch or two before any training: not this model's validation (it
            # printed as "val captioning: ..." like one, before the first step)
            return
        self.last_scores = {**scores, "examples": dict(list(preds.items())[:5])}
        if self.trainer.is_global_zero:  # the same gathered scores on every rank
            # validate/test do not restore the step counter: only fit names the step
            where = f" at step {self.global_step}" if self.trainer.state.fn == "fit" else ""
            log.info("%s captioning%s: %s; e.g. %s", stage, where, scores, self.last_scores["examples"])

    def on_validation_epoch_end(self) -> None:
        self._score("val")

    def on_test_epoch_end(self) -> None:
        self._score("test")

    # ----------------------------------------------------------------- checkpoints and export
    def _is_trained_key(self, key: str) -> bool:
        return key.startswith(("model.resampler.", "model.xlm.xattn."))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The frozen encoder and LM come back from their sources; storing them would only add ~0.5 GB.
        state = checkpoint["state_dict"]
        checkpoint["state_dict"] = {k: v for k, v in state.items() if self._is_trained_key(k)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Put the frozen tensors (already loaded from their sources) back, so Lightning's strict load still
        # checks that every trained tensor is in the checkpoint.
        state = checkpoint["state_dict"]
        for k, v in self.state_dict().items():
            if not self._is_trained_key(k):
                state.setdefault(k, v)

    def on_train_end(self) -> None:
        if self.save_dir and self.trainer.is_global_zero:
            dm = getattr(self.trainer, "datamodule", None)
            out = self.model.save_pretrained(self.save_dir, getattr(dm, "preprocess", None))
            log.info("saved the captioning model to %s", out)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the trained model folder (see :mod:`longvivit.captioning.model`)."""
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        return self.model.save_pretrained(directory, getattr(dm, "preprocess", None))
