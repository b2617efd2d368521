"""Design-space variants: factorized and frame-level backbones, adapters, LoRA, PEFT freezing, coarse tubelets.

Each variant must start as the model it is initialised from (factorized = per-step image model, adapters and
LoRA = the base model, attention pool = mean), train only what it should, count its parameters as designed,
and load a joint checkpoint through the one adaptation module.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from longvivit import VideoEncoder, VideoEncoderConfig
from longvivit.models.init import load_adapted, load_pretrained, resize_patch_kernel
from longvivit.models.layers import Block
from longvivit.models.masking import num_kept_tokens
from longvivit.models.variants import (
    Adapter,
    AttentionPool,
    FactorizedVideoEncoder,
    FrameVideoEncoder,
    LoRALinear,
    mask_spatial_positions,
)


def cfg_for(**overrides) -> VideoEncoderConfig:
    """Tiny encoder at test size: 32 px (2x2 patches), 8 frames (4 tubelet steps), 2 blocks."""
    base = {"image_size": 32, "num_frames": 8, "depth": 2}
    return VideoEncoderConfig.preset("tiny", **{**base, **overrides})


def clip(cfg: VideoEncoderConfig, b: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, cfg.num_frames, cfg.in_chans, cfg.image_size, cfg.image_size, generator=g)


def perturb(model: torch.nn.Module, predicate) -> None:
    """Give every parameter whose name satisfies ``predicate`` a random value (to move off the identity)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if predicate(name):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


# --------------------------------------------------------------------------- construction and shapes
@pytest.mark.parametrize("backbone,cls", [("joint", VideoEncoder), ("factorized", FactorizedVideoEncoder),
                                          ("frame", FrameVideoEncoder)])
def test_config_selects_the_backbone_class(backbone, cls):
    model = VideoEncoder(cfg_for(backbone=backbone))
    assert type(model) is cls and isinstance(model, VideoEncoder)


@pytest.mark.parametrize("backbone", ["joint", "factorized", "frame"])
@pytest.mark.parametrize("ratio", [0.0, 0.75])
def test_output_and_token_shapes(backbone, ratio):
    cfg = cfg_for(backbone=backbone, num_frames=8, image_size=64)  # 4 steps x 16 tokens
    model = VideoEncoder(cfg).eval()
    v = clip(cfg)
    steps, s = cfg.num_temporal_steps, cfg.num_spatial_tokens
    expected = {
        "joint": num_kept_tokens(steps * s, ratio),
        "factorized": steps * num_kept_tokens(s, ratio),  # tube masking: same positions in every step
        "frame": cfg.num_frames * num_kept_tokens(s, ratio),  # every frame masked on its own
    }[backbone]
    assert model.forward_features(v, mask_ratio=ratio).shape == (2, expected, cfg.width)
    assert model(v, mask_ratio=ratio).shape == (2, cfg.embed_dim)
    assert model.encode_image(v[:, 0], mask_ratio=ratio).shape == (2, cfg.embed_dim)
    grid_t = cfg.num_frames if backbone == "frame" else steps
    assert model.forward_tokens_grid(v).shape == (2, grid_t, *cfg.grid_size, cfg.width)


def test_frame_backbone_with_class_token_pools_each_frame_by_its_class_token():
    cfg = cfg_for(backbone="frame", cls_token=True, pool="cls")
    model = VideoEncoder(cfg).eval()
    v = clip(cfg)
    assert model.forward_features(v).shape == (2, cfg.num_frames * (1 + cfg.num_spatial_tokens), cfg.width)
    # The mean pool of per-frame class-token embeddings, computed by hand.
    per_frame = model.pool(model.forward_features_image(v.flatten(0, 1)))  # (B*T, width)
    expected = model.head(per_frame.reshape(2, cfg.num_frames, -1).mean(1))
    torch.testing.assert_close(model(v), expected)


