"""Masked validation (``eval_mask_ratio > 0``): a clip's mask comes from its key, not its batch."""

from __future__ import annotations

import torch

from longvivit.config import TextEncoderConfig, VideoEncoderConfig
from longvivit.training.module import ContrastiveModule

T, SIZE = 4, 32


def _embeddings(module: ContrastiveModule, video: torch.Tensor, keys: list[str], batch_size: int) -> torch.Tensor:
    module.evaluator.reset()
    for i in range(0, len(keys), batch_size):
        caps = [[f"clip {k}"] for k in keys[i : i + batch_size]]
        module.validation_step({"key": keys[i : i + batch_size], "video": video[i : i + batch_size],
                                "captions": caps}, i // batch_size)
    emb = dict(zip(module.evaluator.video_keys, torch.cat(module.evaluator._video_emb), strict=True))
    return torch.stack([emb[k] for k in sorted(keys)])


def test_masked_validation_does_not_move_with_the_batch_size_or_order():
    torch.manual_seed(0)
    module = ContrastiveModule(video=VideoEncoderConfig.preset("tiny", image_size=SIZE, num_frames=T, embed_dim=32),
                               text=TextEncoderConfig(max_length=16), modalities=["video"], eval_mask_ratio=0.5)
    module.eval()
    video = torch.randn(6, T, 3, SIZE, SIZE)
    keys = [f"k{i}" for i in range(6)]
    with torch.no_grad():
        whole = _embeddings(module, video, keys, 6)
        pairs = _embeddings(module, video, keys, 2)
        backwards = _embeddings(module, video.flip(0), keys[::-1], 4)
        again = _embeddings(module, video, keys, 6)
    torch.testing.assert_close(pairs, whole, rtol=0, atol=1e-5)
    torch.testing.assert_close(backwards, whole, rtol=0, atol=1e-5)
    torch.testing.assert_close(again, whole, rtol=0, atol=0)  # and from one validation to the next
    module.eval_mask_ratio = 0.0
    with torch.no_grad():
        assert not torch.allclose(_embeddings(module, video, keys, 6), whole, atol=1e-4)  # the mask did act
