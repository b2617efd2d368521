"""Optimizer parameter groups: weight decay on matrices only, and per-prefix learning-rate multipliers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from longvivit.config import TextEncoderConfig, VideoEncoderConfig
from longvivit.training.module import ContrastiveModule
from longvivit.training.optim import OptimConfig, param_groups


class Two(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
        self.body_head = nn.Linear(4, 2, bias=False)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def ids(params) -> set[int]:
    return {id(p) for p in params}


def test_decay_on_matrices_only_and_frozen_parameters_skipped():
    m = Two()
    decay, keep = param_groups(m, 0.1)
    assert ids(decay["params"]) == ids([m.body[0].weight, m.body_head.weight]) and decay["weight_decay"] == 0.1
    assert ids(keep["params"]) == ids([m.body[0].bias, m.body[1].weight, m.body[1].bias])
    assert keep["weight_decay"] == 0.0 and "lr" not in decay and "lr" not in keep


def test_lr_scales_split_groups_by_longest_prefix():
    m = Two()
    groups = param_groups(m, 0.1, lr=1e-3, lr_scales={"body": 0.5, "body.1.": 0.1})
    by_param = {id(p): (g.get("lr", 1e-3), g["weight_decay"]) for g in groups for p in g["params"]}
    assert by_param[id(m.body[0].weight)] == (5e-4, 0.1)
    assert by_param[id(m.body[1].weight)] == (1e-4, 0.0)  # "body.1." is longer than "body"
    assert by_param[id(m.body_head.weight)] == (5e-4, 0.1)  # a plain prefix: "body" also matches "body_head"
    assert id(m.frozen.weight) not in by_param
    assert sum(len(g["params"]) for g in groups) == 5
    with pytest.raises(ValueError, match="base lr"):
        param_groups(m, 0.1, lr_scales={"body": 0.5})


def test_text_lr_scale_slows_the_pretrained_text_transformer_only():
    module = ContrastiveModule(
        video=VideoEncoderConfig(image_size=32, num_frames=4, width=32, depth=1, heads=2, embed_dim=16),
        text=TextEncoderConfig(embed_dim=16, max_length=16, lock=True, unlocked_layers=2),  # packaged MiniLM
        optim=OptimConfig(lr=1e-3, warmup_steps=0, total_steps=10, text_lr_scale=0.1),
    )
    opt = module.configure_optimizers()["optimizer"]
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    text = module.model.text_encoder
    unlocked = [p for p in text.model.parameters() if p.requires_grad]
    assert unlocked and all(lr_of[id(p)] == pytest.approx(1e-4) for p in unlocked)
    assert not any(id(p) in lr_of for p in text.model.parameters() if not p.requires_grad)
    assert lr_of[id(text.proj.weight)] == pytest.approx(1e-3)
    assert all(lr_of[id(p)] == pytest.approx(1e-3) for p in module.model.video_encoder.parameters())
    with pytest.raises(ValueError, match="text_lr_scale"):
        OptimConfig(text_lr_scale=0.0)


def test_a_resume_with_another_schedule_length_follows_it_and_says_so():
    # Resumed with a larger max_steps, the run silently jumped from the end of the old cosine (lr 0) to the middle
    # of the new one.
    import warnings

    from longvivit.training.optim import cosine_with_warmup

    def scheduler(total: int):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        return opt, cosine_with_warmup(opt, warmup_steps=1, total_steps=total)

    opt, sched = scheduler(4)
    for _ in range(4):
        opt.step()
        sched.step()
    state = sched.state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = scheduler(4)[1]
        same.load_state_dict(state)  # the same schedule: silent
        assert same.last_epoch == 4 and same.get_last_lr() == sched.get_last_lr()
    longer = scheduler(8)[1]
    with pytest.warns(RuntimeWarning, match=r"resuming at step 4 with another lr schedule.*total_steps': 4.*"
                                            r"total_steps': 8.*--model.optim.total_steps 4 keeps"):
        longer.load_state_dict(state)
    assert longer.total_steps == 8 and longer.last_epoch == 4
    assert longer.factor(4) == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 7)))


@pytest.mark.parametrize("backbone", ["joint", "factorized", "frame"])
def test_image_only_stage_trains_nothing_only_videos_use(backbone):
    # An image-only stage left the factorized blocks' temporal branches (and the frame model's attention pool)
    # trainable though images never reach them: DDP stopped on "parameters that were not used in producing the
    # loss".
    module = ContrastiveModule(
        video=VideoEncoderConfig.preset("tiny", image_size=32, num_frames=4, backbone=backbone,
                                        frame_pool="attention" if backbone == "frame" else "mean"),
        text=TextEncoderConfig(max_length=16), modalities=["image"])
    module.setup("fit")
    enc = module.model.video_encoder
    images = torch.randn(2, 3, 32, 32)
    enc.train()
    enc.encode_image(images).sum().backward()
    unused = [n for n, p in enc.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []
    assert all(p.requires_grad for p in enc.patch_embed_2d.parameters())  # the image path itself trains
