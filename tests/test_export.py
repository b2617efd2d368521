"""``longvivit export``: a real ``fit`` checkpoint -> hub folder -> every loader, model card and upload."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import moving_square_frames
from huggingface_hub import ModelCard
from safetensors import safe_open

from longvivit import export
from longvivit.cli import main as cli_main
from longvivit.config import PreprocessConfig, TextEncoderConfig, VideoEncoderConfig, VideoTextConfig
from longvivit.data import make_shards
from longvivit.data.datamodule import VideoTextDataModule
from longvivit.data.video_io import encode_video
from longvivit.models.checkpoint import load_model
from longvivit.models.model import VideoTextModel
from longvivit.models.video_encoder import VideoEncoder
from longvivit.training.module import ContrastiveModule

pytestmark = pytest.mark.integration  # real packaged MiniLM text tower
CAPTIONS = ["a yellow square moves to the right", "a block slides over noise", "an object crosses the frame",
            "something bright moves sideways"]
TINY = {"image_size": 32, "num_frames": 4, "embed_dim": 32}


def _shard(root: Path, clips: list[Path]) -> Path:
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"video": str(c), "caption": cap}) + "\n"
                                for c, cap in zip(clips, CAPTIONS, strict=False)))
    assert make_shards.main(["--manifest", str(manifest), "--out", str(root / "shards")]) == 0
    return root / "shards"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """One real training step with validation (what ``longvivit fit`` saves), then a second stage from it."""
    root = tmp_path_factory.mktemp("export")
    clips = []
    for i in range(4):
        clips.append(root / f"clip{i}.mp4")
        encode_video(moving_square_frames(16, 48, 64, seed=i), fps=4.0, out=clips[-1])
    shards = _shard(root, clips)
    L.seed_everything(0)
    module = ContrastiveModule(video=VideoEncoderConfig.preset("tiny", **TINY),
                               text=TextEncoderConfig(max_length=16))
    data = VideoTextDataModule(train_shards=str(shards), val_shards=str(shards), batch_size=2, num_workers=0,
                               num_frames=4, fps=2.0, image_size=32, steps_per_epoch=1, shuffle_buffer=4)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=data)
    trainer.save_checkpoint(root / "stage1.ckpt")
    # stage 2: longer clips, last 2 blocks trainable, initialised from stage 1 (saved without more steps)
    stage2 = ContrastiveModule(video=VideoEncoderConfig.preset("tiny", **{**TINY, "num_frames": 8}),
                               text=TextEncoderConfig(max_length=16), init_from=str(root / "stage1.ckpt"),
                               trainable_last=2)
    trainer2 = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
    trainer2.strategy.connect(stage2)
    trainer2.save_checkpoint(root / "stage2.ckpt")
    return {"root": root, "ckpt": root / "stage1.ckpt", "ckpt2": root / "stage2.ckpt", "shards": shards,
            "stats": shards / "stats.json"}


@pytest.fixture(scope="module")
def exported(trained) -> Path:
    out = trained["root"] / "export"
    assert cli_main(["export", "--ckpt", str(trained["ckpt"]), "--out", str(out),
                     "--data-stats", str(trained["stats"])]) == 0
    return out


@pytest.fixture(scope="module")
def source(trained) -> VideoTextModel:
    """The checkpoint's model, as ``longvivit eval`` loads it."""
    return load_model(trained["ckpt"])[0]


