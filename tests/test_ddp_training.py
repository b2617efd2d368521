"""Two CPU processes with DDP (gloo) compute the same loss and gradients as one process on the joint batch.

Negatives must be global: each rank's NCE loss scores its clips against the captions of *all* ranks
(the loss owns the gather). If the gather were missing, each rank would see only its own 4 captions
and the gradients would differ from the single-process run on all 8.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from longvivit.config import TextEncoderConfig, VideoEncoderConfig
from longvivit.training.module import ContrastiveModule

pytestmark = pytest.mark.integration
N = 8


class _Clips(Dataset):
    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(0)
        self.videos = torch.randn(N, 4, 3, 32, 32, generator=gen)
        self.captions = [f"clip number {i} shows a {c} circle" for i, c in enumerate("abcdefgh")]

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> dict:
        return {"key": f"k{i}", "video": self.videos[i], "caption": self.captions[i]}


class _Record(L.Callback):
    """Turns dropout off (both runs must be deterministic) and saves rank 0's loss and gradients."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_start(self, trainer, module) -> None:
        module.model.text_encoder.eval()

    def on_after_backward(self, trainer, module) -> None:  # DDP has averaged the gradients by now
        grads = {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}
        torch.save(grads, Path(self.out) / f"grads_rank{trainer.global_rank}.pt")

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"].item()
        (Path(self.out) / f"loss_rank{trainer.global_rank}.json").write_text(json.dumps(loss))

    def on_train_end(self, trainer, module) -> None:
        logged = float(trainer.callback_metrics["train/loss"])
        (Path(self.out) / f"logged_rank{trainer.global_rank}.json").write_text(json.dumps(logged))


def _collate(tokenizer, items: list[dict]) -> dict:
    t = tokenizer([x["caption"] for x in items], padding="max_length", truncation=True, max_length=16,
                  return_tensors="pt")
    return {"key": [x["key"] for x in items], "video": torch.stack([x["video"] for x in items]),
            "input_ids": t["input_ids"], "attention_mask": t["attention_mask"], "modality": "video"}


def _run(out: Path, devices: int) -> None:
    out.mkdir()
    torch.manual_seed(0)
    module = ContrastiveModule(
        video=VideoEncoderConfig.preset("tiny", image_size=32, num_frames=4, embed_dim=32),
        text=TextEncoderConfig(max_length=16),
        modalities=["video"],  # the image path gets no gradient: frozen so plain DDP averages every bucket
    )
    collate = functools.partial(_collate, module.model.text_encoder.tokenizer)
    loader = DataLoader(_Clips(), batch_size=N // devices, shuffle=False, collate_fn=collate)
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto", max_steps=1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[_Record(str(out))], num_sanity_val_steps=0, limit_val_batches=0,
    )
    trainer.fit(module, train_dataloaders=loader)