@pytest.mark.parametrize("tubelet", [(4, 16, 16), (2, 32, 32), (4, 32, 32)])
@pytest.mark.parametrize("backbone", ["joint", "factorized"])
def test_coarse_tubelets_build_and_run(tubelet, backbone):
    cfg = cfg_for(image_size=64, tubelet_size=tubelet, backbone=backbone)
    model = VideoEncoder(cfg)
    v = clip(cfg)
    n = (8 // tubelet[0]) * (64 // tubelet[1]) ** 2
    assert model.forward_features(v).shape == (2, n, cfg.width)
    assert model(v, mask_ratio=0.5).shape == (2, cfg.embed_dim)


def test_config_rejects_bad_variant_settings():
    with pytest.raises(ValueError, match="cls_token"):
        cfg_for(backbone="factorized", cls_token=True)
    with pytest.raises(ValueError, match="lora_targets"):
        cfg_for(lora_rank=4, lora_targets=("qkv", "key"))
    with pytest.raises(ValueError, match="frame_pool"):
        cfg_for(frame_pool="max")
    with pytest.raises(ValueError, match="adapter_dim"):
        cfg_for(adapter_dim=-1)
    cfg = cfg_for(lora_rank=8, lora_targets=["qkv"])  # YAML lists become tuples and survive a round trip
    assert VideoEncoderConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.lora_scale == 1.0 and cfg_for(lora_rank=8, lora_alpha=16).lora_scale == 2.0


# --------------------------------------------------------------------------- factorized
def test_factorized_at_alpha_zero_is_the_per_step_spatial_model():
    cfg = cfg_for(backbone="factorized")
    fact = VideoEncoder(cfg).eval()
    v = clip(cfg)
    # The per-step image model by hand: the same embedding, then plain blocks on each step on its own.
    blocks = [Block(cfg.width, cfg.heads, cfg.mlp_ratio, eps=cfg.layer_norm_eps) for _ in range(cfg.depth)]
    for blk, fblk in zip(blocks, fact.blocks, strict=True):
        blk.load_state_dict({k: t for k, t in fblk.state_dict().items() if not k.startswith("temporal")})
    with torch.no_grad():
        x = fact.embed_video(v)  # (B, T'*S, C)
        x = x.reshape(2 * cfg.num_temporal_steps, cfg.num_spatial_tokens, cfg.width)  # (B*T', S, C)
        for blk in blocks:
            x = blk(x)
        expected = fact.norm(x.reshape(2, -1, cfg.width))
        torch.testing.assert_close(fact.forward_features(v), expected, rtol=1e-5, atol=1e-5)
        # ...so no step sees another: changing the last frames leaves the first step's tokens unchanged.
        v2 = v.clone()
        v2[:, -2:] += 1.0
        s = cfg.num_spatial_tokens
        torch.testing.assert_close(fact.forward_features(v2)[:, :s], fact.forward_features(v)[:, :s])
        # Opening a gate mixes time: now the first step depends on the last frames.
        fact.blocks[0].temporal_gate.fill_(0.5)
        assert not torch.allclose(fact.forward_features(v2)[:, :s], fact.forward_features(v)[:, :s], atol=1e-4)


def test_factorized_temporal_branch_starts_as_a_copy_of_the_spatial_block():
    model = VideoEncoder(cfg_for(backbone="factorized"))
    for blk in model.blocks:
        assert blk.temporal_gate.item() == 0.0
        torch.testing.assert_close(blk.temporal.attn.qkv.weight, blk.attn.qkv.weight)
        torch.testing.assert_close(blk.temporal.mlp.fc2.weight, blk.mlp.fc2.weight)
        assert blk.temporal.attn.qkv.weight.data_ptr() != blk.attn.qkv.weight.data_ptr()  # a copy, not tied
    assert torch.equal(model.temporal_gates(), torch.zeros(model.cfg.depth))


def test_factorized_images_take_exactly_the_image_model_path():
    cfg = cfg_for(backbone="factorized")
    fact = VideoEncoder(cfg).eval()
    perturb(fact, lambda n: "temporal" in n)  # an open gate and a changed branch must not touch images
    joint = VideoEncoder(cfg_for()).eval()
    load_adapted(joint, {k: v for k, v in fact.state_dict().items() if "temporal" not in k})
    img = clip(cfg)[:, 0]
    torch.testing.assert_close(fact.encode_image(img), joint.encode_image(img), rtol=1e-5, atol=1e-5)


def test_tube_masking_keeps_the_same_positions_in_every_step():
    x = torch.arange(2 * 3 * 8, dtype=torch.float32).reshape(2, 3, 8, 1).expand(2, 3, 8, 4)  # (B, T', S, C)
    kept, ids = mask_spatial_positions(x, 0.75, torch.Generator().manual_seed(0))
    assert kept.shape == (2, 3, 2, 4) and ids.shape == (2, 2)
    for b in range(2):
        for t in range(3):
            assert torch.equal(kept[b, t, :, 0], x[b, t, ids[b], 0])
    assert (ids.diff(dim=1) > 0).all()  # sorted, so tokens keep their raster order


def test_factorized_gradients_flow_through_the_gate_first():
    cfg = cfg_for(backbone="factorized")
    model = VideoEncoder(cfg)
    v = clip(cfg)
    model(v, mask_ratio=0.5).square().sum().backward()
    for name, p in model.named_parameters():
        if name.startswith("patch_embed_2d"):  # the image path
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if ".temporal." in name:  # behind tanh(0) = 0: no signal until the gate opens
            assert p.grad.abs().max() == 0, name
    assert all(blk.temporal_gate.grad.abs().item() > 0 for blk in model.blocks)
    model.zero_grad()
    with torch.no_grad():
        for blk in model.blocks:
            blk.temporal_gate.fill_(0.3)
    model(v).square().sum().backward()
    assert model.blocks[0].temporal.attn.qkv.weight.grad.abs().max() > 0


def test_factorized_grad_checkpointing_gives_the_same_gradients():
    cfg = cfg_for(backbone="factorized")
    a = VideoEncoder(cfg)
    with torch.no_grad():
        for blk in a.blocks:
            blk.temporal_gate.fill_(0.4)
    b = VideoEncoder(cfg)
    b.load_state_dict(a.state_dict())
    b.set_grad_checkpointing(True)
    v = clip(cfg)
    for m in (a, b):
        m(v).square().sum().backward()
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-4, atol=1e-6, msg=name)


