"""Sampling on several processes: each draws its shard of the rows and all of them receive the whole batch.

Sample i depends only on (seed, i) (noisecraft.core.noise), so process r of R draws rows
[n r / R, n (r + 1) / R) with noise streams from that first row, and the gathered batch is the batch one
process draws (bit for bit with a fixed evaluation batch, noisecraft.nets.batching; to ~1e-6 without one).
The processes are the ones torchrun or `accelerate launch` started (WORLD_SIZE > 1); Accelerate's
PartialState joins them into a process group (gloo on CPU, NCCL on GPUs).
"""

from __future__ import annotations

import atexit
import functools
import os

import torch
from torch import Tensor


def world() -> tuple[int, int]:
    """(rank, size) of this process among the launched ones; (0, 1) when not launched in parallel."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return 0, 1
    return _joined()


@functools.cache
def _joined() -> tuple[int, int]:
    """Join the launched processes' group once (Accelerate's PartialState); close it at exit."""
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    leave_at_exit()
    return state.process_index, state.num_processes


@functools.cache
def leave_at_exit() -> None:
    """Close this process's group when the interpreter exits (registered once, by whoever joined it)."""
    atexit.register(_leave)


def _leave() -> None:
    """Close the process group at exit: a gloo group left open can abort the interpreter as it tears down
    ("terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(n: int, size: int, rank: int) -> range:
    """Rows of an n-row batch that process `rank` of `size` draws: contiguous, sizes differing by at most 1."""
    return range(n * rank // size, n * (rank + 1) // size)


def gather_rows(x: Tensor, n: int, size: int) -> Tensor:
    """The shards of every process (each holding shard(n, size, r) rows), concatenated in rank order, on all."""
    if size == 1:
        return x
    import torch.distributed as dist

    longest = -(-n // size)
    padded = torch.zeros((longest, *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    return torch.cat([part[: len(shard(n, size, r))] for r, part in enumerate(parts)])


def is_main() -> bool:
    """Whether this process writes outputs (rank 0, or the only process)."""
    return int(os.environ.get("RANK", "0")) == 0


__all__ = ["gather_rows", "is_main", "leave_at_exit", "shard", "world"]
