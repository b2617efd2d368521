"""Clips shorter than the window: padding frames are hidden from attention, masked first and not pooled.

``load_clips`` pads a short clip to ``num_frames`` by repeating its last frame and says how many frames are real
(``num_valid_frames``). Given that count, every backbone must embed the padded clip as its real frames alone
(exactly, when the real frames fill whole tubelet steps and nothing is masked), so that a 30 s video in a
256-frame window is not pulled towards its last frame.
"""

from __future__ import annotations

import pytest
import torch

from longvivit import VideoEncoder, VideoEncoderConfig
from longvivit.captioning.pooling import encode_grid
from longvivit.config import num_kept_tokens
from longvivit.models.masking import video_generator
from longvivit.negatives import order_negatives

BACKBONES = [
    {"backbone": "joint"},
    {"backbone": "joint", "cls_token": True},
    {"backbone": "factorized"},
    {"backbone": "frame"},
    {"backbone": "frame", "frame_pool": "attention"},
]


def encoder(**overrides) -> VideoEncoder:
    """Tiny encoder (32 px, 8 frames = 4 tubelet steps, 2 blocks) moved off its identity initialisation."""
    cfg = VideoEncoderConfig.preset("tiny", **{"image_size": 32, "num_frames": 8, "depth": 2, **overrides})
    enc = VideoEncoder(cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # temporal tables, gates and pools start at zero: give them values
        for p in enc.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return enc


def padded(real: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(T_real, C, H, W) -> (num_frames, C, H, W), the last frame repeated as ``load_clips`` pads."""
    pad = real[-1:].expand(num_frames - real.shape[0], -1, -1, -1)
    return torch.cat([real, pad])


@pytest.mark.parametrize("overrides", BACKBONES, ids=lambda o: "-".join(map(str, o.values())))
def test_padded_clip_embeds_as_its_real_frames(overrides):
    enc = encoder(**overrides)
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, 3, 32, 32, generator=g) for n in (4, 6))
    batch = torch.stack([padded(a, 8), padded(b, 8)])  # (2, 8, 3, 32, 32)
    with torch.no_grad():
        got = enc(batch, num_valid_frames=torch.tensor([4, 6]))
        ref = torch.cat([enc(a[None]), enc(b[None])])  # each clip alone, no padding
        plain = enc(batch)  # the old behaviour: padding counted as frames
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    assert (plain - ref).abs().max() > 1e-3  # the padding did change the embedding


@pytest.mark.parametrize("overrides", BACKBONES, ids=lambda o: "-".join(map(str, o.values())))
def test_full_clips_are_unchanged_by_the_count(overrides):
    """Clips without padding: the same embedding, masked or not, with the same masks as without the argument."""
    enc = encoder(**overrides)
    video = torch.randn(2, 8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    full = torch.tensor([8, 8])
    with torch.no_grad():
        for ratio in (0.0, 0.5):
            gens = [video_generator(0, k) for k in "ab"]
            ref = enc(video, mask_ratio=ratio, generator=gens)
            gens = [video_generator(0, k) for k in "ab"]
            torch.testing.assert_close(enc(video, mask_ratio=ratio, generator=gens, num_valid_frames=full), ref)


def test_masking_drops_padding_first():
    enc = encoder()
    video = padded(torch.randn(2, 3, 32, 32), 8)[None].expand(3, -1, -1, -1, -1)  # 1 real step of 4
    s = enc.cfg.num_spatial_tokens  # 4 tokens a step, 16 a clip
    with torch.no_grad():
        grid, visible = enc.forward_grid(video, 0.5, [video_generator(0, str(i)) for i in range(3)],
                                         num_valid_frames=torch.tensor([2, 4, 8]))
    # 8 of 16 tokens kept; the real ones (4, 8, 16) first, padding never visible
    assert visible.sum(dim=(1, 2)).tolist() == [s, 2 * s, num_kept_tokens(4 * s, 0.5)]
    assert not visible[0, 1:].any() and not visible[1, 2:].any()
    assert visible[0, 0].all() and visible[1, :2].all()


def test_masked_padded_clip_encodes_only_real_tokens():
    """With fewer real tokens than the mask keeps, they are all kept and the padding the mask keeps is ignored."""
    enc = encoder()
    real = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = enc(padded(real, 8)[None], mask_ratio=0.5, generator=torch.Generator().manual_seed(0),
                  num_valid_frames=torch.tensor([2]))
        ref = enc(real[None])  # 4 real tokens < 8 kept: every real token, nothing else
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)


def test_gradient_checkpointing_passes_the_padding_mask():
    enc = encoder().train()
    enc.cfg.drop_path = 0.0
    video = torch.randn(2, 8, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    nvf = torch.tensor([3, 8])
    ref = enc(video, mask_ratio=0.0, num_valid_frames=nvf)
    enc.set_grad_checkpointing(True)
    got = enc(video, mask_ratio=0.0, num_valid_frames=nvf)
    torch.testing.assert_close(got, ref)
    got.sum().backward()
    assert enc.blocks[0].attn.qkv.weight.grad is not None


@pytest.mark.parametrize("overrides", BACKBONES[::2], ids=lambda o: "-".join(map(str, o.values())))
def test_captioner_grid_of_padded_clip_is_the_real_grid(overrides):
    """The captioner's input: padding steps are not visible, real ones are as if the clip were alone."""
    enc = encoder(**overrides)
    real = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        grid, visible = encode_grid(enc, padded(real, 8)[None], 0.0, None, torch.tensor([4]))
        ref, ref_visible = encode_grid(enc, real[None], 0.0)
    steps = ref.shape[1]
    torch.testing.assert_close(grid[:, :steps], ref, atol=1e-5, rtol=1e-4)
    assert visible[:, :steps].equal(ref_visible) and not visible[:, steps:].any()


def test_num_valid_frames_shape_is_checked():
    enc = encoder()
    with pytest.raises(ValueError, match=r"num_valid_frames must have shape \(2,\)"):
        enc(torch.randn(2, 8, 3, 32, 32), num_valid_frames=torch.tensor([3]))


def test_order_negatives_reorder_only_the_real_frames():
    video = torch.arange(2 * 8, dtype=torch.float32).reshape(2, 8, 1, 1, 1)
    out = order_negatives(video, ["reverse", "rotate"], step=2, num_valid_frames=torch.tensor([8, 5]))[..., 0, 0, 0]
    assert out[0].tolist() == list(range(7, -1, -1))  # a full clip: plain reversal
    assert out[1].tolist() == [12, 11, 10, 9, 8, 13, 14, 15]  # 5 real frames reversed, padding in place
    assert out[2].tolist() == [4, 5, 6, 7, 0, 1, 2, 3]  # rolled by half the clip
    assert out[3].tolist() == [11, 12, 8, 9, 10, 13, 14, 15]  # the 5 real frames rolled by 2


@pytest.mark.parametrize("overrides", BACKBONES[::2], ids=lambda o: "-".join(map(str, o.values())))
def test_extract_features_of_padded_clip(overrides):
    enc = encoder(**overrides)
    real = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        feats = enc.extract_features(padded(real, 8)[None], fps=1.0, num_valid_frames=torch.tensor([4]))
        ref = enc.extract_features(real[None], fps=1.0)
    steps = ref["tokens"].shape[1]
    torch.testing.assert_close(feats["embedding"], ref["embedding"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(feats["tokens"][:, :steps], ref["tokens"], atol=1e-5, rtol=1e-4)
    assert feats["valid"][0].tolist() == [True] * steps + [False] * (feats["tokens"].shape[1] - steps)
    assert ref["valid"].all()


def test_padding_mask_needs_no_count_on_the_host():
    """Counts already on the device (the training batch, moved by Lightning) become the mask without a host sync:
    ``bool((nvf >= T).all())`` waited on the GPU in every forward (twice with order negatives). Meta tensors have
    no values, so any read of them fails here as it would stall there."""
    enc = encoder()
    video = torch.empty(2, 8, 3, 32, 32, device="meta")
    steps = enc.step_validity(video, torch.tensor([3, 8], device="meta"))
    assert steps.shape == (2, 4) and steps.dtype == torch.bool and steps.device.type == "meta"
    # counts on the host are read for free: full clips keep the unmasked path
    assert enc.step_validity(video, torch.tensor([8, 8])) is None
    assert enc.step_validity(video, torch.tensor([3, 8])).device.type == "meta"


def test_a_batch_without_padded_clips_passes_no_counts():
    """The training and captioning steps hand the encoder no counts for a batch the collate found unpadded (its
    attention stays unmasked without a read from the device), and the counts of one with padding."""
    from longvivit.data.collate import collate, valid_frame_counts

    samples = [{"key": k, "video": torch.zeros(8, 3, 4, 4), "num_valid_frames": n, "captions": ["c"]}
               for k, n in (("a", 8), ("b", 3))]
    mixed, full = collate(samples, "video"), collate(samples[:1], "video")
    assert (mixed["padded_clips"], full["padded_clips"]) == (1, 0)
    assert valid_frame_counts(mixed).tolist() == [8, 3] and valid_frame_counts(full) is None
    assert valid_frame_counts({"num_valid_frames": torch.tensor([8])}).tolist() == [8]  # a batch built by hand