def test_ddp_two_processes_equal_one_process_on_joint_batch(tmp_path):
    _run(tmp_path / "single", devices=1)
    _run(tmp_path / "ddp", devices=2)
    single_loss = json.loads((tmp_path / "single" / "loss_rank0.json").read_text())
    rank_losses = [json.loads((tmp_path / "ddp" / f"loss_rank{r}.json").read_text()) for r in (0, 1)]
    # each rank's loss is the mean over its own rows against global columns: their mean is the global loss
    assert sum(rank_losses) / 2 == pytest.approx(single_loss, rel=1e-5)
    # and what is logged is that global loss on every rank (it was each rank's own rows, rank 0's in the logs)
    for rank in (0, 1):
        logged = json.loads((tmp_path / "ddp" / f"logged_rank{rank}.json").read_text())
        assert logged == pytest.approx(single_loss, rel=1e-5)
    g1 = torch.load(tmp_path / "single" / "grads_rank0.pt", weights_only=True)
    g2 = torch.load(tmp_path / "ddp" / "grads_rank0.pt", weights_only=True)
    assert g1.keys() == g2.keys() and len(g1) > 20
    for name in g1:
        torch.testing.assert_close(g2[name], g1[name], rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


class _RankZeroOnlyClips(IterableDataset):
    """A validation stream that gives rank 0 two clips and rank 1 none (a small set dealt over many ranks, as
    the shard loader deals it: an iterable without a length)."""

    def __iter__(self):
        clips = _Clips()
        yield from (clips[i] for i in range(2 if torch.distributed.get_rank() == 0 else 0))


class _SaveValidated(L.Callback):
    def __init__(self, out: str) -> None:
        self.out = out

    def on_fit_end(self, trainer, module) -> None:
        if trainer.global_rank == 1:  # the rank that had nothing to validate sees the gathered set
            Path(self.out).write_text(json.dumps(module.last_metrics["num_videos"]))


def _collate_eval(items: list[dict]) -> dict:
    return {"key": [x["key"] for x in items], "video": torch.stack([x["video"] for x in items]),
            "captions": [[x["caption"]] for x in items], "modality": "video"}


def _fit_with_an_empty_validation_rank(out: str) -> None:
    torch.manual_seed(0)
    module = ContrastiveModule(video=VideoEncoderConfig.preset("tiny", image_size=32, num_frames=4, embed_dim=32),
                               text=TextEncoderConfig(max_length=16), modalities=["video"])
    tok = module.model.text_encoder.tokenizer
    train = DataLoader(_Clips(), batch_size=N // 2, collate_fn=functools.partial(_collate, tok))
    val = DataLoader(_RankZeroOnlyClips(), batch_size=2, collate_fn=_collate_eval)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_steps=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, use_distributed_sampler=False, val_check_interval=1,
                        callbacks=[_SaveValidated(out)])
    trainer.fit(module, train_dataloaders=train, val_dataloaders=val)


def test_ddp_fit_finishes_when_a_rank_has_no_validation_batch(tmp_path):
    # Rank 0's validation step went through DDP's forward, which broadcasts buffers (a collective); rank 1, with no
    # batch, waited in the evaluator's gather: both hung for good.
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "num_videos.json"
    code = f"from tests.test_ddp_training import _fit_with_an_empty_validation_rank as f; f({str(out)!r})"
    root = Path(__file__).resolve().parents[1]
    # a session of its own, so that a hang is killed with the rank processes it spawned
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("DDP fit hung in validation")
    assert proc.returncode == 0, err[-3000:]
    assert json.loads(out.read_text()) == 2  # rank 0's two clips, gathered


class _RecordMaskRng(L.Callback):
    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        state = torch.get_rng_state()  # what the step's tubelet masks and dropout draw from
        torch.save(state, Path(self.out) / f"rng_rank{trainer.global_rank}_step{batch_idx}.pt")


def _fit_two_ranks_with_checkpoint(out: str, devices: int = 2, max_steps: int = 1, ckpt_path: str | None = None,
                                   ) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from longvivit.training.callbacks import RNGState

    torch.manual_seed(0)
    module = ContrastiveModule(video=VideoEncoderConfig.preset("tiny", image_size=32, num_frames=4, embed_dim=32),
                               text=TextEncoderConfig(max_length=16), modalities=["video"])
    loader = DataLoader(_Clips(), batch_size=N // 2,
                        collate_fn=functools.partial(_collate, module.model.text_encoder.tokenizer))
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto",
                        max_steps=max_steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0,
                        callbacks=[RNGState(), _RecordMaskRng(out), ModelCheckpoint(dirpath=out, save_last=True)])
    trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt_path)


def test_ranks_draw_different_masks_and_the_checkpoint_keeps_every_ranks_rng(tmp_path):
    # seed_everything seeds every rank alike: the i-th clip of every rank got the same tubelet mask (a global
    # batch held only B distinct masks), and the checkpoint kept rank 0's RNG, which every rank resumed with.
    _fit_two_ranks_with_checkpoint(str(tmp_path))
    r0, r1 = (torch.load(tmp_path / f"rng_rank{r}_step0.pt", weights_only=True) for r in (0, 1))
    assert not torch.equal(r0, r1)
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=True)
    per_rank = ckpt["rng_states_per_rank"]
    assert len(per_rank) == 2 and not torch.equal(per_rank[0]["torch"], per_rank[1]["torch"])
    assert torch.equal(ckpt["rng_states"]["torch"], per_rank[0]["torch"])


def test_a_resume_on_another_number_of_ranks_still_draws_apart(tmp_path):
    # Without this rank's own RNG state in the checkpoint (one saved by 1 process, or an older one), every rank
    # restored rank 0's and drew the same masks again.
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    _fit_two_ranks_with_checkpoint(str(tmp_path / "one"), devices=1, max_steps=1)
    _fit_two_ranks_with_checkpoint(str(tmp_path / "two"), devices=2, max_steps=2,
                                   ckpt_path=str(tmp_path / "one" / "last.ckpt"))
    steps = sorted(f.name.split("_", 2)[2] for f in (tmp_path / "two").glob("rng_rank0_*.pt"))
    assert steps
    for step in steps:
        r0, r1 = (torch.load(tmp_path / "two" / f"rng_rank{r}_{step}", weights_only=True) for r in (0, 1))
        assert not torch.equal(r0, r1), step
