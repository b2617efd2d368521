"""VideoEncoder: sizes, masked token counts, gradients, freezing, checkpointing, persistence, errors."""

from __future__ import annotations

import math

import pytest
import torch

from longvivit import VideoEncoder, VideoEncoderConfig
from longvivit.models.layers import Attention, DropPath
from longvivit.models.masking import num_kept_tokens, random_masking

PRESETS = ["tiny", "vit-s16", "vit-b16", "vit-l16"]


def small(name: str = "tiny", **overrides) -> VideoEncoderConfig:
    """A preset at test size: 32 px, 4 frames, and 2 blocks for the wide presets."""
    base = {"image_size": 32, "num_frames": 4}
    if name != "tiny":
        base["depth"] = 2
    return VideoEncoderConfig.preset(name, **{**base, **overrides})


def video(cfg: VideoEncoderConfig, b: int = 2, t: int | None = None, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t or cfg.num_frames, cfg.in_chans, cfg.image_size, cfg.image_size, generator=g)


def tokens_into_first_block(model: VideoEncoder, fn, *args, **kwargs) -> torch.Tensor:
    """Run ``fn`` and return what entered ``blocks[0]``."""
    seen: list[torch.Tensor] = []
    handle = model.blocks[0].register_forward_pre_hook(lambda _m, inp: seen.append(inp[0].detach()))
    try:
        fn(*args, **kwargs)
    finally:
        handle.remove()
    return seen[0]


# --------------------------------------------------------------------------- sizes
def test_presets_have_the_paper_sizes_and_parameter_counts():
    expected = {
        "tiny": (64, 6, 4),
        "vit-s16": (384, 12, 6),
        "vit-b16": (768, 12, 12),
        "vit-l16": (1024, 24, 16),
    }
    for name, (width, depth, heads) in expected.items():
        cfg = VideoEncoderConfig.preset(name)
        assert (cfg.width, cfg.depth, cfg.heads, cfg.mlp_ratio) == (width, depth, heads, 4.0)
        assert cfg.tubelet_size == (2, 16, 16)

    # The ViT part (2D patch embedding, spatial + class positions, blocks, final norm) at 224 px must be
    # exactly timm's vit_base/large_patch16_224 without the classifier: 86M / 303M.
    video_only = ("patch_embed_3d", "pos_embed_temporal", "head_norm", "proj")
    for name, vit_params in (("vit-b16", 85_798_656), ("vit-l16", 303_301_632)):
        cfg = VideoEncoderConfig.preset(name, image_size=224, num_frames=16, cls_token=True)
        with torch.device("meta"):  # sizes only: nothing is allocated or run
            model = VideoEncoder(cfg)
        counted = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(video_only))
        assert counted == vit_params
        w = cfg.width
        extra = w * 3 * 2 * 16 * 16 + w + 8 * w + 2 * w + w * cfg.embed_dim
        assert model.num_params() == vit_params + extra


@pytest.mark.parametrize("name", PRESETS)
def test_shapes_and_masked_token_counts(name):
    cfg = small(name)
    model = VideoEncoder(cfg).eval()
    x = video(cfg)
    n = cfg.num_tokens  # 2 steps x 2 x 2 = 8
    assert n == 8
    with torch.no_grad():
        assert model(x).shape == (2, cfg.embed_dim)
        assert model.forward_features(x, mask_ratio=0.0).shape == (2, n, cfg.width)
        assert model.encode_image(x[:, 0]).shape == (2, cfg.embed_dim)
        assert model.forward_features_image(x[:, 0]).shape == (2, cfg.num_spatial_tokens, cfg.width)
        assert model.forward_tokens_grid(x).shape == (2, 2, 2, 2, cfg.width)
        seen = tokens_into_first_block(model, model, x, mask_ratio=0.75)
    assert seen.shape == (2, math.ceil(n / 4), cfg.width)


