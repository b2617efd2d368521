"""LightningModule for contrastive video(+image)-text pre-training, and its zero-shot retrieval validation."""

from __future__ import annotations

import contextvars
import dataclasses
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from longvivit.config import TextEncoderConfig, VideoEncoderConfig, VideoTextConfig, num_kept_tokens
from longvivit.data.collate import valid_frame_counts
from longvivit.distributed import stop_buffer_broadcast
from longvivit.evaluation.retrieval import RetrievalEvaluator, format_metrics
from longvivit.loss import NCELoss, sample_ids
from longvivit.models.checkpoint import load_weights_into
from longvivit.models.init import inflate_patch_kernel
from longvivit.models.masking import video_generator
from longvivit.models.model import VideoTextModel
from longvivit.negatives import ORDER_NEGATIVES, order_negatives, reorder_caption
from longvivit.training.optim import OptimConfig, cosine_with_warmup, log_learning_rate, param_groups

log = logging.getLogger(__name__)

CKPT_META_KEY = "longvivit"
# Set while `longvivit fit|validate|test --ckpt_path ...` builds the module: the checkpoint then holds the weights,
# so a previous stage's checkpoint named by init_from may have been moved or cleaned away since the run started.
RESUMING: contextvars.ContextVar[bool] = contextvars.ContextVar("longvivit_resuming", default=False)
# Non-optional dataclass defaults let LightningCLI link data arguments to model.video.* fields.
_DEFAULT_VIDEO, _DEFAULT_TEXT, _DEFAULT_OPTIM = VideoEncoderConfig(), TextEncoderConfig(), OptimConfig()


