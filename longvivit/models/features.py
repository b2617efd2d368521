"""Features of a video for fusing encoders: the token grid, the pooled embedding and the time of every step.

:meth:`VideoEncoder.extract_features <longvivit.models.video_encoder.VideoEncoder.extract_features>` is the
public entry; the work is here, apart from the model's forward.
"""

from __future__ import annotations

import torch
from einops import rearrange

from longvivit.models.video_encoder import VideoEncoder


def extract_features(
    encoder: VideoEncoder,
    video: torch.Tensor,
    fps: float | None = None,
    start: float = 0.0,
    num_valid_frames: torch.Tensor | None = None,
) -> dict[str, torch.Tensor | tuple[int, int, int]]:
    """See :meth:`VideoEncoder.extract_features`; ``encoder`` is the encoder whose features are taken."""
    if fps is None:
        if encoder.preprocess is not None and encoder.preprocess.sampling == "uniform":
            raise ValueError("the export samples frames uniformly over each clip: pass fps=num_frames/seconds")
        fps = encoder.preprocess.fps if encoder.preprocess is not None else 1.0
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    out: dict[str, torch.Tensor | tuple[int, int, int]] = {}
    own = type(encoder)
    gh, gw = encoder.cfg.grid_size
    if own.forward is VideoEncoder.forward:
        # One pass: the embedding pools the very tokens the grid is cut from.
        tokens, _, valid = encoder._run(video, True, 0.0, None, num_valid_frames)  # (B, [1 +] T'*H'*W', width)
        out["embedding"] = encoder.head(encoder.pool(tokens, valid))
        if encoder.cls_token is not None:
            out["cls"], tokens = tokens[:, 0], tokens[:, 1:]
        grid = rearrange(tokens, "b (t h w) c -> b t h w c", h=gh, w=gw)  # (B, T', H', W', width)
    else:  # backbones with their own pooling path (frame-level ImageViT)
        flat, _ = encoder.forward_grid(video, 0.0, None, num_valid_frames)  # (B, T, H'*W', width)
        grid = rearrange(flat, "b t (h w) c -> b t h w c", h=gh, w=gw)  # (B, T, H', W', width)
        out["embedding"] = encoder(video, mask_ratio=0.0, num_valid_frames=num_valid_frames)
    steps = grid.shape[1]
    step_valid = encoder.step_validity(video, num_valid_frames)  # (B, T') or None
    out["valid"] = step_valid if step_valid is not None else torch.ones(
        video.shape[0], steps, dtype=torch.bool, device=video.device)
    stride = video.shape[1] // steps  # frames per temporal step: the tubelet's t, or 1 per frame
    out["tokens"], out["grid"] = grid, tuple(grid.shape[1:4])
    out["tubelet"] = (stride, *encoder.cfg.patch_size)
    out["timestamps"] = start + torch.arange(steps, dtype=torch.float32, device=video.device) * (stride / fps)
    return out
