"""How much of a video the captioner sees, so that a caption or answer about its first seconds is not taken for one
about all of it.

A captioner reads ``num_frames`` frames at the rate it was trained with, from the first frame (16 frames at 1 FPS:
16 s). A 3-minute EgoSchema clip or a 10-minute file is then captioned, or its questions answered, from its first
16 s. ``longvivit caption`` warns with a count and lists those videos; ``--sampling uniform`` spreads the frames over
the whole video, ``--num-frames`` / ``--fps`` cover more.
"""

from __future__ import annotations

from pathlib import Path

from longvivit.config import PreprocessConfig


def unseen_length(path: str | Path, pre: PreprocessConfig) -> float | None:
    """The length in seconds of a video file that the sampled window does not cover to its end, else ``None``.

    Reads the container's packets only (:func:`~longvivit.data.video_io.scan_packets`, no decoding); a file whose
    length cannot be read counts as covered (its decoding says what is wrong with it).

    Args:
        path: The video file.
        pre: The frames, fps and sampling it is captioned with.
    """
    from longvivit.data.sampling import window_cuts_clip
    from longvivit.data.video_io import scan_packets

    if pre.sampling == "uniform":  # spread over the whole video: nothing to read
        return None
    try:
        duration = scan_packets(path).end
    except Exception:  # noqa: BLE001 - PyAV raises one class per FFmpeg error; decoding reports the file
        return None
    return duration if window_cuts_clip(duration, pre.num_frames, pre.fps, pre.sampling) else None


def cut_warning(count: int, total: int, pre: PreprocessConfig, what: str = "videos") -> str:
    """The warning for ``count`` of ``total`` videos longer than the window of ``pre``."""
    return (f"{count} of {total} {what} are longer than {pre.num_frames} frames at {pre.fps:g} FPS: only their first "
            f"{pre.num_frames / pre.fps:g} s are seen (--sampling uniform spreads the frames over the whole video; "
            "--num-frames or --fps cover more)")