@pytest.mark.parametrize("cls_token", [False, True])
def test_odd_token_count_masks_to_the_ceiling(cls_token):
    # 48 px / 16 = 3x3 grid, 4 frames / 2 = 2 steps: 18 tokens; keeping 25% gives ceil(4.5) = 5.
    cfg = small(image_size=48, cls_token=cls_token, depth=1)
    model = VideoEncoder(cfg).eval()
    x = video(cfg)
    assert cfg.num_tokens == 18
    with torch.no_grad():
        seen = tokens_into_first_block(model, model.forward_features, x, mask_ratio=0.75)
        assert seen.shape[1] == 5 + int(cls_token)
        out = model.forward_features(x, mask_ratio=0.75)
        assert out.shape == (2, 5 + int(cls_token), cfg.width)
        img_seen = tokens_into_first_block(model, model.encode_image, x[:, 0], mask_ratio=0.5)
        assert img_seen.shape[1] == 5 + int(cls_token)  # ceil(9 / 2)


def test_num_kept_tokens():
    assert num_kept_tokens(16, 0.75) == 4
    assert num_kept_tokens(18, 0.75) == 5
    assert num_kept_tokens(10, 0.7) == 3  # float error must not add a token
    assert num_kept_tokens(2048, 0.3) == 1434
    assert num_kept_tokens(3, 0.99) == 1
    assert num_kept_tokens(7, 0.0) == 7


