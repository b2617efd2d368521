"""The captioner's masked token grid on every backbone the design offers (joint, factorized, frame-level).

The grid was built by a joint-only copy of the encoder's forward: a factorized encoder crashed at the paper's 30%
mask, and a frame-level one was run through the tubelet kernel it never trains.
"""

from __future__ import annotations

import pytest
import torch

from longvivit.captioning.model import CaptionerConfig, VideoToText
from longvivit.captioning.pooling import encode_grid
from longvivit.config import VideoEncoderConfig
from longvivit.models.masking import num_kept_tokens
from longvivit.models.video_encoder import VideoEncoder
from tests.captioning_helpers import build_tiny_lm


def encoder(backbone: str) -> VideoEncoder:
    torch.manual_seed(0)
    cfg = VideoEncoderConfig.preset("tiny", image_size=32, num_frames=8, depth=2, backbone=backbone)
    return VideoEncoder(cfg).eval()


@pytest.mark.parametrize("backbone", ["joint", "factorized", "frame"])
def test_masked_grid_holds_the_backbones_own_masked_tokens(backbone):
    enc = encoder(backbone)
    video = torch.randn(2, 8, 3, 32, 32)
    steps = 8 if backbone == "frame" else 4  # a step per frame, or per tubelet
    s = enc.cfg.num_spatial_tokens
    with torch.no_grad():
        grid0, vis0 = encode_grid(enc, video, 0.0)
        grid, vis = encode_grid(enc, video, 0.3, torch.Generator().manual_seed(1))
        ref = enc.forward_features(video, 0.3, torch.Generator().manual_seed(1))  # (B, N_visible, C)
    assert grid0.shape == grid.shape == (2, steps, s, enc.cfg.width) and vis0.all()
    kept = num_kept_tokens(s, 0.3) * steps if backbone != "joint" else num_kept_tokens(steps * s, 0.3)
    assert vis.flatten(1).sum(1).tolist() == [kept] * 2
    if backbone == "factorized":  # tube masking: the same positions in every step
        assert (vis == vis[:, :1]).all()
    for i in range(2):  # the visible cells, time-major, are exactly what the encoder's forward computes
        assert torch.equal(grid[i].flatten(0, 1)[vis[i].flatten()], ref[i])
    assert (grid.flatten(1, 2)[~vis.flatten(1)] == 0).all()


@pytest.mark.parametrize("backbone", ["factorized", "frame"])
def test_captioner_on_other_backbones_masks_and_pools_the_real_frames(backbone, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm_dir = build_tiny_lm(tmp_path / "lm")
    lm, tok = AutoModelForCausalLM.from_pretrained(lm_dir), AutoTokenizer.from_pretrained(lm_dir)
    enc = encoder(backbone)
    model = VideoToText(CaptionerConfig(), enc, lm, tok).eval()
    video = torch.randn(1, 8, 3, 32, 32)
    video[:, 4:] = video[:, 3:4]  # 4 real frames, then the last one repeated (the loaders' padding)
    with torch.no_grad():
        out = model.visual_tokens(video, mask_ratio=0.3, generator=[torch.Generator().manual_seed(2)])
        assert out.shape == (1, enc.cfg.num_spatial_tokens, model.cfg.resampler.hidden)
        # padding is left out of the pool: the clip gives what its real frames alone give
        full = model.visual_tokens(video, num_valid_frames=torch.tensor([4]), mask_ratio=0.0)
        real = model.visual_tokens(video[:, :4], mask_ratio=0.0)
    if backbone == "frame":  # per-frame features do not depend on the other frames
        torch.testing.assert_close(full, real)
