"""NCELoss against a brute-force reference, and 2-process gloo runs against one process on the joint batch."""

from __future__ import annotations

import datetime
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from longvivit.loss import NCELoss, contrastive_accuracy, sample_ids
from longvivit.negatives import order_negatives, reorder_caption

WORLD = 2
PER_RANK = 3
DIM = 8
TEXT_VALID = torch.tensor([True, False, True, True, True, False])  # WORLD * PER_RANK extra caption slots
DUP_IDS = torch.tensor([10, 11, 12, 13, 11, 15])  # rank 0's second sample again on rank 1


def reference_nce(
    a: torch.Tensor,
    b: torch.Tensor,
    scale: float,
    extra_video: torch.Tensor | None = None,
    extra_text: torch.Tensor | None = None,
    ids: list[int] | None = None,
) -> torch.Tensor:
    """Python loops over the score matrix: mean of -log softmax of the diagonal, rows and columns.

    Video row i is scored against every caption and then ``extra_text``; caption i against every video and then
    ``extra_video``; with ``ids``, paired columns j != i of the same id as row i are left out.
    """
    n = a.shape[0]
    texts = b if extra_text is None else torch.cat([b, extra_text])
    videos = a if extra_video is None else torch.cat([a, extra_video])
    total = a.new_zeros(())
    for i in range(n):
        def kept(columns: torch.Tensor, i: int = i) -> torch.Tensor:
            keep = [j == i or j >= n or ids is None or ids[j] != ids[i] for j in range(len(columns))]
            return columns[torch.tensor(keep)]

        row = scale * kept(texts) @ a[i]
        col = scale * kept(videos) @ b[i]
        i = i - sum(1 for j in range(i) if ids is not None and ids[j] == ids[i])  # the pair's place among the kept
        total = total - torch.log_softmax(row, dim=0)[i] - torch.log_softmax(col, dim=0)[i]
    return total / (2 * n)


def random_features(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(n, d, generator=g), dim=-1),
            F.normalize(torch.randn(n, d, generator=g), dim=-1))


@pytest.mark.parametrize("local_loss", [True, False])
def test_matches_brute_force_reference(local_loss):
    a, b = random_features(7, 16, seed=0)
    got = NCELoss(local_loss=local_loss)(a, b, torch.tensor(5.0))
    torch.testing.assert_close(got, reference_nce(a, b, 5.0))


@pytest.mark.parametrize("local_loss", [True, False])
def test_a_clip_twice_in_the_batch_is_not_its_own_negative(local_loss):
    # Resampled shards put the same clip into one global batch more than once (different ranks reading one shard):
    # each copy's caption, a true match, was a negative of the other copy.
    a, b = random_features(6, 16, seed=1)
    a[4] = a[1]  # clip 1 again, with another of its captions
    keys = ["c0", "c1", "c2", "c3", "c1", "c5"]
    ids = sample_ids(keys)
    assert ids.dtype == torch.int64 and ids[1] == ids[4] and len(set(ids.tolist())) == 5
    loss = NCELoss(local_loss=local_loss)
    got = loss(a, b, torch.tensor(5.0), sample_ids=ids)
    torch.testing.assert_close(got, reference_nce(a, b, 5.0, ids=ids.tolist()))
    assert not torch.allclose(got, loss(a, b, torch.tensor(5.0)))
    # with unique keys nothing changes
    unique = sample_ids([f"u{i}" for i in range(6)])
    torch.testing.assert_close(loss(a, b, torch.tensor(5.0), sample_ids=unique), reference_nce(a, b, 5.0))


def test_symmetric_in_its_two_inputs():
    a, b = random_features(6, 16, seed=1)
    loss = NCELoss()
    torch.testing.assert_close(loss(a, b, 10.0), loss(b, a, 10.0))
    # and not trivially constant: a different pairing changes it
    assert not torch.allclose(loss(a, b, 10.0), loss(a, b.flip(0), 10.0))


