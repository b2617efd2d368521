"""VideoTextModel on a tiny ViViT and a tiny random BERT (with the packaged MiniLM tokenizer)."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import BertConfig

from longvivit.config import TextEncoderConfig, VideoEncoderConfig, VideoTextConfig
from longvivit.loss import NCELoss
from longvivit.models.model import VideoTextModel
from longvivit.models.text_encoder import TextEncoder
from longvivit.models.video_encoder import VideoEncoder

B = 3
CAPTIONS = ["a dog runs on the beach", "a man plays the guitar", "rain falls on a window"]


def tiny_cfg(**text: object) -> VideoTextConfig:
    return VideoTextConfig(
        video=VideoEncoderConfig.preset("tiny", image_size=32, num_frames=4, depth=2),
        text=TextEncoderConfig(max_length=16, **text),
    )


def tiny_text(cfg: VideoTextConfig) -> TextEncoder:
    bert = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                      max_position_embeddings=32)
    return TextEncoder.from_config(bert, cfg=cfg.text)  # tokenizer: packaged MiniLM's


def tiny_model(**text: object) -> VideoTextModel:
    torch.manual_seed(0)
    cfg = tiny_cfg(**text)
    return VideoTextModel(cfg, text_encoder=tiny_text(cfg))


def batch(model: VideoTextModel) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "video": torch.randn(B, 4, 3, 32, 32, generator=g),  # (B, T, C, H, W)
        "images": torch.randn(B, 3, 32, 32, generator=g),
        **model.text_encoder.tokenize(CAPTIONS),
    }


def test_forward_returns_normalised_features_and_scale():
    model = tiny_model()
    x = batch(model)
    out = model(video=x["video"], input_ids=x["input_ids"], attention_mask=x["attention_mask"], mask_ratio=0.5)
    assert set(out) == {"video_features", "text_features", "logit_scale"}
    for key in ("video_features", "text_features"):
        assert out[key].shape == (B, 64)
        torch.testing.assert_close(out[key].norm(dim=-1), torch.ones(B))
    torch.testing.assert_close(out["logit_scale"], torch.tensor(1 / 0.07))

    image_out = model(images=x["images"])
    assert set(image_out) == {"image_features", "logit_scale"}
    torch.testing.assert_close(image_out["image_features"].norm(dim=-1), torch.ones(B))
    with pytest.raises(ValueError, match="not both"):
        model(video=x["video"], images=x["images"])


def test_logit_scale_is_clamped_and_stops_learning_past_the_max():
    model = tiny_model()
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000.0))
    scale = model.get_logit_scale()
    assert scale.item() == pytest.approx(100.0)
    scale.backward()
    assert model.logit_scale.grad.item() == 0.0

    model.logit_scale.grad = None
    with torch.no_grad():
        model.logit_scale.fill_(math.log(20.0))
    model.get_logit_scale().backward()
    assert model.logit_scale.grad.item() == pytest.approx(20.0)  # d exp(s)/ds below the clamp


def _nce_step(model: VideoTextModel, x: dict[str, torch.Tensor]) -> None:
    """One video batch and one image batch against the same captions, as in mixed image+video training."""
    loss_fn = NCELoss()
    out = model(video=x["video"], input_ids=x["input_ids"], attention_mask=x["attention_mask"], mask_ratio=0.5)
    loss = loss_fn(out["video_features"], out["text_features"], out["logit_scale"])
    img = model(images=x["images"], input_ids=x["input_ids"], attention_mask=x["attention_mask"])
    loss = loss + loss_fn(img["image_features"], img["text_features"], img["logit_scale"])
    loss.backward()


def test_every_trainable_parameter_gets_a_gradient():
    model = tiny_model()
    _nce_step(model, batch(model))
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, no_grad
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad, bad
    assert model.logit_scale.grad.abs().item() > 0


def test_frozen_parts_get_no_gradient():
    model = tiny_model(lock=True, unlocked_layers=1)
    model.video_encoder.freeze(trainable_last=1)
    _nce_step(model, batch(model))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == trainable
    assert "text_encoder.proj.weight" in trainable and "logit_scale" in trainable
    assert not any(n.startswith("text_encoder.model.embeddings") for n in trainable)
    assert not any(n.startswith("video_encoder.blocks.0.") for n in trainable)


def test_no_weight_decay_names_exist():
    model = tiny_model()
    names = dict(model.named_parameters())
    nwd = model.no_weight_decay()
    assert "logit_scale" in nwd and len(nwd) > 1
    assert nwd <= set(names), nwd - set(names)


def test_rejects_mismatched_embed_dims():
    cfg = tiny_cfg()
    text = TextEncoder.from_config(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                              intermediate_size=64), cfg=TextEncoderConfig(embed_dim=16))
    with pytest.raises(ValueError, match="embed_dim"):
        VideoTextModel(cfg, text_encoder=text)


def test_save_and_load_round_trip(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(42.0))  # a learned value, not the init
    model.eval()
    x = batch(model)
    model.save_pretrained(tmp_path / "m")
    loaded = VideoTextModel.from_pretrained(tmp_path / "m").eval()

    assert loaded.logit_scale.item() == model.logit_scale.item()
    assert loaded.cfg.video == model.cfg.video
    with torch.no_grad():
        a = model(video=x["video"], input_ids=x["input_ids"], attention_mask=x["attention_mask"], mask_ratio=0.0)
        b = loaded(video=x["video"], input_ids=x["input_ids"], attention_mask=x["attention_mask"], mask_ratio=0.0)
        for key in a:
            torch.testing.assert_close(b[key], a[key])
        torch.testing.assert_close(loaded.encode_image(x["images"]), model.encode_image(x["images"]))
    assert loaded.text_encoder.tokenize(CAPTIONS)["input_ids"].equal(x["input_ids"])
    state_a, state_b = model.state_dict(), loaded.state_dict()
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


@pytest.mark.integration
def test_default_text_tower_is_the_packaged_minilm():
    cfg = tiny_cfg()
    model = VideoTextModel(cfg, video_encoder=VideoEncoder(cfg.video))
    assert model.text_encoder.hidden_size == 384 and model.text_encoder.embed_dim == 64
    with torch.no_grad():
        feats = model.encode_text(**model.text_encoder.tokenize(CAPTIONS))
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(B))
