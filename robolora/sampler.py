"""Which examples each worker trains on at each step: a pure, seeded batch plan.

An epoch is cut into *global batches* of ``micro_batch * grad_accum * world_size`` examples, one
per optimizer step. The global batches depend only on the seed, the epoch, the lengths and the
global batch size, never on how it is factored into workers and micro-steps, so a 1-worker run and
a 2-worker run with the same global batch see the same examples at every step. An incomplete last
global batch is dropped (a different remainder each epoch, as the order is reshuffled).

With ``group_by_length`` examples of similar length share micro-batches, which cuts padding: the
shuffled order is cut into megabatches of ``MEGABATCH`` global batches, each sorted by length,
as Hugging Face's ``LengthGroupedSampler`` does; the global batch holding the longest example runs
first, so a batch that does not fit in memory fails at once rather than hours in.

Example:
    >>> plan = plan_epoch([5, 9, 2, 7, 3, 8, 4, 6], micro_batch=2, grad_accum=1, world_size=2, seed=0, epoch=0)
    >>> len(plan), [len(rank) for rank in plan[0]]  # 2 steps; each rank runs 1 micro-batch per step
    (2, [1, 1])
    >>> sorted(i for rank in plan[0] for micro in rank for i in micro) != sorted(
    ...     i for rank in plan[1] for micro in rank for i in micro)
    True
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

#: Global batches per length-sorted megabatch (Hugging Face uses 50 batches as well).
MEGABATCH = 50

#: plan[step][rank][micro_step] -> example indices
Plan = list[list[list[list[int]]]]


def global_batches(
    lengths: Sequence[int], global_batch: int, seed: int, epoch: int, group_by_length: bool
) -> list[list[int]]:
    """The epoch's global batches, each a list of example indices (sorted by length when grouping)."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    usable = len(order) - len(order) % global_batch
    order = order[:usable]
    if not group_by_length:
        return [order[i : i + global_batch] for i in range(0, usable, global_batch)]
    mega = global_batch * MEGABATCH
    batches = []
    for start in range(0, usable, mega):
        chunk = sorted(order[start : start + mega], key=lambda i: -lengths[i])
        batches += [chunk[i : i + global_batch] for i in range(0, len(chunk), global_batch)]
    longest = max(range(len(batches)), key=lambda b: lengths[batches[b][0]]) if batches else 0
    batches.insert(0, batches.pop(longest))
    rest = batches[1:]
    rng.shuffle(rest)
    return batches[:1] + rest


def split_global_batch(batch: list[int], micro_batch: int, grad_accum: int, world_size: int) -> list[list[list[int]]]:
    """Deal a global batch into ``[rank][micro_step]`` micro-batches.

    Consecutive micro-batches go round-robin to the ranks, so with a length-sorted batch every rank
    gets a similar mix of long and short micro-batches and waits little for the others.
    """
    micros = [batch[i : i + micro_batch] for i in range(0, len(batch), micro_batch)]
    return [[micros[m * world_size + r] for m in range(grad_accum)] for r in range(world_size)]


def plan_epoch(
    lengths: Sequence[int],
    *,
    micro_batch: int,
    grad_accum: int,
    world_size: int,
    seed: int,
    epoch: int,
    group_by_length: bool = False,
) -> Plan:
    """The whole epoch as ``plan[step][rank][micro_step] -> indices``."""
    size = micro_batch * grad_accum * world_size
    return [
        split_global_batch(b, micro_batch, grad_accum, world_size)
        for b in global_batches(lengths, size, seed, epoch, group_by_length)
    ]


def steps_per_epoch(num_examples: int, global_batch: int) -> int:
    """Optimizer steps in one epoch (the incomplete last global batch is dropped)."""
    return num_examples // global_batch


def total_steps(steps_per_epoch: int, num_epochs: float, max_steps: int = -1) -> int:
    """Optimizer steps of a whole run, as Hugging Face's Trainer counts them.

    A positive ``max_steps`` is the run's length whatever ``num_epochs`` says: a run shorter than the
    epochs stops early, a longer one goes on into further epochs of the seeded plan. Otherwise the
    epochs decide, a fractional last epoch rounded up to a whole step.

    >>> total_steps(16, 3.0), total_steps(16, 3.0, max_steps=20), total_steps(16, 1.0, max_steps=100)
    (48, 20, 100)
    >>> total_steps(16, 0.5), total_steps(10, 0.25)
    (8, 3)
    """
    if max_steps > 0:
        return max_steps
    return math.ceil(steps_per_epoch * num_epochs)


def padding_efficiency(lengths: Sequence[int], plan: Plan) -> float:
    """Share of real tokens among all tokens processed when each micro-batch is padded to its longest.

    >>> padding_efficiency([2, 4], [[[[0, 1]]]])
    0.75
    """
    real = padded = 0
    for step in plan:
        for rank in step:
            for micro in rank:
                real += sum(lengths[i] for i in micro)
                padded += max(lengths[i] for i in micro) * len(micro)
    return real / padded if padded else 1.0