def test_perfect_alignment_high_scale_gives_zero_loss_and_full_accuracy():
    a = torch.eye(8)  # orthonormal: positives score 1, negatives 0
    out = NCELoss()(a, a.clone(), torch.tensor(100.0), output_dict=True)
    assert out["loss"].item() < 1e-6
    assert out["v2t_acc"].item() == 1.0 and out["t2v_acc"].item() == 1.0


def test_accuracy_counts_wrong_rows():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0], [0.0, 0.0, 1.0]])
    assert contrastive_accuracy(logits, torch.arange(3)).item() == pytest.approx(2 / 3)


@pytest.mark.parametrize("local_loss", [True, False])
def test_extra_video_negatives_match_reference(local_loss):
    a, b = random_features(5, 16, seed=3)
    extra = random_features(10, 16, seed=4)[0]
    out = NCELoss(local_loss=local_loss)(a, b, torch.tensor(6.0), output_dict=True, extra_video_features=extra)
    torch.testing.assert_close(out["loss"], reference_nce(a, b, 6.0, extra_video=extra))
    # negatives identical to the positives make every caption's choice a tie: loss rises, v2t does not move
    tied = NCELoss(local_loss=local_loss)(a, b, 6.0, output_dict=True, extra_video_features=a.clone())
    assert tied["loss"] > NCELoss(local_loss=local_loss)(a, b, 6.0)


@pytest.mark.parametrize("local_loss", [True, False])
def test_extra_text_negatives_match_reference_and_skip_invalid(local_loss):
    a, b = random_features(5, 16, seed=5)
    extra = random_features(5, 16, seed=6)[0]
    valid = torch.tensor([True, False, True, True, False])
    got = NCELoss(local_loss=local_loss)(a, b, 6.0, extra_text_features=extra, extra_text_valid=valid)
    torch.testing.assert_close(got, reference_nce(a, b, 6.0, extra_text=extra[valid]))
    # all masked: exactly the plain loss
    none = NCELoss(local_loss=local_loss)(a, b, 6.0, extra_text_features=extra, extra_text_valid=valid & False)
    torch.testing.assert_close(none, NCELoss(local_loss=local_loss)(a, b, 6.0))


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("the red square turns orange; after that, the blue circle grows",
         "the blue circle grows; after that, the red square turns orange"),
        ("first the a grows, then the b shrinks, and finally the c appears.",
         "first the c appears, then the b shrinks, and finally the a grows."),
        ("first, A appears. then B moves. finally, C shrinks.", "first, C shrinks. then B moves. finally, A appears."),
        ("a man opens the door before he sits down", "he sits down before a man opens the door"),
        ("Someone chops onions and then fries them", "fries them and then Someone chops onions"),
        ("a dog runs on the beach", None),
        ("the square moves left, then the square moves left", None),  # the same events: no other order
    ],
)
def test_reorder_caption(caption, expected):
    assert reorder_caption(caption) == expected


def test_order_negatives_reorder_frames_only():
    video = torch.arange(2 * 6, dtype=torch.float32).view(2, 6, 1, 1, 1).expand(2, 6, 3, 4, 4)
    out = order_negatives(video, ["reverse", "rotate"], step=2)
    assert out.shape == (4, 6, 3, 4, 4)
    torch.testing.assert_close(out[:2], video.flip(1))
    # rolled by 6 // 2 rounded down to whole tubelets of 2 frames: (4, 5, 0, 1, 2, 3)
    assert out[2, :, 0, 0, 0].tolist() == [4.0, 5.0, 0.0, 1.0, 2.0, 3.0]
    # the same bag of frames as the clip: only the order differs
    for copy in (out[:2], out[2:]):
        torch.testing.assert_close(copy.sort(dim=1).values, video.sort(dim=1).values)
    with pytest.raises(ValueError, match="unknown order negative"):
        order_negatives(video, ["shuffle"])


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        NCELoss()(torch.randn(4, 8), torch.randn(3, 8), 1.0)


# ----------------------------------------------------------------- distributed (gloo, 2 processes)
class TwoTowers(nn.Module):
    """Linear towers + learnable temperature, to check DDP-averaged parameter gradients end to end."""

    def __init__(self) -> None:
        super().__init__()
        self.video = nn.Linear(DIM, DIM)
        self.text = nn.Linear(DIM, DIM)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, xv, xt):
        return F.normalize(self.video(xv), dim=-1), F.normalize(self.text(xt), dim=-1), self.logit_scale.exp()