# --------------------------------------------------------------------------- masking
def test_masking_keeps_position_embedded_tokens_in_order():
    cfg = small()
    model = VideoEncoder(cfg).eval()
    with torch.no_grad():
        model.pos_embed_temporal.normal_()
    x = video(cfg)
    with torch.no_grad():
        seen = tokens_into_first_block(
            model, model.forward_features, x, mask_ratio=0.5, generator=torch.Generator().manual_seed(3)
        )
        full = model.embed_video(x)
        expected, ids = random_masking(full, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(seen, expected)
    assert torch.all(ids[:, 1:] > ids[:, :-1])  # sorted, no duplicates
    assert torch.equal(expected, torch.stack([full[i, ids[i]] for i in range(2)]))


def test_mask_zero_is_deterministic_and_masks_differ_per_sample():
    cfg = small()
    model = VideoEncoder(cfg).train()  # masking must behave the same in train and eval
    one = video(cfg, b=1)
    x = one.expand(8, -1, -1, -1, -1).contiguous()  # eight identical clips
    with torch.no_grad():
        a = model.forward_features(x, mask_ratio=0.0)
        b = model.forward_features(x, mask_ratio=0.0)
        assert torch.equal(a, b)
        assert torch.allclose(a[0], a[7], atol=1e-6)
        masked = model.forward_features(x, mask_ratio=0.5)
    distinct = {tuple(masked[i].flatten().round(decimals=4).tolist()) for i in range(8)}
    assert len(distinct) > 1
    _, ids = random_masking(torch.zeros(64, 8, 1), 0.5)
    assert len({tuple(r.tolist()) for r in ids}) > 1


def test_generator_makes_masks_reproducible():
    cfg = small()
    model = VideoEncoder(cfg).eval()
    x = video(cfg)
    with torch.no_grad():
        a = model(x, mask_ratio=0.75, generator=torch.Generator().manual_seed(7))
        b = model(x, mask_ratio=0.75, generator=torch.Generator().manual_seed(7))
        seen = [
            tokens_into_first_block(model, model, x, 0.75, torch.Generator().manual_seed(s)) for s in range(6)
        ]
    assert torch.equal(a, b)
    assert len({tuple(s.flatten().round(decimals=4).tolist()) for s in seen}) > 1


def test_default_mask_ratio_is_the_configs_in_training_and_none_in_eval():
    # An encoder trained (and exported) with mask_ratio 0.75 masked 75% of the tokens at random in eval mode too:
    # `from_pretrained(...).eval()` gave other embeddings on every call.
    cfg = small(mask_ratio=0.75)
    model = VideoEncoder(cfg)
    with torch.no_grad():
        assert tokens_into_first_block(model, model, video(cfg)).shape[1] == 2
        assert tokens_into_first_block(model, model, video(cfg), mask_ratio=0.0).shape[1] == 8
        model.eval()
        assert tokens_into_first_block(model, model, video(cfg)).shape[1] == 8
        assert tokens_into_first_block(model, model, video(cfg), mask_ratio=0.75).shape[1] == 2
        assert torch.equal(model(video(cfg)), model(video(cfg)))


# --------------------------------------------------------------------------- gradients and freezing
def _loss(model: VideoEncoder, cfg: VideoEncoderConfig) -> torch.Tensor:
    x = video(cfg)
    target = torch.randn(2, cfg.embed_dim, generator=torch.Generator().manual_seed(1))
    # Both paths, so both patch embeddings and the temporal table are in the graph.
    return ((model(x) - target) ** 2).mean() + ((model.encode_image(x[:, 0]) - target) ** 2).mean()


@pytest.mark.parametrize(
    "name,extra",
    [
        ("tiny", {}),
        ("tiny", {"cls_token": True, "pool": "cls"}),
        ("tiny", {"cls_token": True}),
        ("vit-s16", {}),
        ("vit-b16", {"depth": 1}),
        ("vit-l16", {"depth": 1}),
    ],
)
def test_every_parameter_gets_a_finite_gradient(name, extra):
    cfg = small(name, **extra)
    model = VideoEncoder(cfg).train()
    with torch.no_grad():
        model.pos_embed_temporal.normal_(std=0.02)
    _loss(model, cfg).backward()
    for n, p in model.named_parameters():
        assert p.grad is not None, f"{n} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{n} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{n} has an all-zero gradient"


def test_freeze_past_the_depth_says_every_block_trains(caplog):
    # trainable_last: 4 from a recipe on a model overridden to depth 2 trained everything without a word
    model = VideoEncoder(small(depth=2))
    with caplog.at_level("WARNING", logger="longvivit.models.video_encoder"):
        model.freeze(trainable_last=2)
        assert not caplog.records
        model.freeze(trainable_last=4)
    assert "trainable_last=4 but the encoder has 2 blocks: every block trains" in caplog.text
    assert model.num_frozen_blocks == 0 and not model.patch_embed_3d.weight.requires_grad


def test_freeze_trains_only_the_last_blocks_and_the_head():
    cfg = small()  # 6 blocks
    model = VideoEncoder(cfg).train()
    model.freeze(trainable_last=4)
    assert model.trainable_last == 4 and model.num_frozen_blocks == 2
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # The optimiser sees every parameter: only the freeze itself may keep the prefix unchanged.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    outputs: dict[int, torch.Tensor] = {}
    grad_mode: dict[int, bool] = {}
    hooks = [
        model.blocks[i].register_forward_hook(lambda _m, _i, out, i=i: outputs.__setitem__(i, out))
        for i in (0, 1, 2)
    ]
    hooks += [
        model.blocks[i].register_forward_pre_hook(
            lambda _m, _i, i=i: grad_mode.__setitem__(i, torch.is_grad_enabled())
        )
        for i in (0, 1, 2)
    ]
    _loss(model, cfg).backward()
    opt.step()
    for h in hooks:
        h.remove()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    trainable = {
        n
        for n, _ in model.named_parameters()
        if n.startswith(("blocks.2.", "blocks.3.", "blocks.4.", "blocks.5.", "norm.", "head_norm.", "proj."))
    }
    assert changed == trainable
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable
    # The frozen prefix ran without autograd: its activations are not kept for backward.
    assert grad_mode == {0: False, 1: False, 2: True}
    assert not outputs[0].requires_grad and not outputs[1].requires_grad
    assert outputs[2].requires_grad
    assert model.num_params(trainable_only=True) < model.num_params()

    model.unfreeze()
    assert model.trainable_last is None
    assert all(p.requires_grad for p in model.parameters())
    model.freeze(trainable_last=0)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, _ in model.named_parameters() if n.startswith(("norm.", "head_norm.", "proj."))
    }


def test_grad_checkpointing_gives_the_same_gradients():
    cfg = small(drop_path=0.2)  # stochastic depth: recomputation must replay the same random draws

    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = VideoEncoder(cfg).train()
        model.set_grad_checkpointing(checkpointing)
        torch.manual_seed(1)
        _loss(model, cfg).backward()
        return {n: p.grad for n, p in model.named_parameters()}

    plain, ckpt = grads(False), grads(True)
    for n in plain:
        torch.testing.assert_close(ckpt[n], plain[n], rtol=1e-5, atol=1e-6, msg=n)


