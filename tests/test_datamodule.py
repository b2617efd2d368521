"""VideoTextDataModule: loaders, epochs, mixed image+video training, resume, and a real Lightning run."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.utilities import CombinedLoader
from test_shards_loader import png_bytes, video_bytes, video_shards, write_shard

from longvivit.data.datamodule import ShardLoader, VideoTextDataModule


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("dm")
    cache: dict = {}
    train = video_shards(root / "train", 3, 4, prefix="train", cache=cache)
    val = video_shards(root / "val", 2, 3, prefix="val", seed0=1000, cache=cache)
    img = [
        str(
            write_shard(
                root / "img" / "img-000000.tar",
                [
                    {
                        "key": f"img{i:03d}",
                        "media": png_bytes(i, size=20),
                        "ext": "png",
                        "captions": [f"picture {i}"],
                    }
                    for i in range(8)
                ],
            )
        )
    ]
    return {"train": train, "val": val, "image": img, "root": root}


def make_dm(shards, **kw) -> VideoTextDataModule:
    args = dict(
        train_shards=shards["train"],
        val_shards=shards["val"],
        batch_size=2,
        num_workers=0,
        num_frames=2,
        fps=4.0,
        image_size=16,
        max_text_length=8,
        shuffle_buffer=4,
        steps_per_epoch=3,
        seed=3,
    )
    args.update(kw)
    return VideoTextDataModule(**args)


def epoch_keys(loader) -> list[list[str]]:
    return [batch["key"] for batch in loader]


def test_train_loader_epochs_have_exact_length_and_differ(shards):
    dm = make_dm(shards, num_workers=2, steps_per_epoch=5)
    loader = dm.train_dataloader()
    assert isinstance(loader, ShardLoader) and len(loader) == 5
    e0, e1 = epoch_keys(loader), epoch_keys(loader)
    assert len(e0) == len(e1) == 5  # exactly steps_per_epoch batches with 2 workers (5 is not a multiple)
    assert e0 != e1  # a new epoch draws a new stream
    batch = next(iter(loader))
    assert batch["video"].shape == (2, 2, 3, 16, 16)
    assert batch["input_ids"].shape == batch["attention_mask"].shape and batch["input_ids"].shape[0] == 2
    assert set(batch) >= {
        "key",
        "video",
        "num_valid_frames",
        "input_ids",
        "attention_mask",
        "captions",
        "modality",
        "skipped",
    }
    # Same seed, new DataModule: the same epochs again (reproducible runs).
    again = make_dm(shards, num_workers=2, steps_per_epoch=5).train_dataloader()
    assert epoch_keys(again) == e0 and epoch_keys(again) == e1


def test_val_and_test_loaders_read_everything_once_with_all_captions(shards):
    dm = make_dm(shards, num_workers=2, test_shards=shards["val"], val_batch_size=4)
    for loader in (dm.val_dataloader(), dm.test_dataloader()):
        batches = list(loader)
        keys = [k for b in batches for k in b["key"]]
        assert sorted(keys) == sorted(f"val{s:02d}{i:02d}" for s in range(2) for i in range(3))
        for b in batches:
            assert all(len(c) == 2 for c in b["captions"])
            assert b["all_input_ids"].shape[0] == 2 * len(b["key"])


def test_image_and_video_training_combined(shards):
    dm = make_dm(shards, image_shards=shards["image"], image_batch_size=3)
    loader = dm.train_dataloader()
    assert isinstance(loader, CombinedLoader)
    steps = 0
    for batch, _, _ in loader:
        assert set(batch) == {"video", "image"}
        assert batch["video"]["video"].shape == (2, 2, 3, 16, 16) and batch["video"]["modality"] == "video"
        assert batch["image"]["image"].shape == (3, 3, 16, 16) and batch["image"]["modality"] == "image"
        assert batch["image"]["input_ids"].shape [0] == 3 and batch["image"]["input_ids"].shape[1] <= 8
        steps += 1
    assert steps == 3


def test_missing_data_is_a_clear_error(shards):
    with pytest.raises(ValueError, match="train_shards"):
        VideoTextDataModule(val_shards=shards["val"]).train_dataloader()
    with pytest.raises(ValueError, match="val_shards"):
        VideoTextDataModule(train_shards=shards["train"]).val_dataloader()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_mid_epoch_continues_the_stream(shards, num_workers):
    full = make_dm(shards, num_workers=num_workers, steps_per_epoch=6)
    loader = full.train_dataloader()
    epoch0, epoch1 = epoch_keys(loader), epoch_keys(loader)

    # Interrupted run: epoch 0, then 4 batches of epoch 1 (a multiple of num_workers), then checkpoint.
    run = make_dm(shards, num_workers=num_workers, steps_per_epoch=6)
    loader = run.train_dataloader()
    assert epoch_keys(loader) == epoch0
    it = iter(loader)
    assert [next(it)["key"] for _ in range(4)] == epoch1[:4]
    state = run.state_dict()
    assert {k: state["video"][k] for k in ("epoch", "batches_seen")} == {"epoch": 1, "batches_seen": 4}

    resumed = make_dm(shards, num_workers=num_workers, steps_per_epoch=6)
    resumed.load_state_dict(state)
    loader = resumed.train_dataloader()
    rest = epoch_keys(loader)
    assert rest == epoch1[4:]  # the two unseen batches of epoch 1, nothing repeated
    assert epoch_keys(loader) == epoch_keys(full.train_dataloader())  # then epoch 2 as if never stopped


def epoch_batches(loader) -> list[tuple[list[str], list[list[str]], torch.Tensor]]:
    return [(batch["key"], batch["captions"], batch["video"]) for batch in loader]


@pytest.fixture(scope="module")
def mixed_shards(tmp_path_factory):
    """Clips with two captions each, an image and a corrupt clip among them: raw samples that make no batch."""
    root = tmp_path_factory.mktemp("mixed")
    urls = []
    for s in range(2):
        samples = [{"key": f"m{s}{i:02d}", "media": video_bytes(500 + 10 * s + i),
                    "captions": [f"clip m{s}{i:02d}", f"other caption of m{s}{i:02d}"]} for i in range(9)]
        samples.insert(2, {"key": f"img{s}", "media": png_bytes(s, size=20), "ext": "png", "captions": ["a picture"]})
        samples.insert(6, {"key": f"bad{s}", "media": b"not a video", "captions": ["broken"]})
        urls.append(str(write_shard(root / f"mixed-{s:06d}.tar", samples)))
    return urls


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_is_exact_batch_for_batch(shards, mixed_shards, num_workers):
    # Same clips, same caption drawn for each, same random windows, same order, whatever the workers and the
    # point of interruption (3 batches: not a multiple of the workers), with samples that make no batch.
    kw = dict(train_shards=mixed_shards, num_workers=num_workers, steps_per_epoch=7, start="random",
              max_fail_fraction=0.5)
    loader = make_dm(shards, **kw).train_dataloader()
    epoch0, epoch1 = epoch_batches(loader), epoch_batches(loader)
    run = make_dm(shards, **kw)
    loader = run.train_dataloader()
    epoch_batches(loader)
    it = iter(loader)
    for _ in range(3):
        next(it)
    resumed = make_dm(shards, **kw)
    resumed.load_state_dict(run.state_dict())
    rest = epoch_batches(resumed.train_dataloader())
    assert len(rest) == 4
    for (keys, caps, video), (keys_ref, caps_ref, video_ref) in zip(rest, epoch1[3:], strict=True):
        assert keys == keys_ref and caps == caps_ref
        assert torch.equal(video, video_ref)
    assert len({c for _, caps, _ in epoch0 + epoch1 for [c] in caps if c.startswith("other")}) > 0


def test_resume_after_a_complete_epoch_starts_the_next(shards):
    run = make_dm(shards)
    loader = run.train_dataloader()
    epoch_keys(loader)
    state = run.state_dict()
    assert {k: state["video"][k] for k in ("epoch", "batches_seen")} == {"epoch": 0, "batches_seen": 3}
    resumed = make_dm(shards)
    resumed.load_state_dict(state)
    reference = make_dm(shards).train_dataloader()
    epoch_keys(reference)
    assert epoch_keys(resumed.train_dataloader()) == epoch_keys(reference)


class TinyModule(L.LightningModule):
    """Just enough model to drive the DataModule through a real Trainer."""

    def __init__(self) -> None:
        super().__init__()
        self.video = torch.nn.Linear(3, 4)
        self.text = torch.nn.Embedding(31000, 4)
        self.seen: list[str] = []
        self.val_seen: list[str] = []

    def _loss(self, batch: dict) -> torch.Tensor:
        pixels = batch.get("video", batch.get("image"))
        v = self.video(pixels.flatten(0, -4).mean(dim=(-1, -2)))  # mean colour of every frame -> (N, 4)
        t = self.text(batch["input_ids"]).mean(1)
        return (v.mean() - t.mean()) ** 2

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        parts = batch.values() if "video" in batch and isinstance(batch["video"], dict) else [batch]
        self.seen.extend(k for part in parts for k in part["key"])
        return sum(self._loss(part) for part in parts)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.val_seen.extend(batch["key"])
        self.log("val_loss", self._loss(batch), batch_size=len(batch["key"]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_fit_with_lightning_and_resume_from_checkpoint(shards, tmp_path):
    kw = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    dm = make_dm(shards, image_shards=shards["image"], steps_per_epoch=3)
    model = TinyModule()
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_epochs=1)
    L.Trainer(max_epochs=1, callbacks=[ckpt], default_root_dir=tmp_path, **kw).fit(model, datamodule=dm)
    assert len(model.seen) == 3 * (2 + 2)  # 3 steps x (2 clips + 2 images)
    assert sorted(model.val_seen) == sorted(f"val{s:02d}{i:02d}" for s in range(2) for i in range(3))

    # Resume for a second epoch: the data position comes back from the checkpoint.
    reference = make_dm(shards, image_shards=shards["image"], steps_per_epoch=3).train_dataloader()
    list(reference)
    expected = [k for batch, _, _ in reference for part in batch.values() for k in part["key"]]
    model2 = TinyModule()
    dm2 = make_dm(shards, image_shards=shards["image"], steps_per_epoch=3)
    L.Trainer(max_epochs=2, default_root_dir=tmp_path, **kw).fit(
        model2, datamodule=dm2, ckpt_path=ckpt.last_model_path
    )
    assert model2.seen == expected


def test_resume_from_a_mid_epoch_checkpoint_with_workers(shards, tmp_path):
    kw = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        max_epochs=2,
        default_root_dir=tmp_path,  # the resumed trainer's own checkpoints must not land in the working dir
    )
    model = TinyModule()
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1)
    L.Trainer(callbacks=[ckpt], **kw).fit(model, datamodule=make_dm(shards, steps_per_epoch=4, num_workers=2))
    assert len(model.seen) == 2 * 4 * 2
    resumed = TinyModule()
    L.Trainer(**kw).fit(
        resumed,
        datamodule=make_dm(shards, steps_per_epoch=4, num_workers=2),
        ckpt_path=tmp_path / "epoch=1-step=6.ckpt",
    )
    assert resumed.seen == model.seen[-4:]  # the last two batches of epoch 1, exactly


@pytest.mark.parametrize(("validate", "images"), [(True, False), (False, False), (True, True)],
                         ids=["with-validation", "without-validation", "with-images"])
def test_step_based_resume_from_an_end_of_epoch_checkpoint_continues_with_the_next_epoch(shards, tmp_path, validate,
                                                                                           images):
    # Training to max_steps (every recipe), Lightning resumes a checkpoint taken at an epoch's end by restarting that
    # epoch and then asks for a new iterator: the first one moved the stream to the next epoch and the new one to
    # the one after, so the resumed run skipped an epoch of data (without validation it also trained one batch of
    # the skipped epoch as an extra batch of the finished one).
    kw = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
              num_sanity_val_steps=0, limit_val_batches=1.0 if validate else 0, default_root_dir=tmp_path)
    data = {"image_shards": shards["image"]} if images else {}
    full = TinyModule()
    L.Trainer(max_steps=9, enable_checkpointing=False, **kw).fit(full, datamodule=make_dm(shards, **data))
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)  # saves at each epoch's end
    first = TinyModule()
    L.Trainer(max_steps=3, callbacks=[ckpt], **kw).fit(first, datamodule=make_dm(shards, **data))
    resumed = TinyModule()
    L.Trainer(max_steps=9, **kw).fit(resumed, datamodule=make_dm(shards, **data), ckpt_path=tmp_path / "last.ckpt")
    per_step = 4 if images else 2
    assert len(full.seen) == 9 * per_step and first.seen == full.seen[:3 * per_step]
    assert resumed.seen == full.seen[3 * per_step:]  # epochs 1 and 2, batch for batch


def test_init_args_are_exposed_to_lightning_cli(shards):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(VideoTextDataModule, "data")
    cfg = parser.parse_args(
        [
            "--data.train_shards",
            shards["train"][0],
            "--data.batch_size",
            "4",
            "--data.train_weights",
            "[1.0]",
            "--data.sampling",
            "uniform",
        ]
    )
    dm = parser.instantiate_classes(cfg).data
    assert isinstance(dm, VideoTextDataModule)
    assert (
        dm.batch_size == 4 and dm.preprocess.sampling == "uniform" and dm.train_shards == shards["train"][0]
    )
    with pytest.raises(Exception, match="batch_sise|sampling"):
        parser.parse_args(["--data.batch_sise", "4"])
    with pytest.raises(Exception, match="sampling"):
        parser.parse_args(["--data.sampling", "dense"])


def test_persistent_workers_are_refused_for_training(shards):
    ds = make_dm(shards).train_dataloader().dataset
    with pytest.raises(ValueError, match="persistent_workers"):
        ShardLoader(ds, num_workers=1, persistent_workers=True)
