"""Distributed side effects in one place: a worker's process-wide set-up, rank info, rank-zero printing,
reductions, barriers.

Everything else in the library stays free of ``torch.distributed``; the worker calls these.
Without an initialised process group they behave as a single process (rank 0 of 1).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from robolora.kernels import use_shape_free_attention


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


# ----------------------------------------------------------------------------- a worker's set-up


def init_worker(label: str, seed: int, threads: int | None) -> None:
    """Every process-wide side effect a training worker makes before it loads anything, in this order.

    Its lines start with ``label``; ``threads`` (a CPU worker's reserved CPUs; None: torch's default)
    caps torch's threads; stale build locks go before DeepSpeed compiles or loads its ops; then the
    attention kernels are chosen and torch seeded with ``seed`` (before the tokenizer and the model load,
    whose random numbers follow from it).
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_ray_train_reports()
    set_label(label)
    if threads:
        torch.set_num_threads(threads)
    clear_stale_build_locks()
    skip_unused_ops()
    use_shape_free_attention()
    torch.manual_seed(seed)


#: A build lock older than this was left by a killed build: DeepSpeed's ops compile in about a minute.
STALE_BUILD_LOCK_S = 600.0


def clear_stale_build_locks(root: Path | None = None, max_age_s: float = STALE_BUILD_LOCK_S) -> list[Path]:
    """Remove the lock files of torch extension builds (DeepSpeed's JIT-compiled ops) that a killed
    process left behind; returns them. Every later run would otherwise wait on such a lock forever.

    ``root`` defaults to torch's extensions folder ($TORCH_EXTENSIONS_DIR, else
    ~/.cache/torch_extensions/<python>_<accelerator>/); a lock is ``<root>/<op>/lock``.
    """
    if root is None:
        from torch.utils.cpp_extension import get_default_build_root

        custom = os.environ.get("TORCH_EXTENSIONS_DIR")
        locks = Path(custom).glob("*/lock") if custom else Path(get_default_build_root()).glob("*/*/lock")
    else:
        locks = root.glob("*/lock")
    removed = []
    for lock in locks:
        with contextlib.suppress(FileNotFoundError):  # another worker on this node removed it first
            if time.time() - lock.stat().st_mtime > max_age_s:
                lock.unlink()
                removed.append(lock)
                print(f"removed a stale build lock left by an interrupted build: {lock}", flush=True)
    return removed


#: DeepSpeed ops compiled on first use that training never calls: the shared-memory all-reduce of the
#: CPU accelerator serves tensor-parallel inference only (ZeRO reduces through torch.distributed), and
#: compiling it costs about 35 s, again whenever another environment compiled it last.
UNUSED_OPS = ("deepspeed_shm_comm",)


def skip_unused_ops() -> None:
    """Mark :data:`UNUSED_OPS` incompatible, so DeepSpeed neither compiles nor loads them."""
    import deepspeed.ops

    for name in UNUSED_OPS:
        deepspeed.ops.__compatible_ops__[name] = False


def quiet_ray_train_reports() -> None:
    """Ray Train logs every report at INFO, under a logger named after its source file; the driver
    already shows progress from metrics.jsonl, so keep only its warnings."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray layout: its report lines stay
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)
