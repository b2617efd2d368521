"""Zero-shot text<->video retrieval metrics, with several captions per video.

Conventions (those of the paper and of CLIP-style retrieval benchmarks):

* ``sim`` is a (num_texts, num_videos) score matrix and ``text_to_video[i]`` the index of caption ``i``'s
  ground-truth video. Videos without any caption stay in the gallery as distractors.
* T2V: every caption is a query over all videos. Its rank is
  ``1 + #{videos w != gt : sim[i, w] >= sim[i, gt]}``.
* V2T: every video that has at least one caption is a query over all texts. With ``best(v)`` the highest
  score among v's own captions, its rank is ``1 + #{texts j not captioning v : sim[j, v] >= best(v)}``: the
  rank of its best caption when the other captions of v are removed from the list (the CLIP4Clip / ViCLIP
  multi-caption convention).
* Ties are pessimistic: a wrong candidate scoring *equal* to the right one is counted as ranked above it.
  A degenerate model (constant scores, collapsed embeddings) therefore gets the worst rank instead of a
  perfect one.
* Recall@K is in percent (0-100), MRR is the mean reciprocal rank in [0, 1], MdR / MnR are 1-based ranks.
  The median averages the two middle ranks when the number of queries is even (``numpy.median``).

torchmetrics' ``RetrievalRecall`` / ``RetrievalMRR`` were not used: they break ties by sort order (not
pessimistically), have no median/mean rank, and need the full (queries x candidates) matrix flattened
with an index tensor. Counting "candidates scoring at least as high as the right one" in plain torch gives
every metric from one rank vector, in row chunks that bound memory.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

RANK_METRICS = ("R@1", "R@5", "R@10", "MdR", "MnR", "MRR")
# Rows of the similarity matrix handled at once: bounds the boolean comparison matrix to ~64 MB.
_CHUNK_ELEMENTS = 1 << 26


def _check_inputs(sim: Tensor, text_to_video: Tensor) -> tuple[Tensor, Tensor]:
    if sim.ndim != 2:
        raise ValueError(f"sim must be (num_texts, num_videos), got shape {tuple(sim.shape)}")
    num_texts, num_videos = sim.shape
    if num_texts == 0 or num_videos == 0:
        raise ValueError(f"need at least one text and one video, got sim of shape {tuple(sim.shape)}")
    text_to_video = torch.as_tensor(text_to_video, device=sim.device)
    if text_to_video.shape != (num_texts,) or text_to_video.dtype.is_floating_point:
        raise ValueError(
            f"text_to_video must be an integer tensor of shape ({num_texts},), "
            f"got {tuple(text_to_video.shape)} {text_to_video.dtype}"
        )
    text_to_video = text_to_video.long()
    if text_to_video.min() < 0 or text_to_video.max() >= num_videos:
        raise ValueError(f"text_to_video values must lie in [0, {num_videos}), got "
                         f"[{int(text_to_video.min())}, {int(text_to_video.max())}]")
    if torch.isnan(sim).any():
        raise ValueError("sim contains NaN; ranks would be undefined")
    return sim, text_to_video


def t2v_ranks(sim: Tensor, text_to_video: Tensor) -> Tensor:
    """1-based rank of each caption's ground-truth video among all videos (pessimistic ties).

    Args:
        sim: (num_texts, num_videos) scores.
        text_to_video: (num_texts,) index of each caption's video.

    Returns:
        (num_texts,) long tensor of ranks in [1, num_videos].
    """
    sim, text_to_video = _check_inputs(sim, text_to_video)
    num_texts, num_videos = sim.shape
    chunk = max(1, _CHUNK_ELEMENTS // num_videos)
    ranks = []
    for start in range(0, num_texts, chunk):
        rows = sim[start : start + chunk]  # (c, V)
        gt = text_to_video[start : start + chunk]
        gt_score = rows.gather(1, gt[:, None])  # (c, 1)
        # The ground truth itself satisfies >=, which supplies the "1 +".
        ranks.append((rows >= gt_score).sum(dim=1))
    return torch.cat(ranks)


def v2t_ranks(sim: Tensor, text_to_video: Tensor) -> tuple[Tensor, Tensor]:
    """1-based rank of each video's best caption among all texts of *other* videos (pessimistic ties).

    Args:
        sim: (num_texts, num_videos) scores.
        text_to_video: (num_texts,) index of each caption's video.

    Returns:
        ``(ranks, video_ids)``: ranks (Q,) in [1, num_texts - captions of v + 1] and the indices (Q,) of the
        videos they belong to; videos with no caption are not queries and are left out.
    """
    sim, text_to_video = _check_inputs(sim, text_to_video)
    num_texts, num_videos = sim.shape
    own_scores = sim.gather(1, text_to_video[:, None]).squeeze(1)  # (N_t,) each caption vs its own video
    best = torch.full((num_videos,), -math.inf, dtype=sim.dtype, device=sim.device)
    best = best.scatter_reduce(0, text_to_video, own_scores, reduce="amax", include_self=True)
    has_caption = torch.zeros(num_videos, dtype=torch.bool, device=sim.device)
    has_caption[text_to_video] = True
    video_ids = has_caption.nonzero().squeeze(1)

    # Count, per video, all texts scoring >= its best caption (row chunks keep memory access contiguous),
    # then remove its own captions that do: those are exactly the ones tied with the best.
    at_least_best = torch.zeros(num_videos, dtype=torch.long, device=sim.device)
    chunk = max(1, _CHUNK_ELEMENTS // num_videos)
    for start in range(0, num_texts, chunk):
        at_least_best += (sim[start : start + chunk] >= best[None, :]).sum(dim=0)  # (c, V) -> (V,)
    own_at_least_best = torch.zeros_like(at_least_best).scatter_add_(
        0, text_to_video, (own_scores >= best[text_to_video]).long()
    )
    ranks = at_least_best - own_at_least_best + 1
    return ranks[video_ids], video_ids


def summarize_ranks(ranks: Tensor) -> dict[str, float]:
    """Recall@1/5/10 (percent), median and mean rank, MRR ([0, 1]) from 1-based ranks."""
    r = ranks.double()
    return {
        "R@1": 100.0 * (r <= 1).double().mean().item(),
        "R@5": 100.0 * (r <= 5).double().mean().item(),
        "R@10": 100.0 * (r <= 10).double().mean().item(),
        "MdR": float(np.median(r.cpu().numpy())),
        "MnR": r.mean().item(),
        "MRR": (1.0 / r).mean().item(),
    }


def chance_metrics(num_candidates: int) -> dict[str, float]:
    """Expected metrics of a random ranking of ``num_candidates`` with one right answer.

    The rank is uniform on 1..N: R@K = 100 * min(K, N) / N, MdR = MnR = (N + 1) / 2, MRR = H_N / N with
    H_N the N-th harmonic number.
    """
    n = num_candidates
    harmonic = sum(1.0 / k for k in range(1, n + 1))
    return {
        "R@1": 100.0 / n,
        "R@5": 100.0 * min(5, n) / n,
        "R@10": 100.0 * min(10, n) / n,
        "MdR": (n + 1) / 2,
        "MnR": (n + 1) / 2,
        "MRR": harmonic / n,
    }


def retrieval_metrics(sim: Tensor, text_to_video: Tensor) -> dict:
    """Zero-shot retrieval metrics in both directions, with chance levels.

    See the module docstring for the exact rank definitions (multi-caption V2T, pessimistic ties).

    Args:
        sim: (num_texts, num_videos) similarity scores (e.g. cosine similarities).
        text_to_video: (num_texts,) integer index of each caption's ground-truth video.

    Returns:
        ``{"t2v": {...}, "v2t": {...}, "num_videos", "num_texts", "chance": {...}}`` where each direction
        holds ``R@1, R@5, R@10`` in percent, ``MdR, MnR`` as 1-based ranks and ``MRR`` in [0, 1]. ``chance``
        is the expectation of a random T2V ranking over ``num_videos`` (R@1 = 100 / N, MRR = H_N / N, see
        :func:`chance_metrics`). It is only approximate for V2T, where a video with several captions has
        several chances among all texts.
    """
    sim, text_to_video = _check_inputs(sim, text_to_video)
    num_texts, num_videos = sim.shape
    v2t, _ = v2t_ranks(sim, text_to_video)
    return {
        "t2v": summarize_ranks(t2v_ranks(sim, text_to_video)),
        "v2t": summarize_ranks(v2t),
        "num_videos": num_videos,
        "num_texts": num_texts,
        "chance": chance_metrics(num_videos),
    }


def format_metrics(metrics: dict) -> list[str]:
    """Console lines for :func:`retrieval_metrics`' result: the set's size and chance, then T2V and V2T."""
    c = metrics["chance"]
    size = f"{metrics['num_videos']} videos, {metrics['num_texts']} captions"
    return [
        f"{size} (chance R@1 {c['R@1']:.2f}, MRR {c['MRR']:.3f})",
        *(f"{name} R@1 {d['R@1']:.2f}  R@5 {d['R@5']:.2f}  R@10 {d['R@10']:.2f}  MdR {d['MdR']:.1f}  MRR {d['MRR']:.3f}"
          for name, d in (("T2V", metrics["t2v"]), ("V2T", metrics["v2t"]))),
    ]


def pair_accuracy(sim: Tensor, text_to_video: Tensor, pairs: Tensor | Sequence[tuple[int, int]]) -> dict:
    """Two-way T2V accuracy on video pairs, e.g. a clip and its time-reversed copy.

    For each pair ``(a, b)`` every caption of ``a`` is one query: it is right when it scores ``a`` above
    ``b``, and a tie counts half. The direction is as given; pass ``(b, a)`` as well to also query with the
    captions of ``b``.

    Args:
        sim: (num_texts, num_videos) scores.
        text_to_video: (num_texts,) index of each caption's video.
        pairs: (P, 2) video indices ``(a, b)``.

    Returns:
        ``{"accuracy": percent, "chance": 50.0, "num_queries": int}``; accuracy is averaged over all
        (caption, pair) queries.
    """
    sim, text_to_video = _check_inputs(sim, text_to_video)
    pairs = torch.as_tensor(pairs, dtype=torch.long, device=sim.device).reshape(-1, 2)
    if pairs.numel() and (pairs.min() < 0 or pairs.max() >= sim.shape[1]):
        raise ValueError(f"pair indices must lie in [0, {sim.shape[1]})")
    # (N_t, P): caption i is a query of pair p when it describes the pair's first video.
    is_query = text_to_video[:, None] == pairs[None, :, 0]
    text_idx, pair_idx = is_query.nonzero(as_tuple=True)
    if len(text_idx) == 0:
        raise ValueError("no caption belongs to the first video of any pair; nothing to score")
    score_a = sim[text_idx, pairs[pair_idx, 0]]
    score_b = sim[text_idx, pairs[pair_idx, 1]]
    correct = (score_a > score_b).double() + 0.5 * (score_a == score_b).double()
    return {"accuracy": 100.0 * correct.mean().item(), "chance": 50.0, "num_queries": len(text_idx)}


class DuplicateKeyError(ValueError):
    """Two videos with the same key given to a :class:`RetrievalEvaluator`; ``keys`` lists (up to 5) of them."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__(f"duplicate video keys: {keys}")
        self.keys = keys


