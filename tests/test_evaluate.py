"""``longvivit eval`` end to end: metrics JSON format (DESIGN.md §2), embedding dump, probes, order-only pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from longvivit.cli import main as cli_main
from longvivit.config import TextEncoderConfig, VideoEncoderConfig, VideoTextConfig
from longvivit.data import make_shards, synthetic
from longvivit.evaluation.retrieval import retrieval_metrics
from longvivit.models.model import VideoTextModel

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaldata")
    synthetic.generate(root / "data", seed=1, size=32, num_images=(0, 0, 0), num_clips=(0, 0, 8),
                       num_long=(0, 0, 0))
    shards = root / "shards"
    assert make_shards.main(["--manifest", str(root / "data" / "clips" / "test.jsonl"), "--out", str(shards)]) == 0
    torch.manual_seed(0)
    cfg = VideoTextConfig(video=VideoEncoderConfig.preset("tiny", image_size=32, num_frames=8, embed_dim=32),
                          text=TextEncoderConfig(max_length=32))
    model_dir = VideoTextModel(cfg).save_pretrained(root / "model")
    return root, shards, model_dir


def test_eval_writes_metrics_json_and_embeddings(setup, capsys):
    root, shards, model_dir = setup
    out, emb = root / "m.json", root / "emb"
    assert cli_main(["eval", "--model", str(model_dir), "--shards", str(shards), "--num-frames", "16",
                     "--out", str(out), "--embeddings", str(emb)]) == 0
    m = json.loads(out.read_text())
    for d in ("t2v", "v2t"):
        assert set(m[d]) == {"R@1", "R@5", "R@10", "MdR", "MnR", "MRR"}
    assert m["num_videos"] == 8 and m["num_texts"] == 8
    assert m["chance"]["R@1"] == pytest.approx(100 / 8) and m["chance"]["MRR"] == pytest.approx(
        sum(1 / k for k in range(1, 9)) / 8)
    # the 16-frame request extended the 8-frame temporal table, and says so
    assert m["settings"]["num_frames"] == 16 and any("temporal" in a for a in m["settings"]["adaptations"])
    # the synthetic test split's order-only pairs are found through the shard metadata
    oo = m["order_only"]
    assert oo["num_pairs"] >= 1 and oo["pair_accuracy"]["chance"] == 50.0
    assert oo["pair_accuracy"]["num_queries"] == 2 * oo["num_pairs"]
    # any tool can recompute the metrics from the dump
    video, text = np.load(emb / "video_emb.npy"), np.load(emb / "text_emb.npy")
    ids = json.loads((emb / "video_ids.json").read_text())
    owners = [t["video"] for t in json.loads((emb / "text_ids.json").read_text())]
    t2v = torch.tensor([ids.index(o) for o in owners])
    again = retrieval_metrics(torch.from_numpy(text @ video.T), t2v)
    assert again["t2v"]["R@1"] == pytest.approx(m["t2v"]["R@1"])
    assert again["v2t"]["MRR"] == pytest.approx(m["v2t"]["MRR"])
    assert "T2V R@1" in capsys.readouterr().out


def test_frame_order_probes_change_the_video_embeddings_but_not_the_texts(setup):
    root, shards, model_dir = setup
    dumps = {}
    for order in ("original", "reversed", "shuffled", "single"):
        emb = root / f"emb_{order}"
        assert cli_main(["eval", "--model", str(model_dir), "--shards", str(shards), "--frame-order", order,
                         "--embeddings", str(emb), "--out", str(root / f"{order}.json")]) == 0
        dumps[order] = (np.load(emb / "video_emb.npy"), np.load(emb / "text_emb.npy"))
        assert json.loads((root / f"{order}.json").read_text())["settings"]["frame_order"] == order
    for order in ("reversed", "shuffled", "single"):
        np.testing.assert_allclose(dumps[order][1], dumps["original"][1], atol=1e-6)
        assert not np.allclose(dumps[order][0], dumps["original"][0], atol=1e-4), order


def test_eval_rejects_a_bad_frame_order(setup):
    _, shards, model_dir = setup
    with pytest.raises(SystemExit):
        cli_main(["eval", "--model", str(model_dir), "--shards", str(shards), "--frame-order", "sideways"])


def test_eval_with_no_readable_clip_says_which_shards_and_why(setup, tmp_path):
    _, _, model_dir = setup
    missing = tmp_path / "missing.tar"
    with pytest.raises(SystemExit, match=r"longvivit eval: no shard at .*missing\.tar$"):  # before the model loads
        cli_main(["eval", "--model", str(model_dir), "--shards", str(missing)])
    broken = tmp_path / "broken.tar"  # there, but not a tar: every read fails, and the message says why
    broken.write_bytes(b"not a tar archive")
    with pytest.raises(SystemExit, match=r"no video clip read from .*broken\.tar.*1 skipped.*ReadError"):
        cli_main(["eval", "--model", str(model_dir), "--shards", str(broken)])


def test_eval_takes_several_shard_paths_as_an_unquoted_shell_glob_gives_them(setup, tmp_path):
    root, _, model_dir = setup
    split = tmp_path / "split"  # the same 8 clips, 3 to a shard
    assert make_shards.main(["--manifest", str(root / "data" / "clips" / "test.jsonl"), "--out", str(split),
                             "--maxcount", "3"]) == 0
    tars = sorted(str(p) for p in split.glob("*.tar"))
    assert len(tars) == 3
    one, many = tmp_path / "one.json", tmp_path / "many.json"
    assert cli_main(["eval", "--model", str(model_dir), "--shards", str(split), "--out", str(one)]) == 0
    # `--shards split/*.tar` unquoted: the shell passes each file as its own argument
    assert cli_main(["eval", "--model", str(model_dir), "--shards", *tars, "--out", str(many)]) == 0
    a, b = json.loads(one.read_text()), json.loads(many.read_text())
    assert a["num_videos"] == b["num_videos"] == 8 and a["t2v"] == b["t2v"]
    assert b["settings"]["shards"] == tars and a["settings"]["shards"] == str(split)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--num-frames", "0"], "--num-frames: must be > 0"),  # 0 used to mean "the model's" silently
        (["--fps", "0"], "--fps: must be > 0"),
        (["--image-size", "0"], "--image-size: must be > 0"),
        (["--batch-size", "0"], "--batch-size: must be > 0"),
        (["--mask-ratio", "1"], "--mask-ratio: must be in [0, 1)"),
        (["--workers", "-1"], "--workers: must be >= 0"),
        (["--device", "gpu"], "not a torch device"),
    ],
)
def test_eval_and_caption_reject_bad_settings_when_parsing(setup, capsys, args, message):
    from longvivit.captioning import cli as caption_cli

    _, shards, model_dir = setup
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["eval", "--model", str(model_dir), "--shards", str(shards), *args])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    caption_args = [{"--image-size": "--max-new-tokens", "--workers": "--num-workers"}.get(args[0], args[0]), args[1]]
    with pytest.raises(SystemExit) as exit_info:
        caption_cli.main(["--model", str(model_dir), "--video", "clip.mp4", *caption_args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument" in err and message.split(":", 1)[-1].strip() in err, err


def test_cuda_device_without_cuda_is_a_parse_error(setup, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    _, shards, model_dir = setup
    with pytest.raises(SystemExit):
        cli_main(["eval", "--model", str(model_dir), "--shards", str(shards), "--device", "cuda"])
    assert "CUDA is not available on this machine" in capsys.readouterr().err


def test_eval_given_a_manifest_instead_of_shards_says_so_before_loading_the_model(setup, tmp_path):
    root, _, _ = setup
    manifest = root / "data" / "clips" / "test.jsonl"
    with pytest.raises(SystemExit, match="test.jsonl is not a webdataset shard"):
        cli_main(["eval", "--model", str(tmp_path / "not-loaded"), "--shards", str(manifest)])


def test_eval_of_a_video_encoder_without_its_text_tower_is_refused(setup, tmp_path):
    # `enc.save_pretrained(dir)` writes the video encoder alone: its retrieval used a random text projection and
    # gave other numbers on every run.
    from longvivit.models.video_encoder import VideoEncoder

    root, _, model_dir = setup
    VideoEncoder.from_pretrained(model_dir).save_pretrained(tmp_path / "enc")
    with pytest.raises(SystemExit, match="holds a video encoder without its text tower"):
        cli_main(["eval", "--model", str(tmp_path / "enc"), "--shards", str(root / "shards")])


def test_eval_of_two_shard_sets_with_the_same_keys_says_why_in_one_line(setup):
    root, shards, model_dir = setup
    with pytest.raises(SystemExit, match=r"longvivit eval: two clips have the key .*evaluate each set on its own"):
        cli_main(["eval", "--model", str(model_dir), "--shards", str(shards), str(shards)])


def test_eval_over_too_many_unreadable_clips_says_so_in_one_line_and_can_go_on(setup, tmp_path):
    # It ended in a 67-line TooManyFailuresError traceback that named `longvivit fit`'s flag, and eval had none.
    import webdataset as wds

    _, shards, model_dir = setup
    good = [s for s in wds.WebDataset(str(next(shards.glob("*.tar"))), shardshuffle=False)]
    mixed = tmp_path / "mixed-000000.tar"
    with wds.TarWriter(str(mixed)) as sink:
        for copy in range(3):
            for s in good:
                members = {k: v for k, v in s.items() if not k.startswith("__")}
                sink.write({**members, "__key__": f"{copy}_{s['__key__']}"})
        for i in range(4):
            sink.write({"__key__": f"bad{i}", "mp4": b"\x00\x00\x00\x18ftypmp42 truncated", "txt": b"a caption"})
    args = ["eval", "--model", str(model_dir), "--shards", str(mixed), "--num-frames", "16"]
    with pytest.raises(SystemExit, match=r"^longvivit eval: .* could not be used .*--max-fail-fraction 1 the clips "
                                         r"that decode are evaluated"):
        cli_main(args)
    out = tmp_path / "m.json"
    assert cli_main([*args, "--max-fail-fraction", "1", "--out", str(out)]) == 0
    m = json.loads(out.read_text())
    assert m["num_videos"] == 3 * len(good)
    assert sorted(s["key"].split(" @ ")[0] for s in m["skipped"]) == [f"bad{i}" for i in range(4)]


def test_eval_lists_the_image_samples_of_a_mixed_test_set(setup, tmp_path, capsys):
    # The images of a mixed set were left out of the retrieval with no word in the summary or the JSON.
    import io

    import webdataset as wds
    from PIL import Image

    _, shards, model_dir = setup
    good = [s for s in wds.WebDataset(str(next(shards.glob("*.tar"))), shardshuffle=False)]
    png = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(png, "PNG")
    mixed = tmp_path / "mixed-000000.tar"
    with wds.TarWriter(str(mixed)) as sink:
        for s in good:
            sink.write({k: v for k, v in s.items() if k != "__url__"})
        sink.write({"__key__": "still0", "png": png.getvalue(), "txt": b"a red picture"})
    out = tmp_path / "m.json"
    assert cli_main(["eval", "--model", str(model_dir), "--shards", str(mixed), "--out", str(out)]) == 0
    m = json.loads(out.read_text())
    assert m["num_videos"] == len(good) and m["skipped"] == []
    assert [p["key"].split(" @ ")[0] for p in m["passed_over"]] == ["still0"]
    assert "passed over 1 image samples" in capsys.readouterr().out
    only_images = tmp_path / "img-000000.tar"
    with wds.TarWriter(str(only_images)) as sink:
        sink.write({"__key__": "still0", "png": png.getvalue(), "txt": b"a red picture"})
    with pytest.raises(SystemExit, match=r"no video clip read from .*; 1 image samples, which are not clips"):
        cli_main(["eval", "--model", str(model_dir), "--shards", str(only_images)])


def test_eval_refuses_outputs_it_cannot_write_before_it_runs(setup, tmp_path, capsys):
    # An --out naming a folder, or --embeddings naming a file, ended in a traceback after the whole evaluation.
    _, shards, model_dir = setup
    (tmp_path / "a_file").write_text("x")
    for flag, value, said in (("--out", tmp_path, "is a folder; name the file to write"),
                              ("--out", tmp_path / "a_file" / "m.json", "a_file is a file, not a folder"),
                              ("--embeddings", tmp_path / "a_file", "a_file is a file; name a folder")):
        with pytest.raises(SystemExit) as exc:
            cli_main(["eval", "--model", str(model_dir), "--shards", str(shards), flag, str(value)])
        assert exc.value.code == 2 and said in capsys.readouterr().err


def test_eval_fps_on_a_uniformly_trained_model_samples_at_that_rate(setup, tmp_path, caplog):
    # --fps 2 on a model trained with uniform sampling kept uniform sampling: the JSON said fps 2, unused.
    import shutil

    _, shards, model_dir = setup
    model = tmp_path / "uniform"
    shutil.copytree(model_dir, model)
    (model / "preprocessor_config.json").write_text(json.dumps(
        {"num_frames": 8, "fps": 1.0, "sampling": "uniform", "image_size": 32}))
    assert _eval_metrics((None, shards, model), tmp_path)["settings"]["sampling"] == "uniform"  # as trained
    m = _eval_metrics((None, shards, model), tmp_path, "--fps", "2")
    assert (m["settings"]["sampling"], m["settings"]["fps"]) == ("fps", 2.0)
    assert "sampling frames at 2 FPS, not uniform as the model was trained" in caplog.text
    with pytest.raises(SystemExit, match="--sampling uniform spreads the frames over each clip and has no rate"):
        cli_main(["eval", "--model", str(model), "--shards", str(shards), "--sampling", "uniform", "--fps", "2"])



def test_eval_starts_the_window_where_the_model_was_validated(setup, tmp_path):
    # A model trained (and validated) with start: center was evaluated from the first frame.
    import shutil

    _, shards, model_dir = setup
    model = tmp_path / "center"
    shutil.copytree(model_dir, model)
    (model / "preprocessor_config.json").write_text(json.dumps(
        {"num_frames": 8, "fps": 1.0, "start": "center", "image_size": 32}))
    assert _eval_metrics((None, shards, model), tmp_path)["settings"]["start"] == "center"
    assert _eval_metrics(setup, tmp_path)["settings"]["start"] == "first"


def test_eval_samples_frames_as_the_checkpoint_was_trained(tmp_path):
    # A checkpoint's data settings (here 0.5 FPS, uniform) were ignored by eval (1 FPS), not by export.
    from longvivit.export import source_preprocess

    ckpt = tmp_path / "last.ckpt"
    torch.save({"datamodule_hyper_parameters": {"fps": 0.5, "sampling": "uniform", "start": "random"}}, ckpt)
    video = VideoEncoderConfig.preset("tiny", image_size=32, num_frames=8)
    pre = source_preprocess(ckpt, video)
    assert (pre.fps, pre.sampling, pre.start, pre.num_frames, pre.image_size) == (0.5, "uniform", "first", 8, 32)


def _eval_metrics(setup, tmp_path, *args: str) -> dict:
    """``longvivit eval`` of the setup's model on its shards with ``args``; the metrics JSON."""
    _, shards, model_dir = setup
    out = tmp_path / "m.json"
    assert cli_main(["eval", "--model", str(model_dir), "--shards", str(shards), *args, "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_eval_at_another_image_size_resizes_the_model_and_says_when_clips_are_padded(setup, tmp_path, capsys):
    # --image-size other than the trained size ended in a ValueError traceback (the frames were resized, the
    # model was not); --num-frames longer than the clips padded every clip without a word.
    m = _eval_metrics(setup, tmp_path, "--image-size", "48", "--num-frames", "32")
    assert m["settings"]["image_size"] == 48 and m["num_videos"] == 8
    assert any("pos_embed_spatial resized" in a for a in m["settings"]["adaptations"])
    assert m["settings"]["padded_clips"] == 8  # 16 s clips, 32 frames at 1 FPS
    assert "8 of 8 clips are shorter than 32 frames at 1 FPS: padded to the window" in capsys.readouterr().out
    # uniform sampling ignores the rate: the line said "at 1 FPS" of clips padded for holding too few frames
    m = _eval_metrics(setup, tmp_path, "--num-frames", "128", "--sampling", "uniform")
    assert m["settings"]["padded_clips"] == 8  # 16 s at 4 FPS: 64 frames
    said = capsys.readouterr().out
    assert "8 of 8 clips hold fewer than 128 frames: padded to the window" in said and "FPS" not in said


def test_eval_says_which_clips_the_window_cuts_and_which_captions_the_text_budget_cuts(setup, tmp_path, capsys):
    # A 16-frame model on longer videos saw only their first 16 s, and captions longer than the text budget lost
    # their later words, both without a word (the demo compared stage 2 at 32 tokens with stage 3 at 128).
    from longvivit.data.collate import num_truncated
    from longvivit.models.text_encoder import TextEncoder

    m = _eval_metrics(setup, tmp_path, "--num-frames", "8", "--max-text-length", "6")
    assert m["settings"]["cut_clips"] == 8 and m["settings"]["padded_clips"] == 0  # 16 s clips, 8 s windows
    assert m["settings"]["max_text_length"] == 6 and m["settings"]["truncated_captions"] == 8
    said = capsys.readouterr().out
    assert "8 of 8 clips are longer than 8 frames at 1 FPS: only their first 8 s are seen" in said
    assert "8 captions are longer than the text budget of 6 tokens and were cut" in said
    m = _eval_metrics(setup, tmp_path)
    assert m["settings"]["cut_clips"] == 8 and m["settings"]["truncated_captions"] == 0  # the model's 32 tokens
    # the count is exact: a caption that fills the budget exactly is not cut
    tok = TextEncoder(TextEncoderConfig(max_length=8)).tokenizer
    texts = ["a b c d e f", "a b c d e f g", "a"]  # 8, 9 and 3 tokens with [CLS] and [SEP]
    mask = tok(texts, truncation=True, max_length=8, padding=True, return_tensors="pt")["attention_mask"]
    assert num_truncated(tok, texts, mask, 8) == 1


def test_eval_refuses_a_text_budget_beyond_the_text_towers_positions(setup, tmp_path):
    # --max-text-length 1000 on a 512-position BERT ended in a tensor-size RuntimeError on the first long caption.
    with pytest.raises(SystemExit, match="more than the text tower's 512 positions"):
        _eval_metrics(setup, tmp_path, "--max-text-length", "1000")


@pytest.mark.parametrize("frame_order, mask_ratio", [("shuffled", 0.0), ("original", 0.5), ("shuffled", 0.5)])
def test_shuffled_and_masked_evaluation_does_not_move_with_the_batch_size(setup, frame_order, mask_ratio):
    """Each clip draws its shuffle and its mask from its own key: batches of 1, 3 and 8 give one set of
    embeddings (a batch-level RNG gave every clip another draw at another batch size or shard order)."""
    from longvivit.data import load_clips
    from longvivit.evaluation.evaluate import evaluate

    _, shards, model_dir = setup
    model = VideoTextModel.from_pretrained(model_dir).eval()
    clips = list(load_clips(sorted(str(p) for p in shards.glob("*.tar")), num_frames=8, image_size=32))
    runs = []
    for batch_size, order in ((1, clips), (3, clips), (8, clips[::-1])):
        ev, _ = evaluate(model, order, batch_size=batch_size, mask_ratio=mask_ratio, frame_order=frame_order)
        emb = dict(zip(ev.video_keys, torch.cat(ev._video_emb), strict=True))
        runs.append(torch.stack([emb[c["key"]] for c in clips]))
    torch.testing.assert_close(runs[1], runs[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(runs[2], runs[0], rtol=0, atol=1e-5)
    plain, _ = evaluate(model, clips, batch_size=8)
    assert not torch.allclose(torch.cat(plain._video_emb), runs[0], atol=1e-4)  # the probe did change them