class ContrastiveModule(L.LightningModule):
    """Trains :class:`~longvivit.models.model.VideoTextModel` with a symmetric NCE loss.

    A training batch is either one batch dict (``"video"`` or ``"image"`` modality) or a dict
    ``{"video": batch, "image": batch}`` from a combined loader; each modality gets its own NCE loss
    (negatives stay within a modality) and the losses are summed with ``image_loss_weight`` on images.
    Validation encodes every clip and all its captions and reports zero-shot retrieval (T2V/V2T
    R@1/5/10, MdR, MnR, MRR and chance) at the end of the epoch.

    Args:
        video: Video encoder config (its ``mask_ratio`` is the training mask ratio for videos).
        text: Text tower config.
        optim: AdamW and schedule settings.
        init_from: Checkpoint (``.ckpt``), exported folder or encoder folder of a previous stage. Shapes
            are adapted (tubelet inflation, spatial/temporal position tables); optimizer state is not carried.
        trainable_last: Train only the last K blocks of the video encoder (stage 3: 4); ``None`` trains all.
        peft: Parameter-efficient image-to-video tuning of the video encoder after ``init_from``:
            ``"adapter"``, ``"lora"`` or ``"last_k"`` (K = ``trainable_last``, default 4); the tubelet
            embedding stays trainable (see ``VideoEncoder.set_peft``). ``None``: full tuning.
        image_mask_ratio: Token mask ratio for images (the paper's efficient variant masks images too).
        eval_mask_ratio: Mask ratio at validation and test (0: exact, deterministic).
        image_loss_weight: Weight of the image-text loss when images are mixed into video training.
        init_logit_scale: Initial 1/temperature.
        max_logit_scale: Clamp of the learned 1/temperature.
        local_loss: Score local rows against global columns in distributed NCE (memory-light, same loss).
        sync_inflation: Before each validation and in every checkpoint, set the tubelet kernel to the inflated
            image kernel. Used by the image stage, where the 3D path is not trained: validation on videos then
            measures exactly the model that the next stage starts from.
        modalities: Modalities trained (``["video"]``, ``["image"]`` or both); ``None`` infers them from the
            datamodule's shards.
        order_negatives: Re-orderings of every training clip (``"reverse"``, ``"rotate"``; see
            :func:`longvivit.negatives.order_negatives`) scored as extra text-to-video negatives, which makes the
            contrastive task need temporal order. Each costs one more video forward/backward per step.
        caption_order_negatives: Score every clip also against its caption with the events re-ordered
            (:func:`longvivit.negatives.reorder_caption`: clauses around "then", "after that", "before"...
            reversed), as extra video-to-text negatives; captions without such clauses add none. Trains the
            text tower to encode order, which mean-pooled captions otherwise barely do.
    """

    def __init__(
        self,
        video: VideoEncoderConfig = _DEFAULT_VIDEO,
        text: TextEncoderConfig = _DEFAULT_TEXT,
        optim: OptimConfig = _DEFAULT_OPTIM,
        init_from: str | None = None,
        trainable_last: int | None = None,
        peft: str | None = None,
        image_mask_ratio: float = 0.0,
        eval_mask_ratio: float = 0.0,
        image_loss_weight: float = 1.0,
        init_logit_scale: float = 1 / 0.07,
        max_logit_scale: float = 100.0,
        local_loss: bool = True,
        sync_inflation: bool = False,
        modalities: list[str] | None = None,
        order_negatives: list[str] | None = None,
        caption_order_negatives: bool = False,
    ) -> None:
        super().__init__()
        # Copies: the defaults are shared instances, and VideoTextConfig aligns text.embed_dim in place.
        video = VideoEncoderConfig.from_dict(video) if isinstance(video, dict) else dataclasses.replace(video)
        text = TextEncoderConfig(**text) if isinstance(text, dict) else dataclasses.replace(text)
        optim = OptimConfig(**optim) if isinstance(optim, dict) else dataclasses.replace(optim)
        # Plain types only: checkpoints must load with torch.load(weights_only=True).
        self.save_hyperparameters(
            {
                "video": video.to_dict(),
                "text": dataclasses.asdict(text),
                "optim": dataclasses.asdict(optim),
                "init_from": init_from,
                "trainable_last": trainable_last,
                "peft": peft,
                "image_mask_ratio": image_mask_ratio,
                "eval_mask_ratio": eval_mask_ratio,
                "image_loss_weight": image_loss_weight,
                "init_logit_scale": init_logit_scale,
                "max_logit_scale": max_logit_scale,
                "local_loss": local_loss,
                "sync_inflation": sync_inflation,
                "modalities": modalities,
                "order_negatives": order_negatives,
                "caption_order_negatives": caption_order_negatives,
            }
        )
        self.order_negatives = list(order_negatives or [])
        self.caption_order_negatives = caption_order_negatives
        if bad := [k for k in self.order_negatives if k not in ORDER_NEGATIVES]:
            raise ValueError(f"unknown order_negatives {bad}; choose from {ORDER_NEGATIVES}")
        self.modalities = modalities
        self.model_cfg = VideoTextConfig(
            video=video,
            text=text,
            init_logit_scale=init_logit_scale,
            max_logit_scale=max_logit_scale,
        )
        self.optim_cfg = optim
        self.model = VideoTextModel(self.model_cfg)
        self.loss_fn = NCELoss(local_loss=local_loss)
        self.image_mask_ratio, self.eval_mask_ratio = image_mask_ratio, eval_mask_ratio
        self.image_loss_weight, self.sync_inflation = image_loss_weight, sync_inflation
        self.adaptations: list[str] = []
        self._pending_init_from: str | None = None
        if init_from and RESUMING.get() and not Path(init_from).exists():
            self._pending_init_from = str(init_from)  # the checkpoint replaces it (on_load_checkpoint)
        elif init_from:
            self.adaptations = self.init_weights_from(init_from)
        video_cfg = self.model.video_encoder.cfg
        if peft is None and (video_cfg.lora_rank or video_cfg.adapter_dim):
            what, kind = ((f"LoRA rank {video_cfg.lora_rank}", "lora") if video_cfg.lora_rank
                          else (f"adapters of width {video_cfg.adapter_dim}", "adapter"))
            log.warning("the video encoder has %s but model.peft is not set: the whole encoder trains with them "
                        "(model.peft %s trains only those and the temporal parts)", what, kind)
        if peft is not None:
            self.model.video_encoder.set_peft(peft, trainable_last=4 if trainable_last is None else trainable_last)
        elif trainable_last is not None:
            self.model.video_encoder.freeze(trainable_last=trainable_last)
        self.evaluator = RetrievalEvaluator()
        self.last_batch_stats: dict[str, float] = {}
        self._checkpoint_step: int | None = None  # global step of a checkpoint loaded by validate/test
        self._said_truncation = self._said_cut = False

    # ----------------------------------------------------------------- stage chaining
    def init_weights_from(self, source: str | Path) -> list[str]:
        """Initialise both towers and the temperature from a previous stage, adapting shapes.

        Args:
            source: Lightning checkpoint, a folder written by ``VideoTextModel.save_pretrained`` /
                ``longvivit export``, or a video-encoder-only folder.

        Returns:
            Messages describing each adaptation (also logged).
        """
        if not Path(source).exists():
            raise FileNotFoundError(f"init_from: no checkpoint or model folder at {source}")
        return load_weights_into(self.model, source)

    # ----------------------------------------------------------------- training
    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        modalities = self.modalities
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if modalities is None and dm is not None:
            modalities = [m for m, shards in (("video", dm.train_shards), ("image", dm.image_shards)) if shards]
        if not modalities:
            return
        enc = self.model.video_encoder
        if "image" not in modalities and enc.cfg.backbone != "frame":  # the frame model embeds frames with it
            enc.patch_embed_2d.requires_grad_(False)
        if "video" not in modalities:
            # what only videos use gets no gradient (DDP would stop on the unused parameters): the tubelet kernel,
            # the temporal table, and the factorized blocks' temporal branches
            image_path = set(enc.patch_embed_2d.parameters())
            for param in enc.video_parameters():
                if param not in image_path:  # the frame backbone's video tokenizer is the image path
                    param.requires_grad_(False)

    def _modality_loss(self, batch: dict[str, Any], modality: str) -> tuple[Tensor, dict[str, Tensor], int]:
        enc = self.model.video_encoder
        extra, extra_text = None, {}
        if modality == "image":
            out = self.model(
                images=batch["image"],
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                mask_ratio=self.image_mask_ratio,
            )
            feats = out["image_features"]
            s = enc.cfg.num_spatial_tokens
            per_clip = num_kept_tokens(s, self.image_mask_ratio)
        else:
            nvf = valid_frame_counts(batch)
            out = self.model(video=batch["video"], input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             num_valid_frames=nvf)
            feats = out["video_features"]
            per_clip = enc.cfg.visible_tokens(batch["video"].shape[1], enc.cfg.mask_ratio)
            if self.order_negatives:
                kinds, step = self.order_negatives, enc.cfg.tubelet_size[0]
                reordered = order_negatives(batch["video"], kinds, step=step, num_valid_frames=nvf)  # (K*B, T, ...)
                extra_nvf = None if nvf is None else nvf.repeat(len(kinds))  # copies are kind-major
                extra = self.model.encode_video(reordered, num_valid_frames=extra_nvf)  # (K*B, D)
            if self.caption_order_negatives:
                extra_text = self._reordered_captions(batch)
        # a clip resampled twice into one global batch is no negative of itself; the loaders' batches carry the
        # ids (shard and key, hashed on the host), a batch built by hand is named by its keys
        ids = batch["sample_id"] if "sample_id" in batch else sample_ids(batch["key"])
        ids = ids.to(feats.device, non_blocking=True)
        res = self.loss_fn(feats, out["text_features"], out["logit_scale"], output_dict=True,
                           extra_video_features=extra, sample_ids=ids, **extra_text)
        encoded = feats.shape[0] + (0 if extra is None else extra.shape[0])
        visible = encoded * per_clip
        return res["loss"], res, visible

    def _reordered_captions(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Features of each training caption with its events re-ordered, and which captions had any.

        Every caption keeps a slot (its own text where it cannot be re-ordered, masked out of the loss), so
        the shapes match across ranks for the gather.
        """
        captions = [caps[0] for caps in batch["captions"]]
        reordered = [reorder_caption(c) for c in captions]
        tok = self.model.text_encoder.tokenize([r or c for r, c in zip(reordered, captions, strict=True)])
        feats = self.model.encode_text(tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device))
        valid = torch.tensor([r is not None for r in reordered], device=self.device)
        return {"extra_text_features": feats, "extra_text_valid": valid}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        parts = batch if "modality" not in batch else {batch["modality"]: batch}
        total, clips, tokens = 0.0, 0, 0
        for modality, sub in parts.items():
            if sub is None:
                continue
            loss, res, visible = self._modality_loss(sub, modality)
            weight = self.image_loss_weight if modality == "image" and len(parts) > 1 else 1.0
            total = total + weight * loss
            bs = len(sub["key"])
            clips, tokens = clips + bs, tokens + visible
            # Averaged over ranks (one scalar all_reduce each): a rank's loss covers its own rows only, and the mean
            # of the rank losses is the loss of the global batch, the value a single process would log.
            self.log(f"train/loss_{modality}", loss, prog_bar=True, batch_size=bs, sync_dist=True)
            self.log(f"train/acc_{modality}", (res["v2t_acc"] + res["t2v_acc"]) / 2, batch_size=bs, sync_dist=True)
        truncated = sum(int(sub.get("truncated_captions", 0)) for sub in parts.values() if sub is not None)
        if truncated and not self._said_truncation:
            self._said_truncation = True
            log.warning("%d of %d captions in a training batch are longer than the text budget of %d tokens and "
                        "are cut (their later words are never seen); --model.text.max_length raises it "
                        "(train/truncated_fraction logs the share)", truncated, clips, self.model_cfg.text.max_length)
        self.log("train/truncated_fraction", truncated / max(clips, 1), batch_size=clips)
        cut = int((parts.get("video") or {}).get("cut_clips", 0))
        if cut and not self._said_cut:
            self._said_cut = True
            self._say_cut(cut, len(parts["video"]["key"]))
        self.log("train/loss", total, batch_size=clips, sync_dist=True)
        self.log("train/logit_scale", self.model.get_logit_scale(), batch_size=clips)
        log_learning_rate(self, clips)
        self.last_batch_stats = {"clips": clips, "tokens": tokens}
        return total

    def _say_cut(self, cut: int, clips: int) -> None:
        pre = getattr(getattr(self.trainer, "datamodule", None), "preprocess", None)
        window = f"{pre.num_frames} frames at {pre.fps:g} FPS ({pre.num_frames / pre.fps:g} s)" if pre else "the window"
        where = ("their first seconds only, every epoch" if pre is None or pre.start == "first"
                 else "a window of them" if pre.start == "random" else "their middle only, every epoch")
        log.warning("%d of %d clips in a training batch are longer than %s: training sees %s (--data.start random "
                    "draws the window anywhere, --data.sampling uniform spreads the frames over the whole clip)",
                    cut, clips, window, where)

    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.optim_cfg
        no_decay = {f"model.{n}" for n in self.model.no_weight_decay()} | set(self.model.no_weight_decay())
        scales = {"model.text_encoder.model.": cfg.text_lr_scale} if cfg.text_lr_scale != 1.0 else None
        groups = param_groups(self, cfg.weight_decay, no_decay, lr=cfg.lr, lr_scales=scales)
        opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
        total = cfg.total_steps or (self.trainer.max_steps if self.trainer and self.trainer.max_steps > 0 else None)
        if total is None:
            total = int(self.trainer.estimated_stepping_batches)
        sched = cosine_with_warmup(opt, cfg.warmup_steps, total, cfg.min_lr_ratio)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ----------------------------------------------------------------- evaluation
    def on_validation_epoch_start(self) -> None:
        if self.sync_inflation:
            self._inflate_tubelet_kernel()
        self.evaluator.reset()

    def _inflate_tubelet_kernel(self) -> dict[str, Tensor]:
        """Set the (untrained) tubelet kernel to the inflated image kernel; returns the two tensors by key."""
        enc = self.model.video_encoder
        with torch.no_grad():
            enc.patch_embed_3d.weight.copy_(inflate_patch_kernel(enc.patch_embed_2d.weight, enc.cfg.tubelet_size[0]))
            enc.patch_embed_3d.bias.copy_(enc.patch_embed_2d.bias)
        return {"model.video_encoder.patch_embed_3d.weight": enc.patch_embed_3d.weight,
                "model.video_encoder.patch_embed_3d.bias": enc.patch_embed_3d.bias}

    on_test_epoch_start = on_validation_epoch_start

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        # A clip's mask comes from its key (masked validation scores do not move with the batch or world size)
        gens = [video_generator(0, key) for key in batch["key"]] if self.eval_mask_ratio > 0 else None
        video_emb = self.model.encode_video(batch["video"], mask_ratio=self.eval_mask_ratio, generator=gens,
                                            num_valid_frames=valid_frame_counts(batch))
        captions = [c for caps in batch["captions"] for c in caps]
        owners = [k for k, caps in zip(batch["key"], batch["captions"], strict=True) for _ in caps]
        tok = self.model.text_encoder.tokenize(captions)
        text_emb = self.model.encode_text(tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device))
        self.evaluator.add_videos(video_emb, batch["key"])
        self.evaluator.add_texts(text_emb, owners, captions)

    test_step = validation_step

    def _log_retrieval(self, stage: str) -> None:
        if self.trainer.world_size > 1:
            self._gather_evaluator()
        if self.evaluator.num_videos == 0:
            return
        metrics = self.evaluator.compute()
        flat = {f"{stage}/{d}_{k}": float(v) for d in ("t2v", "v2t") for k, v in metrics[d].items()}
        flat[f"{stage}/chance_R@1"] = float(metrics["chance"]["R@1"])
        flat[f"{stage}/num_videos"] = float(metrics["num_videos"])
        self.log_dict(flat, sync_dist=False, rank_zero_only=True)
        if not self.trainer.sanity_checking:
            # the sanity check sees a couple of batches before any training: not this model's validation
            self.last_metrics = metrics
            if self.trainer.is_global_zero:  # every rank holds the same gathered metrics: print them once
                # validate/test with a checkpoint do not restore the step counter: the checkpoint's step is named
                step = self.global_step if self.trainer.state.fn == "fit" else self._checkpoint_step
                where = "the initial weights (no --ckpt_path)" if step is None else f"step {step}"
                log.info("%s retrieval at %s: %s", stage, where, "\n  ".join(format_metrics(metrics)))

    def on_validation_epoch_end(self) -> None:
        self._log_retrieval("val")

    def on_test_epoch_end(self) -> None:
        self._log_retrieval("test")

    def _gather_evaluator(self) -> None:
        """Every rank scored a disjoint part of the eval set: gather all of it so all videos compete."""
        import torch.distributed as dist

        ev = self.evaluator
        video, text, _ = ev.embeddings() if ev.num_videos else (None, None, None)
        payload = (video, ev.video_keys, text, ev.text_video_keys)
        gathered: list[Any] = [None] * self.trainer.world_size
        dist.all_gather_object(gathered, payload)
        self.evaluator.reset()
        for v, k, t, owners in gathered:
            if v is not None:
                self.evaluator.add_videos(v, k)
                self.evaluator.add_texts(t, owners)

    # ----------------------------------------------------------------- checkpoints
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._checkpoint_step = checkpoint.get("global_step")
        if self._pending_init_from is not None:
            log.info("init_from %s is gone; the checkpoint being resumed holds the weights and the stage's "
                     "adaptations", self._pending_init_from)
            self.adaptations = list((checkpoint.get(CKPT_META_KEY) or {}).get("adaptations") or [])
            self._pending_init_from = None

    def _require_weights(self) -> None:
        if self._pending_init_from is not None:  # --ckpt_path last found no checkpoint: nothing replaced init_from
            raise FileNotFoundError(f"init_from: no checkpoint or model folder at {self._pending_init_from}, and no "
                                    "checkpoint was resumed (--ckpt_path found none)")

    def on_fit_start(self) -> None:
        stop_buffer_broadcast(self.trainer.strategy.model)
        accumulate = self.trainer.accumulate_grad_batches
        if accumulate > 1 and self.trainer.is_global_zero:
            # Accumulation multiplies the clips per optimizer step but not the negatives: each batch's NCE is
            # computed (and gathered across ranks) on its own.
            dm = getattr(self.trainer, "datamodule", None)
            per_rank = getattr(dm, "batch_size", None)
            batch = "the batch" if per_rank is None else f"{self.trainer.world_size * per_rank} clips"
            log.warning("accumulate_grad_batches=%d: the NCE loss of each batch still contrasts %s with each other; "
                        "a step averages %d such losses, which is not one contrastive batch %d times larger (the "
                        "paper's batch 512 needs 512 clips in one forward: more devices, or a larger data.batch_size "
                        "with model.video.grad_checkpointing and masking)", accumulate, batch, accumulate, accumulate)

    def on_train_start(self) -> None:
        self._require_weights()

    def on_validation_start(self) -> None:
        self._require_weights()

    def on_test_start(self) -> None:
        self._require_weights()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.sync_inflation:
            # What the next stage starts from, whether or not a validation ran since the image kernel last moved
            # (without one, stage 2 started from the random tubelet kernel of stage 1's initialisation).
            for key, value in self._inflate_tubelet_kernel().items():
                if key in checkpoint["state_dict"]:
                    checkpoint["state_dict"][key] = value.detach().clone()
        checkpoint[CKPT_META_KEY] = {
            "model_config": self.model_cfg.to_dict(),
            "trainable_last": self.hparams.trainable_last,
            "init_from": self.hparams.init_from,
            "adaptations": self.adaptations,
            "metrics": getattr(self, "last_metrics", None),
        }
