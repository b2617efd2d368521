"""The paper's design space around the joint ViViT: factorized and frame-level backbones, adapters, LoRA, PEFT.

Every variant is selected by :class:`~longvivit.config.VideoEncoderConfig` and built by ``VideoEncoder(cfg)``
(which dispatches on ``cfg.backbone``), and every new module starts so that the model computes exactly what
the image model it is loaded from computes:

- ``backbone="factorized"``: each block runs spatial attention within every tubelet step, then a temporal
  branch across steps at every spatial position, added as ``h + tanh(alpha) * branch(h)`` with ``alpha = 0``
  and the branch initialised from the spatial weights. At init the model is the per-step image model.
  Masking keeps the *same* spatial positions in every step (tube masking): random per-token masking would
  leave steps with different token counts and positions without a full temporal trajectory, so neither
  attention would have a regular grid. Tube masking keeps both attentions dense and cuts tokens by the same
  ratio (``T' * ceil((1 - r) * S)`` tokens are kept instead of ``ceil((1 - r) * T' * S)``).
- ``backbone="frame"``: ImageViT. Every frame goes through the 2D patch path and the blocks alone (masked
  per frame), is pooled like an image, and the per-frame embeddings are pooled over time by their mean or
  by :class:`AttentionPool` (a learned query; uniform weights, i.e. the mean, at init).
- ``adapter_dim > 0``: an :class:`Adapter` after every block's feed-forward layer (zero-init output).
- ``lora_rank > 0``: :class:`LoRALinear` on the chosen linears of every block (zero-init ``B``).
- :func:`freeze_for_peft`: the image model frozen, only adapters / LoRA / the last K blocks train, plus the
  video-specific parameters (tubelet embedding always, as in the paper) and the head.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from longvivit.config import VideoEncoderConfig
from longvivit.models.layers import Block, masked_mean
from longvivit.models.masking import Generators, mask_noise, num_kept_tokens, scatter_kept
from longvivit.models.video_encoder import VideoEncoder

PEFT_KINDS = ("adapter", "lora", "last_k")


# --------------------------------------------------------------------------- parameter-efficient modules
class Adapter(nn.Module):
    """Bottleneck MLP adapter with a residual: ``x + up(relu(down(norm(x))))``.

    Args:
        dim: Token width.
        bottleneck: Hidden width (the paper: 384 for ViT-B).
        eps: LayerNorm epsilon.
    """

    def __init__(self, dim: int, bottleneck: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        self.init_as_identity()

    def init_as_identity(self) -> None:
        """Zero the up-projection: the adapter returns its input until it is trained."""
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(F.relu(self.down(self.norm(x))))


class LoRALinear(nn.Linear):
    """A linear layer plus a trainable low-rank update: ``W x + b + scale * B A x``.

    It subclasses :class:`torch.nn.Linear` so that the base ``weight`` and ``bias`` keep their key names
    and a plain checkpoint loads into it unchanged; only ``lora_a`` and ``lora_b`` are new.

    Args:
        in_features: Input width.
        out_features: Output width.
        rank: Rank ``r`` of ``B A``.
        scale: Factor of the update (``lora_alpha / r``).
        bias: Whether the base layer has a bias.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, scale: float = 1.0, bias: bool = True,
                 device: torch.device | str | None = None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device)
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.rank, self.scale = rank, scale
        self.lora_a = nn.Parameter(torch.empty(rank, in_features, device=device))
        self.lora_b = nn.Parameter(torch.empty(out_features, rank, device=device))
        self.init_as_identity()

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int, scale: float = 1.0) -> LoRALinear:
        """Wrap an existing layer, sharing its weight and bias tensors."""
        out = cls(linear.in_features, linear.out_features, rank, scale, linear.bias is not None,
                  device=linear.weight.device)
        out.weight = linear.weight
        if linear.bias is not None:
            out.bias = linear.bias
        return out

    def init_as_identity(self) -> None:
        """``A`` random (as in the LoRA paper), ``B`` zero: the layer equals its base layer until trained."""
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        nn.init.zeros_(self.lora_b)

    def merged_weight(self) -> torch.Tensor:
        """(out, in) weight of the equivalent plain linear layer."""
        return self.weight + self.scale * self.lora_b @ self.lora_a

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Low-rank path on the activations: r * (in + out) flops per token instead of in * out for a merge.
        return F.linear(x, self.weight, self.bias) + self.scale * F.linear(F.linear(x, self.lora_a), self.lora_b)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, scale={self.scale:g}"


