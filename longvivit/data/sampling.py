"""Which source frames a clip is made of.

One function, :func:`frame_indices`, shared by the training loader, evaluation, the benchmark and
the captioning CLI, so that "16 frames at 1 FPS" means the same frames everywhere.
"""

from __future__ import annotations

import bisect
import logging
import math
import random
import warnings
from collections.abc import Sequence
from itertools import pairwise
from typing import Literal

FALLBACK_FPS = 30.0
log = logging.getLogger(__name__)

SamplingMode = Literal["fps", "uniform"]
StartMode = Literal["first", "random", "center"]


def _nearest(x: float) -> int:
    # Round half up: Python's round() is banker's rounding, which would make 0.5 and 1.5 both even.
    return int(math.floor(x + 0.5))


def variable_timestamps(timestamps: Sequence[float], native_fps: float | None) -> list[float] | None:
    """The frame times relative to the first, when they are not those of a constant ``native_fps``; else None.

    Screen recordings, phone and browser captures and edited videos often have variable frame rates: their
    frames are not at ``i / native_fps`` (the container's average rate), so sampling by index would take frames
    from the wrong times (a clip with ten frames in its first second and one a second after that, sampled at
    1 FPS by index, ends after two seconds). Intervals within half a frame of the nominal one, with no drift
    over the clip, count as constant: those videos keep the index arithmetic.

    Args:
        timestamps: Presentation time (seconds) of each decoded frame, in order.
        native_fps: The container's (average) frame rate.

    Returns:
        ``timestamps - timestamps[0]`` for a variable-rate video; ``None`` for a constant-rate one, for fewer
        than two frames, and for timestamps that are not usable times (NaN, decreasing).
    """
    ts = [float(t) for t in timestamps]
    if len(ts) < 2 or not all(math.isfinite(t) for t in ts) or any(b < a for a, b in pairwise(ts)):
        return None
    rel = [t - ts[0] for t in ts]
    if native_fps is None or not math.isfinite(native_fps) or native_fps <= 0:
        return rel
    nominal = 1.0 / native_fps
    jitter = max(abs((b - a) - nominal) for a, b in pairwise(rel))
    drift = abs(rel[-1] - (len(rel) - 1) * nominal)
    return rel if jitter > 0.5 * nominal or drift > nominal else None


def check_sampling_args(fps: float | None, sampling: SamplingMode | None) -> None:
    """Raises ValueError for a rate together with ``sampling="uniform"``, which has no rate."""
    if fps is not None and sampling == "uniform":
        raise ValueError("--fps is the rate of --sampling fps; --sampling uniform spreads the frames over each clip "
                         "and has no rate: give one of the two")


def requested_sampling(
    fps: float | None, sampling: SamplingMode | None, trained: SamplingMode
) -> SamplingMode:
    """The sampling mode of an inference run whose user may have given ``--fps`` and/or ``--sampling``.

    Unset values follow the model's ``trained`` mode, except that a rate asks for ``"fps"`` sampling: kept
    ``"uniform"``, the rate would be recorded and have no effect. A mode other than the trained one is logged
    as a warning.

    Args:
        fps: The rate the user asked for, or ``None``.
        sampling: The mode the user asked for, or ``None``.
        trained: The mode the model was trained with.

    Raises:
        ValueError: For a rate together with ``sampling="uniform"``, which has no rate.
    """
    check_sampling_args(fps, sampling)
    mode = sampling if sampling is not None else "fps" if fps is not None else trained
    if mode != trained:
        how = "uniformly" if mode == "uniform" else "at the export's rate" if fps is None else f"at {fps:g} FPS"
        log.warning("sampling frames %s, not %s as the model was trained", how, trained)
    return mode


def window_cuts_clip(duration: float | None, num_frames: int, fps: float, mode: SamplingMode) -> bool:
    """Whether a clip of ``duration`` seconds holds more than the window sampled from it.

    ``"fps"`` mode takes frame ``k`` at ``k / fps`` while that is inside the clip (:func:`frame_indices`): the clip
    is cut when a further frame, at ``num_frames / fps``, would still be inside it. ``"uniform"`` spreads the frames
    over the whole clip and cuts nothing; ``None`` (unknown duration) cuts nothing.
    """
    return mode == "fps" and duration is not None and num_frames / fps < duration - 1e-6