# --------------------------------------------------------------------------- frame-level
def test_attention_pool_starts_as_the_mean_and_keeps_a_single_frame():
    pool = AttentionPool(dim=16, heads=4, max_frames=6)
    frames = torch.randn(3, 6, 16)
    torch.testing.assert_close(pool(frames), frames.mean(1))
    torch.testing.assert_close(pool(frames[:, :1]), frames[:, 0])
    perturb(pool, lambda n: n in ("query", "pos"))
    assert not torch.allclose(pool(frames), frames.mean(1), atol=1e-4)
    torch.testing.assert_close(pool(frames[:, :1]), frames[:, 0])  # convex weights over one frame
    with pytest.raises(ValueError, match="num_frames=7"):
        pool(torch.randn(1, 7, 16))


@pytest.mark.parametrize("frame_pool", ["mean", "attention"])
def test_frame_model_is_per_frame_images_pooled_over_time(frame_pool):
    cfg = cfg_for(backbone="frame", frame_pool=frame_pool)
    model = VideoEncoder(cfg).eval()
    v = clip(cfg)
    with torch.no_grad():
        per_frame = model.pool(model.forward_features_image(v.flatten(0, 1)))  # (B*T, width)
        torch.testing.assert_close(model(v), model.head(per_frame.reshape(2, cfg.num_frames, -1).mean(1)))
        # Mean pooling cannot see order: reversed frames give the same embedding.
        if frame_pool == "mean":
            torch.testing.assert_close(model(v.flip(1)), model(v))


