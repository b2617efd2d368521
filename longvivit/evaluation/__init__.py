"""Evaluation: zero-shot retrieval metrics, temporal-order probes and captioning scores."""

from longvivit.evaluation.captioning_metrics import caption_scores, simple_tokenize
from longvivit.evaluation.probes import FRAME_ORDERS, FrameOrder, apply_frame_order
from longvivit.evaluation.retrieval import (
    RANK_METRICS,
    RetrievalEvaluator,
    chance_metrics,
    pair_accuracy,
    retrieval_metrics,
    summarize_ranks,
    t2v_ranks,
    v2t_ranks,
)

__all__ = [
    "FRAME_ORDERS",
    "RANK_METRICS",
    "FrameOrder",
    "RetrievalEvaluator",
    "apply_frame_order",
    "caption_scores",
    "chance_metrics",
    "pair_accuracy",
    "retrieval_metrics",
    "simple_tokenize",
    "summarize_ranks",
    "t2v_ranks",
    "v2t_ranks",
]
