"""Video-to-text pieces on tiny real components: masked temporal pooling, the resampler, gated cross-attention
inside a frozen HF LM (exactness at gate 0, KV-cache generation), the caption loss, saving, and QA scoring."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
import torch.nn.functional as F
from captioning_helpers import build_tiny_encoder, build_tiny_lm, open_gates, tiny_model_kwargs

from longvivit.captioning.model import CaptionerConfig, VideoToText, load_captioner, load_encoder
from longvivit.captioning.pooling import encode_grid, temporal_mean_pool
from longvivit.captioning.qa import evaluate_qa, option_scores, qa_accuracy, read_qa_jsonl
from longvivit.captioning.resampler import PerceiverResampler, ResamplerConfig
from longvivit.captioning.xattn import XAttnDecoderLayer, find_decoder_layers
from longvivit.config import PreprocessConfig, TextEncoderConfig
from longvivit.models.masking import num_kept_tokens, valid_steps
from longvivit.models.video_encoder import VideoEncoder


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("captioning")
    return {
        "encoder": build_tiny_encoder(root / "encoder"),
        "llama": build_tiny_lm(root / "llama", "llama"),
        "gpt2": build_tiny_lm(root / "gpt2", "gpt2"),
    }


def make_model(parts, family: str = "llama", **changes) -> VideoToText:
    kwargs = {**tiny_model_kwargs(parts["encoder"], parts[family]), **changes}
    torch.manual_seed(0)
    return VideoToText.build(CaptionerConfig(**kwargs)).eval()


def videos(b: int = 2, t: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, t, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------ encoder sources
def test_encoder_loads_frozen_from_an_export_folder_or_a_contrastive_checkpoint(parts, tmp_path):
    import dataclasses

    saved = VideoEncoder.from_pretrained(parts["encoder"])
    # A checkpoint shaped like `longvivit fit` writes it: hyperparameters of both towers, prefixed weights.
    ckpt = tmp_path / "contrastive.ckpt"
    hparams = {"video": saved.cfg.to_dict(), "text": dataclasses.asdict(TextEncoderConfig())}
    state = {f"model.video_encoder.{k}": v for k, v in saved.state_dict().items()}
    torch.save({"hyper_parameters": hparams, "state_dict": state}, ckpt)
    for source in (parts["encoder"], ckpt):
        enc = load_encoder(source, num_frames=4, image_size=32)
        assert not enc.training and not any(p.requires_grad for p in enc.parameters())
        for k, v in saved.state_dict().items():
            assert torch.equal(enc.state_dict()[k], v), (source, k)
    longer = load_encoder(ckpt, num_frames=8, image_size=32)  # temporal table extended for more frames
    assert longer.pos_embed_temporal.shape[1] == 4


def test_encoder_reads_a_checkpoint_once(parts, tmp_path, monkeypatch):
    import dataclasses

    from longvivit.captioning import model as cap_model
    from longvivit.models import checkpoint, files, init

    saved = VideoEncoder.from_pretrained(parts["encoder"])
    ckpt = tmp_path / "contrastive.ckpt"
    hparams = {"video": saved.cfg.to_dict(), "text": dataclasses.asdict(TextEncoderConfig())}
    torch.save({"hyper_parameters": hparams,
                "state_dict": {f"model.video_encoder.{k}": v for k, v in saved.state_dict().items()}}, ckpt)
    calls = []
    real = files.read_checkpoint
    for module in (cap_model, checkpoint, init):
        monkeypatch.setattr(module, "read_checkpoint", lambda p: calls.append(p) or real(p))
    load_encoder(ckpt, num_frames=4, image_size=32)
    assert len(calls) == 1  # config and weights from one read


# ------------------------------------------------------------------------------------------ pooling
def test_temporal_mean_pool_averages_only_visible_real_steps():
    grid = torch.arange(1, 3 * 2 + 1, dtype=torch.float32).view(1, 3, 2, 1)  # (B=1, T'=3, S=2, C=1)
    visible = torch.tensor([[[True, False], [False, False], [True, False]]])  # position 1 never seen
    pooled, keep = temporal_mean_pool(grid, visible)
    assert pooled[0, 0, 0] == (1 + 5) / 2 and pooled[0, 1, 0] == 0
    assert keep.tolist() == [[True, False]]
    # 3 real frames with tubelets of 2: steps 0 and 1 start on real frames, step 2 is padding only.
    steps = valid_steps(torch.tensor([3]), tubelet_t=2, steps=3)
    assert steps.tolist() == [[True, True, False]]
    pooled, keep = temporal_mean_pool(grid, steps[..., None].expand_as(visible))  # padding: not visible
    assert pooled[0, :, 0].tolist() == [(1 + 3) / 2, (2 + 4) / 2]


def test_masked_grid_holds_exactly_the_encoders_masked_tokens(parts):
    enc = VideoEncoder.from_pretrained(parts["encoder"]).eval()
    video = videos()
    with torch.no_grad():
        grid0, vis0 = encode_grid(enc, video, 0.0)
        assert vis0.all() and torch.equal(grid0, enc.forward_tokens_grid(video).flatten(2, 3))
        grid, vis = encode_grid(enc, video, 0.5, torch.Generator().manual_seed(3))
        ref = enc.forward_features(video, 0.5, torch.Generator().manual_seed(3))  # (B, N_keep, C)
    n = enc.cfg.num_tokens
    assert vis.flatten(1).sum(1).tolist() == [num_kept_tokens(n, 0.5)] * 2
    for i in range(2):  # the visible grid cells, in time-major order, are the encoder's own masked outputs
        assert torch.equal(grid[i].flatten(0, 1)[vis[i].flatten()], ref[i])
    assert (grid.flatten(1, 2)[~vis.flatten(1)] == 0).all()


def test_visual_token_count_is_fixed_whatever_the_video_length(parts):
    model = make_model(parts, num_frames=8)  # temporal table extended from 4 to 8 frames
    short, long_ = model.visual_tokens(videos(t=4)), model.visual_tokens(videos(t=8))
    n_spatial = model.encoder.cfg.num_spatial_tokens
    assert short.shape == long_.shape == (2, n_spatial, model.cfg.resampler.hidden)


def test_resampler_ignores_masked_positions():
    cfg = ResamplerConfig(depth=2, hidden=32, heads=4, ff_dim=64)
    res = PerceiverResampler(16, cfg, num_latents=3).eval()
    x = torch.randn(2, 5, 16)
    keep = torch.tensor([[True, True, False, True, False]] * 2)
    out = res(x, keep)
    y = x.clone()
    y[:, 2] += 10.0
    assert torch.allclose(res(y, keep), out, atol=1e-6), "a masked position must not reach the latents"
    y[:, 0] += 10.0
    assert not torch.allclose(res(y, keep), out, atol=1e-3)
    assert out.shape == (2, 3, 32)


# ------------------------------------------------------------------------------------------ cross-attention
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_zero_gates_leave_the_lm_logits_bit_identical(parts, family):
    model = make_model(parts, family)
    parent, name = find_decoder_layers(model.xlm.lm)
    assert all(isinstance(layer, XAttnDecoderLayer) for layer in getattr(parent, name))
    text = model.build_text(["A video of"] * 2, ["the red circle moves left", "a rabbit"])
    ids, att = text["input_ids"], text["attention_mask"]
    with torch.no_grad():
        media = model.visual_tokens(videos())
        plain = model.xlm(None, input_ids=ids, attention_mask=att).logits
        with_video = model.xlm(media, input_ids=ids, attention_mask=att).logits
        assert torch.equal(plain, with_video)
        open_gates(model)
        opened = model.xlm(media, input_ids=ids, attention_mask=att).logits
        other = model.xlm(model.visual_tokens(videos(seed=1)), input_ids=ids, attention_mask=att).logits
    assert not torch.allclose(opened, plain, atol=1e-4), "open gates let the video change the LM"
    assert not torch.allclose(opened, other, atol=1e-4), "different videos give different logits"


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_generate_with_kv_cache_equals_full_recomputation(parts, family):
    model = make_model(parts, family)
    open_gates(model)
    media = model.visual_tokens(videos())
    ids = model.build_text(["A video of"] * 2, [""] * 2, add_eos=False)["input_ids"][:, :3]  # prompt only
    kw = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "max_new_tokens": 6, "do_sample": False,
          "min_new_tokens": 6, "output_scores": True, "return_dict_in_generate": True,
          "pad_token_id": model.pad_id}
    with torch.no_grad():
        cached = model.xlm.generate(media, use_cache=True, **kw)
        full = model.xlm.generate(media, use_cache=False, **kw)
        plain = model.xlm.lm.generate(use_cache=True, **kw)  # no visual context: the plain LM
    assert torch.equal(cached.sequences, full.sequences)
    for a, b in zip(cached.scores, full.scores, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert not all(torch.allclose(a, b) for a, b in zip(cached.scores, plain.scores, strict=True))
    captions = model.generate(videos(), max_new_tokens=5, num_beams=3)  # beams repeat the visual tokens
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)
    for w in model.xlm._wrappers:
        assert w.media is None, "the visual context is cleared after generate"


def test_caption_loss_covers_caption_tokens_and_eos_only(parts):
    model = make_model(parts)
    open_gates(model)
    caps = ["the red circle moves left", "a rabbit"]
    text = model.build_text(["A video of"] * 2, caps)
    prompt_len = len(model.tokenizer("A video of").input_ids)
    for i, cap in enumerate(caps):
        n = int(text["attention_mask"][i].sum())
        cap_ids = model.tokenizer(" " + cap, add_special_tokens=False).input_ids
        assert text["labels"][i, :prompt_len].eq(-100).all() and text["labels"][i, n:].eq(-100).all()
        assert text["labels"][i, prompt_len:n].tolist() == [*cap_ids, model.eos_id]
    video = videos()
    gen = torch.Generator().manual_seed(0)
    loss = model.caption_loss(video, caps, mask_ratio=0.0, generator=gen)
    # Reference: each sequence alone, unpadded, mean over all labelled tokens of the batch.
    media = model.visual_tokens(video, mask_ratio=0.0)
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(2):
            n = int(text["attention_mask"][i].sum())
            logits = model.xlm(media[i : i + 1], input_ids=text["input_ids"][i : i + 1, :n]).logits[0]
            lab = text["labels"][i, 1:n]
            keep = lab != -100
            total += F.cross_entropy(logits[:-1][keep], lab[keep], reduction="sum").item()
            count += int(keep.sum())
    assert loss.item() == pytest.approx(total / count, rel=1e-5)
    short = model.build_text(["A video of"], [caps[0]], max_length=prompt_len + 2)
    assert short["input_ids"].shape[1] == prompt_len + 2


def test_save_and_load_round_trip(parts, tmp_path):
    model = make_model(parts)
    open_gates(model)
    out = model.save_pretrained(tmp_path / "captioner")
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert files == {"captioner_config.json", "captioner.safetensors", "preprocessor_config.json",
                     "encoder/config.json", "encoder/model.safetensors"}
    loaded = load_captioner(out)
    for k, v in model.trainable_state_dict().items():
        assert torch.equal(loaded.trainable_state_dict()[k], v), k
    video = videos()
    assert loaded.generate(video, max_new_tokens=4, mask_ratio=0.0) == model.generate(
        video, max_new_tokens=4, mask_ratio=0.0)
    assert json.loads((out / "captioner_config.json").read_text())["encoder"] == "encoder"



def test_a_reloaded_captioner_masks_as_the_trained_module_did(parts, tmp_path):
    # The folder kept the training mask_ratio but not eval_mask_ratio (nor eval_seed): a module validated with
    # eval_mask_ratio 0 came back masking 30% of the tubelets, so `longvivit caption` captioned and scored QA unlike
    # the run it came from, from the folder and from the checkpoint alike.
    from longvivit.captioning.module import CaptioningModule
    from longvivit.models.masking import video_generator

    torch.manual_seed(0)
    module = CaptioningModule(**tiny_model_kwargs(parts["encoder"], parts["llama"]), mask_ratio=0.3,
                              eval_mask_ratio=0.0, eval_seed=7)
    open_gates(module.model)
    folder = module.save_pretrained(tmp_path / "captioner")
    ckpt = tmp_path / "last.ckpt"  # shaped like Lightning's: hyperparameters and the trained tensors
    state = {f"model.{k}": v for k, v in module.model.trainable_state_dict().items()}
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": state}, ckpt)
    video, keys = videos(), {"key": ["a", "b"]}
    validated = module.model.generate(video, None, 8, 1, module.eval_mask_ratio, module._eval_generators(keys))
    options = ["a red circle", "a rabbit in a field"]
    scores = option_scores(module.model, video[0], "what moves?", options, mask_ratio=module.eval_mask_ratio)
    for source in (folder, ckpt):
        loaded = load_captioner(source)
        assert (loaded.cfg.inference_mask_ratio, loaded.cfg.eval_seed) == (0.0, 7), source
        gens = [video_generator(loaded.cfg.eval_seed, k) for k in keys["key"]]
        assert loaded.generate(video, max_new_tokens=8, generator=gens) == validated, source
        assert torch.equal(option_scores(loaded, video[0], "what moves?", options), scores), source
    # a folder written before eval_mask_ratio was saved: the documented default, the training ratio
    config = json.loads((folder / "captioner_config.json").read_text())
    del config["eval_mask_ratio"], config["eval_seed"]
    (folder / "captioner_config.json").write_text(json.dumps(config))
    old = load_captioner(folder)
    assert (old.cfg.inference_mask_ratio, old.cfg.eval_seed) == (0.3, 0)


def test_a_saved_captioner_keeps_its_encoder_as_trained(parts, tmp_path):
    # The encoder/ copy was the encoder rebuilt at the captioner's frames: a 16-frame table cut from a
    # long-video encoder's, so long-video inference from the folder used a repeated short table, not the trained one.
    long_enc = build_tiny_encoder(tmp_path / "long", num_frames=16)  # 8 temporal steps
    trained = VideoEncoder.from_pretrained(long_enc)
    model = make_model(parts, encoder=str(long_enc), num_frames=4)  # captions 4-frame clips: 2 steps
    assert model.encoder.pos_embed_temporal.shape[1] == 2
    out = model.save_pretrained(tmp_path / "captioner")
    saved = VideoEncoder.from_pretrained(out / "encoder")
    assert saved.cfg == trained.cfg
    for k, v in trained.state_dict().items():
        assert torch.equal(saved.state_dict()[k], v), k
    at_16 = load_captioner(out, num_frames=16).encoder
    assert torch.equal(at_16.pos_embed_temporal, trained.pos_embed_temporal)
    # keeping the trained copy draws no random numbers: a captioner's initialisation is what it was
    torch.manual_seed(0)
    load_encoder(long_enc, num_frames=4, image_size=32)
    after_load = torch.rand(3)
    torch.manual_seed(0)
    VideoEncoder.from_pretrained(long_enc, num_frames=4, image_size=32)
    assert torch.equal(after_load, torch.rand(3))


def test_a_videos_inference_mask_does_not_depend_on_its_place(parts, make_video, tmp_path):
    # Masks were drawn per batch (or from the input's index): the same question on the same video scored
    # differently on lines 1 and 2 of a QA file, and shard CIDEr depended on --batch-size.
    from longvivit.captioning.qa import QAItem, evaluate_qa
    from longvivit.models.masking import video_generator

    model = make_model(parts)
    open_gates(model)
    a, b = videos(1, seed=1), videos(1, seed=2)
    both = model.visual_tokens(torch.cat([a, b]), mask_ratio=0.5,
                               generator=[video_generator(0, "a"), video_generator(0, "b")])
    alone = model.visual_tokens(b, mask_ratio=0.5, generator=[video_generator(0, "b")])
    assert torch.allclose(both[1:], alone, atol=1e-6)
    clip = str(make_video("q.mp4", num_frames=16, fps=8.0))
    item = QAItem(key="x", video=clip, question="what moves?", options=["a square", "a rabbit"], answer=0)
    pre = PreprocessConfig(num_frames=4, fps=2.0, image_size=32)
    rows = evaluate_qa(model, [item, item], pre, mask_ratio=0.5)["items"]
    assert rows[0]["scores"] == rows[1]["scores"]


def test_a_video_files_mask_follows_its_content_not_how_its_path_is_spelled(parts, make_video, tmp_path,
                                                                            monkeypatch):
    # The mask was seeded with the path as typed: `caption --video a.mp4`, `./a.mp4`, its absolute path, a copy on
    # another machine, or a QA file read from another folder each gave the same video another mask (and caption).
    import shutil

    from longvivit.captioning.qa import QAItem, evaluate_qa

    model = make_model(parts)
    open_gates(model)
    clip = make_video("q.mp4", num_frames=16, fps=8.0)
    copy = tmp_path / "elsewhere" / "renamed.mp4"
    copy.parent.mkdir()
    shutil.copy(clip, copy)
    monkeypatch.chdir(tmp_path)
    pre = PreprocessConfig(num_frames=4, fps=2.0, image_size=32)
    spellings = ["q.mp4", "./q.mp4", str(clip), str(copy)]
    items = [QAItem(key=str(i), video=v, question="what moves?", options=["a square", "a rabbit"])
             for i, v in enumerate(spellings)]
    rows = evaluate_qa(model, items, pre, mask_ratio=0.5)["items"]
    assert all(r["scores"] == rows[0]["scores"] for r in rows), [r["scores"] for r in rows]
    other = evaluate_qa(model, items[:1], pre, mask_ratio=0.5, seed=1)["items"]
    assert other[0]["scores"] != rows[0]["scores"], "the seed still changes the mask"


# ------------------------------------------------------------------------------------------ QA
def test_qa_accuracy_counts_matches():
    assert qa_accuracy([0, 2, 1, 1], [0, 1, 1, 3]) == 50.0
    with pytest.raises(ValueError):
        qa_accuracy([0], [0, 1])


def test_option_scores_are_the_option_log_likelihoods(parts, make_video, tmp_path):
    model = make_model(parts)
    open_gates(model)
    pre = PreprocessConfig(num_frames=4, fps=2.0, image_size=32)
    from longvivit.data.decode import decode_video

    clip = make_video("a.mp4", num_frames=16, fps=8.0)
    video, nvf = decode_video(clip.read_bytes(), pre)
    options = ["he opens the door", "a rabbit", "the yellow square turns cyan"]
    scores = option_scores(model, video, "what does the person do?", options, nvf, mask_ratio=0.0)
    # Reference: log-softmax of each option's tokens after "Question: ... Answer:", one sequence at a time.
    media = model.visual_tokens(video[None], torch.tensor([nvf]), mask_ratio=0.0)
    ctx = model.tokenizer("Question: what does the person do? Answer:").input_ids
    expected = []
    with torch.no_grad():
        for opt in options:
            tgt = model.tokenizer(" " + opt, add_special_tokens=False).input_ids
            logp = model.xlm(media, input_ids=torch.tensor([ctx + tgt])).logits[0].log_softmax(-1)
            expected.append(sum(logp[len(ctx) - 1 + j, t].item() for j, t in enumerate(tgt)))
    torch.testing.assert_close(scores, torch.tensor(expected), atol=1e-4, rtol=1e-5)
    question = "what does the person do?"
    mean = option_scores(model, video, question, options, nvf, normalize=True, mask_ratio=0.0)
    lengths = torch.tensor([len(model.tokenizer(" " + o, add_special_tokens=False).input_ids)
                            for o in options])
    torch.testing.assert_close(mean, scores / lengths)

    # Through the JSONL reader: answers chosen so that exactly one of the two questions is right.
    best = int(torch.tensor(expected).argmax())
    qa = tmp_path / "qa.jsonl"
    rows = [{"video": "a.mp4", "question": "what does the person do?", "options": options, "answer": best},
            {"video": str(clip), "question": "what does the person do?", "options": options,
             "answer": (best + 1) % 3, "id": "q2"}]
    qa.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    items = read_qa_jsonl(qa)
    assert items[0].video == str(clip) and items[1].key == "q2"
    result = evaluate_qa(model, items, pre, mask_ratio=0.0)
    assert [r["prediction"] for r in result["items"]] == [best, best]
    assert result["accuracy"] == 50.0 and result["chance"] == pytest.approx(100 / 3)
    # Questions without answers: predictions only, and the summary stays valid JSON (null, not NaN).
    unanswered = evaluate_qa(model, [dataclasses.replace(i, answer=None) for i in items], pre, mask_ratio=0.0)
    assert unanswered["accuracy"] is None and unanswered["chance"] is None
    json.dumps(unanswered, allow_nan=False)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"video": "a.mp4", "question": "q?"', "qa.jsonl:2: not a JSON object"),
        ('["a.mp4", "q?"]', "qa.jsonl:2: expected a JSON object"),
        ('{"video": "a.mp4", "question": "q?", "options": "yes or no"}', "options must be a list"),
        ('{"video": "a.mp4", "question": "q?", "options": ["yes"]}', "need at least 2 options"),
        ('{"video": "a.mp4", "question": "q?", "options": ["yes", "no"], "answer": 2}', "answer 2 is not an index"),
        ('{"video": "a.mp4", "question": "q?", "options": ["yes", "no"], "answer": "no"}', "answer 'no' is not"),
        ('{"video": "a.mp4", "options": ["yes", "no"]}', "missing ['question']"),
    ],
)
def test_qa_reader_names_the_file_and_line_of_a_bad_question(tmp_path, line, message):
    # A string of options used to be read as one option per character; a broken line was a bare JSONDecodeError.
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"video": "a.mp4", "question": "q?", "options": ["yes", "no"], "answer": 1}\n' + line + "\n")
    with pytest.raises(ValueError, match=re.escape(message)):
        read_qa_jsonl(qa)


def test_caption_cli_checks_the_questions_before_loading_a_model(tmp_path):
    from longvivit.captioning import cli

    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"video": "a.mp4", "question": "q?", "options": "yes or no"}\n')
    # The model path does not exist: the questions are read first, so their error is the one reported.
    with pytest.raises(SystemExit, match="options must be a list"):
        cli.main(["--model", str(tmp_path / "no-model"), "--qa", str(qa)])
    # A bad template was a KeyError traceback after the model load, or (no field) silently scored every option
    # without its question.
    qa.write_text('{"video": "a.mp4", "question": "q?", "options": ["yes", "no"]}\n')
    for template, message in (("Q: {q} A:", r"its only field is \{question\} \(KeyError"),
                              ("No field here", r"has no \{question\} field")):
        with pytest.raises(SystemExit, match=message):
            cli.main(["--model", str(tmp_path / "no-model"), "--qa", str(qa), "--qa-template", template])


def test_lm_cache_key_follows_the_gguf_content_not_its_mtime(tmp_path, monkeypatch):
    # Every reinstall of the LM package rewrites the file (new mtime): keyed on mtime, each one left a ~500 MB
    # conversion behind in the cache. Same bytes -> same entry; other bytes -> another.
    import os

    from longvivit.captioning.lm import _gguf_cache_path

    monkeypatch.setenv("LONGVIVIT_CACHE", str(tmp_path / "cache"))
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "m.gguf").write_bytes(b"GGUF" + bytes(range(256)) * 64)
    os.utime(b / "m.gguf", (1_000_000, 1_000_000))
    assert _gguf_cache_path(str(a), "m.gguf") == _gguf_cache_path(str(b), "m.gguf")
    (b / "m.gguf").write_bytes(b"GGUF" + bytes(64))
    assert _gguf_cache_path(str(a), "m.gguf") != _gguf_cache_path(str(b), "m.gguf")
    assert _gguf_cache_path(str(a), "m.gguf").parent == tmp_path / "cache" / "lm"


def test_encoder_at_another_resolution_than_trained_is_warned(parts, caplog):
    trained = VideoEncoder.from_pretrained(parts["encoder"]).cfg.image_size
    with caplog.at_level("WARNING", logger="longvivit.captioning.model"):
        load_encoder(parts["encoder"], num_frames=4, image_size=trained)
        assert not caplog.records
        load_encoder(parts["encoder"], num_frames=4, image_size=trained * 2)
    assert any(f"trained at {trained} px and will see {trained * 2} px" in r.getMessage() for r in caplog.records)


def test_caption_of_a_checkpoint_samples_frames_as_it_was_trained(parts, tmp_path):
    # `longvivit caption --model last.ckpt` sampled at 1 FPS whatever the training data's rate (a saved folder
    # kept it).
    import argparse

    from longvivit.captioning.cli import _preprocess

    ckpt = tmp_path / "last.ckpt"
    torch.save({"datamodule_hyper_parameters": {"fps": 0.25, "sampling": "fps"}}, ckpt)
    args = argparse.Namespace(fps=None, sampling=None)
    pre = _preprocess(make_model(parts), str(ckpt), args)
    assert (pre.fps, pre.num_frames, pre.image_size) == (0.25, 4, 32)
    assert _preprocess(make_model(parts), str(ckpt), argparse.Namespace(fps=2.0, sampling=None)).fps == 2.0


def test_caption_fps_on_a_uniformly_trained_captioner_samples_at_that_rate(parts, tmp_path, caplog):
    # --fps on a model trained with uniform sampling stayed uniform: the rate was set and had no effect.
    import argparse

    from longvivit.captioning.cli import _preprocess
    from longvivit.captioning.cli import main as caption_main

    ckpt = tmp_path / "last.ckpt"
    torch.save({"datamodule_hyper_parameters": {"fps": 1.0, "sampling": "uniform"}}, ckpt)
    model = make_model(parts)
    assert _preprocess(model, str(ckpt), argparse.Namespace(fps=None, sampling=None)).sampling == "uniform"
    pre = _preprocess(model, str(ckpt), argparse.Namespace(fps=2.0, sampling=None))
    assert (pre.sampling, pre.fps) == ("fps", 2.0)
    assert "sampling frames at 2 FPS, not uniform as the model was trained" in caplog.text
    with pytest.raises(SystemExit, match="--sampling uniform spreads the frames over each clip and has no rate"):
        caption_main(["--model", str(tmp_path / "none"), "--video", "x.mp4", "--sampling", "uniform", "--fps", "2"])


def test_questions_in_a_row_on_one_video_decode_it_once(parts, make_video, monkeypatch):
    # QA sets ask several questions per video in a row (NExT-QA ~5-10): each decoded and hashed the video again.
    from longvivit.captioning.qa import QAItem, evaluate_qa
    from longvivit.data import decode

    model = make_model(parts)
    open_gates(model)
    calls = []
    real = decode.decode_video_file
    monkeypatch.setattr(decode, "decode_video_file", lambda path, pre: calls.append(path) or real(path, pre))
    a, b = str(make_video("a.mp4", num_frames=16, fps=8.0)), str(make_video("b.mp4", num_frames=16, fps=8.0, seed=3))
    items = [QAItem(key=str(i), video=v, question=f"question {i}?", options=["a square", "a rabbit"])
             for i, v in enumerate([a, a, a, b, b, a])]
    pre = PreprocessConfig(num_frames=4, fps=2.0, image_size=32)
    rows = evaluate_qa(model, items, pre, mask_ratio=0.5)["items"]
    assert calls == [a, b, a]
    alone = evaluate_qa(model, items[1:2], pre, mask_ratio=0.5)["items"]
    assert alone[0]["scores"] == rows[1]["scores"]  # a reused video is the same input with the same mask