def test_frame_model_trains_everything_it_uses_and_nothing_it_does_not():
    cfg = cfg_for(backbone="frame", frame_pool="attention")
    model = VideoEncoder(cfg)
    perturb(model, lambda n: n == "temporal_pool.query")  # a zero query blocks the key projection's gradient
    model(clip(cfg), mask_ratio=0.5).square().sum().backward()
    unused = {"patch_embed_3d.weight", "patch_embed_3d.bias", "pos_embed_temporal"}
    for name, p in model.named_parameters():
        if name in unused:
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().max() > 0, name
    model.unfreeze()  # still frozen: DDP would fail on parameters that never get a gradient
    assert not model.patch_embed_3d.weight.requires_grad


# --------------------------------------------------------------------------- adapters and LoRA
@pytest.mark.parametrize("extra", [{"adapter_dim": 16}, {"lora_rank": 4}, {"lora_rank": 4, "adapter_dim": 8},
                                   {"lora_rank": 4, "backbone": "factorized"}])
def test_adapters_and_lora_at_init_equal_the_base_model(extra):
    base_cfg = cfg_for(backbone=extra.get("backbone", "joint"))
    base = VideoEncoder(base_cfg).eval()
    peft = VideoEncoder(cfg_for(**extra)).eval()
    msgs = load_pretrained(peft, base.state_dict())  # strict: the new keys are expected, not missing
    assert any("identity initialisation" in m for m in msgs)
    v = clip(base_cfg)
    with torch.no_grad():
        torch.testing.assert_close(peft(v), base(v), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(peft.encode_image(v[:, 0]), base.encode_image(v[:, 0]), rtol=1e-5, atol=1e-5)
        perturb(peft, lambda n: "lora_b" in n or "adapter.up" in n)
        assert not torch.allclose(peft(v), base(v), atol=1e-4)


def test_lora_linear_adds_a_scaled_low_rank_update():
    base = torch.nn.Linear(6, 5)
    lora = LoRALinear.from_linear(base, rank=2, scale=3.0)
    assert lora.weight is base.weight
    x = torch.randn(4, 6)
    torch.testing.assert_close(lora(x), base(x))
    perturb(lora, lambda n: n == "lora_b")
    torch.testing.assert_close(lora(x), F.linear(x, base.weight + 3.0 * lora.lora_b @ lora.lora_a, base.bias))
    torch.testing.assert_close(lora(x), F.linear(x, lora.merged_weight(), base.bias))


def test_lora_targets_choose_the_wrapped_layers():
    model = VideoEncoder(cfg_for(lora_rank=2, lora_targets=("qkv", "fc2")))
    wrapped = {n.rsplit(".", 1)[0] for n, _ in model.named_parameters() if n.endswith("lora_a")}
    assert wrapped == {f"blocks.{i}.{m}" for i in range(2) for m in ("attn.qkv", "mlp.fc2")}


def test_parameter_counts_are_as_designed():
    cfg = cfg_for()
    w, d, hidden = cfg.width, cfg.depth, int(cfg.width * cfg.mlp_ratio)
    base = VideoEncoder(cfg).num_params()
    block = sum(p.numel() for p in VideoEncoder(cfg).blocks[0].parameters())

    a = 16  # adapter: LayerNorm + down + up, per block
    assert VideoEncoder(cfg_for(adapter_dim=a)).num_params() - base == d * (2 * w + (w * a + a) + (a * w + w))
    r = 4  # LoRA: r * (in + out) per wrapped linear
    shapes = [(w, 3 * w), (w, w), (w, hidden), (hidden, w)]  # qkv, proj, fc1, fc2
    assert VideoEncoder(cfg_for(lora_rank=r)).num_params() - base == d * sum(r * (i + o) for i, o in shapes)
    # factorized: a second block per block (the temporal branch) and one gate
    assert VideoEncoder(cfg_for(backbone="factorized")).num_params() - base == d * (block + 1)
    # frame-level: no new parameters with mean pooling; attention pooling adds LN, key, query and positions
    assert VideoEncoder(cfg_for(backbone="frame")).num_params() == base
    pool = 2 * w + (w * w + w) + w + cfg.num_frames * w
    assert VideoEncoder(cfg_for(backbone="frame", frame_pool="attention")).num_params() - base == pool
    # ViT-B adapters at the paper's bottleneck: 12 * (2*768 + 768*384 + 384 + 384*768 + 768) = 7.1M
    with torch.device("meta"):
        b16 = VideoEncoderConfig.preset("vit-b16", image_size=224, num_frames=16)
        delta = VideoEncoder(b16.replace(adapter_dim=384)).num_params() - VideoEncoder(b16).num_params()
    assert delta == 12 * (2 * 768 + 768 * 384 + 384 + 384 * 768 + 768)


# --------------------------------------------------------------------------- PEFT freezing
def _trainable(model: VideoEncoder) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


HEAD = {"norm.weight", "norm.bias", "head_norm.weight", "head_norm.bias", "proj.weight"}
TUBELET = {"patch_embed_3d.weight", "patch_embed_3d.bias", "pos_embed_temporal"}


@pytest.mark.parametrize("kind", ["adapter", "lora", "last_k"])
def test_peft_trains_only_its_modules_the_tubelet_embedding_and_the_head(kind):
    cfg = cfg_for(depth=3, adapter_dim=8 if kind == "adapter" else 0, lora_rank=2 if kind == "lora" else 0)
    model = VideoEncoder(cfg)
    model.set_peft(kind, trainable_last=1)
    names = [n for n, _ in model.named_parameters()]
    own = {
        "adapter": {n for n in names if ".adapter." in n},
        "lora": {n for n in names if "lora_" in n},
        "last_k": {n for n in names if n.startswith("blocks.2.")},
    }[kind]
    assert own and _trainable(model) == own | HEAD | TUBELET
    assert model.peft == kind
    # Gradients reach exactly the trainable set; AdamW then moves only those.
    if kind in ("adapter", "lora"):
        perturb(model, lambda n: "adapter.up" in n or "lora_b" in n)  # zero-init blocks the other factor's grad
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(clip(cfg), mask_ratio=0.5).square().sum().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().max() > 0}
    assert with_grad == _trainable(model)
    opt.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == _trainable(model)
    model.unfreeze()
    assert model.peft is None and _trainable(model) == set(names)


