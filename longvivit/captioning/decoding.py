"""How :meth:`~longvivit.captioning.model.VideoToText.generate` picks tokens: greedy, beam search, or sampling.

Sampling takes HF ``generate``'s options (``temperature``, ``top_k``, ``top_p``, with HF's defaults) but not its
random draw: HF samples every row of a batch with one ``torch.multinomial`` call on the global RNG, so a sampled
caption would change with the other videos in the batch, their order and anything else that drew random numbers.
Here each video samples from its own generator (the one its mask came from, see
:func:`~longvivit.models.masking.video_generator`) with the Gumbel-max trick on top of HF's greedy search: after
the warpers, ``argmax(scores + g)`` with ``g = -log(-log(u))`` and ``u`` uniform is an exact draw from
``softmax(scores)``. A caption then depends only on the seed and the video.

Repetition control is HF's own (``repetition_penalty``, ``no_repeat_ngram_size``) and works with every mode.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from transformers import LogitsProcessor

from longvivit.models.masking import Generators, mask_noise


@dataclass
class DecodingConfig:
    """Decoding settings, named as in HF ``generate``.

    Args:
        max_new_tokens: Tokens generated at most after the prompt.
        num_beams: Beam search width; 1 is greedy search (or sampling with ``do_sample``).
        do_sample: Sample the next token instead of taking the most likely one (needs ``num_beams=1``).
        temperature: Divide the logits by this before sampling (< 1 sharper, > 1 flatter).
        top_k: Sample among the ``top_k`` most likely tokens only; 0 turns it off. 50 as in HF.
        top_p: Sample among the smallest set of tokens whose probability reaches ``top_p`` (nucleus); 1 turns it
            off.
        repetition_penalty: > 1 makes tokens already in the text less likely (CTRL's penalty, HF's
            ``RepetitionPenaltyLogitsProcessor``); 1 turns it off.
        no_repeat_ngram_size: Never generate an n-gram of this size twice (prompt included); 0 turns it off.

    Raises:
        ValueError: For an out-of-range value, sampling with beams, or a sampling option without ``do_sample``
            (HF would ignore it with a warning).
    """

    max_new_tokens: int = 32
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0

    def __post_init__(self) -> None:
        checks = (
            ("max_new_tokens", self.max_new_tokens >= 1, ">= 1"),
            ("num_beams", self.num_beams >= 1, ">= 1"),
            ("temperature", self.temperature > 0, "> 0 (greedy search is do_sample=False)"),
            ("top_k", self.top_k >= 0, ">= 0 (0: off)"),
            ("top_p", 0 < self.top_p <= 1, "in (0, 1]"),
            ("repetition_penalty", self.repetition_penalty > 0, "> 0 (1: off)"),
            ("no_repeat_ngram_size", self.no_repeat_ngram_size >= 0, ">= 0 (0: off)"),
        )
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"{name} must be {rule}, got {getattr(self, name)}")
        if self.do_sample and self.num_beams > 1:
            raise ValueError("sampling draws one caption per video: use num_beams=1 with do_sample")
        default = DecodingConfig.__dataclass_fields__
        unused = [n for n in ("temperature", "top_k", "top_p") if getattr(self, n) != default[n].default]
        if unused and not self.do_sample:
            raise ValueError(f"{', '.join(unused)} only apply when sampling: set do_sample (--do-sample)")

    def to_dict(self) -> dict[str, Any]:
        """The settings as keyword arguments of :meth:`~longvivit.captioning.model.VideoToText.generate`."""
        return dataclasses.asdict(self)


class GumbelSampler(LogitsProcessor):
    """HF logits processor that turns greedy search into sampling from per-row generators.

    Args:
        generators: ``None`` (the global RNG), one generator for the batch, or one per row, so that a row's draws
            do not depend on its place in the batch. Each step draws one uniform number per vocabulary entry and
            row, finished rows included, so a row's n-th step always reads the same numbers.
    """

    def __init__(self, generators: Generators) -> None:
        self.generators = generators

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        u = mask_noise(scores.shape[0], scores.shape[1], self.generators, scores.device)  # (B, V) in [0, 1)
        gumbel = -torch.log(-torch.log(u.clamp_min(torch.finfo(u.dtype).tiny)))
        return scores + gumbel.to(scores.dtype)  # filtered tokens stay at -inf


def generate_kwargs(cfg: DecodingConfig, generators: Generators) -> dict[str, Any]:
    """Keyword arguments of HF ``generate`` for ``cfg``: greedy or beam search, with the warpers and
    :class:`GumbelSampler` as custom logits processors when sampling (HF applies them after its own processors,
    the repetition controls, as in its sampling mode).

    Args:
        cfg: The decoding settings.
        generators: The videos' RNGs, as :class:`GumbelSampler` takes them.
    """
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    processors = LogitsProcessorList()
    if cfg.do_sample:
        if cfg.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(cfg.temperature))
        if cfg.top_k:
            processors.append(TopKLogitsWarper(cfg.top_k))
        if cfg.top_p < 1.0:
            processors.append(TopPLogitsWarper(cfg.top_p))
        processors.append(GumbelSampler(generators))
    return {
        "max_new_tokens": cfg.max_new_tokens,
        "num_beams": cfg.num_beams,
        "do_sample": False,  # the draw is GumbelSampler's argmax; HF's own would use the global RNG
        "repetition_penalty": cfg.repetition_penalty,
        "no_repeat_ngram_size": cfg.no_repeat_ngram_size,
        "logits_processor": processors,
    }
