"""Captioning metrics through pycocoevalcap (BLEU-1..4, CIDEr-D, ROUGE-L, optionally METEOR).

The scorers are pycocoevalcap's own, so numbers are comparable with published COCO-style results. Its
PTBTokenizer runs Stanford CoreNLP in Java; when Java is missing (or the tokenizer fails) captions are
tokenized by :func:`simple_tokenize`, a regex approximation of the same lower-casing, PTB splitting and
punctuation removal, and the result says ``"tokenizer": "simple"``.
"""

from __future__ import annotations

import re
import shutil
import warnings
from collections.abc import Hashable, Mapping, Sequence
from typing import Literal

# Tokens pycocoevalcap drops after PTB tokenization. Its list spells brackets as "-LRB-" etc. while the
# tokenizer runs with -lowerCase, so "-lrb-" survives; simple_tokenize reproduces that quirk.
_PTB_DROPPED = {"''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";"}
_BRACKETS = {"(": " -lrb- ", ")": " -rrb- ", "[": " -lsb- ", "]": " -rsb- ", "{": " -lcb- ", "}": " -rcb- "}
_ABBREVIATIONS = r"(?:mr|mrs|ms|dr|st|jr|sr|prof|mt|vs|etc|inc|ltd|co|no)\."
_TOKEN = re.compile(
    r"-(?:lrb|rrb|lsb|rsb|lcb|rcb)-"  # brackets, already rewritten
    r"|(?<![^\W_])(?:[a-z]\.){2,}"  # u.s. p.m.
    rf"|(?<![^\W_]){_ABBREVIATIONS}(?=\s|$)"
    r"|\d+(?:[.,:]\d+)+"  # 3.5 1,000 10:30
    r"|n't|'(?:s|re|ll|ve|m|d)\b"  # contractions, already split off by _CONTRACTION
    r"|[^\W_]+(?:[-'/&_.][^\W_]+)*"  # well-known o'neil km/h at&t café (any Unicode letters/digits)
    r"|\.\.\.|--|[!?]{2,}|\S"  # "!!" and "?!" stay one token (and are not dropped); any other symbol is one
)
_CONTRACTION = re.compile(r"(?<=[^\W\d_])(n't|'(?:s|re|ll|ve|m|d))\b")
# Unicode that PTBTokenizer rewrites before splitting: curly quotes and apostrophes as ASCII ones (so "it’s" gives
# "it 's" and quotes are dropped), dashes as "--" and the ellipsis as "..." (both dropped), its lossy currency
# mapping; an emoji's variation selector is deleted. Characters outside the BMP (emoji) are "untokenizable": deleted.
_UNICODE = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u00ab": '"', "\u00bb": '"', "\u2039": '"',
    "\u203a": '"', "\u2010": "-", "\u2013": " -- ", "\u2014": " -- ", "\u2026": " ... ", "\ufe0f": "",
    "\u00a3": "#", "\u20ac": "$", "\u00a2": " cents ",
})
_OUTSIDE_BMP = re.compile("[\U00010000-\U0010ffff]")
_SPLIT_WORDS = {"cannot": "can not", "gonna": "gon na", "wanna": "wan na", "gotta": "got ta"}
_SPLIT_WORDS_RE = re.compile(r"\b(" + "|".join(_SPLIT_WORDS) + r")\b")


def simple_tokenize(text: str) -> str:
    """Lower-case and PTB-tokenize one caption without Java, dropping punctuation like pycocoevalcap.

    Covers what captions contain (contractions, hyphenated words, abbreviations, numbers, brackets,
    quotes); it is an approximation of Stanford's PTBTokenizer, not a reimplementation.

    Args:
        text: A raw caption.

    Returns:
        Space-separated tokens.
    """
    text = _OUTSIDE_BMP.sub("", text.translate(_UNICODE)).lower().replace("\n", " ")
    text = _CONTRACTION.sub(r" \1", text)  # can't -> ca n't, dog's -> dog 's, as PTB does
    text = _SPLIT_WORDS_RE.sub(lambda m: _SPLIT_WORDS[m.group(1)], text)
    for bracket, name in _BRACKETS.items():
        text = text.replace(bracket, name)
    text = text.replace('"', " '' ")  # PTB turns double quotes into `` / '', both dropped
    tokens = _TOKEN.findall(text)
    return " ".join(t for t in tokens if t not in _PTB_DROPPED)


