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


def test_clips_of_two_datasets_sharing_a_key_are_negatives_of_each_other(tmp_path):
    """Sample ids name a clip by its shard and key: two datasets written from different manifests (make_shards
    numbers every manifest's lines from 1, video2dataset numbers its keys from 0) hold different clips under one key.
    Keyed by the key alone, each was left out of the other's softmax as a 'copy'; the same shard read twice still
    gives copies the same id."""
    from test_shards_loader import video_bytes, write_shard

    from longvivit.config import PreprocessConfig
    from longvivit.data.shards import ShardDataset
    from longvivit.loss import NCELoss

    def shard(name: str, seeds: list[int]) -> str:
        samples = [{"key": f"{i:06d}", "media": video_bytes(s), "captions": [f"clip {s} moves"]}
                   for i, s in enumerate(seeds)]
        return str(write_shard(tmp_path / name / "shard-000000.tar", samples))

    a, b = shard("a", [1, 2]), shard("b", [3])  # "000000" in both: different clips
    module = _module(None).eval()
    pre = PreprocessConfig(num_frames=T, fps=4.0, image_size=SIZE)
    tokenizer = module.model.text_encoder.tokenizer

    def first_batch(urls: list[str]) -> dict:
        ds = ShardDataset(urls, "video", pre, train=False, batch_size=3, tokenizer=tokenizer, max_text_length=16)
        return next(b for b in ds if "video" in b)

    batch = first_batch([a, b])
    assert batch["key"] == ["000000", "000001", "000000"]
    with torch.no_grad():
        loss = module._modality_loss(batch, "video")[0]
        out = module.model(video=batch["video"], input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           num_valid_frames=batch["num_valid_frames"])
        plain = NCELoss()(out["video_features"], out["text_features"], out["logit_scale"])
    torch.testing.assert_close(loss, plain)  # three different clips: every other one is a negative
    twice = first_batch([b, b, a])  # the same clip read twice, as resampled shards do
    ids = twice["sample_id"]
    assert ids.dtype == torch.int64 and ids[0] == ids[1] != ids[2]
