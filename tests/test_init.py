"""Weight adaptation (inflation, position tables), loading from every source, the Hugging Face ViT oracle."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from longvivit import VideoEncoder, VideoEncoderConfig
from longvivit.models.hf_vit import _hf_vit_to_ours, config_from_hf_vit, load_hf_vit
from longvivit.models.init import (
    adapt_state_dict,
    extend_temporal_pos,
    inflate_patch_kernel,
    load_pretrained,
    resize_spatial_pos,
    select_encoder_weights,
)


def tiny(**overrides) -> VideoEncoderConfig:
    return VideoEncoderConfig.preset("tiny", **{"image_size": 32, "num_frames": 4, "depth": 2, **overrides})


def static_video(images: torch.Tensor, t: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, T, C, H, W): the image repeated over time."""
    return images.unsqueeze(1).expand(-1, t, -1, -1, -1).contiguous()


# --------------------------------------------------------------------------- kernels
@pytest.mark.parametrize("mode", ["mean", "central"])
def test_inflated_kernel_embeds_a_static_video_like_the_image(mode):
    torch.manual_seed(0)
    w2d = torch.randn(8, 3, 4, 4)
    w3d = inflate_patch_kernel(w2d, 3, mode)
    assert w3d.shape == (8, 3, 3, 4, 4)
    if mode == "mean":
        assert all(torch.equal(w3d[:, :, i], w2d / 3) for i in range(3))
    else:
        assert torch.equal(w3d[:, :, 1], w2d) and not w3d[:, :, [0, 2]].any()
    img = torch.randn(2, 3, 8, 8)
    vid = img.unsqueeze(2).expand(-1, -1, 3, -1, -1)  # (B, C, T, H, W), static
    out3 = torch.nn.functional.conv3d(vid, w3d, stride=(3, 4, 4))[:, :, 0]
    out2 = torch.nn.functional.conv2d(img, w2d, stride=4)
    torch.testing.assert_close(out3, out2, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cls_token", [False, True])
def test_static_video_through_inflated_tubelets_equals_the_image_path(cls_token):
    cfg = tiny(cls_token=cls_token)
    model = VideoEncoder(cfg).eval()
    # An image-stage checkpoint: no tubelet kernel, so loading inflates it from the 2D one.
    image_ckpt = {k: v for k, v in model.state_dict().items() if not k.startswith("patch_embed_3d")}
    msgs = load_pretrained(model, image_ckpt)
    assert any("inflated" in m for m in msgs)
    assert not model.pos_embed_temporal.any()
    images = torch.randn(2, 3, 32, 32)
    vid = static_video(images, cfg.num_frames)
    with torch.no_grad():
        img_tokens = model.embed_image(images)  # (B, 4, C)
        vid_tokens = model.embed_video(vid).reshape(2, 2, 4, -1)  # (B, T', H'W', C)
        for t in range(2):
            torch.testing.assert_close(vid_tokens[:, t], img_tokens, atol=1e-5, rtol=1e-5)
        if cls_token:
            return  # one class token weighs less among T' copies of the patches: no identity past here
        # Joint attention over T' identical copies gives the image's features, and so the same embedding.
        grid = model.forward_tokens_grid(vid).flatten(2, 3)  # (B, T', H'W', C)
        img_feats = model.forward_features_image(images)
        torch.testing.assert_close(grid[:, 1], img_feats, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(vid), model.encode_image(images), atol=1e-5, rtol=1e-5)


def test_tubelet_of_another_temporal_size_is_reinflated():
    src = VideoEncoder(tiny(tubelet_size=(4, 16, 16)))
    dst = VideoEncoder(tiny()).eval()
    msgs = load_pretrained(dst, src.state_dict())
    assert any("re-inflated from temporal size 4 to 2" in m for m in msgs)
    # Both kernels embed a static video identically.
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        a = src.patch_embed_3d(static_video(images, 4).transpose(1, 2))
        b = dst.patch_embed_3d(static_video(images, 2).transpose(1, 2))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- position tables
def test_extend_temporal_pos_repeat_interpolate_and_truncate():
    pos = torch.randn(1, 8, 5)
    torch.testing.assert_close(extend_temporal_pos(pos, 128, "repeat"), pos.repeat_interleave(16, dim=1))
    rows = extend_temporal_pos(pos, 12, "repeat")  # remainder: row i takes floor(i * 8 / 12)
    assert torch.equal(rows[0], pos[0, [0, 0, 1, 2, 2, 3, 4, 4, 5, 6, 6, 7]])
    assert torch.equal(extend_temporal_pos(pos, 3, "repeat"), pos[:, :3])
    assert torch.equal(extend_temporal_pos(pos, 3, "interpolate"), pos[:, :3])
    two = torch.tensor([[[0.0], [4.0]]])  # centre-aligned linear interpolation of 2 rows to 4
    assert extend_temporal_pos(two, 4, "interpolate").flatten().tolist() == [0.0, 1.0, 3.0, 4.0]
    with pytest.raises(ValueError, match="'repeat' or 'interpolate'"):
        extend_temporal_pos(pos, 16, "tile")


def test_resize_spatial_pos_matches_shape_and_keeps_constants():
    pos = torch.randn(1, 4, 6)
    assert torch.equal(resize_spatial_pos(pos, (2, 2), (2, 2)), pos)
    const = torch.full((1, 4, 3), 0.5)
    torch.testing.assert_close(resize_spatial_pos(const, (2, 2), (4, 4)), torch.full((1, 16, 3), 0.5))
    assert resize_spatial_pos(pos, (2, 2), (3, 5), mode="bilinear").shape == (1, 15, 6)
    with pytest.raises(ValueError, match="needs 9"):
        resize_spatial_pos(pos, (3, 3), (2, 2))


def _first_block_output(model: VideoEncoder, vid: torch.Tensor) -> torch.Tensor:
    out: list[torch.Tensor] = []
    h = model.blocks[0].register_forward_hook(lambda _m, _i, o: out.append(o))
    with torch.no_grad():
        model.forward_features(vid, mask_ratio=0.0)
    h.remove()
    return out[0]


def test_temporal_extension_8_to_128_steps_keeps_first_block_outputs(tmp_path):
    cfg = tiny(num_frames=16)  # 8 tubelet steps x 4 spatial tokens
    short = VideoEncoder(cfg).eval()
    with torch.no_grad():
        short.pos_embed_temporal.normal_()  # non-zero: the extension must be what keeps outputs equal
    short.save_pretrained(tmp_path)
    long = VideoEncoder.from_pretrained(tmp_path, num_frames=256).eval()  # 128 steps, 512 tokens
    assert long.pos_embed_temporal.shape[1] == 128

    # A static video: each short-model token now appears 16 times, so joint attention is unchanged.
    images = torch.randn(1, 3, 32, 32)
    a = _first_block_output(short, static_video(images, 16)).reshape(1, 8, 4, -1)
    b = _first_block_output(long, static_video(images, 256)).reshape(1, 128, 4, -1)
    torch.testing.assert_close(b, a.repeat_interleave(16, dim=1), atol=1e-5, rtol=1e-5)

    # Stretching (not tiling) also maps a clip slowed down 16x onto the short clip's tokens.
    clip = torch.randn(1, 16, 3, 32, 32)
    slow = clip.reshape(1, 8, 2, 3, 32, 32).repeat_interleave(16, dim=1).reshape(1, 256, 3, 32, 32)
    a = _first_block_output(short, clip).reshape(1, 8, 4, -1)
    b = _first_block_output(long, slow).reshape(1, 128, 4, -1)
    torch.testing.assert_close(b, a.repeat_interleave(16, dim=1), atol=1e-5, rtol=1e-5)


def test_from_pretrained_interpolates_when_configured(tmp_path):
    model = VideoEncoder(tiny(temporal_extend="interpolate"))
    with torch.no_grad():
        model.pos_embed_temporal.copy_(torch.tensor([0.0, 4.0]).view(1, 2, 1).expand(1, 2, 64))
    model.save_pretrained(tmp_path)
    longer = VideoEncoder.from_pretrained(tmp_path, num_frames=8)
    assert longer.pos_embed_temporal[0, :, 0].tolist() == [0.0, 1.0, 3.0, 4.0]


# --------------------------------------------------------------------------- adapt / load
def test_adapt_handles_cls_tokens_and_rejects_other_widths():
    with_cls = VideoEncoder(tiny(cls_token=True))
    without = VideoEncoder(tiny())
    sd, msgs = adapt_state_dict(with_cls.state_dict(), without)
    assert "cls_token" not in sd and any("dropped" in m for m in msgs)
    sd, msgs = adapt_state_dict(without.state_dict(), with_cls)
    assert torch.equal(sd["cls_token"], with_cls.cls_token) and any("fresh initialisation" in m for m in msgs)

    wide = VideoEncoder(tiny(width=128))
    with pytest.raises(
        ValueError, match=r"blocks\.0\.attn\.qkv\.weight: checkpoint \(192, 64\) vs model \(384, 128\)"
    ):
        load_pretrained(wide, without.state_dict())


def test_strict_load_reports_missing_and_unexpected_keys():
    model = VideoEncoder(tiny())
    sd = dict(model.state_dict())
    del sd["blocks.1.mlp.fc2.weight"]
    sd["blocks.1.extra"] = torch.zeros(1)
    with pytest.raises(
        ValueError, match=r"missing keys \(1\): \['blocks.1.mlp.fc2.weight'\][\s\S]*unexpected"
    ):
        load_pretrained(model, sd)
    msgs = load_pretrained(model, sd, strict=False)
    assert any("missing keys kept" in m for m in msgs) and any("unexpected keys ignored" in m for m in msgs)


def test_load_from_folder_safetensors_and_prefixed_state_dicts(tmp_path):
    src = VideoEncoder(tiny(cls_token=True))
    src.save_pretrained(tmp_path / "export")
    save_file(
        {f"model.video.{k}": v.contiguous() for k, v in src.state_dict().items()},
        str(tmp_path / "w.safetensors"),
    )
    for source in (
        tmp_path / "export",
        tmp_path / "export" / "model.safetensors",
        tmp_path / "w.safetensors",
    ):
        dst = VideoEncoder(tiny(cls_token=True))
        assert load_pretrained(dst, source) == []  # same config: nothing to adapt
        assert all(torch.equal(dst.state_dict()[k], v) for k, v in src.state_dict().items())

    both = {
        **{f"a.{k}": v for k, v in src.state_dict().items()},
        **{f"b.{k}": v for k, v in src.state_dict().items()},
    }
    with pytest.raises(ValueError, match=r"several encoders .*\['a\.', 'b\.'\]"):
        select_encoder_weights(both)
    assert set(select_encoder_weights(both, prefix="b")) == set(src.state_dict())
    with pytest.raises(ValueError, match="no VideoEncoder weights"):
        select_encoder_weights({"text.weight": torch.zeros(1)})


class _Wrapper(L.LightningModule):
    """Stands for the training module: the encoder sits at ``model.video_encoder``."""

    def __init__(self, video: dict) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = nn.Module()
        self.model.video_encoder = VideoEncoder(VideoEncoderConfig.from_dict(video))

    def training_step(self, batch, _idx):
        return self.model.video_encoder(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_load_a_real_lightning_checkpoint_with_weights_only(tmp_path):
    module = _Wrapper(tiny().to_dict())
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, DataLoader(TensorDataset(torch.randn(2, 4, 3, 32, 32)), batch_size=2))
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    # Stage 2 loads it for 8 frames: prefix found automatically, temporal table extended.
    dst = VideoEncoder(tiny(num_frames=8))
    msgs = load_pretrained(dst, tmp_path / "last.ckpt")
    assert any("extended" in m for m in msgs)
    trained = module.model.video_encoder.state_dict()
    assert torch.equal(dst.blocks[1].attn.qkv.weight, trained["blocks.1.attn.qkv.weight"])
    assert torch.equal(dst.pos_embed_spatial, trained["pos_embed_spatial"])


# --------------------------------------------------------------------------- Hugging Face ViT
def _hf_vit(tmp_path, image_size: int = 32):
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    hf_cfg = ViTConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        image_size=image_size,
        patch_size=8,
    )
    hf = ViTModel(hf_cfg, add_pooling_layer=False).eval()
    hf.save_pretrained(tmp_path / "hf")
    return tmp_path / "hf"


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_hf_vit_oracle(tmp_path, attn):
    from transformers import ViTModel

    path = _hf_vit(tmp_path)
    hf = ViTModel.from_pretrained(str(path), add_pooling_layer=False, attn_implementation=attn).eval()
    cfg = config_from_hf_vit(path, num_frames=4, embed_dim=32)
    assert (cfg.width, cfg.depth, cfg.heads, cfg.layer_norm_eps, cfg.cls_token) == (64, 2, 4, 1e-12, True)
    model = VideoEncoder(cfg).eval()
    msgs = load_hf_vit(model, path)
    assert any("inflated" in m for m in msgs)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = hf(pixel_values=images).last_hidden_state  # (B, 1 + 16, 64)
        torch.testing.assert_close(model.forward_features_image(images), ref, atol=1e-4, rtol=1e-4)
        # The inflated video path embeds a static clip exactly like the images, at every tubelet step.
        vid_tokens = model.embed_video(static_video(images, 4)).reshape(2, 2, 16, 64)  # (B, T', H'W', C)
        img_tokens = model.embed_image(images)  # (B, H'W', C)
    for t in range(2):
        torch.testing.assert_close(vid_tokens[:, t], img_tokens, atol=1e-5, rtol=1e-5)