def _ptb_tokenize(captions: dict[Hashable, list[str]]) -> dict[Hashable, list[str]]:
    """pycocoevalcap's PTBTokenizer over all captions in one JVM start; raises if its output is incomplete."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    # The tokenizer joins captions with "\n" and splits Java's output on it; Java also breaks lines at "\r",
    # U+2028 and U+0085, which would shift every later caption onto the wrong key. str.split() knows them all.
    cleaned = {k: [{"caption": " ".join(c.split())} for c in v] for k, v in captions.items()}
    out = PTBTokenizer().tokenize(cleaned)
    if out.keys() != captions.keys() or any(len(out[k]) != len(v) for k, v in captions.items()):
        raise RuntimeError("PTBTokenizer returned fewer lines than captions (did the Java process fail?)")
    return out


def _tokenize(
    captions: dict[Hashable, list[str]], tokenizer: Literal["auto", "ptb", "simple"]
) -> tuple[dict[Hashable, list[str]], str]:
    if tokenizer == "simple":
        return {k: [simple_tokenize(c) for c in v] for k, v in captions.items()}, "simple"
    if shutil.which("java") is None:
        if tokenizer == "ptb":
            raise RuntimeError("tokenizer='ptb' needs Java on PATH (Debian: default-jre-headless)")
        reason = "Java is not on PATH"
    else:
        try:
            return _ptb_tokenize(captions), "ptb"
        except (OSError, RuntimeError) as err:  # e.g. a read-only site-packages for its temp file
            if tokenizer == "ptb":
                raise
            reason = f"PTBTokenizer failed ({err})"
    warnings.warn(
        f"{reason}: captions are tokenized by the simple regex tokenizer, which approximates PTBTokenizer; "
        "scores may differ slightly from the official COCO toolkit",
        RuntimeWarning,
        stacklevel=3,
    )
    return _tokenize(captions, "simple")


def caption_scores(
    predictions: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    tokenizer: Literal["auto", "ptb", "simple"] = "auto",
    meteor: bool = False,
) -> dict:
    """Corpus-level captioning scores with pycocoevalcap.

    All values are on pycocoevalcap's own scale: BLEU, METEOR and ROUGE-L in [0, 1]; CIDEr (its CIDEr-D
    variant: clipped counts, length penalty, x10) in [0, 10] (papers usually print x100). CIDEr's IDF is
    computed over the references of *this* set, so it depends on which samples are evaluated together and
    is always 0 for a single sample.

    Args:
        predictions: One generated caption per key.
        references: One or more reference captions per key; same keys as ``predictions``.
        tokenizer: ``"ptb"`` (pycocoevalcap's Java PTBTokenizer), ``"simple"`` (:func:`simple_tokenize`), or
            ``"auto"``: PTB when Java works, else simple with a ``RuntimeWarning``.
        meteor: Also compute METEOR (Java; starts a 2 GB JVM and takes ~10 s).

    Returns:
        ``{"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr", "ROUGE-L"[, "METEOR"], "num_samples",
        "tokenizer": "ptb" | "simple"}``.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if set(predictions) != set(references):
        missing = [k for k in references if k not in predictions][:5]
        extra = [k for k in predictions if k not in references][:5]
        raise ValueError(f"predictions and references must have the same keys; missing predictions for "
                         f"{missing}, no references for {extra}")
    if not predictions:
        raise ValueError("no captions to score")
    empty = [k for k, refs in references.items() if isinstance(refs, str) or len(refs) == 0]
    if empty:
        raise ValueError(f"references must be non-empty lists of strings; bad keys: {empty[:5]}")

    # Tokenize predictions and references in one call (one JVM start) under tagged keys.
    keys = list(predictions)
    tagged: dict[Hashable, list[str]] = {("pred", i): [predictions[k]] for i, k in enumerate(keys)}
    tagged.update({("ref", i): list(references[k]) for i, k in enumerate(keys)})
    tokens, used = _tokenize(tagged, tokenizer)
    res = {i: tokens[("pred", i)] for i in range(len(keys))}
    gts = {i: tokens[("ref", i)] for i in range(len(keys))}

    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    scores: dict = {f"BLEU-{n + 1}": float(b) for n, b in enumerate(bleu)}
    scores["CIDEr"] = float(cider)
    scores["ROUGE-L"] = float(rouge)
    if meteor:
        scores["METEOR"] = _meteor(gts, res)
    scores["num_samples"] = len(keys)
    scores["tokenizer"] = used
    return scores


def _meteor(gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
    if shutil.which("java") is None:
        raise RuntimeError("METEOR needs Java on PATH (Debian: apt-get install default-jre-headless)")
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    try:
        score, _ = scorer.compute_score(gts, res)
    finally:
        del scorer  # its __del__ stops the JVM
    return float(score)