def attach_peft(block: nn.Module, cfg: VideoEncoderConfig) -> nn.Module:
    """Add the adapter and LoRA layers ``cfg`` asks for to one block, in place.

    LoRA wraps every linear named in ``cfg.lora_targets`` inside the block, the temporal branch of a
    factorized block included; the adapter is applied to the block's output.

    Args:
        block: A :class:`~longvivit.models.layers.Block` (or subclass).
        cfg: Encoder config (``adapter_dim``, ``lora_rank``, ``lora_alpha``, ``lora_targets``).

    Returns:
        The same block.
    """
    if cfg.lora_rank:
        targets = [
            (parent, name)
            for parent in block.modules()
            for name, child in parent.named_children()
            if name in cfg.lora_targets and type(child) is nn.Linear
        ]
        for parent, name in targets:
            setattr(parent, name, LoRALinear.from_linear(getattr(parent, name), cfg.lora_rank, cfg.lora_scale))
    if cfg.adapter_dim:
        block.adapter = Adapter(cfg.width, cfg.adapter_dim, eps=cfg.layer_norm_eps)
    return block


def freeze_for_peft(encoder: VideoEncoder, kind: str, trainable_last: int = 4) -> None:
    """Freeze the image model in ``encoder`` and leave only the parameter-efficient part trainable.

    Trainable afterwards: ``encoder.video_parameters()`` (the tubelet embedding is always trained, as in the
    paper, with the temporal table and any temporal branch / attention pool, none of which an image model
    has), ``norm``, ``head_norm`` and ``proj``, and by ``kind``:

    - ``"adapter"``: every :class:`Adapter` (needs ``cfg.adapter_dim > 0``);
    - ``"lora"``: every ``lora_a`` / ``lora_b`` (needs ``cfg.lora_rank > 0``);
    - ``"last_k"``: the last ``trainable_last`` blocks (:meth:`VideoEncoder.freeze`); since the tubelet
      embedding trains, the frozen prefix still runs with autograd (unlike plain ``freeze``).

    Args:
        encoder: The encoder, modified in place (``encoder.peft`` records ``kind``).
        kind: One of ``"adapter"``, ``"lora"``, ``"last_k"``.
        trainable_last: ``K`` for ``"last_k"``.
    """
    cfg = encoder.cfg
    if kind not in PEFT_KINDS:
        raise ValueError(f"peft kind must be one of {PEFT_KINDS}, got {kind!r}")
    if kind == "adapter" and not cfg.adapter_dim:
        raise ValueError("peft='adapter' needs adapters in the model: set model.video.adapter_dim > 0")
    if kind == "lora" and not cfg.lora_rank:
        raise ValueError("peft='lora' needs LoRA in the model: set model.video.lora_rank > 0")
    if kind == "last_k":
        encoder.freeze(trainable_last=trainable_last)
    else:
        encoder.unfreeze()
        encoder.requires_grad_(False)
    for p in encoder.video_parameters():
        p.requires_grad_(True)
    for m in (encoder.norm, encoder.head_norm, encoder.proj):
        m.requires_grad_(True)
    for m in encoder.modules():
        if kind == "adapter" and isinstance(m, Adapter):
            m.requires_grad_(True)
        elif kind == "lora" and isinstance(m, LoRALinear):
            m.lora_a.requires_grad_(True)
            m.lora_b.requires_grad_(True)
    encoder.peft = kind


