"""Frozen-encoder token grid with random tubelet masking, and the temporal mean pool over it.

Masking (paper: 30% of tubelets dropped in video-to-text training *and* inference) and the temporal mean
pool meet here. Masked tubelets are dropped before the encoder, as in pre-training; the visible outputs are
scattered back onto the (T', H'*W') grid, and each spatial position is averaged over the tubelet steps where
it is visible (and that hold real frames: steps made only of padding frames are left out). A position with
no visible step gets a zero vector and ``keep=False``; the resampler then excludes it from its keys instead
of reading a fake token. With 30% masking and T' = 8 that happens with probability 0.3^8 ≈ 7e-5 per
position; with a single tubelet step it happens to 30% of the positions.
"""

from __future__ import annotations

from torch import Tensor

from longvivit.models.layers import masked_mean
from longvivit.models.masking import Generators
from longvivit.models.video_encoder import VideoEncoder


def encode_grid(
    encoder: VideoEncoder,
    video: Tensor,
    mask_ratio: float = 0.0,
    generator: Generators = None,
    num_valid_frames: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Encoder features on the space-time grid, with masked tubelets dropped before the transformer.

    The backbone masks as it does in pre-training (:meth:`VideoEncoder.forward_grid`): random tubelets for the
    joint encoder, the same spatial positions in every step for the factorized one, each frame on its own for
    the frame-level one (whose grid has a step per frame).

    Args:
        encoder: The (frozen) video encoder.
        video: (B, T, 3, H, W) normalised frames.
        mask_ratio: Fraction of tubelets dropped per sample, in [0, 1).
        generator: Optional RNG for reproducible masks (draws the same mask as
            ``encoder.forward_features(video, mask_ratio, generator)`` from the same RNG state), or one per video.
        num_valid_frames: Optional (B,) real frames per clip: padding steps are hidden from the encoder's
            attention, masked first, and not visible in the grid.

    Returns:
        ``(grid, visible)``: (B, T', H'*W', width) features (zeros where masked) and the (B, T', H'*W')
        bool visibility (``False`` where masked or padding).
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    return encoder.forward_grid(video, mask_ratio, generator, num_valid_frames)


def temporal_mean_pool(grid: Tensor, visible: Tensor) -> tuple[Tensor, Tensor]:
    """Mean over tubelet steps of each spatial position, counting only the visible steps (masked and padding steps
    are not visible: :func:`encode_grid` with ``num_valid_frames``).

    Args:
        grid: (B, T', S, C) features, S = H'*W'.
        visible: (B, T', S) bool, ``True`` where a token of a real frame was encoded.

    Returns:
        ``(pooled, keep)``: (B, S, C) features (zeros where nothing was visible) and (B, S) bool.
        The token count S is fixed whatever the video length.
    """
    return masked_mean(grid, visible, dim=1), visible.any(dim=1)  # (B, S, C), (B, S)