def test_hf_vit_with_a_pooler_loads_without_a_load_report(tmp_path, capsys, caplog):
    # Hub ViTs (google/vit-base-patch16-224-in21k) carry a pooler; building the model without it made
    # transformers print an UNEXPECTED-keys report on every load_hf_vit.
    from transformers import ViTConfig, ViTModel

    hf_cfg = ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                       image_size=32, patch_size=8)
    ViTModel(hf_cfg).save_pretrained(tmp_path / "hf")
    capsys.readouterr()
    caplog.clear()
    msgs = load_hf_vit(VideoEncoder(config_from_hf_vit(tmp_path / "hf", num_frames=2)), tmp_path / "hf")
    report = capsys.readouterr()
    logged = report.out + report.err + caplog.text
    assert "UNEXPECTED" not in logged and "LOAD REPORT" not in logged, logged
    assert any("not used" in m and "pooler.dense.weight" in m for m in msgs)


def test_hf_vit_at_another_resolution_matches_hf_interpolation(tmp_path):
    from transformers import ViTModel

    path = _hf_vit(tmp_path)
    hf = ViTModel.from_pretrained(str(path), add_pooling_layer=False).eval()
    model = VideoEncoder(config_from_hf_vit(path, image_size=48, num_frames=2)).eval()
    msgs = load_hf_vit(model, hf)  # an in-memory model works as well as a folder
    assert any("resized from grid (4, 4) to (6, 6)" in m for m in msgs)
    images = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        ref = hf(pixel_values=images, interpolate_pos_encoding=True).last_hidden_state
        torch.testing.assert_close(model.forward_features_image(images), ref, atol=1e-4, rtol=1e-4)