def test_peft_on_variants_keeps_their_video_modules_trainable():
    fact = VideoEncoder(cfg_for(backbone="factorized", lora_rank=2))
    fact.set_peft("lora")
    temporal = {n for n, _ in fact.named_parameters() if "temporal" in n}
    assert temporal and temporal <= _trainable(fact)  # new to video, like the tubelet embedding
    assert not fact.blocks[0].attn.qkv.weight.requires_grad
    frame = VideoEncoder(cfg_for(backbone="frame", frame_pool="attention", adapter_dim=4))
    frame.set_peft("adapter")
    assert frame.patch_embed_2d.weight.requires_grad and frame.temporal_pool.query.requires_grad
    assert not frame.patch_embed_3d.weight.requires_grad


def test_peft_needs_the_modules_and_a_known_kind():
    model = VideoEncoder(cfg_for())
    with pytest.raises(ValueError, match="adapter_dim"):
        model.set_peft("adapter")
    with pytest.raises(ValueError, match="lora_rank"):
        model.set_peft("lora")
    with pytest.raises(ValueError, match="one of"):
        model.set_peft("bitfit")


def test_plain_freeze_still_runs_the_frozen_prefix_without_autograd():
    # Stage-3 freezing (tubelet frozen) must keep its memory saving; last_k PEFT trades it for a trained tubelet.
    cfg = cfg_for(depth=3)
    seen: list[bool] = []
    for setup in (lambda m: m.freeze(trainable_last=1), lambda m: m.set_peft("last_k", trainable_last=1)):
        model = VideoEncoder(cfg)
        setup(model)
        model.blocks[0].register_forward_hook(lambda _m, _i, out: seen.append(out.requires_grad))
        model(clip(cfg)).sum().backward()
    assert seen == [False, True]


