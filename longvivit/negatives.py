"""Hard negatives for temporal order: re-ordered clips and captions with their events swapped.

A caption states events in order, so the clip played backwards or with its halves swapped contains the same
frames but should not match it, and "B, then A" should not describe the clip of "A, then B". Scoring these
as extra negatives (``NCELoss(extra_video_features=..., extra_text_features=...)``) makes the contrastive
task need temporal order on both towers: a bag-of-frames video model cannot separate a clip from its
re-orderings, and a bag-of-words text model cannot separate a caption from its clause swap (the "test of
time" recipe of Bagad et al., 2023).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor

ORDER_NEGATIVES = ("reverse", "rotate")


def order_negatives(
    video: Tensor, kinds: Sequence[str], step: int = 1, num_valid_frames: Tensor | None = None
) -> Tensor:
    """Re-ordered copies of each clip, used as hard text-to-video negatives (the "test of time" idea).

    A caption states events in order, so the clip played backwards (``reverse``: "moves left" becomes
    "moves right", "A then B" becomes "inverse B then inverse A") or with its halves swapped (``rotate``:
    frames rolled by half the clip, "A then B" becomes "B then A") contains the same frames but should not
    match it. Scoring captions against these teaches both towers temporal order; a bag-of-frames model
    cannot separate a clip from its re-orderings.

    Args:
        video: (B, T, C, H, W) frames.
        kinds: Any of :data:`ORDER_NEGATIVES`, in the order their copies are stacked.
        step: Roll in multiples of this many frames (the tubelet depth), so tubelets stay intact.
        num_valid_frames: Optional (B,) real frames per clip: only those are re-ordered, the padding after
            them stays in place (so a copy is padded like its clip, and the same ``num_valid_frames`` applies).

    Returns:
        (len(kinds) * B, T, C, H, W) re-ordered clips, kind-major.
    """
    b, t = video.shape[:2]
    nvf = torch.full((b,), t, device=video.device) if num_valid_frames is None else num_valid_frames.to(video.device)
    nvf = nvf.long().clamp(1, t)[:, None]  # (B, 1)
    pos = torch.arange(t, device=video.device).expand(b, t)  # (B, T)
    real = pos < nvf  # (B, T)
    copies = []
    for kind in kinds:
        if kind == "reverse":
            index = nvf - 1 - pos
        elif kind == "rotate":
            shift = (nvf // 2 // step * step).clamp(min=step)  # (B, 1)
            index = (pos - shift) % nvf  # out[i] = in[(i - shift) mod n], as torch.roll over the real frames
        else:
            raise ValueError(f"unknown order negative {kind!r}; choose from {ORDER_NEGATIVES}")
        index = torch.where(real, index, pos)  # (B, T): padding stays where it is
        copies.append(video[torch.arange(b, device=video.device)[:, None], index])  # (B, T, C, H, W)
    return torch.cat(copies)


# Temporal connectives between two clauses, longest first; case-insensitive.
_CONNECTIVES = (
    r",? and then ",
    r", and finally ",
    r"\. finally, ",
    r", finally,? ",
    r"; after that, ",
    r"\. after that, ",
    r", after that,? ",
    r"\. next, ",
    r"; next, ",
    r"\. then,? ",
    r"; then,? ",
    r", then,? ",
    r"\. afterwards, ",
    r", afterwards,? ",
    r" then ",
    r" before ",
    r" after ",
)
_SPLIT = re.compile("(" + "|".join(_CONNECTIVES) + ")", flags=re.IGNORECASE)
_LEAD = re.compile(r"^(first,? |at first,? )", flags=re.IGNORECASE)


def reorder_caption(caption: str) -> str | None:
    """The caption with its clauses in reverse order and the connectives left where they were.

    ``"first A, then B, and finally C."`` becomes ``"first C, then B, and finally A."``; ``"A before B"``
    becomes ``"B before A"``. The result states the same events in another order, so it is a negative for
    the clip the caption describes.

    Args:
        caption: Any caption.

    Returns:
        The re-ordered caption, or ``None`` when it has fewer than two clauses joined by a temporal
        connective (or re-ordering leaves it unchanged).
    """
    text = caption.strip()
    end = text[-1] if text and text[-1] in ".!?" else ""
    body = text[: len(text) - len(end)]
    lead = m.group(0) if (m := _LEAD.match(body)) else ""
    parts = _SPLIT.split(body[len(lead) :])
    clauses, joins = parts[0::2], parts[1::2]  # clause, connective, clause, ...
    if len(clauses) < 2 or any(not c.strip() for c in clauses):
        return None
    clauses = clauses[::-1]
    out = lead + "".join(c + j for c, j in zip(clauses, [*joins, ""], strict=True)) + end
    return None if out == text else out