def _video(frames: int = 4, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, frames, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _embed(model: VideoTextModel) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = model.text_encoder.tokenize(CAPTIONS)
    return model.encode_video(_video(), mask_ratio=0.0), model.encode_text(**tokens)


def test_export_roundtrip_gives_identical_embeddings(source, exported):
    video_ref, text_ref = _embed(source)
    for loaded in (VideoTextModel.from_pretrained(exported).eval(), load_model(exported)[0]):
        video, text = _embed(loaded)
        assert torch.equal(video, video_ref) and torch.equal(text, text_ref)
        assert torch.equal(loaded.logit_scale, source.logit_scale)
    encoder = VideoEncoder.from_pretrained(exported).eval()
    with torch.no_grad():
        assert torch.equal(encoder(_video(), mask_ratio=0.0), source.video_encoder(_video(), mask_ratio=0.0))
    ref_state = source.video_encoder.state_dict()
    assert all(torch.equal(v, ref_state[k]) for k, v in encoder.state_dict().items())


def test_export_folder_is_hub_layout_without_pickle(exported):
    files = {str(p.relative_to(exported)) for p in exported.rglob("*") if p.is_file()}
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "video_text_config.json",
                 "README.md", "text/text_projection.safetensors", "text/tokenizer.json"):
        assert name in files
    assert not [f for f in files if Path(f).suffix in (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")]
    assert export.find_pickles(exported) == []
    for f in files:  # every weight file is safetensors, every config plain JSON
        if f.endswith(".safetensors"):
            with safe_open(str(exported / f), framework="pt") as st:
                assert list(st.keys())
        elif f.endswith(".json"):
            json.loads((exported / f).read_text())
    meta = json.loads((exported / "video_text_config.json").read_text())
    assert meta["architectures"] == ["VideoTextModel"] and meta["library_name"] == "longvivit"
    assert meta["dtype"] == "float32"
    assert VideoEncoderConfig.load(exported / "config.json") == VideoEncoderConfig.preset("tiny", **TINY)
    assert not (exported.parent / f".{exported.name}.partial").exists()


def test_preprocessor_config_matches_training_data(exported):
    # fps and sampling come from the DataModule the checkpoint was trained with, sizes from the encoder
    assert export.load_preprocess_config(exported) == PreprocessConfig(num_frames=4, fps=2.0, sampling="fps",
                                                                       start="first", image_size=32)
    d = json.loads((exported / "preprocessor_config.json").read_text())
    assert d["tubelet_size"] == [2, 16, 16] and d["grid_size"] == [2, 2, 2]
    assert d["seconds_per_tubelet_step"] == 1.0
    assert d["mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])


def test_preprocessor_config_of_a_frame_level_export_describes_its_grid(tmp_path):
    # The frame-level ImageViT has a step per frame; the json said (T/2, H', W') steps of 2 frames, so tokens were
    # put at the wrong times by anyone aligning extract_features' grid with it.
    cfg = VideoTextConfig(video=VideoEncoderConfig.preset("tiny", **{**TINY, "num_frames": 8}, backbone="frame"),
                          text=TextEncoderConfig(max_length=16))
    out = export.export_model(VideoTextModel(cfg).save_pretrained(tmp_path / "src"), tmp_path / "out")
    d = json.loads((out / "preprocessor_config.json").read_text())
    feats = VideoEncoder.from_pretrained(out).extract_features(torch.zeros(1, 8, 3, 32, 32))
    assert d["grid_size"] == list(feats["grid"]) == [8, 2, 2]
    assert d["seconds_per_tubelet_step"] == float(feats["timestamps"][1]) == 1.0  # 1 FPS
    card = (out / "README.md").read_text()  # the model card said the same as the json did
    assert "8 x 2 x 2 = 32 tokens" in card and "one temporal step of the token grid = 1 s" in card


def test_model_card_states_the_checkpoints_numbers(trained, exported):
    card = ModelCard.load(exported / "README.md")
    assert card.data.library_name == "longvivit" and "video" in card.data.tags
    text = card.text
    metrics = torch.load(trained["ckpt"], weights_only=True)["longvivit"]["metrics"]
    assert metrics is not None, "the fit step ran validation"
    for direction in ("t2v", "v2t"):
        m = metrics[direction]
        row = (f"| {direction.upper()} | {m['R@1']:.2f} | {m['R@5']:.2f} | {m['R@10']:.2f} | "
               f"{m['MdR']:.2f} | {m['MnR']:.2f} | {m['MRR']:.4f} |")
        assert row in text
    assert f"chance R@1 {metrics['chance']['R@1']:.2f}" in text
    model = VideoTextModel.from_pretrained(exported)
    assert f"| video encoder total | {model.video_encoder.num_params() / 1e6:.2f}M" in text
    assert f"{sum(p.numel() for p in model.parameters()):,}" in text
    assert "| 1 | `stage1.ckpt` | 1 | 4 | 32 |" in text  # the fit step, frames and size of the stage
    stats = json.loads(trained["stats"].read_text())
    assert f"| videos | {stats['videos']} |" in text and f"| frames | {stats['frames']} |" in text
    assert 'folder = "path/to/this/folder"' in text and "VideoTextModel.from_pretrained(folder)" in text


def test_model_card_follows_the_stage_chain(trained, tmp_path):
    out = export.export_model(trained["ckpt2"], tmp_path / "stage2", verify=False)
    text = (out / "README.md").read_text()
    assert "| 1 | `stage1.ckpt` | 1 | 4 |" in text
    assert f"| videos: `{trained['shards']}` |" in text  # which shards fed which modality
    assert "| 2 | `stage2.ckpt` | 0 | 8 | 32 | 0.0 | last 2 blocks |" in text
    assert f"`{trained['ckpt']}`" in text
    assert "pos_embed_temporal extended (repeat) from 2 to 4 steps" in text
    # no validation ran in stage 2: the card says so rather than inventing numbers
    assert "No evaluation numbers" in text
    assert export.load_preprocess_config(out).num_frames == 8


def test_bf16_export_loads_as_float32(trained, source, exported, tmp_path):
    out = export.export_model(trained["ckpt"], tmp_path / "bf16", dtype="bf16")  # verifies cosine > 0.99
    with safe_open(str(out / "model.safetensors"), framework="pt") as st:
        dtypes = {st.get_slice(k).get_dtype() for k in st.keys()}  # noqa: SIM118 (safe_open is no dict)
    assert dtypes == {"BF16"}
    assert (out / "model.safetensors").stat().st_size < 0.6 * (exported / "model.safetensors").stat().st_size
    model = VideoTextModel.from_pretrained(out).eval()
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    # loading casts exactly: the same as the checkpoint's weights rounded to bf16 and back
    rounded = copy.deepcopy(source).to(torch.bfloat16).to(torch.float32)
    for got, ref in zip(_embed(model), _embed(rounded), strict=True):
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    assert json.loads((out / "video_text_config.json").read_text())["dtype"] == "bfloat16"


def test_extract_features_grid_embedding_and_timestamps(exported):
    enc = VideoEncoder.from_pretrained(exported).eval()
    video = _video(frames=4)
    with torch.no_grad():
        feats = enc.extract_features(video)
        assert torch.equal(feats["embedding"], enc(video, mask_ratio=0.0))
        assert torch.equal(feats["tokens"], enc.forward_tokens_grid(video))
    assert feats["tokens"].shape == (2, 2, 2, 2, 64)  # (B, T', H', W', width)
    assert feats["grid"] == (2, 2, 2) and feats["tubelet"] == (2, 16, 16)
    assert feats["timestamps"].tolist() == [0.0, 1.0]  # 2 frames per step at the export's 2 FPS
    assert enc.extract_features(video, fps=1.0, start=3.0)["timestamps"].tolist() == [3.0, 5.0]
    # a fresh encoder has no preprocessor config: 1 FPS; with a class token the grid excludes it
    cls_enc = VideoEncoder(VideoEncoderConfig.preset("tiny", **TINY, cls_token=True)).eval()
    with torch.no_grad():
        feats = cls_enc.extract_features(video)
        tokens = cls_enc.forward_features(video, mask_ratio=0.0)  # (B, 1 + 8, width)
    assert feats["timestamps"].tolist() == [0.0, 2.0]
    assert torch.equal(feats["cls"], tokens[:, 0])
    assert torch.equal(feats["tokens"].flatten(1, 3), tokens[:, 1:])
    with pytest.raises(ValueError, match="fps"):
        cls_enc.extract_features(video, fps=0.0)


class FakeHfApi:
    """Stands in for the network only: records the calls and what the folder holds at upload time."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.uploaded: dict[str, bytes] = {}

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        folder = Path(kwargs["folder_path"])
        self.uploaded = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        url = f"https://huggingface.co/{kwargs['repo_id']}/commit/0"
        return type("CommitInfo", (), {"commit_url": url})()


def test_push_to_hub_uploads_the_exported_folder(trained, tmp_path, monkeypatch, capsys):
    api = FakeHfApi()
    monkeypatch.setattr(export, "HfApi", lambda: api)
    out = tmp_path / "pushed"
    assert cli_main(["export", "--ckpt", str(trained["ckpt"]), "--out", str(out),
                     "--push-to-hub", "me/tiny-vivit", "--private", "--no-verify"]) == 0
    assert [c[0] for c in api.calls] == ["create_repo", "upload_folder"]
    assert api.calls[0][1] == {"repo_id": "me/tiny-vivit", "repo_type": "model", "private": True,
                               "exist_ok": True}
    upload = api.calls[1][1]
    assert upload["repo_id"] == "me/tiny-vivit" and Path(upload["folder_path"]) == out
    assert api.uploaded == {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert "model.safetensors" in api.uploaded and "text/tokenizer.json" in api.uploaded
    assert b'snapshot_download("me/tiny-vivit")' in api.uploaded["README.md"]
    assert "https://huggingface.co/me/tiny-vivit/commit/0" in capsys.readouterr().out
    # a pickle in the folder is never uploaded
    (out / "optimizer.pt").write_bytes(b"x")
    with pytest.raises(RuntimeError, match="pickle"):
        export.push_to_hub(out, "me/tiny-vivit", api=FakeHfApi())


class OfflineHfApi(FakeHfApi):
    """The network as it is on a machine without access to the hub."""

    def create_repo(self, repo_id, **kwargs):
        raise OSError("[Errno -2] Name or service not known")


def test_a_failed_upload_keeps_the_export_and_says_how_to_retry(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(export, "HfApi", OfflineHfApi)
    out = tmp_path / "offline"
    assert cli_main(["export", "--ckpt", str(trained["ckpt"]), "--out", str(out),
                     "--push-to-hub", "me/tiny-vivit", "--no-verify"]) == 1
    err = capsys.readouterr().err
    assert "upload to me/tiny-vivit failed (OSError: [Errno -2] Name or service not known)" in err
    assert f"hf upload me/tiny-vivit {out}" in err
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()


def test_eval_runs_on_the_export_and_its_numbers_reach_the_card(trained, exported, make_video, tmp_path):
    clips = [make_video(f"eval{i}.mp4", num_frames=12, fps=4.0, seed=10 + i) for i in range(3)]
    shards = _shard(tmp_path, clips)
    metrics_path = tmp_path / "msrvtt-tiny.json"
    assert cli_main(["eval", "--model", str(exported), "--shards", str(shards), "--fps", "2",
                     "--out", str(metrics_path), "--device", "cpu"]) == 0
    metrics = json.loads(metrics_path.read_text())
    assert metrics["num_videos"] == 3 and metrics["num_texts"] == 3
    out = tmp_path / "with-metrics"
    assert cli_main(["export", "--ckpt", str(trained["ckpt"]), "--out", str(out),
                     "--metrics", str(metrics_path), "--no-verify"]) == 0
    text = (out / "README.md").read_text()
    assert "**msrvtt-tiny**" in text
    t2v = metrics["t2v"]
    assert f"| T2V | {t2v['R@1']:.2f} | {t2v['R@5']:.2f} | {t2v['R@10']:.2f} | {t2v['MdR']:.2f} |" in text


def test_export_refuses_to_clobber(trained, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ["export", "--ckpt", str(trained["ckpt"]), "--out", str(out)]
    assert cli_main(args) == 2
    assert cli_main([*args, "--overwrite"]) == 2  # not an export: never deleted
    assert (out / "notes.txt").read_text() == "mine"
    # a folder with a config.json (a Hugging Face model, a repository root) is not an export either: --overwrite
    # deleted it
    (out / "config.json").write_text('{"model_type": "vit"}')
    assert cli_main([*args, "--overwrite"]) == 2
    assert (out / "notes.txt").read_text() == "mine"
    file = tmp_path / "a-file"
    file.write_text("x")
    assert cli_main(["export", "--ckpt", str(trained["ckpt"]), "--out", str(file)]) == 2  # was a traceback


def test_load_model_reads_a_checkpoint_once(trained, monkeypatch):
    # A .ckpt can hold GBs of optimizer state: the config and both towers come from one read.
    from longvivit.models import checkpoint as ckpt_mod

    calls = []
    real = ckpt_mod.read_checkpoint
    monkeypatch.setattr(ckpt_mod, "read_checkpoint", lambda p: calls.append(p) or real(p))
    model, _ = load_model(trained["ckpt"])
    assert len(calls) == 1
    ref = torch.load(trained["ckpt"], map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(model.video_encoder.patch_embed_2d.weight, ref["model.video_encoder.patch_embed_2d.weight"])


def test_a_deepspeed_checkpoint_folder_is_named_with_the_command_that_consolidates_it(tmp_path, capsys):
    # Lightning's DeepSpeed strategy writes last.ckpt as a folder; export, eval, init_from and the captioner read
    # it as an export folder and said "not a saved model: no config.json".
    from longvivit.captioning.model import load_captioner, load_encoder
    from longvivit.models.checkpoint import load_model
    from longvivit.training.module import ContrastiveModule

    ds = tmp_path / "last.ckpt"
    (ds / "checkpoint").mkdir(parents=True)
    (ds / "latest").write_text("global_step10")
    (ds / "checkpoint" / "mp_rank_00_model_states.pt").write_bytes(b"")
    said = "is a DeepSpeed checkpoint folder"
    assert cli_main(["export", "--ckpt", str(ds), "--out", str(tmp_path / "out")]) == 1
    assert said in capsys.readouterr().err
    for load in (lambda: load_model(ds), lambda: load_encoder(ds, 4, 32), lambda: load_captioner(ds),
                 lambda: ContrastiveModule(video=VideoEncoderConfig.preset("tiny", image_size=32, num_frames=4),
                                           init_from=str(ds))):
        with pytest.raises(ValueError, match=said) as err:
            load()
        assert "convert_zero_checkpoint_to_fp32_state_dict" in str(err.value)


def test_export_refuses_a_bare_video_encoder_folder(tmp_path, capsys):
    # It exported one with a freshly initialised text tower in text/, which eval then took for a trained one and
    # scored (random retrieval numbers), while eval of the folder itself refuses it.
    enc = VideoEncoder(VideoEncoderConfig.preset("tiny", **TINY)).save_pretrained(tmp_path / "enc")
    assert cli_main(["export", "--ckpt", str(enc), "--out", str(tmp_path / "out")]) == 1
    assert "holds a video encoder without its text tower" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_export_to_a_folder_below_a_file_says_so(tmp_path, capsys):
    # --out below a file ended in a NotADirectoryError traceback once the model had loaded
    src = tmp_path / "model"
    VideoTextModel(VideoTextConfig(video=VideoEncoderConfig.preset("tiny", **TINY),
                                   text=TextEncoderConfig(max_length=16))).save_pretrained(src)
    (tmp_path / "a-file").write_text("x")
    assert cli_main(["export", "--ckpt", str(src), "--out", str(tmp_path / "a-file" / "out")]) == 2
    assert "a-file is a file, not a folder" in capsys.readouterr().err


def _python_block(markdown: str, after: str) -> str:
    """The first ```python block that follows the line ``after`` in ``markdown``."""
    rest = markdown[markdown.index(after):]
    start = rest.index("```python\n") + len("```python\n")
    return rest[start:rest.index("```", start)]


def test_loading_snippets_leave_the_padding_of_a_short_clip_out(exported, tmp_path):
    """The card's and docs/export.md's snippets, run as written on a clip shorter than the export's window, give
    the embedding with the padding left out (they called encode_video(video[None]) without the real frame count:
    a 0.75 s clip in the 2 s window scored as half its last frame)."""
    from longvivit.data.decode import decode_video_file

    clip = tmp_path / "clip.mp4"
    encode_video(moving_square_frames(3, 48, 64, seed=5), fps=4.0, out=clip)  # 0.75 s: 2 of the 4 frames at 2 FPS
    model = VideoTextModel.from_pretrained(exported).eval()
    video, n = decode_video_file(clip, export.load_preprocess_config(exported))
    assert n < video.shape[0]
    with torch.no_grad():
        want = model.encode_video(video[None], num_valid_frames=torch.tensor([n]))
        padded = model.encode_video(video[None])
    assert not torch.allclose(want, padded, atol=1e-4)  # the padding does move the embedding

    card = _python_block((exported / "README.md").read_text(), "## Load")
    scope: dict = {}
    exec(card.replace('"path/to/this/folder"', repr(str(exported))).replace('"clip.mp4"', repr(str(clip))), scope)
    assert torch.allclose(scope["emb"], want, atol=1e-6)

    docs = (Path(__file__).parents[1] / "docs" / "export.md").read_text()
    snippet = _python_block(docs, "Prepare frames the way the export says")
    scope = {"model": model}
    exec(snippet.replace('"exports/longvivit-tiny"', repr(str(exported))).replace('"clip.mp4"', repr(str(clip))),
         scope)
    with torch.no_grad():
        text = model.encode_text(**model.text_encoder.tokenize(["a person slices bread"]))
    assert torch.allclose(scope["score"], want @ text.T, atol=1e-6)