# --------------------------------------------------------------------------- loading and persistence
def test_joint_checkpoint_loads_into_factorized_with_temporal_from_spatial(tmp_path):
    joint = VideoEncoder(cfg_for())
    perturb(joint, lambda n: n.startswith("blocks.1."))
    joint.save_pretrained(tmp_path / "joint")
    fact = VideoEncoder(cfg_for(backbone="factorized"))
    msgs = load_pretrained(fact, tmp_path / "joint")
    assert any("temporal branches initialised from the spatial" in m for m in msgs)
    torch.testing.assert_close(fact.blocks[1].temporal.attn.qkv.weight, joint.blocks[1].attn.qkv.weight)
    torch.testing.assert_close(fact.blocks[1].attn.qkv.weight, joint.blocks[1].attn.qkv.weight)
    assert fact.temporal_gates().abs().max() == 0


def test_joint_checkpoint_loads_into_frame_model_and_back(tmp_path):
    joint = VideoEncoder(cfg_for())
    frame = VideoEncoder(cfg_for(backbone="frame", frame_pool="attention"))
    msgs = load_pretrained(frame, joint.state_dict())
    assert any("temporal_pool" in m for m in msgs)
    img = clip(joint.cfg)[:, 0]
    torch.testing.assert_close(frame.encode_image(img), joint.encode_image(img))
    with pytest.raises(ValueError, match="unexpected keys"):  # the pool has no place in a joint model
        load_pretrained(VideoEncoder(cfg_for()), frame.state_dict())


def test_attention_pool_table_follows_the_frame_count(tmp_path):
    model = VideoEncoder(cfg_for(backbone="frame", frame_pool="attention"))
    model.save_pretrained(tmp_path)
    longer = VideoEncoder.from_pretrained(tmp_path, num_frames=16)
    assert longer.temporal_pool.pos.shape == (1, 16, model.cfg.width)


@pytest.mark.parametrize("extra", [{"backbone": "factorized", "adapter_dim": 8},
                                   {"backbone": "frame", "frame_pool": "attention"},
                                   {"lora_rank": 4, "lora_alpha": 8.0}])
def test_variants_save_and_load_exactly(tmp_path, extra):
    model = VideoEncoder(cfg_for(**extra)).eval()
    perturb(model, lambda n: any(k in n for k in ("temporal", "adapter.up", "lora_b", "query")))
    model.save_pretrained(tmp_path)
    loaded = VideoEncoder.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model) and loaded.cfg == model.cfg
    v = clip(model.cfg)
    with torch.no_grad():
        assert torch.equal(loaded(v), model(v))


def test_resized_patch_kernel_embeds_an_upsampled_image_like_the_original():
    fine = VideoEncoder(cfg_for(image_size=32))  # patch 16: 2x2 grid
    coarse = VideoEncoder(cfg_for(image_size=64, tubelet_size=(4, 32, 32)))  # patch 32 on 2x the pixels: 2x2
    msgs = load_pretrained(coarse, fine.state_dict())
    assert any("resized from patch (16, 16)" in m for m in msgs)
    img = torch.randn(2, 3, 32, 32)
    up = img.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # nearest 2x
    torch.testing.assert_close(coarse.embed_image(up), fine.embed_image(img), rtol=1e-4, atol=1e-5)
    # The tubelet kernel is resized and re-inflated from time 2 to 4: a static clip gives the same tokens.
    fine_tokens = fine.embed_video(img[:, None].expand(2, 8, 3, 32, 32)).reshape(2, 4, 4, -1)  # (B, T', S, C)
    coarse_tokens = coarse.embed_video(up[:, None].expand(2, 8, 3, 64, 64)).reshape(2, 2, 4, -1)
    torch.testing.assert_close(coarse_tokens[:, 1], fine_tokens[:, 1], rtol=1e-4, atol=1e-5)
    # Shrinking sums each block, so the kernel's total response to a constant patch is kept.
    w = torch.randn(3, 2, 4, 4)
    assert math.isclose(resize_patch_kernel(w, (2, 2)).sum().item(), w.sum().item(), rel_tol=1e-4, abs_tol=1e-4)