def joint_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    return torch.randn(WORLD * PER_RANK, DIM, generator=g), torch.randn(WORLD * PER_RANK, DIM, generator=g)


def make_towers() -> TwoTowers:
    torch.manual_seed(0)
    return TwoTowers()


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        a_all, b_all = random_features(WORLD * PER_RANK, DIM, seed=7)
        result = {}
        for local in (True, False):
            a = a_all[rows].clone().requires_grad_(True)
            b = b_all[rows].clone().requires_grad_(True)
            loss = NCELoss(local_loss=local)(a, b, torch.tensor(4.0))
            loss.backward()
            result[f"loss_{local}"] = loss.detach()
            result[f"grad_a_{local}"] = a.grad
            result[f"grad_b_{local}"] = b.grad
            a, b = a_all[rows].clone(), b_all[rows].clone()
            extra = random_features(WORLD * 2 * PER_RANK, DIM, seed=8)[0].view(WORLD, 2 * PER_RANK, DIM)[rank]
            result[f"loss_extra_{local}"] = NCELoss(local_loss=local)(a, b, 4.0, extra_video_features=extra)
            ext = random_features(WORLD * PER_RANK, DIM, seed=9)[0][rows]
            result[f"loss_text_{local}"] = NCELoss(local_loss=local)(
                a, b, 4.0, extra_text_features=ext, extra_text_valid=TEXT_VALID[rows]
            )
            result[f"loss_dup_{local}"] = NCELoss(local_loss=local)(a, b, 4.0, sample_ids=DUP_IDS[rows])

            model = nn.parallel.DistributedDataParallel(make_towers())
            xv, xt = joint_batch()
            fv, ft, scale = model(xv[rows], xt[rows])
            NCELoss(local_loss=local)(fv, ft, scale).backward()
            for name, p in model.module.named_parameters():
                result[f"ddp_{local}_{name}"] = p.grad.clone()
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("nce_dist")
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.parametrize("local", [True, False])
def test_two_ranks_equal_one_process_on_joint_batch(two_rank_results, local):
    a_all, b_all = random_features(WORLD * PER_RANK, DIM, seed=7)
    a, b = a_all.clone().requires_grad_(True), b_all.clone().requires_grad_(True)
    single = NCELoss()(a, b, torch.tensor(4.0))
    single.backward()

    losses = torch.stack([r[f"loss_{local}"] for r in two_rank_results])
    if local:  # each rank: mean over its own rows; their mean is the global loss
        torch.testing.assert_close(losses.mean(), single.detach())
        assert not torch.allclose(losses[0], losses[1])  # the ranks really saw different rows
    else:  # each rank computes the whole matrix
        torch.testing.assert_close(losses, single.detach().expand(WORLD))

    # the gather sums gradients over ranks: each rank holds WORLD x d(global loss)/d(its shard),
    # which DDP's averaging divides back (checked on parameters below)
    grad_a = torch.cat([r[f"grad_a_{local}"] for r in two_rank_results]) / WORLD
    grad_b = torch.cat([r[f"grad_b_{local}"] for r in two_rank_results]) / WORLD
    torch.testing.assert_close(grad_a, a.grad)
    torch.testing.assert_close(grad_b, b.grad)


@pytest.mark.parametrize("local", [True, False])
def test_two_ranks_gather_extra_negatives(two_rank_results, local):
    a_all, b_all = random_features(WORLD * PER_RANK, DIM, seed=7)
    extra = random_features(WORLD * 2 * PER_RANK, DIM, seed=8)[0]  # rank-major, as the gather stacks them
    single = NCELoss()(a_all, b_all, 4.0, extra_video_features=extra)
    losses = torch.stack([r[f"loss_extra_{local}"] for r in two_rank_results])
    torch.testing.assert_close(losses.mean() if local else losses, single if local else single.expand(WORLD))


