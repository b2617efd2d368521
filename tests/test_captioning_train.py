"""CaptioningModule trained by Lightning on real shards of synthetic clips, then `longvivit caption`.

The LM is a tiny random Llama (the real SmolLM2 run is the demo's and test_captioning_smollm2.py's); the
data path is the real one: synthetic mp4 clips -> webdataset shards -> decord -> VideoTextDataModule.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from captioning_helpers import build_tiny_encoder, build_tiny_lm, tiny_model_kwargs
from conftest import ASSETS
from lightning.pytorch.loggers import CSVLogger

from longvivit.captioning import cli
from longvivit.captioning.model import load_captioner
from longvivit.captioning.module import CaptioningModule
from longvivit.cli import main as cli_main
from longvivit.data import make_shards, synthetic
from longvivit.data.datamodule import VideoTextDataModule
from longvivit.training.optim import OptimConfig

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


class LossRecorder(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.frozen_modes: list[bool] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))
        m = module.model
        self.frozen_modes.append(m.xlm.lm.training or m.encoder.training)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("captrain")
    synthetic.generate(root / "data", seed=0, size=32, num_images=(0, 0, 0), num_clips=(32, 8, 0),
                       num_long=(0, 0, 0))
    shards = {}
    for split in ("train", "val"):
        dst = root / "shards" / split
        manifest = root / "data" / "clips" / f"{split}.jsonl"
        assert make_shards.main(["--manifest", str(manifest), "--out", str(dst), "--maxcount", "16"]) == 0
        shards[split] = dst
    return {"root": root, "shards": shards, "encoder": build_tiny_encoder(root / "encoder"),
            "lm": build_tiny_lm(root / "lm")}


def _datamodule(setup, batch_size: int = 8, steps: int = 30) -> VideoTextDataModule:
    # 4 frames over the 16 s clips (0.25 FPS) at 32 px, decoded in the main process.
    shards = setup["shards"]
    return VideoTextDataModule(train_shards=str(shards["train"]), val_shards=str(shards["val"]),
                               batch_size=batch_size, val_batch_size=8, num_workers=0, num_frames=4, fps=0.25,
                               image_size=32, shuffle_buffer=32, steps_per_epoch=steps)


@pytest.fixture(scope="module")
def trained(setup):
    """30 steps of the tiny model; returns the module, the recorded losses and the states before training."""
    torch.manual_seed(0)
    module = CaptioningModule(**tiny_model_kwargs(setup["encoder"], setup["lm"]), mask_ratio=0.3,
                              eval_mask_ratio=0.5, eval_seed=3,  # not the defaults: the saved folder must keep them
                              optim=OptimConfig(lr=1e-2, weight_decay=1e-4, warmup_steps=5),
                              max_new_tokens=8, save_dir=str(setup["root"] / "captioner"))
    before = {k: v.clone() for k, v in module.state_dict().items()}
    rec = LossRecorder()
    run_dir = setup["root"] / "run"
    # A real logger: Lightning merges module and data hyperparameters for it, and fails on a clash.
    logger = CSVLogger(run_dir, name="logs")
    trainer = L.Trainer(max_steps=30, accelerator="cpu", devices=1, callbacks=[rec], logger=logger,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=run_dir,
                        limit_val_batches=1, gradient_clip_val=1.0, enable_checkpointing=False)
    trainer.fit(module, datamodule=_datamodule(setup, steps=30))
    ckpt = run_dir / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    folder = setup["root"] / "captioner"
    return {"module": module, "rec": rec, "before": before, "ckpt": ckpt, "folder": folder}


def test_training_lowers_the_caption_loss(trained):
    losses = trained["rec"].losses
    assert len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    # ~5.75 (ln of the 320-token vocabulary) -> ~4.95 with this seed; random-init LM, only xattn learns.
    assert last < first - 0.4, f"caption loss did not fall enough: {first:.3f} -> {last:.3f}"
    assert not any(trained["rec"].frozen_modes), "encoder and LM stay in eval mode during training"
    scores = trained["module"].last_scores
    assert scores is not None and {"CIDEr", "BLEU-4", "ROUGE-L"} <= set(scores), "validation scored captions"


def test_only_resampler_and_xattn_change(trained):
    module, before = trained["module"], trained["before"]
    after = module.state_dict()
    assert set(after) == set(before)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    trained_keys = {k for k in before if k.startswith(("model.resampler.", "model.xlm.xattn."))}
    lm_keys = {k for k in before if k.startswith("model.xlm.lm.")}
    enc_keys = {k for k in before if k.startswith("model.encoder.")}
    assert lm_keys and enc_keys and trained_keys == set(before) - lm_keys - enc_keys
    assert not changed & (lm_keys | enc_keys), "frozen LM and encoder are bit-identical after training"
    assert changed == trained_keys, f"unchanged trained tensors: {sorted(trained_keys - changed)[:5]}"
    assert all(not p.requires_grad for p in module.model.xlm.lm.parameters())
    gates = module.model.xlm.gates()
    assert all(g != 0 for g in gates["attn"] + gates["ff"]), "the gates opened"


def test_checkpoint_holds_only_trained_tensors_and_reloads(trained):
    ckpt = torch.load(trained["ckpt"], map_location="cpu", weights_only=True)
    assert all(k.startswith(("model.resampler.", "model.xlm.xattn.")) for k in ckpt["state_dict"])
    module = trained["module"]
    loaded = load_captioner(trained["ckpt"])
    for k, v in module.model.trainable_state_dict().items():
        assert torch.equal(loaded.trainable_state_dict()[k], v), k
    # Lightning's own loader (resume path) accepts the stripped checkpoint and restores the trained tensors.
    again = CaptioningModule.load_from_checkpoint(trained["ckpt"], weights_only=True)
    for k, v in module.model.trainable_state_dict().items():
        assert torch.equal(again.model.trainable_state_dict()[k], v), k


def test_caption_cli_on_a_video_file_shards_and_qa(trained, setup, capsys, tmp_path):
    folder = trained["folder"]
    assert (folder / "captioner.safetensors").is_file(), "save_dir was written at the end of fit"
    pre = json.loads((folder / "preprocessor_config.json").read_text())
    assert pre["fps"] == 0.25 and pre["num_frames"] == 4, "the training preprocessing is saved"

    assert cli.main(["--model", str(folder), "--video", str(ASSETS / "bigbuckbunny.mp4"), "--max-new-tokens",
                     "6"]) == 0
    caption = capsys.readouterr().out.strip()
    assert caption and "\n" not in caption

    # A corrupt and a missing file among good ones: skipped with their reasons, the good one still captioned.
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes((ASSETS / "bigbuckbunny.mp4").read_bytes()[:2000])
    missing = tmp_path / "missing.mp4"
    files = tmp_path / "files.json"
    assert cli.main(["--model", str(folder), "--video", str(corrupt), str(ASSETS / "bigbuckbunny.mp4"),
                     str(missing), "--max-new-tokens", "6", "--out", str(files)]) == 0
    listed = json.loads(files.read_text())
    assert list(listed["captions"]) == [str(ASSETS / "bigbuckbunny.mp4")]
    assert listed["captions"][str(ASSETS / "bigbuckbunny.mp4")] == caption
    reasons = dict(listed["skipped"])
    assert set(reasons) == {str(corrupt), str(missing)}
    assert "the video is cut off (2000 bytes): the mp4 box 'mdat'" in reasons[str(corrupt)]  # a truncated download
    assert "No such file" in reasons[str(missing)]
    assert capsys.readouterr().out.strip() == f"{ASSETS / 'bigbuckbunny.mp4'}\t{caption}"
    with pytest.raises(SystemExit, match="no video could be decoded"):
        cli.main(["--model", str(folder), "--video", str(corrupt), "--max-new-tokens", "6"])
    # a folder stands for the videos under it (it was one "file" that could not be read); an empty one is listed
    videos, empty = tmp_path / "videos", tmp_path / "empty"
    (videos / "sub").mkdir(parents=True)
    empty.mkdir()
    shutil.copy(ASSETS / "bigbuckbunny.mp4", videos / "sub" / "b.MP4")
    shutil.copy(ASSETS / "cityCC0.mpg", videos / "a.mpg")
    (videos / "notes.txt").write_text("not a video")
    assert cli.main(["--model", str(folder), "--video", str(videos), str(empty), "--max-new-tokens", "6",
                     "--out", str(files)]) == 0
    listed = json.loads(files.read_text())
    assert list(listed["captions"]) == [str(videos / "a.mpg"), str(videos / "sub" / "b.MP4")]
    assert listed["captions"][str(videos / "sub" / "b.MP4")] == caption  # same content, same mask and caption
    assert [(p, "no video file" in r) for p, r in listed["skipped"]] == [(str(empty), True)]
    capsys.readouterr()

    out = tmp_path / "captions.json"
    assert cli.main(["--model", str(trained["ckpt"]), "--shards", str(setup["shards"]["val"]),
                     "--out", str(out), "--max-new-tokens", "8", "--batch-size", "4"]) == 0
    result = json.loads(out.read_text())
    assert len(result["captions"]) == 8 and set(result["captions"]) == set(result["references"])
    assert {"CIDEr", "BLEU-4", "ROUGE-L"} <= set(result["scores"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["CIDEr"] == result["scores"]["CIDEr"]

    clips = setup["root"] / "data" / "clips"
    manifest = [json.loads(x) for x in (clips / "val.jsonl").read_text().splitlines()]
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(
        json.dumps({"video": str(clips / m["video"]), "question": "what happens?",
                    "options": [m["caption"], manifest[(i + 1) % 8]["caption"]], "answer": 0}) + "\n"
        for i, m in enumerate(manifest)
    ) + "".join(  # two questions whose videos do not decode: skipped, listed, out of every count
        json.dumps({"video": str(v), "question": "what happens?", "options": ["a", "b"], "answer": 1, "id": v.name})
        + "\n" for v in (corrupt, missing)
    ))
    qa_out = tmp_path / "qa.json"
    assert cli.main(["--model", str(folder), "--qa", str(qa), "--out", str(qa_out)]) == 0
    res = json.loads(qa_out.read_text())
    assert res["num_questions"] == 8 and res["num_answered"] == 8 and res["chance"] == 50.0
    preds = [r["prediction"] for r in res["items"]]
    assert res["accuracy"] == 100.0 * sum(p == 0 for p in preds) / 8
    assert [(s["id"], "No such file" in s["reason"]) for s in res["skipped"]] == [
        ("corrupt.mp4", False), ("missing.mp4", True)]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["num_skipped"] == 2
    bad = tmp_path / "bad_qa.jsonl"  # no question's video decodes: one line, not a ValueError traceback
    bad.write_text("".join(line + "\n" for line in qa.read_text().splitlines()[-2:]))
    with pytest.raises(SystemExit, match=r"^longvivit caption: --qa .*bad_qa.jsonl: no question's video could be"):
        cli.main(["--model", str(folder), "--qa", str(bad)])


def test_caption_of_the_saved_folder_gives_the_validation_captions(trained, setup, tmp_path):
    # The folder did not keep eval_mask_ratio (0.5 here) or eval_seed (3): `caption` masked 30% with seed 0, so its
    # captions and QA scores were not those of the run that had been validated.
    from longvivit.captioning.model import file_digest, read_preprocess
    from longvivit.captioning.qa import option_scores
    from longvivit.data.decode import decode_video_file
    from longvivit.models.masking import video_generator

    module, folder = trained["module"].eval(), trained["folder"]
    preds = module._predictions  # the last validation: every clip of the val shards
    out = tmp_path / "captions.json"
    assert cli.main(["--model", str(folder), "--shards", str(setup["shards"]["val"]), "--max-new-tokens", "8",
                     "--out", str(out)]) == 0
    captions = json.loads(out.read_text())["captions"]
    assert len(preds) == 8 and {k: captions[k] for k in preds} == preds
    clips = setup["root"] / "data" / "clips"
    first = json.loads((clips / "val.jsonl").read_text().splitlines()[0])
    video = str(clips / first["video"])
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"video": video, "question": "what happens?", "options": [first["caption"], "a dog"]}))
    assert cli.main(["--model", str(folder), "--qa", str(qa), "--out", str(tmp_path / "qa.json")]) == 0
    frames, nvf = decode_video_file(video, read_preprocess(folder))
    gen = video_generator(module.eval_seed, file_digest(video))
    expected = option_scores(module.model, frames, "what happens?", [first["caption"], "a dog"], nvf,
                             mask_ratio=module.eval_mask_ratio, generator=gen)
    scores = json.loads((tmp_path / "qa.json").read_text())["items"][0]["scores"]
    assert scores == expected.tolist()


def test_longvivit_fit_trains_the_tiny_recipe_and_caption_reads_its_checkpoint(setup, tmp_path, capsys):
    """The tiny recipe through ``longvivit fit`` (task: captioning), sized down to the tiny LM and 32 px."""
    run = tmp_path / "run"
    args = [
        "fit", "--config", str(RECIPES / "tiny" / "video_to_text.yaml"),
        "--model.encoder", str(setup["encoder"]), "--model.lm", str(setup["lm"]),
        "--model.num_frames", "4", "--model.image_size", "32", "--model.resampler.hidden", "32",
        "--model.resampler.heads", "2", "--model.resampler.ff_dim", "64", "--model.xattn.every", "1",
        "--model.xattn.heads", "2", "--model.xattn.dim_head", "16", "--model.max_new_tokens", "4",
        "--model.save_dir", str(tmp_path / "captioner"),
        "--data.train_shards", str(setup["shards"]["train"]),
        "--data.val_shards", str(setup["shards"]["val"]), "--data.fps", "0.25", "--data.batch_size", "4",
        "--data.val_batch_size", "4", "--data.num_workers", "0",
        "--data.shuffle_buffer", "8", "--data.steps_per_epoch", "4", "--trainer.max_steps", "4",
        "--trainer.check_val_every_n_epoch", "1", "--trainer.limit_val_batches", "1",
        "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(run),
        "--trainer.logger.init_args.save_dir", str(run), "--checkpoint.dirpath", str(run / "checkpoints"),
    ]
    assert cli_main(args) == 0
    rows = [r for f in sorted(run.glob("logs/version_*/metrics.csv")) for r in csv.DictReader(f.open())]
    assert [r for r in rows if r.get("train/loss")] and [r for r in rows if r.get("val/CIDEr")]
    assert [r for r in rows if r.get("train/lr")]  # the schedule is in metrics.csv, as for contrastive training
    assert (tmp_path / "captioner" / "captioner.safetensors").is_file()
    ckpt = run / "checkpoints" / "last.ckpt"
    assert cli_main(["caption", "--model", str(ckpt), "--video", str(ASSETS / "bigbuckbunny.mp4"),
                     "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].strip()


def test_a_wrong_model_gets_one_line_saying_what_it_is(trained, setup, tmp_path):
    # The captioner where a video-text model is expected, and the other way round: a message, no traceback.
    shards = str(setup["shards"]["val"])
    for captioner in (trained["folder"], trained["ckpt"]):
        with pytest.raises(SystemExit, match="is a captioner, not a video-text model"):
            cli_main(["eval", "--model", str(captioner), "--shards", shards])
    with pytest.raises(SystemExit, match="no captioner_config.json"):
        cli.main(["--model", str(setup["encoder"]), "--video", str(ASSETS / "bigbuckbunny.mp4")])
    with pytest.raises(SystemExit, match="no captioner at"):
        cli.main(["--model", str(tmp_path / "missing"), "--video", str(ASSETS / "bigbuckbunny.mp4")])
    with pytest.raises(SystemExit, match="not a checkpoint torch can read"):
        cli.main(["--model", str(ASSETS / "bigbuckbunny.mp4"), "--video", str(ASSETS / "bigbuckbunny.mp4")])
    with pytest.raises(SystemExit, match=r"bigbuckbunny.mp4 is not a webdataset shard.*--video"):
        cli.main(["--model", str(trained["folder"]), "--shards", str(ASSETS / "bigbuckbunny.mp4")])
    with pytest.raises(SystemExit, match="no model at"):
        cli_main(["eval", "--model", str(tmp_path / "missing"), "--shards", shards])


def test_export_turns_a_captioning_checkpoint_into_the_captioner_folder(trained, tmp_path, capsys):
    # `longvivit export` refused a captioning checkpoint, and the full recipe has no save_dir: an 80k-step run left
    # only checkpoints tied to the absolute path of their encoder, with no command to get the portable folder.
    from safetensors.torch import load_file

    out = tmp_path / "captioner"
    assert cli_main(["export", "--ckpt", str(trained["ckpt"]), "--out", str(out)]) == 0
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert files == {"captioner_config.json", "captioner.safetensors", "preprocessor_config.json",
                     "encoder/config.json", "encoder/model.safetensors"}
    weights = load_file(str(out / "captioner.safetensors"))
    for k, v in trained["module"].model.trainable_state_dict().items():
        assert torch.equal(weights[k], v), k
    pre = json.loads((out / "preprocessor_config.json").read_text())
    assert (pre["fps"], pre["num_frames"], pre["image_size"]) == (0.25, 4, 32), "the training data's frames"
    assert json.loads((out / "captioner_config.json").read_text())["encoder"] == "encoder"
    capsys.readouterr()
    video = ["--video", str(ASSETS / "bigbuckbunny.mp4"), "--max-new-tokens", "6"]
    assert cli.main(["--model", str(out), *video]) == 0
    from_folder = capsys.readouterr().out
    assert cli.main(["--model", str(trained["ckpt"]), *video]) == 0
    assert capsys.readouterr().out == from_folder
    # an existing folder is kept unless --overwrite; the encoder-export options are refused, not ignored
    assert cli_main(["export", "--ckpt", str(trained["ckpt"]), "--out", str(out)]) == 2
    assert cli_main(["export", "--ckpt", str(trained["ckpt"]), "--out", str(out), "--overwrite"]) == 0
    assert cli_main(["export", "--ckpt", str(trained["ckpt"]), "--out", str(tmp_path / "b"), "--dtype", "bf16"]) == 2
    assert "--dtype apply to video-text models only" in capsys.readouterr().err
    assert cli_main(["export", "--ckpt", str(trained["ckpt"]), "--out", str(tmp_path / "c"), "--license", "mit",
                     "--no-verify"]) == 2  # were ignored silently
    assert "--license, --no-verify apply to video-text models only" in capsys.readouterr().err


def test_caption_of_shards_without_video_says_so_with_the_command_prefix(trained, tmp_path):
    from test_shards_loader import png_bytes, write_shard

    shard = write_shard(tmp_path / "images.tar", [{"key": "img0", "media": png_bytes(0, size=20), "ext": "png",
                                                   "captions": ["a picture"]}])
    with pytest.raises(SystemExit, match=r"^longvivit caption: no video clip decoded from the shards \(only images"):
        cli.main(["--model", str(trained["folder"]), "--shards", str(shard)])


def test_fit_warns_when_the_data_samples_frames_unlike_the_encoders_training(setup, tmp_path, caplog):
    # model.num_frames and image_size are linked into the data, but the frame rate was not checked at all: an encoder
    # exported from 1 FPS training was silently fed 0.25 FPS clips.
    import shutil

    from longvivit.config import PreprocessConfig
    from longvivit.export import preprocessor_dict
    from longvivit.models.video_encoder import VideoEncoder

    export = tmp_path / "export"
    shutil.copytree(setup["encoder"], export)
    cfg = VideoEncoder.from_pretrained(export).cfg
    pre = PreprocessConfig(num_frames=4, fps=1.0, image_size=32)
    (export / "preprocessor_config.json").write_text(json.dumps(preprocessor_dict(pre, cfg)))

    def fit(encoder: Path) -> list[str]:
        module = CaptioningModule(**{**tiny_model_kwargs(encoder, setup["lm"])}, val_generate=False)
        trainer = L.Trainer(max_steps=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                            default_root_dir=tmp_path)
        caplog.clear()
        with caplog.at_level("WARNING", logger="longvivit.captioning.module"):
            trainer.fit(module, datamodule=_datamodule(setup, batch_size=2, steps=1))  # 0.25 FPS
        return [r.getMessage() for r in caplog.records if r.name == "longvivit.captioning.module"]

    warned = fit(export)
    assert any("trained on frames sampled fps at 1 fps" in m and "--data.fps 1" in m for m in warned), warned
    assert fit(setup["encoder"]) == [], "a folder that does not record its frame rate is not second-guessed"


def test_caption_of_shards_lists_the_clips_longer_than_the_window(trained, setup, tmp_path, caplog):
    # 16 s clips captioned at 1 FPS with 4 frames: only their first 4 s were seen, and nothing said so.
    out = tmp_path / "captions.json"
    with caplog.at_level("WARNING", logger="longvivit.caption"):
        assert cli.main(["--model", str(trained["folder"]), "--shards", str(setup["shards"]["val"]), "--fps", "1",
                         "--max-new-tokens", "2", "--out", str(out)]) == 0
    cut = json.loads(out.read_text())["cut"]
    assert len(cut) == 8 and all(seconds == pytest.approx(16.0, abs=0.5) for seconds in cut.values())
    assert any(r.getMessage().startswith("8 of 8 clips are longer than 4 frames at 1 FPS: only their first 4 s")
               for r in caplog.records)


def test_fit_takes_frames_size_and_fps_from_the_encoder_unless_set(setup, tmp_path):
    # The recipe's frames, size and fps were typed by hand (16 at 64 px, 1 FPS) whatever the encoder: an export
    # trained on 4 frames at 32 px and 0.25 FPS got 16 frames at 64 px and 1 FPS, with only a warning for the rate.
    from longvivit.config import PreprocessConfig
    from longvivit.export import preprocessor_dict
    from longvivit.models.video_encoder import VideoEncoder
    from longvivit.training.cli import run_lightning_cli

    export = tmp_path / "export"
    shutil.copytree(setup["encoder"], export)
    pre = PreprocessConfig(num_frames=4, fps=0.25, sampling="fps", image_size=32)
    (export / "preprocessor_config.json").write_text(json.dumps(preprocessor_dict(pre, VideoEncoder.from_pretrained(
        export).cfg)))
    small = ["--config", str(RECIPES / "tiny" / "video_to_text.yaml"), "--model.encoder", str(export),
             "--model.lm", str(setup["lm"]), "--model.resampler.hidden", "32", "--model.resampler.heads", "2",
             "--model.resampler.ff_dim", "64", "--model.xattn.heads", "2", "--model.xattn.dim_head", "16",
             "--model.save_dir", "null", "--model.num_frames", "null",  # as in the full recipe; the tiny one sets 16
             "--data.num_workers", "0", "--trainer.default_root_dir", str(tmp_path),
             "--trainer.logger.init_args.save_dir", str(tmp_path)]

    def settings(*extra: str) -> tuple:
        cli = run_lightning_cli([*small, *extra], run=False)
        data, model = cli.datamodule.preprocess, cli.model.model_cfg
        assert (model.num_frames, model.image_size) == (data.num_frames, data.image_size)
        return data.num_frames, data.image_size, data.fps, data.sampling

    assert settings() == (4, 32, 0.25, "fps")
    assert settings("--data.fps", "1.0", "--model.num_frames", "8") == (8, 32, 1.0, "fps"), "set values win"
    assert settings("--data.sampling", "uniform", "--model.image_size", "64") == (4, 64, 0.25, "uniform")
    # the module alone (Python API) reads the same sizes
    module = CaptioningModule(**{**tiny_model_kwargs(export, setup["lm"]), "num_frames": None, "image_size": None})
    assert (module.model_cfg.num_frames, module.model_cfg.image_size) == (4, 32)


def test_the_checkpoint_names_its_encoder_by_an_absolute_path(setup, monkeypatch):
    # A relative --model.encoder was stored as given: `caption --model last.ckpt` from another folder failed with
    # "encoder: no exported folder or checkpoint at runs/demo/export".
    encoder = Path(setup["encoder"])
    monkeypatch.chdir(encoder.parent)
    module = CaptioningModule(**{**tiny_model_kwargs(setup["encoder"], setup["lm"]), "encoder": encoder.name})
    assert module.hparams["encoder"] == str(encoder.resolve())


def test_validation_masks_follow_the_video_not_its_batch(trained):
    # Eval masks were seeded by batch index: a clip's mask (and so its caption and score) changed with the batch
    # size and the number of ranks.
    module = trained["module"].eval()
    gen = torch.Generator().manual_seed(0)
    video = torch.randn(3, 4, 3, 32, 32, generator=gen)
    batch = {"key": ["a", "b", "c"], "video": video, "captions": [["x"], ["y"], ["z"]]}
    alone = {"key": ["c"], "video": video[2:], "captions": [["z"]]}
    with torch.no_grad():
        together = module.model.visual_tokens(video, mask_ratio=0.3, generator=module._eval_generators(batch))
        single = module.model.visual_tokens(video[2:], mask_ratio=0.3, generator=module._eval_generators(alone))
    torch.testing.assert_close(together[2:], single)


def test_the_sanity_check_is_not_reported_as_validation(setup, caplog):
    """Lightning's sanity check (a validation batch before the first step) printed "val captioning: ..." like a
    validation of the trained model, so a fit showed a score before training and another after, unlabelled."""
    torch.manual_seed(0)
    module = CaptioningModule(**tiny_model_kwargs(setup["encoder"], setup["lm"]), max_new_tokens=4,
                              optim=OptimConfig(lr=1e-3, warmup_steps=1))
    trainer = L.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, limit_val_batches=1,
                        num_sanity_val_steps=1)
    with caplog.at_level("INFO", logger="longvivit.captioning.module"):
        trainer.fit(module, datamodule=_datamodule(setup, batch_size=4, steps=2))
    lines = [r.getMessage() for r in caplog.records if "captioning" in r.getMessage() and "{" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("val captioning at step 2:"), lines
