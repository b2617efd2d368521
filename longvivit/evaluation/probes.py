"""Temporal-dependence probes: run the same evaluation with the frame order destroyed.

If a model's retrieval barely moves when its frames are shuffled, reversed or replaced by one frame, it
is not using time.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from longvivit.models.masking import Generators, mask_noise

FrameOrder = Literal["original", "shuffled", "reversed", "single"]
FRAME_ORDERS: tuple[str, ...] = get_args(FrameOrder)


def _pad_with_last(index: Tensor, num_valid: Tensor, valid: Tensor) -> Tensor:
    """Padding positions of ``index`` (B, T) point at the re-ordered clip's last real frame.

    The loader pads a clip with copies of its last frame, and a tubelet step that starts on a real frame keeps its
    padding frames (``masking.valid_steps``): with an odd frame count the last step is half padding. Left at the
    original last frame, that half would show the re-ordered clip's true last frame (the end of the shuffled or
    reversed clip would carry the original ending).
    """
    last = index.gather(1, (num_valid - 1)[:, None])  # (B, 1)
    return torch.where(valid, index, last)


def _frame_index(num_valid: Tensor, num_frames: int, order: str, generator: Generators) -> Tensor:
    """(B, T) source frame index for every output position."""
    batch = num_valid.shape[0]
    device = num_valid.device
    t = torch.arange(num_frames, device=device).expand(batch, num_frames)  # (B, T)
    valid = t < num_valid[:, None]  # (B, T)
    if order == "original":
        return t
    if order == "reversed":
        return _pad_with_last(torch.where(valid, num_valid[:, None] - 1 - t, t), num_valid, valid)
    if order == "single":
        # Middle valid frame (lower middle for an even count), copied into every position.
        return ((num_valid - 1) // 2)[:, None].expand(batch, num_frames)
    if order == "shuffled":
        # Random keys in [0, 1) for valid frames and 2 for padding: sorting them gives a uniform permutation
        # of the valid frames followed by the padding, which the stable sort keeps in its original order.
        keys = mask_noise(batch, num_frames, generator, device).masked_fill(~valid, 2.0)  # (B, T)
        return _pad_with_last(keys.sort(dim=1, stable=True).indices, num_valid, valid)
    raise ValueError(f"order must be one of {FRAME_ORDERS}, got {order!r}")


def apply_frame_order(
    video: Tensor,
    num_valid_frames: Tensor | None = None,
    order: FrameOrder = "original",
    generator: Generators = None,
) -> Tensor:
    """Reorder the frames of a batch of videos for a temporal probe.

    Only the first ``num_valid_frames[b]`` frames of sample ``b`` are real; the rest is padding. Only the real
    frames are re-ordered, and the padding then repeats the re-ordered clip's last frame, as the loader pads a
    clip: the probe of a clip equals the clip re-ordered first and then padded (with an odd frame count the last
    tubelet step holds one padding frame, which the encoder sees).

    * ``"original"``: unchanged (a copy).
    * ``"shuffled"``: a uniformly random permutation of the valid frames, drawn independently per sample
      from ``generator``, or from each sample's own generator when one per sample is given (deterministic
      for seeded generators). It may be the identity, which is likely for very short clips.
    * ``"reversed"``: valid frames in reverse order.
    * ``"single"``: the middle valid frame (index ``(n - 1) // 2``) repeated over *all* T positions, so the
      clip is static whichever ``num_valid_frames`` the model is later given.

    Args:
        video: (B, T, ...) frames, e.g. (B, T, C, H, W).
        num_valid_frames: (B,) number of real frames per sample, in [1, T]; ``None`` means all T.
        order: One of ``"original"``, ``"shuffled"``, ``"reversed"``, ``"single"``.
        generator: Random source for ``"shuffled"``, or one per sample; on the CPU or on ``video``'s device.

    Returns:
        A new tensor shaped like ``video``.
    """
    if video.ndim < 2:
        raise ValueError(f"video must be (B, T, ...), got shape {tuple(video.shape)}")
    batch, num_frames = video.shape[:2]
    if num_valid_frames is None:
        num_valid = torch.full((batch,), num_frames, dtype=torch.long, device=video.device)
    else:
        num_valid = torch.as_tensor(num_valid_frames, device=video.device).long().reshape(-1)
    if num_valid.shape != (batch,):
        raise ValueError(f"num_valid_frames must have shape ({batch},), got {tuple(num_valid.shape)}")
    if batch and (num_valid.min() < 1 or num_valid.max() > num_frames):
        raise ValueError(f"num_valid_frames must lie in [1, {num_frames}], got {num_valid.tolist()}")
    index = _frame_index(num_valid, num_frames, order, generator)  # (B, T)
    rows = torch.arange(batch, device=video.device)[:, None]  # (B, 1)
    return video[rows, index]  # (B, T, ...): whole frames picked per sample
