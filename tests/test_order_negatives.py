"""``ContrastiveModule(order_negatives=...)``: re-ordered clips enter the loss as extra text-to-video negatives."""

from __future__ import annotations

import pytest
import torch

from longvivit.config import TextEncoderConfig, VideoEncoderConfig
from longvivit.training.module import ContrastiveModule

B, T, SIZE = 3, 4, 32


def _module(order_negatives: list[str] | None, caption_order_negatives: bool = False) -> ContrastiveModule:
    torch.manual_seed(0)
    module = ContrastiveModule(
        video=VideoEncoderConfig.preset("tiny", image_size=SIZE, num_frames=T, embed_dim=32),
        text=TextEncoderConfig(max_length=16),  # the packaged MiniLM
        modalities=["video"],
        order_negatives=order_negatives,
        caption_order_negatives=caption_order_negatives,
    )
    module.setup("fit")  # freezes the image path, which video-only training never reaches
    return module


CAPTIONS = [
    "a red circle moves left, then the blue square grows",
    "a blue square appears",
    "the green triangle shrinks",
]


def _batch(module: ContrastiveModule, video: torch.Tensor, captions: list[str] = CAPTIONS) -> dict:
    tok = module.model.text_encoder.tokenize(captions)
    return {"key": [f"k{i}" for i in range(B)], "video": video, **tok, "captions": [[c] for c in captions],
            "modality": "video"}


def test_reordered_clips_are_encoded_and_scored():
    module = _module(["reverse", "rotate"])
    seen: list[int] = []
    module.model.video_encoder.register_forward_hook(lambda m, args, out: seen.append(out.shape[0]))
    video = torch.randn(B, T, 3, SIZE, SIZE)
    loss = module.training_step(_batch(module, video), 0)
    assert seen == [B, 2 * B]  # the clips, then their reversed and rotated copies in one pass
    loss.backward()
    grads = [p.grad for p in module.model.video_encoder.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert module.last_batch_stats["tokens"] == 3 * B * (T // 2) * (SIZE // 16) ** 2


def test_static_clip_ties_with_its_reorderings():
    """A clip without motion equals its re-orderings, so each caption faces copies of its own video: the loss
    rises by exactly what duplicated positive columns cost, which order-blind features cannot avoid."""
    video = torch.randn(B, 1, 3, SIZE, SIZE).expand(B, T, 3, SIZE, SIZE).contiguous()
    plain, negs = _module(None), _module(["reverse", "rotate"])
    negs.load_state_dict(plain.state_dict())
    plain.eval(), negs.eval()  # no text dropout: both runs must see the same features
    with torch.no_grad():
        out = plain.model(video=video, **{k: v for k, v in _batch(plain, video).items() if k.endswith("_mask")
                                          or k == "input_ids"})
        logits_t2v = out["logit_scale"] * out["text_features"] @ out["video_features"].T  # (B, B)
        v2t = torch.nn.functional.cross_entropy(logits_t2v.T, torch.arange(B))
        tripled = torch.cat([logits_t2v, logits_t2v, logits_t2v], dim=1)  # positives' copies as negatives
        expected = (v2t + torch.nn.functional.cross_entropy(tripled, torch.arange(B))) / 2
        got = negs.training_step(_batch(negs, video), 0)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert got > plain.training_step(_batch(plain, video), 0)


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown order_negatives"):
        _module(["shuffle"])


def test_caption_order_negatives_score_reordered_captions_only():
    video = torch.randn(B, T, 3, SIZE, SIZE)
    plain, negs = _module(None), _module(None, caption_order_negatives=True)
    negs.load_state_dict(plain.state_dict())
    plain.eval(), negs.eval()
    texts: list[int] = []
    negs.model.text_encoder.register_forward_hook(lambda m, args, out: texts.append(out.shape[0]))
    with torch.no_grad():
        assert negs.training_step(_batch(negs, video), 0) > plain.training_step(_batch(plain, video), 0)
        assert texts == [B, B]  # the captions, then one slot per caption (only the first can be re-ordered)
        # no caption with two clauses: every slot is masked and the loss is the plain one
        flat = ["a blue square appears", "a dog", "the green triangle shrinks"]
        torch.testing.assert_close(negs.training_step(_batch(negs, video, flat), 0),
                                   plain.training_step(_batch(plain, video, flat), 0))