def frame_indices(
    num_source_frames: int,
    native_fps: float | None,
    num_frames: int,
    fps: float = 1.0,
    mode: SamplingMode = "fps",
    start: StartMode = "first",
    rng: random.Random | None = None,
    timestamps: Sequence[float] | None = None,
) -> tuple[list[int], int]:
    """Pick ``num_frames`` source frame indices for one clip.

    ``"fps"`` mode takes frames at ``fps`` frames per second of video time, starting at a point
    chosen by ``start``: sampled frame ``k`` sits at time ``t0 + k / fps`` and maps to the nearest
    source frame ``round((t0 + k / fps) * native_fps)``. ``"first"`` starts at the first frame (the
    paper's evaluation protocol), ``"center"`` centres the window in the clip, ``"random"`` draws the
    start uniformly among positions where the whole window fits (or 0 when it never fits).

    ``"uniform"`` mode spreads ``num_frames`` evenly over the whole clip: the clip is cut into
    ``num_frames`` equal segments and the centre frame of each is taken. With ``start="random"`` a
    random frame inside each segment is taken instead (a cheap temporal jitter for training).

    With ``timestamps`` (a variable-rate video, see :func:`variable_timestamps`) the same rules hold in time:
    sampled frame ``k`` is the source frame whose timestamp is nearest to ``t0 + k / fps``, the video lasts
    until a typical frame interval after its last frame, and ``"uniform"`` takes the frames nearest to the
    centres of equal time segments.

    When the clip holds fewer frames than the window needs (``"fps"``: the window runs past the
    end; ``"uniform"``: fewer source frames than ``num_frames``), the real indices are followed
    by copies of the last real index, and ``num_valid`` counts the real ones. Padding always
    comes last, so ``indices[:num_valid]`` are the real frames, in increasing order.

    Args:
        num_source_frames: Frames in the decoded video (>= 1).
        native_fps: Frame rate of the video. ``None``, 0, negative or NaN fall back to 30 FPS
            with a warning (some containers do not store a rate).
        num_frames: Frames wanted (e.g. 16, 128, 256).
        fps: Sampling rate in ``"fps"`` mode.
        mode: ``"fps"`` or ``"uniform"``.
        start: ``"first"``, ``"random"`` or ``"center"``.
        rng: Source of randomness for ``start="random"``; a fresh unseeded one when ``None``.
        timestamps: Frame times in seconds from the first frame (``num_source_frames`` of them, increasing)
            for a variable-rate video; ``None`` samples by index at ``native_fps``.

    Returns:
        ``(indices, num_valid)``: ``len(indices) == num_frames``, each in ``[0, num_source_frames)``.

    Raises:
        ValueError: On an empty video or invalid arguments.
    """
    if num_source_frames < 1:
        raise ValueError(f"a video needs at least one frame, got num_source_frames={num_source_frames}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if mode not in ("fps", "uniform"):
        raise ValueError(f"mode must be 'fps' or 'uniform', got {mode!r}")
    if start not in ("first", "random", "center"):
        raise ValueError(f"start must be 'first', 'random' or 'center', got {start!r}")
    if start == "random" and rng is None:
        rng = random.Random()

    n = num_source_frames
    if timestamps is not None:
        if len(timestamps) != n:
            raise ValueError(f"{len(timestamps)} timestamps for {n} frames")
        return _indices_in_time([float(t) for t in timestamps], num_frames, fps, mode, start, rng)
    if mode == "uniform":
        if n < num_frames:
            real = list(range(n))
        else:
            seg = n / num_frames
            if start == "random":
                # Any frame inside segment k: [k*seg, (k+1)*seg) floored, never past the segment.
                real = [min(n - 1, int(math.floor(k * seg + rng.random() * seg))) for k in range(num_frames)]
            else:
                real = [min(n - 1, int(math.floor((k + 0.5) * seg))) for k in range(num_frames)]
        return _pad(real, num_frames)

    if fps <= 0 or not math.isfinite(fps):
        raise ValueError(f"fps must be a positive number, got {fps}")
    if native_fps is None or not math.isfinite(native_fps) or native_fps <= 0:
        warnings.warn(
            f"video has no usable frame rate ({native_fps!r}); assuming {FALLBACK_FPS:g} FPS",
            RuntimeWarning,
            stacklevel=2,
        )
        native_fps = FALLBACK_FPS
    step = native_fps / fps  # source frames between two sampled frames
    span = (num_frames - 1) * step  # source frames from the first to the last sampled frame
    slack = max(0.0, (n - 1) - span)  # how far the window can move and still fit
    if start == "first":
        offset = 0.0
    elif start == "center":
        offset = slack / 2
    else:
        offset = rng.random() * slack
    real = []
    for k in range(num_frames):
        pos = offset + k * step  # in source frames
        if pos >= n - 1e-6:
            break  # past the end of the last frame's display: the rest is padding
        real.append(min(_nearest(pos), n - 1))  # the last frame is nearest all the while it is shown
    return _pad(real, num_frames)


def _indices_in_time(
    ts: list[float], num_frames: int, fps: float, mode: SamplingMode, start: StartMode, rng: random.Random | None
) -> tuple[list[int], int]:
    """:func:`frame_indices` for frames at times ``ts`` (seconds from the first frame, increasing)."""
    n = len(ts)
    gaps = sorted(b - a for a, b in pairwise(ts)) or [0.0]
    half = gaps[len(gaps) // 2] / 2  # half a typical frame interval: a frame is on screen that long around it

    def nearest(t: float) -> int:
        j = bisect.bisect_left(ts, t)
        if j == n:
            return n - 1
        return j if j == 0 or ts[j] - t <= t - ts[j - 1] else j - 1

    if mode == "uniform":
        if n < num_frames:
            return _pad(list(range(n)), num_frames)
        seg = (ts[-1] + 2 * half) / num_frames  # the clip lasts from 0 to half an interval after its last frame
        jitter = [rng.random() if start == "random" else 0.5 for _ in range(num_frames)]
        return _pad([nearest(k * seg + u * seg) for k, u in enumerate(jitter)], num_frames)
    if fps <= 0 or not math.isfinite(fps):
        raise ValueError(f"fps must be a positive number, got {fps}")
    span = (num_frames - 1) / fps
    slack = max(0.0, ts[-1] - span)
    offset = 0.0 if start == "first" else slack / 2 if start == "center" else rng.random() * slack
    real = []
    for k in range(num_frames):
        t = offset + k / fps
        if real and t >= ts[-1] + 2 * half - 1e-6:
            break  # past the end of the last frame's display (a typical interval): the rest is padding
        real.append(nearest(t))
    return _pad(real, num_frames)


def _pad(real: list[int], num_frames: int) -> tuple[list[int], int]:
    """Repeat the last real index up to ``num_frames``; ``real`` is never empty here."""
    num_valid = len(real)
    return real + [real[-1]] * (num_frames - num_valid), num_valid