def test_hf_vit_both_key_layouts_convert_identically(tmp_path):
    from transformers import ViTModel

    path = _hf_vit(tmp_path)
    on_disk = load_file(
        str(path / "model.safetensors")
    )  # legacy names: encoder.layer.i.attention.attention.query
    assert any(k.startswith("encoder.layer.0.attention.attention.") for k in on_disk)
    in_memory = ViTModel.from_pretrained(str(path), add_pooling_layer=False).state_dict()
    a, _ = _hf_vit_to_ours(on_disk, depth=2, qkv_bias=True)
    b, _ = _hf_vit_to_ours(in_memory, depth=2, qkv_bias=True)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_hf_vit_incompatibilities_are_explained(tmp_path):
    path = _hf_vit(tmp_path)
    with pytest.raises(ValueError, match=r"num_hidden_layers \(depth\): encoder 3, HF 2"):
        load_hf_vit(VideoEncoder(config_from_hf_vit(path, depth=3)), path)
    with pytest.raises(ValueError, match=r"layer_norm_eps: encoder 1e-06, HF 1e-12[\s\S]*config_from_hf_vit"):
        load_hf_vit(VideoEncoder(config_from_hf_vit(path, layer_norm_eps=1e-6)), path)
    with pytest.raises(ValueError, match="exact 'gelu' only"):
        config_from_hf_vit(
            {
                "hidden_act": "gelu_new",
                "hidden_size": 64,
                "num_hidden_layers": 1,
                "num_attention_heads": 4,
                "intermediate_size": 256,
            }
        )
    with pytest.raises(FileNotFoundError, match="not a local Hugging Face model folder"):
        load_hf_vit(VideoEncoder(config_from_hf_vit(path)), tmp_path / "nowhere")


