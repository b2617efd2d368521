"""Decoding options of ``VideoToText.generate`` and ``longvivit caption``: sampling (temperature, top-k, top-p)
that a seed reproduces per video, and HF's repetition controls; a tiny random Llama with open gates."""

from __future__ import annotations

import pytest
import torch
from captioning_helpers import build_tiny_captioner
from conftest import ASSETS

from longvivit.captioning import cli
from longvivit.captioning.decoding import DecodingConfig, generate_kwargs
from longvivit.models.masking import video_generator

SAMPLE = {"do_sample": True, "temperature": 1.5, "top_k": 0}  # flat enough that two seeds disagree


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoding")
    m = build_tiny_captioner(root)
    return m


def clips(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 4, 3, 32, 32, generator=torch.Generator().manual_seed(seed))  # (B, T, 3, H, W)


def gens(seed: int, *names: str) -> list[torch.Generator]:
    return [video_generator(seed, n) for n in names]


def test_a_sampled_caption_depends_on_the_seed_and_the_video_only(model):
    # generate offered greedy and beam search only; HF's own sampling draws all rows from the global RNG at once,
    # so a video's sampled caption would change with its batch neighbours.
    a, b, c = clips(3).split(1)
    batch = model.generate(torch.cat([a, b, c]), max_new_tokens=10, generator=gens(0, "a", "b", "c"), **SAMPLE)
    again = model.generate(torch.cat([a, b, c]), max_new_tokens=10, generator=gens(0, "a", "b", "c"), **SAMPLE)
    reordered = model.generate(torch.cat([c, b]), max_new_tokens=10, generator=gens(0, "c", "b"), **SAMPLE)
    alone = model.generate(b, max_new_tokens=10, generator=gens(0, "b"), **SAMPLE)
    assert batch == again
    assert reordered == [batch[2], batch[1]] and alone == [batch[1]]
    reseeded = model.generate(torch.cat([a, b, c]), max_new_tokens=10, generator=gens(1, "a", "b", "c"), **SAMPLE)
    assert reseeded != batch, "another seed samples other captions"
    greedy = model.generate(torch.cat([a, b, c]), max_new_tokens=10, generator=gens(0, "a", "b", "c"))
    assert greedy != batch, "sampling at temperature 1.5 leaves the greedy path"


def test_sampling_restricted_to_one_token_is_greedy_search(model):
    video = clips(2, seed=4)
    greedy = model.generate(video, max_new_tokens=8, generator=gens(0, "x", "y"))
    for restrict in ({"top_k": 1}, {"top_k": 0, "top_p": 1e-6}, {"temperature": 1e-3, "top_k": 0}):
        sampled = model.generate(video, max_new_tokens=8, generator=gens(0, "x", "y"), do_sample=True, **restrict)
        assert sampled == greedy, restrict


def test_sampler_draws_tokens_with_the_warped_softmax_probabilities():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    cfg = DecodingConfig(do_sample=True, temperature=0.5, top_k=3)
    processors = generate_kwargs(cfg, torch.Generator().manual_seed(0))["logits_processor"]
    n = 40_000
    rows = logits.expand(n, -1).clone()  # (n, V): n independent draws in one step
    picks = processors(torch.zeros(n, 1, dtype=torch.long), rows).argmax(dim=1)
    freq = torch.bincount(picks, minlength=4).float() / n
    expected = torch.softmax(logits[:3] / 0.5, dim=0)  # temperature, then the top 3
    assert freq[3] == 0, "top-k removed the 4th token"
    torch.testing.assert_close(freq[:3], expected, atol=0.01, rtol=0)


def test_no_repeat_ngram_size_and_repetition_penalty_reach_the_lm(model):
    video = clips(1, seed=2)
    prompt_ids = model._context_ids(model.cfg.prompt)
    greedy = model.generate(video, max_new_tokens=24, mask_ratio=0.0)[0]
    ids = prompt_ids + model.tokenizer(" " + greedy, add_special_tokens=False).input_ids
    assert len(set(ids)) < len(ids), "precondition: the random LM repeats itself"
    once = model.generate(video, max_new_tokens=24, mask_ratio=0.0, no_repeat_ngram_size=1)[0]
    kw = generate_kwargs(DecodingConfig(max_new_tokens=24, no_repeat_ngram_size=1), None)
    media = model.visual_tokens(video, mask_ratio=0.0)
    out = model.xlm.generate(media, input_ids=torch.tensor([prompt_ids]), eos_token_id=model.eos_id,
                             pad_token_id=model.pad_id, **kw)[0].tolist()
    assert len(set(out)) == len(out), "no token twice, the prompt's included"
    assert once == model.tokenizer.decode(out[len(prompt_ids):], skip_special_tokens=True).strip()
    assert model.generate(video, max_new_tokens=24, mask_ratio=0.0, repetition_penalty=50.0)[0] != greedy


@pytest.mark.parametrize(("changes", "message"), [
    ({"temperature": 0.7}, "temperature only apply when sampling"),
    ({"top_p": 0.9, "top_k": 10}, "top_k, top_p only apply when sampling"),
    ({"do_sample": True, "num_beams": 3}, "use num_beams=1 with do_sample"),
    ({"do_sample": True, "top_p": 0.0}, "top_p must be in"),
    ({"do_sample": True, "temperature": 0.0}, "temperature must be > 0"),
    ({"repetition_penalty": -1.0}, "repetition_penalty must be > 0"),
])
def test_decoding_settings_that_would_be_ignored_or_are_out_of_range_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        DecodingConfig(**changes)


def test_caption_cli_checks_decoding_flags_before_loading_a_model(tmp_path, capsys):
    video = str(ASSETS / "bigbuckbunny.mp4")
    missing = str(tmp_path / "no-model")  # reaching the load would say "no captioner at"
    for flags, message in ((["--temperature", "0.7"], "only apply when sampling: set do_sample (--do-sample)"),
                           (["--do-sample", "--beams", "2"], "use num_beams=1 with do_sample"),
                           (["--do-sample", "--top-p", "1.5"], "top_p must be in (0, 1]")):
        with pytest.raises(SystemExit) as err:
            cli.main(["--model", missing, "--video", video, *flags])
        assert err.value.code == 2 and message in capsys.readouterr().err, flags
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"video": "a.mp4", "question": "what?", "options": ["x", "y"]}\n')
    with pytest.raises(SystemExit) as err:
        cli.main(["--model", missing, "--qa", str(qa), "--do-sample", "--beams", "2", "--max-new-tokens", "4"])
    assert err.value.code == 2
    assert "--max-new-tokens, --beams, --do-sample choose how captions are generated" in capsys.readouterr().err


def test_caption_cli_samples_each_file_the_same_in_any_order(model, tmp_path, make_video, capsys):
    folder = model.save_pretrained(tmp_path / "captioner")
    a = str(make_video("a.mp4", num_frames=16, fps=8.0))
    b = str(make_video("b.mp4", num_frames=16, fps=8.0, seed=3))
    sample = ["--do-sample", "--temperature", "1.5", "--top-k", "0", "--max-new-tokens", "10"]

    def captions(*files: str, seed: str = "0") -> dict[str, str]:
        assert cli.main(["--model", str(folder), "--video", *files, *sample, "--seed", seed]) == 0
        return dict(line.split("\t") for line in capsys.readouterr().out.strip().splitlines())

    first = captions(a, b)
    assert captions(b, a) == first
    assert captions(a, b) == first
    assert captions(a, b, seed="5") != first
