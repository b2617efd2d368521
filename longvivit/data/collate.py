"""Decoded samples to a batch: the text tower's tokenizer and the collate function of
:class:`~longvivit.data.shards.ShardDataset`."""

from __future__ import annotations

import random
from typing import Any

import torch

from longvivit.data.decode import Modality
from longvivit.loss import sample_ids


def load_tokenizer(name_or_path: str | None = None):
    """The HF tokenizer of the text tower (``None``: the packaged all-MiniLM-L6-v2), loaded offline-safe."""
    from transformers import AutoTokenizer

    from longvivit.paths import resolve_text_model

    return AutoTokenizer.from_pretrained(resolve_text_model(name_or_path))


def num_truncated(tokenizer: Any, texts: list[str], attention_mask: torch.Tensor,
                  max_length: int) -> int:
    """How many of ``texts`` lost tokens to the ``max_length`` budget when tokenised with truncation.

    Only the rows that filled the budget are tokenised again (without truncation), so the count costs almost
    nothing when captions are shorter than the budget, as they usually are.

    Args:
        tokenizer: The tokenizer that produced ``attention_mask``.
        texts: The texts, in the order of the rows.
        attention_mask: (N, L) mask of the truncated tokenisation.
        max_length: The budget it was truncated to, special tokens included.

    Returns:
        The number of texts longer than the budget.
    """
    full = [t for t, n in zip(texts, attention_mask.sum(dim=1).tolist(), strict=True) if n >= max_length]
    if not full:
        return 0
    lengths = tokenizer(full, truncation=False, verbose=False)["input_ids"]
    return sum(len(ids) > max_length for ids in lengths)


def collate(
    samples: list[dict[str, Any]],
    modality: Modality,
    tokenizer: Any = None,
    max_text_length: int = 64,
    train: bool = True,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """Stack decoded samples into a batch.

    Train batches carry one caption per sample, drawn at random (``captions[i] == [chosen]``) and
    tokenised as ``input_ids``/``attention_mask`` (B, L). Eval batches keep every caption; with a
    tokenizer they also carry the first caption as ``input_ids`` (for a validation loss) and all
    captions flattened as ``all_input_ids``/``all_attention_mask`` (N_captions, L) with
    ``caption_sample`` (N_captions,) giving each caption's row in the batch.

    Returns:
        ``{"key": [str], "sample_id": (B,) int64, "video": (B, T, 3, H, W) | "image": (B, 3, H, W),
        "num_valid_frames": (B,) long, "captions": [[str]], "modality": str, ...}``; ``sample_id`` names each sample
        by its shard and key (:func:`~longvivit.loss.sample_ids`; hashed here, off the training step); text tensors
        are padded to the longest caption, at most ``max_text_length`` tokens; ``truncated_captions`` counts the
        captions cut to that budget, ``cut_clips`` the videos longer than the frame window (see
        :func:`~longvivit.data.sampling.window_cuts_clip`), ``padded_clips`` those shorter than it (a host count: a
        step without any passes no ``num_valid_frames`` to the encoder, which keeps its unmasked attention).
    """
    batch: dict[str, Any] = {
        "key": [s["key"] for s in samples],
        "sample_id": sample_ids([s["key"] for s in samples], [s.get("shard", "") for s in samples]),
        modality: torch.stack([s[modality] for s in samples]),
        "num_valid_frames": torch.tensor([s["num_valid_frames"] for s in samples], dtype=torch.long),
        "modality": modality,
        "cut_clips": sum(bool(s.get("cut")) for s in samples),  # clips longer than the sampled window
    }
    if modality == "video":
        window = batch["video"].shape[1]
        batch["padded_clips"] = sum(int(s["num_valid_frames"]) < window for s in samples)  # last frame repeated
    if train:
        rng = rng or random.Random()
        captions = [[rng.choice(s["captions"])] for s in samples]
    else:
        captions = [list(s["captions"]) for s in samples]
    batch["captions"] = captions
    if tokenizer is not None:

        def tok(texts: list[str]) -> dict[str, torch.Tensor]:
            # Pad to the longest caption of the batch, not to max_length: captions are usually far shorter
            # than the budget and the text tower's cost grows with the padded length. Only features are
            # gathered across ranks, so token shapes need not match between them.
            return tokenizer(
                texts, padding="longest", truncation=True, max_length=max_text_length, return_tensors="pt"
            )

        firsts = [c[0] for c in captions]
        first = tok(firsts)
        batch["input_ids"], batch["attention_mask"] = first["input_ids"], first["attention_mask"]
        if train:  # counted so that a budget too small for the data is said, not silently paid for in accuracy
            batch["truncated_captions"] = num_truncated(tokenizer, firsts, first["attention_mask"], max_text_length)
        else:
            flat = [c for caps in captions for c in caps]
            every = tok(flat)
            batch["truncated_captions"] = num_truncated(tokenizer, flat, every["attention_mask"], max_text_length)
            batch["all_input_ids"], batch["all_attention_mask"] = every["input_ids"], every["attention_mask"]
            batch["caption_sample"] = torch.tensor(
                [i for i, caps in enumerate(captions) for _ in caps], dtype=torch.long
            )
    return batch


def valid_frame_counts(batch: dict[str, Any]) -> torch.Tensor | None:
    """A video batch's ``num_valid_frames`` as the encoder takes them, or ``None`` when :func:`collate` counted no
    padded clip: the encoder then keeps its unmasked attention without reading the counts back from the device
    (see :meth:`~longvivit.models.video_encoder.VideoEncoder.step_validity`). A batch without the count (built by
    hand) passes its counts."""
    return batch.get("num_valid_frames") if batch.get("padded_clips", 1) else None
