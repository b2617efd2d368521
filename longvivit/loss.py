"""Symmetric InfoNCE (video/image <-> text) with negatives gathered from every rank.

The model returns normalised features and the logit scale; this module owns the gather (the open_clip
``model.py`` / ``loss.py`` split).

Gradient scaling under DDP, with W ranks each holding an equal batch of B pairs:

* ``local_loss=True``: rank r scores its B local rows against all W*B columns; its loss is the mean over
  those rows, so the mean of the W rank losses equals the loss of one process on the concatenated batch.
  The gather's backward sums gradients over ranks, so each rank's feature gradient is that of the *sum* of
  rank losses, i.e. W x the gradient of the global loss; DDP then averages parameter gradients over the W
  ranks, which cancels the factor: the update equals single-process training on the global batch.
* ``local_loss=False``: every rank builds the full (W*B, W*B) matrix and returns the global loss itself;
  the summed backward again gives W x its gradient per rank and DDP's average cancels it.

Batches must have the same size on every rank (``all_gather`` needs equal shapes; drop the last ragged
batch in the loader).

The same clip can sit twice in a global batch: training shards are resampled independently per rank and worker,
so with few shards for many streams (a fine-tuning set of 9 shards on 8 GPUs x 8 workers: ~36 of 512 clips a
step) ranks read the same shard at once. Given ``sample_ids``, a row's other copies (and their captions, true
matches) are left out of its softmax instead of being pushed away as negatives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longvivit.distributed import all_gather_with_grad, rank_and_world_size


def contrastive_accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """Top-1 accuracy of a (N, M) score matrix whose row i should pick column ``labels[i]``."""
    return (logits.argmax(dim=-1) == labels).float().mean()


def sample_ids(
    keys: Sequence[str], shards: Sequence[str] | None = None, device: torch.device | str | None = None
) -> Tensor:
    """(B,) int64 ids of samples (64 bits of a BLAKE2b digest: equal on every rank and run).

    A sample is its shard and its key: keys alone repeat across datasets (make_shards numbers each manifest's
    lines from 1, video2dataset its samples from 0), and two clips of one key are no copies of each other.

    Args:
        keys: Sample keys (webdataset ``__key__``), one per row.
        shards: The shard URL each sample was read from (``None``: the keys alone name the samples).
        device: Device of the result; the ids are hashed on the host and copied without waiting on the device.
    """
    names = keys if shards is None else [f"{s}\0{k}" for s, k in zip(shards, keys, strict=True)]
    digests = (hashlib.blake2b(n.encode(), digest_size=8).digest() for n in names)
    ids = torch.tensor([int.from_bytes(d, "little", signed=True) for d in digests], dtype=torch.int64)
    return ids if device is None else ids.to(device, non_blocking=True)


class NCELoss(nn.Module):
    """Symmetric InfoNCE: ``(CE(s * a @ b.T, y) + CE(s * b @ a.T, y)) / 2`` over the global batch.

    Args:
        local_loss: Score local rows against global columns (memory O(B * W*B)) rather than the full global
            matrix (O((W*B)^2)). Same training signal under DDP; only the logged per-rank value differs
            (local: mean over this rank's rows; global: the whole-batch loss on every rank).
    """

    def __init__(self, local_loss: bool = True) -> None:
        super().__init__()
        self.local_loss = local_loss

    def forward(
        self,
        video_features: Tensor,
        text_features: Tensor,
        logit_scale: Tensor | float,
        output_dict: bool = False,
        extra_video_features: Tensor | None = None,
        extra_text_features: Tensor | None = None,
        extra_text_valid: Tensor | None = None,
        sample_ids: Tensor | None = None,
    ) -> Tensor | dict[str, Tensor]:
        """Contrastive loss of paired features; row i of both inputs is a positive pair.

        Args:
            video_features: (B, D) video or image features, L2-normalised (by the model).
            text_features: (B, D) caption features, L2-normalised.
            logit_scale: 1/temperature, already exponentiated and clamped.
            output_dict: Also return top-1 accuracies for logging.
            extra_video_features: (K*B, D) videos that match no caption (e.g. :func:`order_negatives`),
                gathered from every rank like the rest and appended as text-to-video negative columns.
                Video-to-text rows are unchanged.
            extra_text_features: (M, D) captions that match no video (e.g. captions with their events
                re-ordered, :func:`longvivit.negatives.reorder_caption`), appended as video-to-text negative
                columns, gathered from every rank (M must be equal across ranks).
            extra_text_valid: (M,) bool; False columns are left out of the softmax (a caption that could not
                be re-ordered holds its slot so that shapes match across ranks).
            sample_ids: (B,) int64 id of each row's sample (:func:`sample_ids`), gathered from every
                rank: columns of the same sample as a row, other than its own pair, are left out of that row's
                softmax in both directions (a duplicated clip is not its own negative).

        Returns:
            The scalar loss, or ``{"loss", "v2t_acc", "t2v_acc"}`` (accuracies over this rank's rows,
            detached).
        """
        if video_features.shape != text_features.shape:
            raise ValueError(f"feature shapes differ: {tuple(video_features.shape)} vs {tuple(text_features.shape)}")
        rank, _ = rank_and_world_size()
        batch = video_features.shape[0]
        all_video = all_gather_with_grad(video_features)  # (W*B, D)
        all_text = all_gather_with_grad(text_features)  # (W*B, D)
        # text-to-video columns: the paired videos first (labels index them), then the extra negatives
        columns = all_video
        if extra_video_features is not None:
            columns = torch.cat([all_video, all_gather_with_grad(extra_video_features)])  # (W*B + W*K*B, D)
        # video-to-text columns likewise: the paired captions, then the extra ones (masked where invalid)
        text_columns, masked = all_text, None
        if extra_text_features is not None:
            text_columns = torch.cat([all_text, all_gather_with_grad(extra_text_features)])  # (W*B + W*M, D)
            if extra_text_valid is not None:
                valid = all_gather_with_grad(extra_text_valid.to(all_text.dtype)) > 0.5  # (W*M,)
                masked = torch.cat([valid.new_zeros(all_text.shape[0]), ~valid])  # (W*B + W*M,)
        if self.local_loss:
            logits_v2t = logit_scale * video_features @ text_columns.T  # (B, W*B [+ W*M])
            logits_t2v = logit_scale * text_features @ columns.T  # (B, W*B [+ W*K*B])
            # local row i is global row rank*B + i: its positive sits in that column
            labels = torch.arange(batch, device=video_features.device) + rank * batch
        else:
            logits_v2t = logit_scale * all_video @ text_columns.T  # (W*B, W*B [+ W*M])
            logits_t2v = logit_scale * all_text @ columns.T  # (W*B, W*B [+ W*K*B])
            labels = torch.arange(all_video.shape[0], device=video_features.device)
        if masked is not None:
            logits_v2t = logits_v2t.masked_fill(masked, float("-inf"))
        if sample_ids is not None:
            all_ids = all_gather_with_grad(sample_ids)  # (W*B,)
            row_ids = sample_ids if self.local_loss else all_ids
            copies = row_ids[:, None] == all_ids[None, :]  # (rows, W*B)
            copies[torch.arange(len(labels), device=labels.device), labels] = False  # the pair itself stays
            # extra negative columns come after the paired ones and are never copies
            v2t = F.pad(copies, (0, logits_v2t.shape[1] - copies.shape[1]), value=False)
            t2v = F.pad(copies, (0, logits_t2v.shape[1] - copies.shape[1]), value=False)
            logits_v2t = logits_v2t.masked_fill(v2t, float("-inf"))
            logits_t2v = logits_t2v.masked_fill(t2v, float("-inf"))
        loss = (F.cross_entropy(logits_v2t, labels) + F.cross_entropy(logits_t2v, labels)) / 2
        if not output_dict:
            return loss
        with torch.no_grad():
            return {
                "loss": loss,
                "v2t_acc": contrastive_accuracy(logits_v2t, labels),
                "t2v_acc": contrastive_accuracy(logits_t2v, labels),
            }
