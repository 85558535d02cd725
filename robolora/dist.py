"""Distributed side effects in one place: rank info, rank-zero printing, reductions, barriers.

Everything else in the library stays free of ``torch.distributed``; the worker calls these.
Without an initialised process group they behave as a single process (rank 0 of 1).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch
import torch.distributed as dist


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


#: What each printed line starts with: the run's label in a sweep (``[r64] ``), else nothing.
_line_prefix = ""


def set_label(label: str) -> None:
    """Start every line :func:`print0` prints with ``[label]`` (runs side by side tell their lines apart)."""
    global _line_prefix
    _line_prefix = f"[{label}] " if label else ""


def print0(*args: object) -> None:
    """Print from rank 0 only, flushed so Ray forwards it at once; each line carries the run's label."""
    if is_main():
        text = " ".join(map(str, args))
        if _line_prefix:
            text = "\n".join(_line_prefix + line for line in text.split("\n"))
        print(text, flush=True, file=sys.stdout)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce(values: Sequence[float], device: torch.device, op: str = "sum") -> list[float]:
    """Reduce a few numbers across ranks in one collective (float64, so token counts stay exact)."""
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.tolist()


def gather_objects(obj: object) -> list[object]:
    """Every rank's ``obj``, indexed by rank, on every rank (small picklable values only)."""
    if not dist.is_initialized():
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: object) -> object:
    """Rank 0's value of ``obj`` on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