# --------------------------------------------------------------------------- factorized space-time
class TemporalBranch(Block):
    """The temporal half of a factorized block: a pre-norm block that returns only its residual update.

    It has the submodules of :class:`Block` under the same names, so its weights can be copied from (and
    its checkpoint keys derived from) the spatial block it sits in.
    """

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """(N, T', C) sequences over time -> (N, T', C) update (attention + feed-forward branches); ``valid``:
        optional (N, T') bool of the steps attention may read (real frames)."""
        a = self.attn(self.norm1(x), valid)
        return a + self.mlp(self.norm2(x + a))


class FactorizedBlock(Block):
    """Spatial attention within each tubelet step, then gated temporal attention across steps.

    ``h = spatial_block(h)`` on every step, then ``h = h + tanh(temporal_gate) * temporal(h)`` on every
    spatial position's sequence over time. The spatial part is this block's own ``norm1/attn/norm2/mlp``
    (the same keys as a joint block), so a joint or image checkpoint loads into it directly.

    Args: as :class:`~longvivit.models.layers.Block`.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, eps: float = 1e-6,
                 attn_impl: str = "sdpa", drop_path: float = 0.0) -> None:
        super().__init__(dim, heads, mlp_ratio, qkv_bias, eps, attn_impl, drop_path)
        self.temporal = TemporalBranch(dim, heads, mlp_ratio, qkv_bias, eps, attn_impl)
        self.temporal_gate = nn.Parameter(torch.zeros(1))  # alpha; tanh(0) = 0: starts as the spatial model
        self.init_as_identity()

    def init_as_identity(self) -> None:
        """Copy the spatial weights into the temporal branch and close the gate (``alpha = 0``)."""
        spatial = {
            k: v for k, v in self.state_dict().items() if not k.startswith(("temporal.", "temporal_gate", "adapter."))
        }
        self.temporal.load_state_dict(spatial)
        with torch.no_grad():
            self.temporal_gate.zero_()

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T', S, C) -> (B, T', S, C): S tokens per step, the same spatial positions in every step.

        ``valid``: optional (B, T') bool of the steps holding real frames; the temporal attention reads only
        those (a step is wholly real or wholly padding, so the spatial attention needs no mask).
        """
        b, t, s, c = x.shape
        y = x.reshape(b * t, s, c)  # (B*T', S, C): attention within each step
        y = self.attn(self.norm1(y))
        x = x + self.drop_path(y.reshape(b, t, s, c))
        y = self.mlp(self.norm2(x))
        x = x + self.drop_path(y)
        if t > 1:  # a single step (an image) has no temporal context: it stays on the image model's path
            z = rearrange(x, "b t s c -> (b s) t c")  # (B*S, T', C): attention over time per position
            steps = None if valid is None else valid.repeat_interleave(s, dim=0)  # (B*S, T'), rows as z's
            z = rearrange(self.temporal(z, steps), "(b s) t c -> b t s c", s=s)  # (B, T', S, C); s: B may be 0
            x = x + self.drop_path(torch.tanh(self.temporal_gate) * z)
        return x if self.adapter is None else self.adapter(x)


