"""Frame-order probes: the padding repeats the re-ordered clip's last frame, reversal is exact, shuffles are
permutations of valid frames."""

from __future__ import annotations

import decord
import numpy as np
import pytest
import torch
from conftest import ASSETS

from longvivit.evaluation.probes import FRAME_ORDERS, apply_frame_order

NUM_VALID = torch.tensor([6, 4, 1])


def _indexed_video(batch: int = 3, frames: int = 6) -> torch.Tensor:
    """(B, T, C, H, W) whose frame (b, t) is filled with 100 * b + t, so content names its origin."""
    ids = 100 * torch.arange(batch)[:, None] + torch.arange(frames)[None, :]  # (B, T)
    return ids[:, :, None, None, None].expand(batch, frames, 3, 4, 5).float().clone()


def _frame_ids(video: torch.Tensor) -> list[list[int]]:
    per_frame = video.flatten(2)  # (B, T, C*H*W)
    assert (per_frame == per_frame[..., :1]).all(), "frames were mixed, not moved whole"
    return per_frame[..., 0].long().tolist()


def test_original_is_an_unchanged_copy():
    video = _indexed_video()
    out = apply_frame_order(video, NUM_VALID, "original")
    assert torch.equal(out, video) and out.data_ptr() != video.data_ptr()


def test_reversed_reverses_valid_frames_and_pads_with_the_new_last_frame():
    out = apply_frame_order(_indexed_video(), NUM_VALID, "reversed")
    assert _frame_ids(out) == [
        [5, 4, 3, 2, 1, 0],
        [103, 102, 101, 100, 100, 100],
        [200, 200, 200, 200, 200, 200],
    ]


def test_single_repeats_the_middle_valid_frame_everywhere():
    out = apply_frame_order(_indexed_video(), NUM_VALID, "single")
    # Middle valid frame is (n - 1) // 2: 2 of 6, 1 of 4, 0 of 1; it also fills the padding.
    assert _frame_ids(out) == [[2] * 6, [101] * 6, [200] * 6]


def test_shuffled_permutes_only_valid_frames_deterministically():
    video = _indexed_video(frames=8)
    num_valid = torch.tensor([8, 5, 1])
    gens = [torch.Generator().manual_seed(s) for s in range(5)]
    outs = [apply_frame_order(video, num_valid, "shuffled", g) for g in gens]
    for out in outs:
        ids = _frame_ids(out)
        for b, n in enumerate(num_valid.tolist()):
            assert sorted(ids[b][:n]) == [100 * b + t for t in range(n)]  # a permutation of the valid frames
            assert ids[b][n:] == [ids[b][n - 1]] * (8 - n)  # padding: the shuffled clip's last frame
    again = apply_frame_order(video, num_valid, "shuffled", torch.Generator().manual_seed(0))
    assert torch.equal(again, outs[0])
    # 8! orderings: five seeds giving the same one (or the identity every time) would mean no shuffling.
    assert len({tuple(_frame_ids(o)[0]) for o in outs}) > 1
    assert any(_frame_ids(o)[0] != list(range(8)) for o in outs)


def test_shuffled_reaches_every_permutation():
    video = _indexed_video(batch=1, frames=3)
    gen = torch.Generator().manual_seed(0)
    seen = {tuple(_frame_ids(apply_frame_order(video, None, "shuffled", gen))[0]) for _ in range(200)}
    assert len(seen) == 6


def test_bad_arguments_raise():
    video = _indexed_video()
    with pytest.raises(ValueError):
        apply_frame_order(video, NUM_VALID, "backwards")
    with pytest.raises(ValueError):
        apply_frame_order(video, torch.tensor([7, 1, 1]), "reversed")
    with pytest.raises(ValueError):
        apply_frame_order(video, torch.tensor([0, 1, 1]), "single")
    with pytest.raises(ValueError):
        apply_frame_order(video, torch.tensor([1, 1]), "reversed")
    assert set(FRAME_ORDERS) == {"original", "shuffled", "reversed", "single"}


def _square_x(frames: np.ndarray) -> list[float]:
    """Mean column of the bright yellow square in each (T, H, W, 3) frame."""
    yellow = (frames[..., 0] > 180) & (frames[..., 1] > 140) & (frames[..., 2] < 110)  # (T, H, W)
    cols = np.arange(frames.shape[2])
    return [float(cols[m.any(axis=0)].mean()) for m in yellow]


def test_reversal_of_a_decoded_clip_runs_time_backwards(make_video):
    path = make_video(num_frames=10, fps=5.0)
    frames = decord.VideoReader(str(path)).get_batch(list(range(10))).asnumpy()  # (T, H, W, 3) uint8
    video = torch.from_numpy(frames).permute(0, 3, 1, 2)[None]  # (1, T, 3, H, W)
    padded = torch.cat([video, torch.zeros_like(video[:, :3])], dim=1)  # 3 padding frames at the end
    out = apply_frame_order(padded, torch.tensor([10]), "reversed")
    xs = _square_x(out[0, :10].permute(0, 2, 3, 1).numpy())
    assert all(a > b for a, b in zip(xs, xs[1:], strict=False)), xs  # the square now moves left
    assert torch.equal(out[0, :10], video[0].flip(0))
    assert torch.equal(out[0, 10:], video[0, :1].expand(3, -1, -1, -1))  # padded with the new last frame


@pytest.mark.parametrize("order", ["reversed", "shuffled"])
def test_probe_of_a_short_real_clip_encodes_as_the_reordered_clip_padded(order):
    """A 5-frame clip in an 8-frame window: its last tubelet step (frames 4-5) is half padding, which the encoder
    sees. The probe must give what the loader gives for the re-ordered clip (padded with *its* last frame); it
    used to keep the original last frame there, so the reversed clip ended on the original ending and every
    shuffle carried the true last frame at its end."""
    from longvivit import VideoEncoder, VideoEncoderConfig
    from longvivit.config import PreprocessConfig
    from longvivit.data.decode import decode_video_file

    pre = PreprocessConfig(num_frames=8, fps=0.8, image_size=32)  # 5.28 s at 0.8 FPS: frames at 0, 1.25 ... 5 s
    video, n = decode_video_file(ASSETS / "bigbuckbunny.mp4", pre)  # (8, 3, 32, 32), real mp4 bytes
    assert n == 5 and torch.equal(video[5:], video[4:5].expand(3, -1, -1, -1))
    gen = torch.Generator().manual_seed(0)
    probe = apply_frame_order(video[None], torch.tensor([n]), order, gen)[0]
    # the real frames, in the probe's order, then padded as the loader pads
    order_of_real = [int((video[:n] == f).flatten(1).all(1).nonzero()[0]) for f in probe[:n]]
    assert sorted(order_of_real) == list(range(n)) and order_of_real[-1] != n - 1  # the clip no longer ends on f4
    reordered = video[order_of_real]
    expected = torch.cat([reordered, reordered[-1:].expand(8 - n, -1, -1, -1)])
    assert torch.equal(probe, expected)
    torch.manual_seed(0)
    enc = VideoEncoder(VideoEncoderConfig(image_size=32, num_frames=8, tubelet_size=(2, 16, 16), width=32, depth=2,
                                          heads=2, embed_dim=16)).eval()
    nvf = torch.tensor([n])
    with torch.no_grad():
        assert torch.allclose(enc(probe[None], num_valid_frames=nvf), enc(expected[None], num_valid_frames=nvf))