@pytest.mark.parametrize("local", [True, False])
def test_two_ranks_gather_extra_text_negatives(two_rank_results, local):
    a_all, b_all = random_features(WORLD * PER_RANK, DIM, seed=7)
    ext = random_features(WORLD * PER_RANK, DIM, seed=9)[0]
    single = NCELoss()(a_all, b_all, 4.0, extra_text_features=ext, extra_text_valid=TEXT_VALID)
    losses = torch.stack([r[f"loss_text_{local}"] for r in two_rank_results])
    torch.testing.assert_close(losses.mean() if local else losses, single if local else single.expand(WORLD))


@pytest.mark.parametrize("local", [True, False])
def test_ddp_parameter_gradients_equal_one_process(two_rank_results, local):
    model = make_towers()
    xv, xt = joint_batch()
    NCELoss()(*model(xv, xt)).backward()
    for name, p in model.named_parameters():
        for r in two_rank_results:
            torch.testing.assert_close(r[f"ddp_{local}_{name}"], p.grad, msg=f"{name} differs")


@pytest.mark.parametrize("local", [True, False])
def test_two_ranks_leave_out_a_clip_both_ranks_hold(two_rank_results, local):
    a_all, b_all = random_features(WORLD * PER_RANK, DIM, seed=7)
    single = NCELoss()(a_all, b_all, 4.0, sample_ids=DUP_IDS)
    torch.testing.assert_close(single, reference_nce(a_all, b_all, 4.0, ids=DUP_IDS.tolist()))
    losses = torch.stack([r[f"loss_dup_{local}"] for r in two_rank_results])
    torch.testing.assert_close(losses.mean() if local else losses, single if local else single.expand(WORLD))


def test_clips_of_two_datasets_sharing_a_key_are_negatives_of_each_other(tmp_path):
    """Sample ids name a clip by its shard and key: two datasets written from different manifests (make_shards
    numbers every manifest's lines from 1, video2dataset numbers its keys from 0) hold different clips under one key.
    Keyed by the key alone, each was left out of the other's softmax as a 'copy'; the same shard read twice still
    gives copies the same id."""
    from test_shards_loader import video_bytes, write_shard

    from longvivit.config import PreprocessConfig, TextEncoderConfig, VideoEncoderConfig
    from longvivit.data.shards import ShardDataset
    from longvivit.training.module import ContrastiveModule

    size, frames = 32, 4

    def shard(name: str, seeds: list[int]) -> str:
        samples = [{"key": f"{i:06d}", "media": video_bytes(s), "captions": [f"clip {s} moves"]}
                   for i, s in enumerate(seeds)]
        return str(write_shard(tmp_path / name / "shard-000000.tar", samples))

    a, b = shard("a", [1, 2]), shard("b", [3])  # "000000" in both: different clips
    torch.manual_seed(0)
    video = VideoEncoderConfig.preset("tiny", image_size=size, num_frames=frames, embed_dim=32)
    module = ContrastiveModule(video=video, text=TextEncoderConfig(max_length=16), modalities=["video"]).eval()
    pre = PreprocessConfig(num_frames=frames, fps=4.0, image_size=size)
    tokenizer = module.model.text_encoder.tokenizer

    def first_batch(urls: list[str]) -> dict:
        ds = ShardDataset(urls, "video", pre, train=False, batch_size=3, tokenizer=tokenizer, max_text_length=16)
        return next(b for b in ds if "video" in b)

    batch = first_batch([a, b])
    assert batch["key"] == ["000000", "000001", "000000"]
    with torch.no_grad():
        loss = module._modality_loss(batch, "video")[0]
        out = module.model(video=batch["video"], input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           num_valid_frames=batch["num_valid_frames"])
        plain = NCELoss()(out["video_features"], out["text_features"], out["logit_scale"])
    torch.testing.assert_close(loss, plain)  # three different clips: every other one is a negative
    twice = first_batch([b, b, a])  # the same clip read twice, as resampled shards do
    ids = twice["sample_id"]
    assert ids.dtype == torch.int64 and ids[0] == ids[1] != ids[2]
