"""Captioning scores: hand-computed BLEU / ROUGE-L, CIDEr limits, and the Java-free tokenizer."""

from __future__ import annotations

import math
import shutil

import pytest

from longvivit.evaluation.captioning_metrics import _ptb_tokenize, caption_scores, simple_tokenize

HAS_JAVA = shutil.which("java") is not None
TOKENIZERS = ["simple", pytest.param("ptb", marks=pytest.mark.skipif(not HAS_JAVA, reason="needs Java"))]


@pytest.mark.parametrize("tokenizer", TOKENIZERS)
def test_identical_captions_score_perfectly(tokenizer):
    preds = {"v1": "A dog runs on the grass.", "v2": "Two birds fly south!"}
    refs = {"v1": ["a dog runs on the grass", "A dog runs on the grass"], "v2": ["two birds fly south"]}
    s = caption_scores(preds, refs, tokenizer=tokenizer)
    assert s["tokenizer"] == tokenizer and s["num_samples"] == 2
    assert s["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    assert s["ROUGE-L"] == pytest.approx(1.0)
    # CIDEr-D: cosine 1 at every n, no length penalty, x10. Needs 2+ samples with distinct n-grams, since
    # the IDF is taken over this set's references.
    assert s["CIDEr"] == pytest.approx(10.0)


@pytest.mark.parametrize("tokenizer", TOKENIZERS)
def test_bleu_and_rouge_by_hand(tokenizer):
    pred = "a man is riding a red horse"  # 7 tokens
    ref = "a man is riding a horse on the beach"  # 9 tokens
    s = caption_scores({0: pred}, {0: [ref]}, tokenizer=tokenizer)
    # Clipped n-gram matches: 1-grams a a man is riding horse = 6/7; 2-grams "a man" "man is" "is riding"
    # "riding a" = 4/6; 3-grams "a man is" "man is riding" "is riding a" = 3/5; 4-grams "a man is riding"
    # "man is riding a" = 2/4. Brevity penalty exp(1 - 9/7).
    bp = math.exp(1 - 9 / 7)
    assert s["BLEU-1"] == pytest.approx(bp * 6 / 7, rel=1e-6)
    assert s["BLEU-4"] == pytest.approx(bp * (6 / 7 * 4 / 6 * 3 / 5 * 2 / 4) ** 0.25, rel=1e-6)
    # LCS "a man is riding a horse" = 6: P = 6/7, R = 6/9, F with beta = 1.2.
    p, r, b2 = 6 / 7, 6 / 9, 1.2**2
    assert s["ROUGE-L"] == pytest.approx((1 + b2) * p * r / (r + b2 * p))
    assert s["CIDEr"] == 0.0  # one sample: every n-gram has IDF log(1/1) = 0


@pytest.mark.parametrize("tokenizer", TOKENIZERS)
def test_unrelated_predictions_score_zero(tokenizer):
    preds = {1: "purple elephants sing loudly", 2: "quantum physics lecture notes"}
    refs = {1: ["a dog runs on the grass"], 2: ["two birds fly south", "birds flying over water"]}
    s = caption_scores(preds, refs, tokenizer=tokenizer)
    assert s["BLEU-1"] < 1e-6 and s["BLEU-4"] < 1e-6
    assert s["CIDEr"] == 0.0 and s["ROUGE-L"] == 0.0


def test_better_caption_scores_higher():
    refs = {
        1: ["a man slices an onion in a kitchen"],
        2: ["a cat sleeps on a red sofa"],
        3: ["kids play football"],
    }
    good = {1: "a man slices an onion", 2: "a cat sleeps on a sofa", 3: "kids play football outside"}
    bad = {1: "a man in a kitchen", 2: "a red sofa", 3: "people outside"}
    s_good = caption_scores(good, refs, tokenizer="simple")
    s_bad = caption_scores(bad, refs, tokenizer="simple")
    for name in ("BLEU-4", "CIDEr", "ROUGE-L"):
        assert s_good[name] > s_bad[name], name


@pytest.mark.parametrize(
    ("raw", "tokens"),
    [  # expected outputs are what pycocoevalcap's PTBTokenizer printed for these inputs
        ("A man's dog doesn't run.", "a man 's dog does n't run"),
        ("Two people (a man) walk; they're happy!", "two people -lrb- a man -rrb- walk they 're happy"),
        ("It costs $5.50 -- really?", "it costs $ 5.50 really"),
        ('A well-known e-mail: "hello" said \'she\'.', "a well-known e-mail hello said she"),
        ("Kids play ... in the U.S. park & garden, 3.5 km/h", "kids play in the u.s. park & garden 3.5 km/h"),
        ("I'm, you'll, can't, won't, cannot", "i 'm you 'll ca n't wo n't can not"),
        ("mr. smith is gonna leave at 5 p.m.", "mr. smith is gon na leave at 5 p.m."),
        ("50% off #1 item", "50 % off # 1 item"),
        ("café déjà vu", "café déjà vu"),
        # Unicode an LM writes (curly apostrophes and quotes, dashes, ellipsis, emoji) is normalised by PTB first
        ("The dog’s ball… it’ll don’t", "the dog 's ball it 'll do n't"),
        ("she said “hi” and ‘bye’ «ok»", "she said hi and bye ok"),
        ("a man — running – fast", "a man running fast"),
        ("wow!! what?! 😀 a ❤️ b", "wow !! what ?! a ❤ b"),
        ("price €5 or £3", "price $ 5 or # 3"),
    ],
)
def test_simple_tokenizer_matches_ptb_outputs(raw, tokens):
    assert simple_tokenize(raw) == tokens


@pytest.mark.skipif(not HAS_JAVA, reason="needs Java")
def test_simple_tokenizer_agrees_with_java_ptb_on_captions():
    captions = [
        "A woman is slicing an onion.",
        "Someone's cutting 1,000 carrots at 10:30 in the kitchen!",
        "A child's toy-car rolls down the 2nd hill...",
        'the man, who is wearing a hat, says "hi" to the dog\'s owner',
        "People at the beach -- surfing & swimming.",
        "she said: 'let's go'",
        "The players' uniforms are red",
        "a person is doing push-ups/sit-ups",
        "e.g. cats, dogs etc. are animals",
    ]
    ptb = _ptb_tokenize({i: [c] for i, c in enumerate(captions)})
    assert [simple_tokenize(c) for c in captions] == [ptb[i][0] for i in range(len(captions))]


@pytest.mark.skipif(not HAS_JAVA, reason="needs Java")
def test_ptb_keeps_captions_aligned_with_empty_and_multiline_text():
    # Java breaks lines at \r and U+2028 too; a caption containing one must not shift the others.
    s = caption_scores({1: "", 2: "two birds\rfly\nsouth", 3: "a red\u2028car"},
                       {1: ["a dog"], 2: ["two birds fly south"], 3: ["", "a red car"]}, tokenizer="ptb")
    assert s["tokenizer"] == "ptb"
    assert s["ROUGE-L"] == pytest.approx(2 / 3)  # 0 for the empty prediction, 1 for the other two


def test_falls_back_to_simple_tokenizer_without_java(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.warns(RuntimeWarning, match="simple"):
        s = caption_scores({1: "A dog runs."}, {1: ["a dog runs"]})
    assert s["tokenizer"] == "simple"
    assert s["BLEU-1"] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(RuntimeError, match="Java"):
        caption_scores({1: "a dog"}, {1: ["a dog"]}, tokenizer="ptb")


def test_mismatched_keys_raise():
    with pytest.raises(ValueError, match="same keys"):
        caption_scores({1: "a dog"}, {2: ["a dog"]}, tokenizer="simple")
    with pytest.raises(ValueError, match="non-empty"):
        caption_scores({1: "a dog"}, {1: []}, tokenizer="simple")
    with pytest.raises(ValueError, match="non-empty"):
        caption_scores({1: "a dog"}, {1: "a dog"}, tokenizer="simple")


@pytest.mark.slow
@pytest.mark.skipif(not HAS_JAVA, reason="needs Java")
def test_meteor():
    # One JVM start (~15 s): a perfect and a partial match give a corpus score strictly between 0 and 1.
    s = caption_scores({1: "a man runs", 2: "a cat sleeps"}, {1: ["a man runs"], 2: ["a dog barks"]},
                       meteor=True)
    assert 0.0 < s["METEOR"] < 1.0