def test_grad_checkpointing_recomputes_only_trainable_blocks():
    cfg = small(grad_checkpointing=True)
    model = VideoEncoder(cfg).train()
    assert model.grad_checkpointing
    model.freeze(trainable_last=2)
    calls = [0] * cfg.depth
    for i, blk in enumerate(model.blocks):
        blk.register_forward_pre_hook(lambda *_a, i=i: calls.__setitem__(i, calls[i] + 1))
    model(video(cfg)).sum().backward()
    assert calls == [
        1,
        1,
        1,
        1,
        2,
        2,
    ]  # the last two started again in backward (pre-hook: recompute may stop early)


def test_no_weight_decay_names_are_parameters():
    for cls_token in (False, True):
        model = VideoEncoder(small(cls_token=cls_token, depth=1))
        names = dict(model.named_parameters())
        nwd = model.no_weight_decay()
        assert nwd <= set(names)
        assert {"pos_embed_spatial", "pos_embed_temporal"} <= nwd
        assert ("cls_token" in nwd) == cls_token


# --------------------------------------------------------------------------- persistence
def test_save_and_from_pretrained_round_trip_exactly(tmp_path):
    cfg = small(cls_token=True)
    model = VideoEncoder(cfg).eval()
    with torch.no_grad():
        model.pos_embed_temporal.normal_()
    model.save_pretrained(tmp_path / "enc")
    assert (tmp_path / "enc" / "config.json").is_file()
    assert (tmp_path / "enc" / "model.safetensors").is_file()
    loaded = VideoEncoder.from_pretrained(tmp_path / "enc").eval()
    assert loaded.cfg == cfg
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    x = video(cfg)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_from_pretrained_with_more_frames_and_a_larger_image(tmp_path):
    cfg = small()
    model = VideoEncoder(cfg)
    with torch.no_grad():
        model.pos_embed_temporal.normal_()
    model.save_pretrained(tmp_path)
    big = VideoEncoder.from_pretrained(tmp_path, num_frames=8, image_size=64).eval()
    assert big.cfg.num_frames == 8 and big.cfg.image_size == 64
    # what was adapted is on the model (it was only logged, at INFO, which a plain script does not show)
    assert [a.split(" ")[0] for a in big.adaptations] == ["pos_embed_spatial", "pos_embed_temporal"], big.adaptations
    assert VideoEncoder.from_pretrained(tmp_path).adaptations == ()
    assert big.pos_embed_temporal.shape == (1, 4, cfg.width)
    assert big.pos_embed_spatial.shape == (1, 16, cfg.width)
    torch.testing.assert_close(big.pos_embed_temporal, model.pos_embed_temporal.repeat_interleave(2, dim=1))
    assert torch.equal(big.blocks[3].mlp.fc1.weight, model.blocks[3].mlp.fc1.weight)
    with torch.no_grad():
        assert big(torch.randn(1, 8, 3, 64, 64)).shape == (1, cfg.embed_dim)


def test_short_clips_use_the_first_rows_of_the_temporal_table(tmp_path):
    cfg = small(num_frames=8)
    model = VideoEncoder(cfg).eval()
    with torch.no_grad():
        model.pos_embed_temporal.normal_()
    model.save_pretrained(tmp_path)
    short = VideoEncoder.from_pretrained(tmp_path, num_frames=4).eval()
    x = video(cfg, t=4)
    with torch.no_grad():
        torch.testing.assert_close(model(x), short(x))


# --------------------------------------------------------------------------- errors
def test_config_errors_say_what_to_change():
    with pytest.raises(ValueError, match=r"num_frames=5 is not divisible by the tubelet's time size 2"):
        VideoEncoderConfig.preset("tiny", num_frames=5)
    with pytest.raises(
        ValueError, match=r"image_size=30 is not divisible by the patch size 16x16.*multiple of 16"
    ):
        VideoEncoderConfig.preset("tiny", image_size=30)
    with pytest.raises(ValueError, match="backbone='sideways' is not one of"):
        small(backbone="sideways")


