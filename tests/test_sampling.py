"""frame_indices: fps / uniform modes, start points, padding, odd frame rates."""

from __future__ import annotations

import random

import pytest

from longvivit.data.sampling import frame_indices, window_cuts_clip


def test_fps_mode_from_first_frame_at_native_rate():
    # 30 FPS source sampled at 1 FPS: one frame every 30 source frames from frame 0.
    idx, valid = frame_indices(300, 30.0, 8, fps=1.0)
    assert idx == [0, 30, 60, 90, 120, 150, 180, 210]
    assert valid == 8


def test_fps_mode_rounds_to_nearest_source_frame():
    # 29.97 FPS at 2 FPS: frame k at k/2 s -> round(k * 14.985).
    idx, _ = frame_indices(1000, 29.97, 5, fps=2.0)
    assert idx == [0, 15, 30, 45, 60]  # 14.985 -> 15, 29.97 -> 30, 44.955 -> 45, 59.94 -> 60
    idx, _ = frame_indices(1000, 25.0, 3, fps=2.0)
    assert idx == [0, 13, 25]  # 12.5 rounds half up, not to even


def test_fps_mode_short_video_is_padded_with_last_real_frame():
    # 5 s at 10 FPS = 50 frames; 16 frames at 1 FPS need 15 s: frames 0..40 are real.
    idx, valid = frame_indices(50, 10.0, 16, fps=1.0)
    assert valid == 5
    assert idx[:5] == [0, 10, 20, 30, 40]
    assert idx[5:] == [40] * 11
    assert len(idx) == 16


@pytest.mark.parametrize("num_frames", [16, 128, 256])
def test_long_contexts(num_frames):
    # A 5-minute 30 FPS video covers 256 frames at 1 FPS with room to spare.
    n = 5 * 60 * 30
    for start in ("first", "center", "random"):
        idx, valid = frame_indices(n, 30.0, num_frames, fps=1.0, start=start, rng=random.Random(0))
        assert len(idx) == num_frames and valid == num_frames
        assert all(b - a == 30 for a, b in zip(idx, idx[1:], strict=False))
        assert idx[0] >= 0 and idx[-1] < n
    idx, valid = frame_indices(n, 30.0, num_frames, mode="uniform")
    assert len(idx) == num_frames and valid == num_frames and len(set(idx)) == num_frames


def test_center_start_centres_the_window():
    # 100 frames at 10 FPS, 4 frames at 2 FPS span 15 source frames: slack 84 -> start 42.
    idx, valid = frame_indices(100, 10.0, 4, fps=2.0, start="center")
    assert idx == [42, 47, 52, 57] and valid == 4
    assert idx[0] == 99 - idx[-1]  # same distance to both ends


def test_random_start_stays_in_range_and_is_seeded():
    draws = set()
    for seed in range(50):
        idx, valid = frame_indices(100, 10.0, 4, fps=2.0, start="random", rng=random.Random(seed))
        assert valid == 4 and idx[0] >= 0 and idx[-1] <= 99
        assert [b - a for a, b in zip(idx, idx[1:], strict=False)] == [5, 5, 5]
        draws.add(idx[0])
    assert len(draws) > 10  # really random
    a = frame_indices(100, 10.0, 4, fps=2.0, start="random", rng=random.Random(7))
    b = frame_indices(100, 10.0, 4, fps=2.0, start="random", rng=random.Random(7))
    assert a == b


def test_random_start_on_a_too_short_video_starts_at_zero():
    idx, valid = frame_indices(20, 10.0, 8, fps=1.0, start="random", rng=random.Random(3))
    assert idx[:2] == [0, 10] and valid == 2


def test_uniform_takes_segment_centres():
    # 100 frames into 4 segments of 25: centres 12.5, 37.5, ... floored.
    idx, valid = frame_indices(100, 30.0, 4, mode="uniform")
    assert idx == [12, 37, 62, 87] and valid == 4


def test_uniform_random_jitters_inside_segments():
    for seed in range(20):
        idx, _ = frame_indices(100, 30.0, 4, mode="uniform", start="random", rng=random.Random(seed))
        for k, i in enumerate(idx):
            assert 25 * k <= i < 25 * (k + 1)


def test_uniform_short_video_pads():
    idx, valid = frame_indices(3, 30.0, 8, mode="uniform")
    assert idx == [0, 1, 2, 2, 2, 2, 2, 2] and valid == 3


def test_single_frame_video():
    for mode in ("fps", "uniform"):
        idx, valid = frame_indices(1, 25.0, 16, mode=mode)
        assert idx == [0] * 16 and valid == 1


@pytest.mark.parametrize("bad_fps", [None, 0, 0.0, -5.0, float("nan")])
def test_missing_native_fps_falls_back_to_30_with_warning(bad_fps):
    with pytest.warns(RuntimeWarning, match="30"):
        idx, valid = frame_indices(200, bad_fps, 4, fps=1.0)
    assert idx == [0, 30, 60, 90] and valid == 4


def test_invalid_arguments():
    with pytest.raises(ValueError):
        frame_indices(0, 30.0, 4)
    with pytest.raises(ValueError):
        frame_indices(10, 30.0, 0)
    with pytest.raises(ValueError):
        frame_indices(10, 30.0, 4, mode="dense")
    with pytest.raises(ValueError):
        frame_indices(10, 30.0, 4, start="middle")
    with pytest.raises(ValueError):
        frame_indices(10, 30.0, 4, fps=0.0)


def test_the_last_frame_counts_while_it_is_shown():
    # 4 frames at 0.5 FPS last 8 s: 1 FPS sampling has 8 real frames. The last sample (7 s, nearest to frame
    # 3.5) was read as past the end: 7 valid.
    idx, valid = frame_indices(4, 0.5, 16, fps=1.0)
    assert valid == 8 and idx[:8] == [0, 1, 1, 2, 2, 3, 3, 3]
    assert frame_indices(20, 10.0, 6, fps=2.0)[1] == 4  # 2 s: 0, 0.5, 1, 1.5; the sample at 2.0 s is past it


def test_a_window_cuts_a_clip_only_when_a_further_sample_would_fit():
    assert not window_cuts_clip(16.0, 16, 1.0, "fps")  # frames at 0..15 s, each shown for 1 s: all of it
    assert window_cuts_clip(16.9, 16, 1.0, "fps")  # the frame_indices would take at 16 s is left out
    assert frame_indices(int(16.9 * 25), 25.0, 17, 1.0)[1] == 17  # (it is a real frame)
    assert window_cuts_clip(600.0, 256, 1.0, "fps") and not window_cuts_clip(600.0, 256, 1.0, "uniform")
    assert not window_cuts_clip(None, 16, 1.0, "fps")
