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
from torch.utils.data import DataLoader, Dataset

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
    g1 = torch.load(tmp_path / "single" / "grads_rank0.pt", weights_only=True)
    g2 = torch.load(tmp_path / "ddp" / "grads_rank0.pt", weights_only=True)
    assert g1.keys() == g2.keys() and len(g1) > 20
    for name in g1:
        torch.testing.assert_close(g2[name], g1[name], rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
