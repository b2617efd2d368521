"""Small torch.distributed helpers that degrade to no-ops in a single process."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when a process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world_size() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside a process group."""
    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather whose backward hands every rank the summed gradient of its own shard.

    Each rank's loss uses every rank's features, so the gradient of the *sum* of the rank losses w.r.t. the
    local shard is the sum over ranks of the gradient each rank computed for that slice. An all_reduce of the
    full gradient followed by slicing gives exactly that on every backend (gloo has no reduce_scatter); the
    extra traffic is (world - 1) x a features tensor, negligible next to the model's gradients.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        rank, world = dist.get_rank(), dist.get_world_size()
        x = x.contiguous()
        shards = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(shards, x)
        ctx.rank, ctx.batch = rank, x.shape[0]
        return torch.cat(shards, dim=0)  # (world * B, ...)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()  # all_reduce is in place; autograd may reuse the incoming buffer
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.batch : (ctx.rank + 1) * ctx.batch]


def all_gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from every rank along dim 0, differentiably.

    Every rank must pass the same shape. Gradients flowing back are summed over ranks (see
    :class:`_AllGatherWithGrad`), i.e. each rank receives d(sum of all rank losses)/d(its shard).

    Args:
        x: (B, ...) local tensor.

    Returns:
        (world_size * B, ...), rank r's rows at ``[r * B, (r + 1) * B)``; ``x`` itself in a single process.
    """
    if not is_distributed():
        return x
    return _AllGatherWithGrad.apply(x)


def gather_objects(obj: object) -> list[object]:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process); every rank must call it.

    Lightning builds a checkpoint's contents on every rank and writes rank 0's: state that differs between ranks
    (RNG, data stream positions) is gathered so that the checkpoint holds each rank's.
    """
    if not is_distributed():
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def for_this_rank(per_rank: list[object] | None, fallback: object) -> object:
    """This rank's entry of a gathered list, when it was gathered by as many ranks as run now; else ``fallback``."""
    rank, world = rank_and_world_size()
    return per_rank[rank] if per_rank is not None and len(per_rank) == world else fallback


def stop_buffer_broadcast(wrapped: object) -> None:
    """Turn off DDP's broadcast of module buffers before every forward, when ``wrapped`` is a DDP module.

    Lightning runs validation steps through the DDP wrapper, and its forward broadcasts buffers from rank 0: a
    collective call. A rank with no validation batch (an eval set dealt over more ranks than it has samples) never
    joins it, and every rank then hangs. The buffers of these models are constants (position ids, rotary
    frequencies; no batch-norm statistics), so there is nothing to keep in step.
    """
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(wrapped, DistributedDataParallel):
        wrapped.broadcast_buffers = False