def test_input_errors_say_what_to_change():
    cfg = small()
    model = VideoEncoder(cfg)
    with pytest.raises(ValueError, match="not a multiple of the tubelet's time size 2"):
        model(video(cfg, t=3))
    with pytest.raises(
        ValueError, match=r"temporal position table has 2.*from_pretrained\(path, num_frames=8\)"
    ):
        model(video(cfg, t=8))
    with pytest.raises(ValueError, match=r"built for 32x32; .*from_pretrained\(path, image_size=64\)"):
        model(torch.randn(1, 4, 3, 64, 64))
    with pytest.raises(ValueError, match="time before channels"):
        model(torch.randn(1, 3, 4, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        model.encode_image(video(cfg))
    with pytest.raises(ValueError, match="mask_ratio"):
        model(video(cfg), mask_ratio=1.0)
    for side in (40, 50):  # no size to load the encoder at would take these: resize to its own
        with pytest.raises(ValueError, match=r"resize/crop the input to 32x32 \(square, a multiple of the patch"):
            model(torch.randn(1, 4, 3, side, side))
    with pytest.raises(TypeError, match="torch.uint8; the encoder takes float frames normalised"):
        model(video(cfg).mul(60).clamp(0, 255).to(torch.uint8))
    with pytest.raises(TypeError, match="images are torch.int64"):
        model.encode_image(torch.zeros(1, 3, 32, 32, dtype=torch.long))


def test_float_input_follows_the_weights_dtype():
    model = VideoEncoder(small()).eval()
    x = video(model.cfg)
    ref = model(x, mask_ratio=0.0)
    # bf16 frames into an fp32 model (no autocast): cast to fp32, so only the rounding of the input differs.
    assert torch.allclose(model(x.bfloat16(), mask_ratio=0.0), model(x.bfloat16().float(), mask_ratio=0.0))
    assert model(x.double(), mask_ratio=0.0).dtype == torch.float32
    assert torch.allclose(model(x.double(), mask_ratio=0.0), ref, atol=1e-6)
    assert model.bfloat16()(x, mask_ratio=0.0).dtype == torch.bfloat16


# --------------------------------------------------------------------------- layers
def test_xformers_request_falls_back_to_sdpa_off_cuda():
    torch.manual_seed(0)
    sdpa = Attention(32, 4, attn_impl="sdpa")
    xf = Attention(32, 4, attn_impl="xformers")
    xf.load_state_dict(sdpa.state_dict())
    x = torch.randn(2, 5, 32)
    # A written-out softmax attention as the reference for both.
    q, k, v = sdpa.qkv(x).reshape(2, 5, 3, 4, 8).permute(2, 0, 3, 1, 4)
    ref = sdpa.proj(
        (torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, -1) @ v).transpose(1, 2).reshape(2, 5, 32)
    )
    torch.testing.assert_close(sdpa(x), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(xf(x), ref, atol=1e-5, rtol=1e-5)


def test_drop_path_is_identity_in_eval_and_drops_whole_samples_in_training():
    dp = DropPath(0.5)
    x = torch.ones(64, 3, 4)
    assert torch.equal(dp.eval()(x), x)
    torch.manual_seed(0)
    y = dp.train()(x)
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}
    assert bool((per_sample == per_sample[:, :1]).all())  # one decision per sample
    assert 0 < int((per_sample[:, 0] == 0).sum()) < 64


def test_from_pretrained_on_a_checkpoint_file_points_to_the_loaders(tmp_path):
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="reads a folder; a training checkpoint loads with .*load_model"):
        VideoEncoder.from_pretrained(ckpt)


def test_visible_tokens_count_what_each_backbone_encodes():
    # The throughput counter divided the frame-level backbone's frames by the tubelet's time size (half its tokens),
    # and counted the factorized backbone's kept tokens over the whole clip where it keeps spatial positions per
    # step (70 against 72 at 0.3 with 25 positions a step).
    for backbone in ("joint", "factorized", "frame"):
        enc = VideoEncoder(small(backbone=backbone)).train()
        x = video(enc.cfg)
        tokens = enc.forward_features(x, mask_ratio=0.75)
        assert enc.cfg.visible_tokens(x.shape[1], 0.75) == tokens.shape[1], backbone
        odd = VideoEncoder(VideoEncoderConfig.preset("tiny", image_size=80, num_frames=8, backbone=backbone)).train()
        x = torch.randn(1, 8, 3, 80, 80)  # 25 positions a step: no ratio below divides them evenly
        for ratio in (0.3, 0.75):
            assert odd.cfg.visible_tokens(8, ratio) == odd.forward_features(x, mask_ratio=ratio).shape[1], backbone