class RetrievalEvaluator:
    """Collects video and caption embeddings over a validation loop and scores retrieval at the end.

    Videos are identified by a string key; each caption names the key of its video. Scores are cosine
    similarities (both sides are L2-normalised in :meth:`similarity`). In a distributed run, gather the
    embeddings and keys of all ranks before adding them, so that every video competes with every other.

    Example:
        >>> ev = RetrievalEvaluator()
        >>> ev.add_videos(video_emb, keys)               # (B, D), B keys
        >>> ev.add_texts(text_emb, keys, captions)       # (B', D), key of each caption's video
        >>> metrics = ev.compute()
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Drop everything collected so far."""
        self._video_emb: list[Tensor] = []
        self._video_keys: list[str] = []
        self._key_set: set[str] = set()
        self._text_emb: list[Tensor] = []
        self._text_video_keys: list[str] = []
        self._captions: list[str | None] = []

    @property
    def num_videos(self) -> int:
        return len(self._video_keys)

    @property
    def video_keys(self) -> list[str]:
        """Keys of the videos added so far, in order."""
        return list(self._video_keys)

    @property
    def text_video_keys(self) -> list[str]:
        """For each caption added so far, the key of its video."""
        return list(self._text_video_keys)

    @property
    def num_texts(self) -> int:
        return len(self._text_video_keys)

    def add_videos(self, emb: Tensor, keys: Sequence[str]) -> None:
        """Add a batch of video embeddings.

        Args:
            emb: (B, D) embeddings.
            keys: B unique video keys.

        Raises:
            ValueError: on a shape mismatch; :class:`DuplicateKeyError` for a key already added (a video
                counted twice would compete with itself and make every metric wrong).
        """
        keys = [str(k) for k in keys]
        if emb.ndim != 2 or emb.shape[0] != len(keys):
            raise ValueError(f"emb must be (len(keys)={len(keys)}, D), got {tuple(emb.shape)}")
        dup = [k for k in keys if k in self._key_set]
        if dup or len(set(keys)) != len(keys):
            dup = dup or [k for k in keys if keys.count(k) > 1]
            raise DuplicateKeyError(sorted(set(dup))[:5])
        self._video_emb.append(emb.detach().float().cpu())
        self._video_keys.extend(keys)
        self._key_set.update(keys)

    def add_texts(
        self, emb: Tensor, video_keys: Sequence[str], captions: Sequence[str] | None = None
    ) -> None:
        """Add a batch of caption embeddings.

        Args:
            emb: (B, D) embeddings.
            video_keys: Key of the video each caption describes (several captions may share one).
            captions: Optional caption strings, kept only for :meth:`save_embeddings`.
        """
        video_keys = [str(k) for k in video_keys]
        if emb.ndim != 2 or emb.shape[0] != len(video_keys):
            raise ValueError(f"emb must be (len(video_keys)={len(video_keys)}, D), got {tuple(emb.shape)}")
        if captions is not None and len(captions) != len(video_keys):
            raise ValueError(f"got {len(captions)} captions for {len(video_keys)} embeddings")
        self._text_emb.append(emb.detach().float().cpu())
        self._text_video_keys.extend(video_keys)
        self._captions.extend(captions if captions is not None else [None] * len(video_keys))

    def embeddings(self) -> tuple[Tensor, Tensor, Tensor]:
        """L2-normalised ``(video_emb (V, D), text_emb (N_t, D), text_to_video (N_t,))``."""
        if not self._video_keys or not self._text_video_keys:
            raise ValueError(f"nothing to score: {self.num_videos} videos, {self.num_texts} texts collected")
        index = {k: i for i, k in enumerate(self._video_keys)}
        missing = sorted({k for k in self._text_video_keys if k not in index})
        if missing:
            raise ValueError(f"{len(missing)} caption(s) refer to videos never added, e.g. {missing[:5]}")
        video = F.normalize(torch.cat(self._video_emb), dim=-1)
        text = F.normalize(torch.cat(self._text_emb), dim=-1)
        if video.shape[1] != text.shape[1]:
            raise ValueError(f"video dim {video.shape[1]} != text dim {text.shape[1]}")
        text_to_video = torch.tensor([index[k] for k in self._text_video_keys], dtype=torch.long)
        return video, text, text_to_video

    def similarity(self) -> tuple[Tensor, Tensor]:
        """``(sim (N_t, V) cosine similarities, text_to_video (N_t,))``."""
        video, text, text_to_video = self.embeddings()
        return text @ video.T, text_to_video

    def compute(self) -> dict:
        """Metrics of :func:`retrieval_metrics` over everything collected."""
        sim, text_to_video = self.similarity()
        return retrieval_metrics(sim, text_to_video)

    def save_embeddings(self, directory: str | Path) -> Path:
        """Write what :meth:`compute` scores, so another tool can recompute or re-rank.

        Files: ``video_emb.npy`` (V, D) and ``text_emb.npy`` (N_t, D), float32 and L2-normalised (so
        ``text_emb @ video_emb.T`` is the similarity matrix); ``video_ids.json``, the list of video keys in
        row order; ``text_ids.json``, one ``{"video": key, "caption": str | null}`` per text row.

        Returns:
            The directory.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        video, text, _ = self.embeddings()
        np.save(out / "video_emb.npy", video.numpy().astype(np.float32))
        np.save(out / "text_emb.npy", text.numpy().astype(np.float32))
        (out / "video_ids.json").write_text(json.dumps(self._video_keys))
        pairs = zip(self._text_video_keys, self._captions, strict=True)
        texts = [{"video": k, "caption": c} for k, c in pairs]
        (out / "text_ids.json").write_text(json.dumps(texts, ensure_ascii=False))
        return out

    @classmethod
    def load_embeddings(cls, directory: str | Path) -> RetrievalEvaluator:
        """Rebuild an evaluator from the files of :meth:`save_embeddings`."""
        src = Path(directory)
        ev = cls()
        video_keys = json.loads((src / "video_ids.json").read_text())
        texts = json.loads((src / "text_ids.json").read_text())
        ev.add_videos(torch.from_numpy(np.load(src / "video_emb.npy")), video_keys)
        ev.add_texts(
            torch.from_numpy(np.load(src / "text_emb.npy")),
            [t["video"] for t in texts],
            [t["caption"] for t in texts],
        )
        return ev