def mask_spatial_positions(
    x: torch.Tensor, mask_ratio: float, generator: Generators = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tube masking: keep the same random spatial positions in every step, per sample.

    Args:
        x: (B, T', S, C) tokens, position embeddings added.
        mask_ratio: Fraction of spatial positions dropped, in [0, 1).
        generator: Optional RNG for reproducible masks, or one per sample.

    Returns:
        ``(kept, ids_keep)``: (B, T', S_keep, C) tokens and the (B, S_keep) sorted kept positions.
    """
    b, t, s, c = x.shape
    keep = num_kept_tokens(s, mask_ratio)
    noise = mask_noise(b, s, generator, x.device)  # (B, S)
    ids_keep = noise.argsort(dim=1)[:, :keep].sort(dim=1).values  # (B, S_keep)
    index = ids_keep[:, None, :, None].expand(b, t, keep, c)  # (B, T', S_keep, C)
    return x.gather(2, index), ids_keep


class FactorizedVideoEncoder(VideoEncoder):
    """Factorized space-time ViViT (``backbone="factorized"``); see the module docstring.

    Tokens travel through the blocks as a (B, T', S, C) grid; ``forward_features`` returns them flattened
    time-major like the joint model, so pooling, heads and the captioning grid are unchanged.
    """

    def make_block(self, index: int, drop_path: float) -> nn.Module:
        cfg = self.cfg
        return FactorizedBlock(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.qkv_bias, cfg.layer_norm_eps,
                               cfg.attn_impl, drop_path)

    def prepare_tokens(
        self,
        pixels: torch.Tensor,
        is_video: bool,
        ratio: float,
        generator: Generators,
        step_valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(B, T', S_keep, width) tokens (tube-masked videos, or images as one step), the (B, S_keep) kept
        spatial positions (``None`` unmasked) and the (B, T') real steps (``step_valid``, the blocks' mask:
        tube masking keeps whole trajectories, so padding steps are hidden from the temporal attention instead)."""
        x = self.embed_video(pixels) if is_video else self.embed_image(pixels)  # (B, T'*S, width)
        s = self.cfg.num_spatial_tokens
        b, n, c = x.shape
        x = x.reshape(b, n // s, s, c)  # (B, T', S, width)
        ids_keep = None
        if ratio > 0.0:
            x, ids_keep = mask_spatial_positions(x, ratio, generator)
        return x, ids_keep, step_valid

    def flatten_tokens(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1, 2)  # (B, T', S_keep, C) -> (B, T'*S_keep, C)

    def flatten_valid(self, valid: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
        if valid is None:
            return None
        return valid.unsqueeze(-1).expand(-1, -1, x.shape[2]).flatten(1)  # (B, T') -> (B, T'*S_keep)

    def forward_grid(
        self,
        video: torch.Tensor,
        mask_ratio: float = 0.0,
        generator: Generators = None,
        num_valid_frames: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if mask_ratio == 0.0:
            return super().forward_grid(video, mask_ratio, generator, num_valid_frames)
        # (B, T'*S_keep, width), (B, S_keep), (B, T'*S_keep) | None
        tokens, ids_keep, valid = self._run(video, True, mask_ratio, generator, num_valid_frames)
        b, steps, s = video.shape[0], video.shape[1] // self.cfg.tubelet_size[0], self.cfg.num_spatial_tokens
        per_step = tokens.reshape(b * steps, -1, tokens.shape[-1])  # (B*T', S_keep, width)
        # the same positions are kept in every step (tube masking)
        flat, visible = scatter_kept(per_step, ids_keep.repeat_interleave(steps, dim=0), s)  # (B*T', S, ...)
        visible = visible.view(b, steps, s)
        if valid is not None:
            visible = visible & valid.view(b, steps, -1)[:, :, :1]  # padding steps: nothing real
        return flat.view(b, steps, s, -1), visible

    def temporal_gates(self) -> torch.Tensor:
        """(depth,) the ``tanh(alpha)`` of every block: how much temporal attention each block uses."""
        return torch.tanh(torch.cat([blk.temporal_gate.detach() for blk in self.blocks]))

    def video_parameters(self) -> Iterator[nn.Parameter]:
        yield from super().video_parameters()
        for blk in self.blocks:
            yield from blk.temporal.parameters()
            yield blk.temporal_gate


# --------------------------------------------------------------------------- frame-level ImageViT
class AttentionPool(nn.Module):
    """Attention pooling of per-frame embeddings with a learned query.

    Values are the frame embeddings themselves (split into heads), so the output is a convex combination
    of frames; the query starts at zero, which gives uniform weights: at init this is the temporal mean,
    and a single frame is returned unchanged. Keys see a temporal position table, so the weights may
    depend on where a frame is (zero-init as well).

    Args:
        dim: Embedding width.
        heads: Independent weightings, each over ``dim / heads`` channels.
        max_frames: Rows of the temporal position table (``cfg.num_frames``).
        eps: LayerNorm epsilon.
    """

    def __init__(self, dim: int, heads: int, max_frames: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.key = nn.Linear(dim, dim)
        self.query = nn.Parameter(torch.zeros(heads, dim // heads))
        self.pos = nn.Parameter(torch.zeros(1, max_frames, dim))
        nn.init.trunc_normal_(self.key.weight, std=0.02)
        nn.init.zeros_(self.key.bias)

    def init_as_identity(self) -> None:
        """Zero query and positions: uniform weights, i.e. mean pooling."""
        nn.init.zeros_(self.query)
        nn.init.zeros_(self.pos)

    def forward(self, frames: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, C) frame embeddings -> (B, C); ``valid``: optional (B, T) bool, the frames to pool (real ones)."""
        b, t, c = frames.shape
        if t > self.pos.shape[1]:
            raise ValueError(f"{t} frames but the pool's position table has {self.pos.shape[1]}; load the "
                             f"model with num_frames={t}")
        k = self.key(self.norm(frames + self.pos[:, :t]))  # (B, T, C)
        k = k.reshape(b, t, self.heads, -1)  # (B, T, h, d)
        logits = torch.einsum("bthd,hd->bht", k, self.query) / math.sqrt(k.shape[-1])  # (B, h, T)
        if valid is not None:
            logits = logits.masked_fill(~valid[:, None, :], float("-inf"))  # padding frames get no weight
        weights = logits.softmax(dim=-1)
        values = frames.reshape(b, t, self.heads, -1)  # (B, T, h, d)
        return torch.einsum("bht,bthd->bhd", weights, values).reshape(b, c)  # (B, C)


class FrameVideoEncoder(VideoEncoder):
    """Frame-level ImageViT (``backbone="frame"``); see the module docstring.

    The tubelet embedding and the temporal table exist (so checkpoints load both ways) but are unused and
    kept frozen. ``forward_features`` returns every frame's tokens, frame-major:
    (B, T * (N_keep (+1)), width).
    """

    def __init__(self, cfg: VideoEncoderConfig) -> None:
        super().__init__(cfg)
        self.temporal_pool = (
            AttentionPool(cfg.width, cfg.heads, cfg.num_frames, cfg.layer_norm_eps)
            if cfg.frame_pool == "attention" else None
        )
        self._freeze_unused()

    def _freeze_unused(self) -> None:
        # Never used by this backbone: a gradient-free parameter would also break DDP's unused-parameter check.
        self.patch_embed_3d.requires_grad_(False)
        self.pos_embed_temporal.requires_grad_(False)

    def unfreeze(self) -> None:
        super().unfreeze()
        self._freeze_unused()

    def video_parameters(self) -> Iterator[nn.Parameter]:
        # The 2D patch embedding is this model's video tokenizer.
        yield from self.patch_embed_2d.parameters()
        if self.temporal_pool is not None:
            yield from self.temporal_pool.parameters()

    def _frames(self, video: torch.Tensor) -> torch.Tensor:
        if video.ndim != 5:
            raise ValueError(f"video must be (B, T, C, H, W), got shape {tuple(video.shape)}")
        # checked as a video (errors say so, with the layout hint) before its frames go through the image path
        return self._check_frame(video, "video frames").flatten(0, 1)  # (B*T, C, H, W)

    @staticmethod
    def _frame_generators(generator: Generators, video: torch.Tensor) -> Generators:
        """One generator per video -> one per frame: a video's generator draws its frames' masks in turn."""
        if isinstance(generator, Sequence):
            b, t = video.shape[:2]
            if len(generator) != b:
                raise ValueError(f"{len(generator)} generators for {b} videos")
            return [g for g in generator for _ in range(t)]
        return generator

    def forward_features(
        self,
        video: torch.Tensor,
        mask_ratio: float | None = None,
        generator: Generators = None,
        num_valid_frames: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Every frame encoded as an image (masked per frame); (B, T * (N_keep (+1)), width).

        Frames do not see each other here, so ``num_valid_frames`` changes nothing in the tokens (padding frames
        are left out of the temporal pool of :meth:`forward`); it is accepted for the common signature.
        """
        b, t = video.shape[:2]
        frames, gens = self._frames(video), self._frame_generators(generator, video)
        tokens = self._run(frames, False, mask_ratio, gens)[0]  # (B*T, N_keep(+1), width)
        return tokens.reshape(b, t * tokens.shape[1], tokens.shape[-1])  # (B, T*(N_keep(+1)), width)

    def forward_grid(
        self,
        video: torch.Tensor,
        mask_ratio: float = 0.0,
        generator: Generators = None,
        num_valid_frames: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, H'*W', width) per-frame patch features, each frame masked on its own, and their visibility
        (``False`` where masked and on padding frames)."""
        b, t = video.shape[:2]
        s = self.cfg.num_spatial_tokens
        if mask_ratio == 0.0:
            flat = rearrange(self.forward_tokens_grid(video), "b t h w c -> b t (h w) c")  # (B, T, S, width)
            visible = torch.ones(flat.shape[:3], dtype=torch.bool, device=flat.device)
        else:
            frames, gens = self._frames(video), self._frame_generators(generator, video)
            tokens, ids_keep, _ = self._run(frames, False, mask_ratio, gens)  # (B*T, [1 +] N_keep, width)
            if self.cls_token is not None:
                tokens = tokens[:, 1:]
            flat, visible = scatter_kept(tokens, ids_keep, s)  # (B*T, S, width), (B*T, S)
            flat, visible = flat.view(b, t, s, -1), visible.view(b, t, s)
        frame_valid = self.step_validity(video, num_valid_frames)
        if frame_valid is not None:
            visible = visible & frame_valid.unsqueeze(-1)  # (B, T, S)
        return flat, visible

    def pool_frames(self, frame_embeddings: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, width) per-frame embeddings -> (B, width) by ``cfg.frame_pool``, over the ``valid`` (B, T)
        frames when given."""
        if self.temporal_pool is not None:
            return self.temporal_pool(frame_embeddings, valid)
        return masked_mean(frame_embeddings, valid, dim=1)

    def forward(
        self,
        video: torch.Tensor,
        mask_ratio: float | None = None,
        generator: Generators = None,
        num_valid_frames: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T, C, H, W) -> (B, embed_dim): per-frame image embeddings pooled over time (over the real
        frames with ``num_valid_frames``), then the head."""
        b, t = video.shape[:2]
        tokens = self.forward_features(video, mask_ratio, generator)  # (B, T*n, width)
        width = tokens.shape[-1]
        per_frame = self.pool(tokens.reshape(b * t, tokens.shape[1] // t, width))  # (B*T, width)
        frame_valid = self.step_validity(video, num_valid_frames)
        return self.head(self.pool_frames(per_frame.reshape(b, t, width), frame_valid))  # (B, embed_dim)

    def forward_tokens_grid(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, H', W', width): unmasked patch features of every frame (class tokens dropped)."""
        b = video.shape[0]
        tokens = self._run(self._frames(video), False, 0.0, None)[0]  # (B*T, (1+)H'*W', width)
        if self.cls_token is not None:
            tokens = tokens[:, 1:]
        gh, gw = self.cfg.grid_size
        return rearrange(tokens, "(b t) (h w) c -> b t h w c", b=b, h=gh, w=gw)


def backbone_class(backbone: str) -> type[VideoEncoder]:
    """The encoder class of a ``cfg.backbone`` value."""
    classes: dict[str, type[VideoEncoder]] = {
        "joint": VideoEncoder, "factorized": FactorizedVideoEncoder, "frame": FrameVideoEncoder,
    }
    if backbone not in classes:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {sorted(classes)}")
    return classes[backbone]