def test_from_pretrained_reads_a_hugging_face_vit_folder(tmp_path):
    # VideoEncoder.from_pretrained(hf_dir) said "unknown VideoEncoderConfig keys: [15 keys]".
    path = _hf_vit(tmp_path)
    enc = VideoEncoder.from_pretrained(path, num_frames=4, embed_dim=32)
    ref = VideoEncoder(config_from_hf_vit(path, num_frames=4, embed_dim=32)).eval()
    load_hf_vit(ref, path)
    assert (enc.cfg.width, enc.cfg.num_frames, enc.cfg.cls_token, enc.training) == (64, 4, True, False)
    assert any("inflated" in m for m in enc.adaptations)
    video = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(enc.forward_features(video), ref.forward_features(video))
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert", "hidden_size": 64}')
    with pytest.raises(ValueError, match="holds a Hugging Face 'bert' model"):
        VideoEncoder.from_pretrained(tmp_path / "bert")


def test_from_pretrained_refuses_overrides_the_weights_fix(tmp_path):
    # heads=8 or layer_norm_eps=0.1 loaded without a word and computed something else (outputs off by 2e-4 / 0.09).
    cfg = VideoEncoderConfig.preset("tiny", image_size=32, num_frames=4, depth=2)
    VideoEncoder(cfg).save_pretrained(tmp_path / "enc")
    for field, value in (("heads", cfg.heads * 2), ("layer_norm_eps", 0.1), ("width", cfg.width * 2)):
        with pytest.raises(ValueError, match=rf"{field}={value!r} \(trained with {getattr(cfg, field)!r}\)"):
            VideoEncoder.from_pretrained(tmp_path / "enc", **{field: value})
    same = VideoEncoder.from_pretrained(tmp_path / "enc", heads=cfg.heads, num_frames=8)  # unchanged values pass
    assert same.cfg.num_frames == 8
    from longvivit.config import TextEncoderConfig, VideoTextConfig
    from longvivit.models.checkpoint import load_model  # the checkpoint and export loader too
    from longvivit.models.model import VideoTextModel

    VideoTextModel(VideoTextConfig(video=cfg, text=TextEncoderConfig(max_length=16))).save_pretrained(tmp_path / "vt")
    with pytest.raises(ValueError, match=r"heads=8 \(trained with 4\)"):
        load_model(tmp_path / "vt", heads=8)


def test_hf_vit_classifier_folder_loads_quietly_and_a_partial_one_is_refused(tmp_path, capsys, caplog):
    # A ViTForImageClassification folder printed transformers' UNEXPECTED-keys report; a folder missing blocks
    # loaded them at random initialisation behind the same kind of report.
    from transformers import ViTConfig, ViTForImageClassification

    hf_cfg = ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                       image_size=32, patch_size=8, num_labels=5)
    ViTForImageClassification(hf_cfg).save_pretrained(tmp_path / "cls")
    capsys.readouterr()
    enc = VideoEncoder.from_pretrained(tmp_path / "cls", num_frames=2)
    said = capsys.readouterr()
    assert "UNEXPECTED" not in said.out + said.err + caplog.text
    assert any("task head (ViTForImageClassification) is not used" in m for m in enc.adaptations)
    path = _hf_vit(tmp_path)
    weights = load_file(str(path / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if ".layer.1." not in k}, str(path / "model.safetensors"),
              metadata={"format": "pt"})
    with pytest.raises(ValueError, match="lacks ViT weights"):
        VideoEncoder.from_pretrained(path, num_frames=2)
