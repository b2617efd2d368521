"""ViViT video encoder with joint space-time attention, random tubelet masking and a pooled projection head.

Videos go through a 3D tubelet convolution, images through their own 2D patch convolution; both share the
spatial position table and the transformer, so one model embeds clips and pictures into the same space.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from longvivit.config import PreprocessConfig, VideoEncoderConfig
from longvivit.models.hub import CONFIG_NAME, WEIGHTS_NAME, load_encoder_folder, save_encoder_folder  # noqa: F401
from longvivit.models.layers import Block, masked_mean
from longvivit.models.masking import Generators, random_masking, scatter_kept, valid_steps

logger = logging.getLogger(__name__)


class VideoEncoder(nn.Module):
    """ViViT encoder: tubelet embedding, joint space-time transformer, mean pooling, projection.

    ``VideoEncoder(cfg)`` builds the class of ``cfg.backbone``: this class for ``"joint"``, the subclasses in
    :mod:`longvivit.models.variants` for ``"factorized"`` and ``"frame"``. Adapters and LoRA
    (``cfg.adapter_dim``, ``cfg.lora_rank``) are added to the blocks of any backbone.

    Args:
        cfg: The encoder configuration.

    Attributes:
        trainable_last: ``None`` when fully trainable, else the ``K`` given to :meth:`freeze`.
        peft: The parameter-efficient mode set by :meth:`set_peft`, or ``None``.
        grad_checkpointing: Whether trainable blocks recompute activations in backward.
    """

    def __new__(cls, cfg: VideoEncoderConfig | None = None, *args: object, **kwargs: object) -> VideoEncoder:
        # Dispatch here rather than in a factory so that every caller (the model, from_pretrained, the
        # checkpoint loader) builds the right backbone from the config alone. cfg is None on unpickling.
        if cls is VideoEncoder and cfg is not None and cfg.backbone != "joint":
            from longvivit.models.variants import backbone_class

            cls = backbone_class(cfg.backbone)
        return super().__new__(cls)

    def __init__(self, cfg: VideoEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.patch_embed_3d = nn.Conv3d(
            cfg.in_chans, w, kernel_size=cfg.tubelet_size, stride=cfg.tubelet_size
        )
        self.patch_embed_2d = nn.Conv2d(cfg.in_chans, w, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.pos_embed_spatial = nn.Parameter(torch.zeros(1, cfg.num_spatial_tokens, w))
        # Zero-init: at start a static video is embedded exactly like the image it repeats.
        self.pos_embed_temporal = nn.Parameter(torch.zeros(1, cfg.num_temporal_steps, w))
        if cfg.cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, w))
            self.pos_embed_cls = nn.Parameter(torch.zeros(1, 1, w))
        else:
            self.cls_token = None
            self.pos_embed_cls = None
        # Stochastic depth grows linearly with depth (plain floats: the module may be built on "meta").
        rates = [cfg.drop_path * i / max(1, cfg.depth - 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(self.make_block(i, rates[i]) for i in range(cfg.depth))
        if cfg.adapter_dim or cfg.lora_rank:
            from longvivit.models.variants import attach_peft

            for blk in self.blocks:
                attach_peft(blk, cfg)
        self.norm = nn.LayerNorm(w, eps=cfg.layer_norm_eps)
        self.head_norm = nn.LayerNorm(w, eps=cfg.layer_norm_eps)
        self.proj = nn.Linear(w, cfg.embed_dim, bias=False)

        self.trainable_last: int | None = None
        self.peft: str | None = None
        self.grad_checkpointing = False
        self.reset_parameters()
        if cfg.grad_checkpointing:
            self.set_grad_checkpointing(True)

    def make_block(self, index: int, drop_path: float) -> nn.Module:
        """Build block ``index``; variants (adapters, LoRA, factorized attention) override this hook."""
        cfg = self.cfg
        return Block(
            cfg.width,
            cfg.heads,
            mlp_ratio=cfg.mlp_ratio,
            qkv_bias=cfg.qkv_bias,
            eps=cfg.layer_norm_eps,
            attn_impl=cfg.attn_impl,
            drop_path=drop_path,
        )

    # ----------------------------------------------------------------- initialisation
    def reset_parameters(self) -> None:
        """ViT initialisation: truncated normal (std 0.02) for weights and tables, zero biases, unit norms."""
        nn.init.trunc_normal_(self.pos_embed_spatial, std=0.02)
        nn.init.zeros_(self.pos_embed_temporal)
        for p in (self.cls_token, self.pos_embed_cls):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)
        self.apply(_init_module)
        # Adapters, LoRA and temporal branches re-initialise themselves so the model starts as the base ViT.
        for m in self.modules():
            if m is not self and hasattr(m, "init_as_identity"):
                m.init_as_identity()

    # ----------------------------------------------------------------- embedding
    def embed_video(self, video: torch.Tensor) -> torch.Tensor:
        """Tubelet tokens plus position embeddings, before masking.

        Args:
            video: (B, T, C, H, W) normalised frames; T a multiple of the tubelet's time size and
                T / tubelet_t at most the temporal table length.

        Returns:
            (B, T' * H' * W', width) tokens in time-major order.
        """
        cfg = self.cfg
        if video.ndim != 5:
            raise ValueError(f"video must be (B, T, C, H, W), got shape {tuple(video.shape)}")
        b, t, c, h, w = video.shape
        video = self._check_frame(video, "video frames")
        tt = cfg.tubelet_size[0]
        if t % tt:
            nearest = f"{t // tt * tt} or {(t // tt + 1) * tt}" if t > tt else str(tt)
            raise ValueError(f"got {t} frames, not a multiple of the tubelet's time size {tt}; sample {nearest} frames")
        steps = t // tt
        table = self.pos_embed_temporal.shape[1]
        if steps > table:
            raise ValueError(
                f"{t} frames make {steps} tubelet steps but the temporal position table has {table} "
                f"(num_frames={table * tt}); load the model for more frames, e.g. "
                f"VideoEncoder.from_pretrained(path, num_frames={t}), which extends the table "
                f"({cfg.temporal_extend!r})"
            )
        x = self.patch_embed_3d(video.transpose(1, 2))  # (B, C, T, H, W) -> (B, width, T', H', W')
        x = rearrange(x, "b c t h w -> b t (h w) c")  # (B, T', H'*W', width)
        # Token (t, h, w) gets spatial[h, w] + temporal[t]; short clips use the first T' rows.
        x = x + self.pos_embed_spatial.unsqueeze(1) + self.pos_embed_temporal[:, :steps].unsqueeze(2)
        return x.flatten(1, 2)  # (B, T'*H'*W', width)

    def embed_image(self, images: torch.Tensor) -> torch.Tensor:
        """Patch tokens of images plus the spatial position table, before masking.

        Args:
            images: (B, C, H, W) normalised images.

        Returns:
            (B, H' * W', width) tokens.
        """
        if images.ndim != 4:
            raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
        images = self._check_frame(images, "images")
        x = self.patch_embed_2d(images)  # (B, width, H', W')
        x = rearrange(x, "b c h w -> b (h w) c")  # (B, H'*W', width)
        return x + self.pos_embed_spatial

    def _check_frame(self, x: torch.Tensor, what: str) -> torch.Tensor:
        """Validates channels, size and dtype of ``(..., C, H, W)`` frames; returns them in the weights' dtype."""
        cfg = self.cfg
        c, h, w = x.shape[-3:]
        if c != cfg.in_chans:
            hint = " (videos are (B, T, C, H, W), time before channels)" if what == "video frames" else ""
            raise ValueError(f"{what} have {c} channels, the encoder expects {cfg.in_chans}{hint}")
        if (h, w) != (cfg.image_size, cfg.image_size):
            patch, side = cfg.patch_size[0], cfg.image_size
            if h == w and h % patch == 0:
                fix = (f"resize/crop the input to {side}x{side}, or load the encoder for this size with "
                       f"VideoEncoder.from_pretrained(path, image_size={h})")
            else:  # another size would not help: frames are square, their side a multiple of the patch size
                fix = f"resize/crop the input to {side}x{side} (square, a multiple of the patch size {patch})"
            raise ValueError(f"{what} are {h}x{w} but the encoder is built for {side}x{side}; {fix}")
        if not x.is_floating_point():
            raise TypeError(
                f"{what} are {x.dtype}; the encoder takes float frames normalised with the mean/std of "
                "preprocessor_config.json (longvivit.data.decode_video and load_clips produce them)"
            )
        # Like Hugging Face vision towers: float input follows the weights (bf16 frames into an fp32 model).
        return x.to(self.patch_embed_2d.weight.dtype)

    # ----------------------------------------------------------------- transformer
    @property
    def num_frozen_blocks(self) -> int:
        """Leading blocks excluded from training by :meth:`freeze`."""
        if self.trainable_last is None:
            return 0
        return max(0, len(self.blocks) - self.trainable_last)

    def _run(
        self,
        pixels: torch.Tensor,
        is_video: bool,
        mask_ratio: float | None,
        generator: Generators,
        num_valid_frames: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Blocks and final norm over the prepared tokens.

        Returns:
            ``(tokens, ids_keep, valid)``: tokens and ``ids_keep`` as :meth:`prepare_tokens` gives them (the
            tokens flattened to (B, N, width)), and the (B, N) bool of tokens from real frames, ``None`` when
            :meth:`step_validity` gives no mask (no ``num_valid_frames``, or host counts without a padded clip).
        """
        # cfg.mask_ratio is the training ratio: an encoder in eval mode (an exported one included) sees every token
        # unless asked otherwise, so inference is exact and deterministic by default.
        default = self.cfg.mask_ratio if self.training else 0.0
        ratio = default if mask_ratio is None else float(mask_ratio)
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {ratio}")
        n_frozen = self.num_frozen_blocks
        # The frozen prefix needs no activations for backward: running it without autograd is what
        # makes "train the last K blocks" cheap in memory. Input gradients (saliency) still work, and a
        # trainable tubelet embedding (set_peft("last_k")) keeps autograd on through the prefix.
        frozen = not self._prefix_needs_grad(pixels, is_video, n_frozen)
        step_valid = self.step_validity(pixels, num_valid_frames) if is_video else None
        with torch.no_grad() if frozen else contextlib.nullcontext():
            x, ids_keep, valid = self.prepare_tokens(pixels, is_video, ratio, generator, step_valid)
            for blk in self.blocks[:n_frozen]:
                x = blk(x, valid)
        for blk in self.blocks[n_frozen:]:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(blk, x, valid, use_reentrant=False)
            else:
                x = blk(x, valid)
        return self.norm(self.flatten_tokens(x)), ids_keep, self.flatten_valid(valid, x)

    def step_validity(self, video: torch.Tensor, num_valid_frames: torch.Tensor | None) -> torch.Tensor | None:
        """(B, T') bool of the tubelet steps that start on a real frame, ``None`` when all of them do.

        Counts on the host (``load_clips``, a list) are read: a batch without padding keeps the unmasked path, exactly
        the model without the argument. Counts already on the device are not read (that would wait for the GPU in
        every forward): they always give a mask, all ``True`` when nothing is padded. A training step whose batch
        has no padded clip (``collate``'s ``padded_clips``) passes ``None`` instead.

        Args:
            video: (B, T, C, H, W) frames, padded at the end to the window.
            num_valid_frames: (B,) real frames per clip, or ``None`` (all are real).
        """
        if num_valid_frames is None:
            return None
        b, t = video.shape[:2]
        nvf = torch.as_tensor(num_valid_frames).long().reshape(-1)  # where it is: a host count is read for free
        if nvf.shape != (b,):
            raise ValueError(f"num_valid_frames must have shape ({b},), got {tuple(nvf.shape)}")
        if nvf.device.type == "cpu" and bool((nvf >= t).all()):
            return None  # nothing padded: the unmasked fast path, and exactly the model without the argument
        step = self.cfg.frames_per_step  # the tubelet's time size; 1 for the frame backbone
        return valid_steps(nvf.to(video.device, non_blocking=True), step, t // step)

    def _prefix_needs_grad(self, pixels: torch.Tensor, is_video: bool, n_frozen: int) -> bool:
        if self.trainable_last is None or pixels.requires_grad:
            return True
        embed = self.patch_embed_3d if is_video else self.patch_embed_2d
        tables = (self.pos_embed_spatial, self.pos_embed_temporal, self.cls_token, self.pos_embed_cls)
        prefix = [*embed.parameters(), *(p for p in tables if p is not None)]
        prefix += [p for blk in self.blocks[:n_frozen] for p in blk.parameters()]
        return any(p.requires_grad for p in prefix)

    def prepare_tokens(
        self,
        pixels: torch.Tensor,
        is_video: bool,
        ratio: float,
        generator: Generators,
        step_valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Embedded, masked tokens in the layout the blocks take, which were kept, and which are real (variants
        override this, :meth:`flatten_tokens`, :meth:`flatten_valid` and :meth:`forward_grid`).

        Args:
            pixels: Video (B, T, C, H, W) or images (B, C, H, W).
            is_video: Which of the two.
            ratio: Fraction of tokens masked.
            generator: RNG(s) of the mask.
            step_valid: Optional (B, T') bool of the tubelet steps holding real frames. Tokens of padding steps
                are masked first and hidden from attention, so a padded clip is encoded as its real frames alone.

        Returns:
            ``(tokens, ids_keep, valid)``: (B, N_keep (+1 class token, first), width) for the joint backbone,
            the (B, N_keep) sorted indices of the kept patch tokens (``None`` when nothing is masked), and the
            (B, N_keep (+1)) bool of real tokens (``None`` without ``step_valid``), the blocks' attention mask.
        """
        x = self.embed_video(pixels) if is_video else self.embed_image(pixels)
        ids_keep = valid = None
        if step_valid is not None:
            # (B, T') -> (B, T'*S): a step's validity for each of its tokens, time-major like x
            valid = step_valid.repeat_interleave(self.cfg.num_spatial_tokens, dim=1)
        if ratio > 0.0:
            x, ids_keep = random_masking(x, ratio, generator, valid)
            valid = None if valid is None else valid.gather(1, ids_keep)  # (B, N_keep)
        if self.cls_token is not None:
            cls = (self.cls_token + self.pos_embed_cls).expand(x.shape[0], -1, -1)  # (B, 1, width)
            x = torch.cat([cls, x], dim=1)  # (B, 1 + N_keep, width)
            if valid is not None:
                valid = torch.cat([valid.new_ones(valid.shape[0], 1), valid], dim=1)  # (B, 1 + N_keep)
        return x, ids_keep, valid

    def flatten_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Block output -> (B, N, width); the identity for the joint backbone."""
        return x

    def flatten_valid(self, valid: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
        """The blocks' validity mask -> (B, N) bool matching :meth:`flatten_tokens`; the identity here."""
        return valid

    def forward_features(
        self,
        video: torch.Tensor,
        mask_ratio: float | None = None,
        generator: Generators = None,
        num_valid_frames: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token features of a video after the final norm.

        Args:
            video: (B, T, C, H, W) normalised frames.
            mask_ratio: Fraction of patch tokens dropped at random per sample; ``None`` uses
                ``cfg.mask_ratio`` in training mode and 0 in eval mode. Zero is exact and uses no randomness.
            generator: Optional RNG for reproducible masks, or one per video.
            num_valid_frames: Optional (B,) count of real frames per clip (``load_clips``' ``num_valid_frames``;
                the rest pads the window). Real tokens then attend only to real tokens, and masking drops
                padding first; the padding tokens that remain are still returned (see :meth:`forward`).

        Returns:
            (B, N_visible (+1 with a class token, first), width).
        """
        return self._run(video, True, mask_ratio, generator, num_valid_frames)[0]

    def forward_features_image(
        self,
        images: torch.Tensor,
        mask_ratio: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Token features of images through the 2D patch path.

        Args:
            images: (B, C, H, W) normalised images.
            mask_ratio: Fraction of patch tokens dropped at random per sample.
            generator: Optional RNG for reproducible masks.

        Returns:
            (B, N_visible (+1 with a class token, first), width).
        """
        return self._run(images, False, mask_ratio, generator)[0]

    def pool(self, tokens: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, width) -> (B, width): the class token if ``cfg.pool == "cls"``, else the patch mean.

        Args:
            tokens: (B, N, width) features (class token first when the model has one).
            valid: Optional (B, N) bool: the mean is taken over these tokens only (real frames, not padding).
        """
        if self.cls_token is not None:
            if self.cfg.pool == "cls":
                return tokens[:, 0]
            tokens = tokens[:, 1:]
            valid = None if valid is None else valid[:, 1:]
        return masked_mean(tokens, valid, dim=1)

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, width) -> (B, embed_dim): LayerNorm then the bias-free projection (no L2 normalisation)."""
        return self.proj(self.head_norm(pooled))

    def forward(
        self,
        video: torch.Tensor,
        mask_ratio: float | None = None,
        generator: Generators = None,
        num_valid_frames: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embed videos into the joint space.

        Args:
            video: (B, T, C, H, W) normalised frames.
            mask_ratio: See :meth:`forward_features`.
            generator: Optional RNG for reproducible masks, or one per video.
            num_valid_frames: Optional (B,) count of real frames per clip, the rest padding the window
                (``load_clips`` repeats the last frame). Padding tubelets are then left out of attention and of
                the mean pool, so a clip padded from ``n`` frames to ``T`` embeds as its ``n`` frames alone
                (exactly when ``n`` is a multiple of the tubelet's time size and nothing is masked), instead of
                being pulled towards its last frame. Without it every frame counts as real.

        Returns:
            (B, embed_dim) embeddings, not L2-normalised.
        """
        tokens, _, valid = self._run(video, True, mask_ratio, generator, num_valid_frames)
        return self.head(self.pool(tokens, valid))

    def encode_image(
        self,
        images: torch.Tensor,
        mask_ratio: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Embed images into the joint space through the 2D patch path.

        Args:
            images: (B, C, H, W) normalised images.
            mask_ratio: Fraction of patch tokens dropped at random.
            generator: Optional RNG for reproducible masks.

        Returns:
            (B, embed_dim) embeddings, not L2-normalised.
        """
        return self.head(self.pool(self.forward_features_image(images, mask_ratio, generator)))

    def forward_tokens_grid(self, video: torch.Tensor) -> torch.Tensor:
        """Unmasked patch features arranged on their space-time grid (for the captioning resampler).

        Args:
            video: (B, T, C, H, W) normalised frames.

        Returns:
            (B, T', H', W', width) features after the final norm, class token dropped.
        """
        tokens = self.forward_features(video, mask_ratio=0.0)
        if self.cls_token is not None:
            tokens = tokens[:, 1:]
        gh, gw = self.cfg.grid_size
        # (B, T'*H'*W', width) -> (B, T', H', W', width)
        return rearrange(tokens, "b (t h w) c -> b t h w c", h=gh, w=gw)

    def forward_grid(
        self,
        video: torch.Tensor,
        mask_ratio: float = 0.0,
        generator: Generators = None,
        num_valid_frames: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token features on the space-time grid, masked tokens dropped before the transformer (the captioner's
        input: the paper masks 30% of the frozen encoder's tokens in video-to-text training and inference).

        Args:
            video: (B, T, C, H, W) normalised frames.
            mask_ratio: Fraction of tokens dropped at random per sample (as :meth:`forward_features` drops them).
            generator: Optional RNG for reproducible masks, or one per video.
            num_valid_frames: Optional (B,) count of real frames per clip (see :meth:`forward`).

        Returns:
            ``(grid, visible)``: (B, T', H'*W', width) features after the final norm, zeros where masked (class
            token dropped; T' the backbone's temporal steps), and the (B, T', H'*W') bool of encoded tokens of
            real frames (``False`` where masked or padding).
        """
        s = self.cfg.num_spatial_tokens
        steps = video.shape[1] // self.cfg.tubelet_size[0]
        tokens, ids_keep, valid = self._run(video, True, mask_ratio, generator, num_valid_frames)
        if self.cls_token is not None:
            tokens = tokens[:, 1:]  # (B, N_keep, width)
            valid = None if valid is None else valid[:, 1:]
        if ids_keep is None:
            flat = tokens
            visible = torch.ones(flat.shape[:2], dtype=torch.bool, device=flat.device) if valid is None else valid
        else:
            flat, visible = scatter_kept(tokens, ids_keep, steps * s)  # (B, T'*S, width), (B, T'*S)
            if valid is not None:
                real, _ = scatter_kept(valid.unsqueeze(-1), ids_keep, steps * s)  # (B, T'*S, 1)
                visible = visible & real.squeeze(-1)
        # time-major tokens (see embed_video): (B, T'*S, ...) -> (B, T', S, ...)
        return flat.view(flat.shape[0], steps, s, -1), visible.view(-1, steps, s)

    # ----------------------------------------------------------------- training controls
    def freeze(self, trainable_last: int = 4) -> None:
        """Train only the last ``trainable_last`` blocks plus ``norm``, ``head_norm`` and ``proj``.

        Patch embeddings, position tables, the class token and the earlier blocks stop requiring
        gradients, and that prefix then runs under ``torch.no_grad()`` so its activations are not kept.

        Args:
            trainable_last: Number of final blocks left trainable (0 trains only the head).
        """
        if trainable_last < 0:
            raise ValueError(f"trainable_last must be >= 0, got {trainable_last}")
        if trainable_last > len(self.blocks):  # e.g. a recipe's 4 on a model overridden to depth 2
            logger.warning("trainable_last=%d but the encoder has %d blocks: every block trains (only the patch "
                           "embeddings and position tables are frozen)", trainable_last, len(self.blocks))
        self.unfreeze()
        self.trainable_last = int(trainable_last)
        n_frozen = self.num_frozen_blocks
        frozen: list[nn.Module | nn.Parameter | None] = [
            self.patch_embed_3d,
            self.patch_embed_2d,
            self.pos_embed_spatial,
            self.pos_embed_temporal,
            self.cls_token,
            self.pos_embed_cls,
            *self.blocks[:n_frozen],
        ]
        for item in frozen:
            if item is not None:
                item.requires_grad_(False)

    def unfreeze(self) -> None:
        """Make every parameter trainable again and forget the frozen prefix and any PEFT mode."""
        self.trainable_last = None
        self.peft = None
        self.requires_grad_(True)

    def set_peft(self, kind: str, trainable_last: int = 4) -> None:
        """Parameter-efficient image-to-video tuning: freeze the image model, train the rest.

        Trainable afterwards: the video-specific parameters (:meth:`video_parameters`: tubelet embedding
        and temporal table, plus temporal branches or the attention pool of the variants), the final norm,
        ``head_norm`` and ``proj``, and, by ``kind``, the adapters (``"adapter"``), the LoRA factors
        (``"lora"``) or the last ``trainable_last`` blocks (``"last_k"``). See
        :func:`longvivit.models.variants.freeze_for_peft`.

        Args:
            kind: ``"adapter"``, ``"lora"`` or ``"last_k"``.
            trainable_last: ``K`` for ``"last_k"``.
        """
        from longvivit.models.variants import freeze_for_peft

        freeze_for_peft(self, kind, trainable_last)

    def video_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters an image ViT does not have; :meth:`set_peft` keeps them trainable."""
        yield from self.patch_embed_3d.parameters()
        yield self.pos_embed_temporal

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the trainable blocks' activations in backward (non-reentrant checkpointing)."""
        self.grad_checkpointing = bool(enable)

    def no_weight_decay(self) -> set[str]:
        """Parameter names the optimiser should not decay (position tables and the class token)."""
        names = {"pos_embed_spatial", "pos_embed_temporal"}
        if self.cls_token is not None:
            names |= {"cls_token", "pos_embed_cls"}
        return names

    def num_params(self, trainable_only: bool = False) -> int:
        """Number of parameters, optionally only those that require gradients."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def extra_repr(self) -> str:
        return (f"backbone={self.cfg.backbone}, trainable_last={self.trainable_last}, peft={self.peft}, "
                f"grad_checkpointing={self.grad_checkpointing}")

    # ----------------------------------------------------------------- persistence
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` to ``directory`` (created if needed).

        Returns:
            The directory.
        """
        return save_encoder_folder(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, **overrides: object) -> VideoEncoder:
        """Load a folder written by :meth:`save_pretrained` (or ``longvivit export``), or a Hugging Face ViT folder
        (its image weights, the patch kernel inflated into the tubelet kernel; see
        :func:`longvivit.models.hf_vit.load_hf_vit`).

        Args:
            directory: Folder with ``config.json`` and ``model.safetensors``.
            **overrides: Config fields to change, e.g. ``num_frames=256`` or ``image_size=320``; the
                weights are adapted (temporal table extended, spatial table resized) to fit. Fields the weights
                fix (``models.hub.FIXED_FIELDS``: width, depth, heads, ...) raise ValueError when changed.

        Returns:
            The encoder in eval mode, as a loaded model is used for inference (``.train()`` to fine-tune it). Its
            ``adaptations`` says what was changed to fit the overrides (also logged at INFO by
            ``longvivit.models.init``).
        """
        return load_encoder_folder(cls, directory, **overrides)

    # ----------------------------------------------------------------- features for fusion
    #: Sampling settings of the export this encoder was loaded from (``preprocessor_config.json``), if any.
    preprocess: PreprocessConfig | None = None
    #: What :meth:`from_pretrained` adapted to fit the config (e.g. the temporal table extended), one line each.
    adaptations: tuple[str, ...] = ()

    def extract_features(
        self,
        video: torch.Tensor,
        fps: float | None = None,
        start: float = 0.0,
        num_valid_frames: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | tuple[int, int, int]]:
        """Token grid, pooled embedding and the time of every temporal step, for fusing several encoders.

        Nothing is masked. With a class token, the grid holds only the patch tokens; the class token is
        returned apart as ``"cls"`` (it belongs to no space-time position).

        Args:
            video: (B, T, C, H, W) normalised frames, sampled at ``fps`` frames per second.
            fps: Sampling rate of ``video``. ``None``: the rate of the export's ``preprocessor_config.json``
                when the encoder came from :meth:`from_pretrained` of an export, else 1.0 (the paper's).
            start: Time in seconds of the first frame.
            num_valid_frames: Optional (B,) real frames per clip (the rest pads the window): the embedding and
                the real tokens are computed without the padding (see :meth:`forward`).

        Returns:
            ``"tokens"``: (B, T', H', W', width) features after the final norm; ``"embedding"``: (B, embed_dim)
            as :meth:`forward` gives it (pooled and projected, not L2-normalised); ``"tubelet"``: (t, h, w),
            frames and pixels one token covers; ``"timestamps"``: (T',) float32 seconds at which each temporal
            step starts, ``start + i * t / fps``; ``"grid"``: (T', H', W'); ``"cls"``: (B, width) with a class
            token; ``"valid"``: (B, T') bool, the steps holding real frames (all ``True`` without
            ``num_valid_frames``).
        """
        from longvivit.models.features import extract_features

        return extract_features(self, video, fps, start, num_valid_frames)


def _init_module(m: nn.Module) -> None:
    if isinstance(m, (nn.Linear, nn.Conv2d, nn.Conv3d)):
        # A patch conv is a Linear on the flattened kernel, so it gets the same init.
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