def test_adapter_is_a_residual_bottleneck():
    adapter = Adapter(8, 3)
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(adapter(x), x)
    perturb(adapter, lambda n: n.startswith("up."))
    torch.testing.assert_close(adapter(x), x + adapter.up(F.relu(adapter.down(adapter.norm(x)))))


def test_lora_without_peft_says_the_whole_encoder_trains(caplog):
    # --model.video.lora_rank 4 without --model.peft lora trained the whole model plus LoRA, with no note.
    import logging

    from longvivit.config import TextEncoderConfig
    from longvivit.training.module import ContrastiveModule

    text = TextEncoderConfig(max_length=16)
    with caplog.at_level(logging.WARNING, "longvivit"):
        ContrastiveModule(video=cfg_for(lora_rank=2), text=text, peft="lora")
        assert not caplog.records
        ContrastiveModule(video=cfg_for(lora_rank=2), text=text)
    assert [r.getMessage() for r in caplog.records] == [
        "the video encoder has LoRA rank 2 but model.peft is not set: the whole encoder trains with them "
        "(model.peft lora trains only those and the temporal parts)"]


def test_coarser_tubelets_resample_the_temporal_table_over_the_same_frames(tmp_path):
    # (2,16,16) -> (4,16,16) on the same 16 frames truncated the table: the 4 new steps, covering frames 0-15,
    # got the rows learned for frames 0-7.
    enc = VideoEncoder(cfg_for(num_frames=16))
    with torch.no_grad():
        enc.pos_embed_temporal.copy_(torch.arange(8.0).view(1, 8, 1).expand_as(enc.pos_embed_temporal))
    enc.save_pretrained(tmp_path)
    coarse = VideoEncoder.from_pretrained(tmp_path, tubelet_size=(4, 16, 16))
    assert coarse.pos_embed_temporal[0, :, 0].tolist() == [0.5, 2.5, 4.5, 6.5]  # the mean of each step's frames
    fine = VideoEncoder.from_pretrained(tmp_path, tubelet_size=(1, 16, 16))
    assert fine.pos_embed_temporal[0, :6, 0].tolist() == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]


@pytest.mark.parametrize("backbone", ["joint", "factorized", "frame"])
def test_every_backbone_explains_bad_video_input_alike(backbone):
    # The frame backbone said "images have 4 channels" of a (B, C, T, H, W) video (no layout hint), "4 generators
    # for 8 samples" of one generator for two videos; factorized and frame failed in a reshape on an empty batch.
    model = VideoEncoder(cfg_for(backbone=backbone)).eval()
    with pytest.raises(ValueError, match=r"video frames have 8 channels.*time before channels"):
        model(torch.randn(1, 3, 8, 32, 32))
    with pytest.raises(ValueError, match="video frames are 48x32"):
        model(torch.randn(1, 8, 3, 48, 32))
    with pytest.raises(ValueError, match="1 generators for 2"):
        model(clip(model.cfg), mask_ratio=0.5, generator=[torch.Generator()])
    with torch.no_grad():
        for ratio in (0.0, 0.5):
            assert model(torch.randn(0, 8, 3, 32, 32), mask_ratio=ratio).shape == (0, model.cfg.embed_dim)
