"""Data-parallel training helpers: ``torchrun`` + ``DistributedDataParallel``.

:func:`autoint_compiler.runtime.train.train` calls :func:`setup` first. Under ``torchrun --nproc-per-node N``
(the environment holds ``WORLD_SIZE > 1``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``) it
joins the process group (``gloo`` on CPU, ``nccl`` on CUDA); a process group the caller initialised
itself is used as it is. Without either, training is single-process and nothing here does anything.

Why the compiled grad network matters here: DDP does **not** support double backward
(``torch.autograd.grad(..., create_graph=True)`` inside the forward, then ``backward()``): its
gradient hooks fire during the inner ``autograd.grad`` and the all-reduce runs on the wrong
gradients, or the reducer raises "Expected to mark a variable ready only once". The usual way to
train ∂Φ/∂t -- differentiate Φ with ``create_graph=True`` and backprop through that -- therefore
cannot be wrapped in DDP. The generated ``GradNet`` is an ordinary forward network (a primal chain
and a tangent chain sharing Φ's weights), so ``DistributedDataParallel(net.grad)`` with default
arguments sees one forward and one first-order backward per step, like any other model.

Sharding: each rank draws ``local_batch(global, rank, world)`` samples per step from a generator
seeded with :func:`rank_seed` (rank 0 keeps the configured seed, so a one-process run is unchanged);
DDP averages the gradients, so a step equals a single-process step on the concatenated global batch
(up to floating-point summation order).
"""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = [
    "setup",
    "is_distributed",
    "rank",
    "world_size",
    "local_rank",
    "is_main",
    "rank_seed",
    "local_batch",
    "shard_range",
    "wrap",
    "barrier",
    "all_mean",
    "gather_bytes",
]

_OWNED = False  # True when setup() initialised the process group (then it also destroys it at exit)


def _env_world() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def setup(device: torch.device | None = None) -> bool:
    """Join the process group ``torchrun`` describes in the environment, once. Returns whether
    training is distributed (a process group of more than one rank is initialised)."""
    global _OWNED
    import torch.distributed as dist

    if not dist.is_available():
        return False
    if dist.is_initialized():
        return dist.get_world_size() > 1
    if _env_world() <= 1:
        return False
    backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend)
    _OWNED = True
    import atexit

    atexit.register(_teardown)
    return dist.get_world_size() > 1


def _teardown() -> None:
    import torch.distributed as dist

    if _OWNED and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # pragma: no cover - best effort at interpreter exit
            pass


def is_distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0 if _env_world() <= 1 else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def local_rank() -> int:
    try:
        return int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        return 0


def is_main() -> bool:
    """Rank 0 (or a single process): the one process that writes checkpoints, logs and files."""
    return rank() == 0


def rank_seed(seed: int, r: int | None = None) -> int:
    """The generator seed of rank ``r``: ``seed`` itself on rank 0, well-separated streams elsewhere."""
    r = rank() if r is None else r
    return (int(seed) + r * 0x9E3779B97F4A7C15) % 2**64


def local_batch(global_batch: int, r: int | None = None, world: int | None = None) -> int:
    """This rank's share of a global batch (the remainder goes to the lowest ranks)."""
    r = rank() if r is None else r
    world = world_size() if world is None else world
    if global_batch < world:
        raise ValueError(f"batch size {global_batch} is smaller than the number of ranks ({world})")
    return global_batch // world + (1 if r < global_batch % world else 0)


def shard_range(n: int, r: int | None = None, world: int | None = None) -> tuple[int, int]:
    """Rank ``r``'s contiguous shard ``[start, stop)`` of ``n`` items (the data a rank samples from)."""
    r = rank() if r is None else r
    world = world_size() if world is None else world
    base, extra = divmod(n, world)
    start = r * base + min(r, extra)
    return start, start + base + (1 if r < extra else 0)


def wrap(module: torch.nn.Module, device: torch.device) -> Any:
    """``DistributedDataParallel(module)`` when distributed, else ``module``.

    Default arguments except not syncing buffers before each forward: the generated networks' buffers are
    constants (encoding frequencies, unit tangents), identical on every rank, so re-broadcasting them
    before each forward is wasted communication.
    """
    if not is_distributed():
        return module
    import inspect

    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index if device.index is not None else local_rank()] if device.type == "cuda" else None
    params = inspect.signature(DDP.__init__).parameters
    # torch >= 2.13 renamed the flag (the old one warns); both keep the init-time sync of buffers
    kw = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    return DDP(module, device_ids=ids, **kw)


def barrier() -> None:
    if is_distributed():
        import torch.distributed as dist

        dist.barrier()


def all_mean(t: torch.Tensor) -> torch.Tensor:
    """The mean of ``t`` over ranks (in place on a copy); ``t`` itself when not distributed."""
    if not is_distributed():
        return t
    import torch.distributed as dist

    out = t.clone()
    dist.all_reduce(out)
    return out / world_size()


def gather_bytes(data: bytes) -> list[bytes]:
    """Every rank's ``data``, in rank order (on every rank)."""
    if not is_distributed():
        return [data]
    import torch.distributed as dist

    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, data)
    return [bytes(b) for b in out]
