"""Rank and world helpers on :mod:`torch.distributed`, for sweeps (:func:`rww.explore.sweep`) and
cohort fits: one code path that runs unchanged in one process and under ``torchrun``.

Launch with torchrun (it sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``), e.g. ``torchrun --nproc_per_node 2 -m rww explore ...``; on SLURM,
``srun torchrun --nnodes $SLURM_NNODES --nproc_per_node 4 --rdzv_backend c10d
--rdzv_endpoint $HEAD:29500 -m rww explore ...``. :func:`init` reads those variables and joins
the process group (gloo on CPU, NCCL when the process has a CUDA device); without them (or with
``WORLD_SIZE=1``) everything here is a no-op for one process: :func:`gather_to_main` returns
``[obj]``, :func:`all_reduce_` leaves the tensor as it is, and so on.

Functions:

- :func:`init` / :func:`shutdown`: join and leave the process group, returning a
  :class:`Context` (rank, world size, local rank, backend, device);
- :func:`partition`: which items (candidates, subjects, noise realisations) a rank owns;
- :func:`broadcast_from_main`, :func:`gather_to_main`: picklable objects from rank 0 to all, and
  from all ranks to rank 0;
- :func:`all_reduce_`, :func:`average_gradients`: tensor sums/means over ranks (group-level
  gradients of a cohort fit);
- :func:`barrier`.

Every function takes the :class:`Context` (``ctx``), so code never reads global state twice; the
one-process context is :data:`SINGLE`.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch

__all__ = ["Context", "SINGLE", "init", "shutdown", "partition", "broadcast_from_main",
           "gather_to_main", "all_reduce_", "average_gradients", "barrier", "env_world_size"]


@dataclass(frozen=True)
class Context:
    """Where this process stands in the job.

    Attributes:
        rank: global rank in ``[0, world_size)``; rank 0 is the main rank (it writes files).
        world_size: number of processes.
        local_rank: rank on this node (the CUDA device index with NCCL).
        backend: ``"gloo"``, ``"nccl"``, or ``None`` in one process.
        device: the device this rank computes on (``cuda:<local_rank>`` with NCCL, else cpu).
        owns_group: whether :func:`init` created the process group (so :func:`shutdown` ends it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1


#: The context of a single process (no process group).
SINGLE = Context()


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (torchrun sets it), 1 when unset.

    Raises:
        ValueError: ``WORLD_SIZE`` is not a positive integer.
    """
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        size = int(text)
    except ValueError:
        size = 0
    if size < 1:
        raise ValueError(f"WORLD_SIZE={text!r}: expected a positive integer (torchrun sets it)")
    return size


def init(backend: str | None = None, device: str | torch.device | None = None,
         timeout_s: float = 1800.0) -> Context:
    """Join the torch.distributed process group torchrun describes, or return :data:`SINGLE`.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; default NCCL when ``device`` is CUDA (or, with no
            ``device``, when CUDA is available), else gloo.
        device: the device to compute on; default ``cuda:LOCAL_RANK`` with NCCL, else cpu.
        timeout_s: how long collectives wait for the slowest rank [s] (a sweep's ranks meet once
            per round of batches, so this bounds the time of one batch).

    Returns:
        :class:`Context`. Reuses a process group that is already initialised (then
        ``owns_group`` is False).

    Raises:
        ValueError: a torchrun environment variable is malformed, or NCCL without CUDA.
        RuntimeError: torch.distributed is unavailable in this build of torch while
            ``WORLD_SIZE > 1``.
    """
    import torch.distributed as dist

    world = env_world_size()
    if world == 1 and not (dist.is_available() and dist.is_initialized()):
        dev = torch.device(device) if device is not None else torch.device("cpu")
        return Context(device=dev)
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this build of torch; run one "
                           "process (without torchrun)")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend is None:
        cuda = (torch.device(device).type == "cuda" if device is not None
                else torch.cuda.is_available())
        backend = "nccl" if cuda else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend: expected 'gloo' or 'nccl', got {backend!r}")
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise ValueError("backend nccl: needs CUDA, which is not available here; use gloo")
        dev = torch.device(device) if device is not None else torch.device("cuda", local_rank)
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device(device) if device is not None else torch.device("cpu")
        if dev.type == "cuda":
            if dev.index is None:
                dev = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
            torch.cuda.set_device(dev)
    owns = False
    if not dist.is_initialized():
        for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
            if key not in os.environ:
                raise ValueError(f"WORLD_SIZE={world} but {key} is not set: launch with torchrun "
                                 "(or srun torchrun), which sets RANK, LOCAL_RANK, MASTER_ADDR "
                                 "and MASTER_PORT")
        kwargs = {"device_id": dev} if backend == "nccl" else {}
        dist.init_process_group(backend, init_method="env://",
                                timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
        owns = True
    return Context(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                   backend=dist.get_backend(), device=dev, owns_group=owns)


def shutdown(ctx: Context, barrier: bool = True):
    """Leave the process group if :func:`init` created it (no-op otherwise).

    With ``barrier`` (the normal end of a run) every rank first waits for the others: a rank that
    destroys its gloo group while another still has a collective in flight can make that rank
    abort in C++ ("terminate called without an active exception", exit -6; seen once in a few
    dozen 2-rank runs before the barrier). Pass ``barrier=False`` when leaving because of an
    error, where another rank may never arrive."""
    import torch.distributed as dist
    if ctx.owns_group and dist.is_available() and dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()


def partition(n_items: int, ctx: Context = SINGLE, *, strided: bool = False) -> list:
    """The indices of ``range(n_items)`` this rank owns.

    Contiguous (default): rank r gets a block, the first ``n_items % world`` ranks one item more
    (subjects of a cohort, kept together). Strided: ``range(r, n_items, world)`` (round robin).
    Every item goes to exactly one rank; ranks beyond the items get ``[]``.

    Raises:
        ValueError: ``n_items`` negative.
    """
    if not isinstance(n_items, int) or n_items < 0:
        raise ValueError(f"partition: n_items must be a non-negative integer, got {n_items!r}")
    r, w = ctx.rank, ctx.world_size
    if strided:
        return list(range(r, n_items, w))
    base, extra = divmod(n_items, w)
    start = r * base + min(r, extra)
    return list(range(start, start + base + (1 if r < extra else 0)))


def barrier(ctx: Context = SINGLE):
    """Wait for every rank (no-op in one process)."""
    if ctx.distributed:
        import torch.distributed as dist
        dist.barrier()


def broadcast_from_main(obj, ctx: Context = SINGLE):
    """Rank 0's ``obj`` (any picklable object) on every rank; returns it (the argument on other
    ranks is ignored)."""
    if not ctx.distributed:
        return obj
    import torch.distributed as dist
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0, device=_object_device(ctx))
    return box[0]


def gather_to_main(obj, ctx: Context = SINGLE):
    """Every rank's ``obj`` (picklable) collected on rank 0.

    Returns:
        On rank 0, the list of the ranks' objects in rank order (``[obj]`` in one process); on
        the other ranks ``None``.
    """
    if not ctx.distributed:
        return [obj]
    import torch.distributed as dist
    out = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(obj, out, dst=0)      # with NCCL: on the current CUDA device (init sets it)
    return out


def all_reduce_(tensor: torch.Tensor, ctx: Context = SINGLE, op: str = "sum") -> torch.Tensor:
    """Sum (``op="sum"``) or mean (``"mean"``) of ``tensor`` over ranks, in place; returns it.

    With NCCL the tensor must be on this rank's CUDA device; with gloo on the CPU (a CUDA tensor
    is copied to the CPU and back). Ranks must call it in the same order with tensors of the same
    shape and dtype. A sum over ranks is exact for integers; in floating point its rounding
    depends on the world size (the order of the additions).

    Raises:
        ValueError: an unknown ``op``.
    """
    if op not in ("sum", "mean"):
        raise ValueError(f"all_reduce_: op must be 'sum' or 'mean', got {op!r}")
    if not ctx.distributed:
        return tensor
    import torch.distributed as dist
    if ctx.backend == "gloo" and tensor.device.type != "cpu":
        host = tensor.detach().cpu()
        dist.all_reduce(host, op=dist.ReduceOp.SUM)
        tensor.copy_(host)
    else:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    if op == "mean":
        tensor.div_(ctx.world_size)
    return tensor


def average_gradients(parameters, ctx: Context = SINGLE, op: str = "mean"):
    """All-reduce the ``.grad`` of each parameter over ranks, in place: the mean by default
    (data-parallel replicas), ``"sum"`` when each rank's loss is already its share of the total
    (group-level parameters of a cohort split over ranks). A parameter without a gradient on this
    rank contributes zeros, so every rank takes part in every all-reduce (ranks must pass the same
    parameters in the same order)."""
    for p in parameters:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        all_reduce_(p.grad, ctx, op)


def _object_device(ctx: Context):
    return ctx.device if ctx.backend == "nccl" else None
