"""Multiple-choice video QA (EgoSchema style) by option likelihood under the video-conditioned LM.

Each option is scored by ``log p(option | video, question)`` (its tokens only, no EOS), summed over tokens or,
with ``normalize``, averaged per token (which removes the preference of a sum for short options). The
highest-scoring option is the prediction. Questions come as JSON lines::

    {"video": "clips/a.mp4", "question": "What does C do?", "options": ["...", "..."], "answer": 2}

with ``video`` relative to the file's folder (or absolute), ``answer`` a 0-based index (optional: without
answers predictions are still written) and an optional ``"id"``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from longvivit.captioning.model import VideoToText, file_digest
from longvivit.config import PreprocessConfig
from longvivit.models.masking import video_generator

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "Question: {question} Answer:"


@dataclass
class QAItem:
    """One multiple-choice question about one video.

    Args:
        key: Identifier (the ``id`` field, else ``line<N>``).
        video: Path of the video file.
        question: The question.
        options: Candidate answers.
        answer: Index of the correct option, if known.
    """

    key: str
    video: str
    question: str
    options: list[str]
    answer: int | None = None


def read_qa_jsonl(path: str | Path) -> list[QAItem]:
    """Read QA items; relative video paths resolve against the file's folder.

    Raises:
        ValueError: For a line that is not a JSON object, lacks video/question/options, has fewer than 2
            options or an answer that is not an index into them (with the file and line).
    """
    path = Path(path)
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{n}: not a JSON object ({err.msg} at column {err.colno})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{path}:{n}: expected a JSON object, got {type(rec).__name__}")
        missing = [k for k in ("video", "question", "options") if k not in rec]
        if missing:
            raise ValueError(f"{path}:{n}: missing {missing}")
        if not isinstance(rec["options"], list):
            raise ValueError(f"{path}:{n}: options must be a list of answers, got {rec['options']!r}")
        options = [str(o) for o in rec["options"]]
        answer = rec.get("answer")
        if len(options) < 2:
            raise ValueError(f"{path}:{n}: need at least 2 options, got {len(options)}")
        if answer is not None and (type(answer) is not int or not 0 <= answer < len(options)):
            raise ValueError(f"{path}:{n}: answer {answer!r} is not an index into {len(options)} options")
        video = Path(rec["video"])
        items.append(QAItem(
            key=str(rec.get("id", f"line{n}")),
            video=str(video if video.is_absolute() else path.parent / video),
            question=str(rec["question"]),
            options=options,
            answer=answer,
        ))
    return items


@torch.no_grad()
def option_scores(
    model: VideoToText,
    video: Tensor,
    question: str,
    options: Sequence[str],
    num_valid_frames: int | None = None,
    template: str = DEFAULT_TEMPLATE,
    normalize: bool = False,
    mask_ratio: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Log-likelihood of each option given the video and the question.

    Args:
        model: The captioner.
        video: (T, 3, H, W) normalised frames of one video.
        question: The question, put into ``template``.
        options: Candidate answers.
        num_valid_frames: Real frames in ``video`` (the rest is padding).
        template: Context format with a ``{question}`` field.
        normalize: Average the log-probability per option token instead of summing.
        mask_ratio: Tubelet mask ratio (``None``: the model's inference ratio, ``cfg.inference_mask_ratio``).
        generator: RNG for the mask.

    Returns:
        (K,) scores, higher is more likely.
    """
    dev = next(model.resampler.parameters()).device
    nvf = None if num_valid_frames is None else torch.tensor([num_valid_frames], device=dev)
    ratio = model.cfg.inference_mask_ratio if mask_ratio is None else mask_ratio
    media = model.visual_tokens(video.unsqueeze(0).to(dev), nvf, ratio, generator)  # (1, M, D)
    context = template.format(question=question)
    text = model.build_text([context] * len(options), list(options), add_eos=False)
    nll, count = model.token_nll(media, text)  # the single video is repeated for every option
    return -(nll / count.clamp(min=1)) if normalize else -nll


def qa_accuracy(predictions: Sequence[int], answers: Sequence[int]) -> float:
    """Percentage of predictions equal to the answers (``nan`` for no questions)."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} answers")
    if not answers:
        return float("nan")
    return 100.0 * sum(int(p) == int(a) for p, a in zip(predictions, answers, strict=True)) / len(answers)


def evaluate_qa(
    model: VideoToText,
    items: Sequence[QAItem],
    preprocess: PreprocessConfig,
    template: str = DEFAULT_TEMPLATE,
    normalize: bool = False,
    mask_ratio: float | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Answer every question and report accuracy over those with an answer.

    Questions whose video cannot be read or decoded are left out of every count and listed in ``skipped``. Videos
    longer than the sampled window (EgoSchema's are 3 minutes: 16 frames at 1 FPS see 16 s) are answered from
    what the window holds, listed in ``cut`` and warned about.

    Returns:
        ``{"accuracy" (percent), "chance" (percent, mean 1/K), "num_questions", "num_answered",
        "items": [{"id", "prediction", "answer", "scores"}], "skipped": [{"id", "video", "reason"}],
        "cut": {video: seconds}}``.

    Raises:
        ValueError: When no question's video decodes.
    """
    from longvivit.captioning.coverage import cut_warning, unseen_length
    from longvivit.data.decode import DecodeError, decode_video_file

    rows, preds, answers, chance, skipped = [], [], [], [], []
    cut: dict[str, float] = {}
    seen: set[str] = set()
    last: tuple[str, Any, int, str] | None = None  # the previous question's video: QA sets ask several in a row
    for item in items:
        try:
            if last is None or last[0] != item.video:
                last = None  # a video that does not decode is tried (and listed) again for its next question
                last = (item.video, *decode_video_file(item.video, preprocess), file_digest(item.video))
                if item.video not in seen:
                    seen.add(item.video)
                    seconds = unseen_length(item.video, preprocess)
                    if seconds is not None:
                        cut[item.video] = seconds
        except DecodeError as err:
            skipped.append({"id": item.key, "video": item.video, "reason": str(err)})
            log.warning("question %s skipped: %s", item.key, err)
            continue
        _, video, nvf, digest = last
        gen = video_generator(seed, digest)  # the same video's mask whatever the question's place or path
        scores = option_scores(
            model, video, item.question, item.options, nvf, template, normalize, mask_ratio, gen
        )  # (K,)
        pred = int(scores.argmax())
        rows.append({"id": item.key, "prediction": pred, "answer": item.answer, "scores": scores.tolist()})
        if item.answer is not None:
            preds.append(pred)
            answers.append(item.answer)
            chance.append(100.0 / len(item.options))
    if items and not rows:
        raise ValueError(f"no question's video could be decoded, e.g. {skipped[0]}")
    if cut:
        log.warning(cut_warning(len(cut), len(seen), preprocess))
    return {
        # None (JSON null, not NaN) when no question has an answer: the file only asks for predictions.
        "accuracy": qa_accuracy(preds, answers) if answers else None,
        "chance": sum(chance) / len(chance) if chance else None,
        "num_questions": len(rows),
        "num_answered": len(answers),
        "items": rows,
        "skipped": skipped,
        "cut": cut,
    }
