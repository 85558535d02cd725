"""The batch plan: same global batches however they are split, length grouping, determinism."""

from __future__ import annotations

import random

import pytest

from robolora.sampler import global_batches, padding_efficiency, plan_epoch, steps_per_epoch

_RNG = random.Random(0)
LENGTHS = [_RNG.randint(20, 200) for _ in range(203)]


def _global_sets(plan):
    return [sorted(i for rank in step for micro in rank for i in micro) for step in plan]


@pytest.mark.parametrize("group", [False, True])
def test_global_batches_do_not_depend_on_the_split(group):
    one = plan_epoch(LENGTHS, micro_batch=8, grad_accum=1, world_size=1, seed=1, epoch=0, group_by_length=group)
    two = plan_epoch(LENGTHS, micro_batch=4, grad_accum=1, world_size=2, seed=1, epoch=0, group_by_length=group)
    accum = plan_epoch(LENGTHS, micro_batch=2, grad_accum=2, world_size=2, seed=1, epoch=0, group_by_length=group)
    assert _global_sets(one) == _global_sets(two) == _global_sets(accum)
    assert len(one) == steps_per_epoch(len(LENGTHS), 8) == 25


def test_shape_and_no_repeats_within_an_epoch():
    plan = plan_epoch(LENGTHS, micro_batch=3, grad_accum=2, world_size=2, seed=0, epoch=0)
    assert all(len(step) == 2 and all(len(rank) == 2 for rank in step) for step in plan)
    seen = [i for step in plan for rank in step for micro in rank for i in micro]
    assert all(len(m) == 3 for step in plan for rank in step for m in rank)
    assert len(seen) == len(set(seen)) == 16 * 12  # 203 // 12 steps, the remainder dropped


def test_epochs_reshuffle_and_seeds_differ():
    e0 = plan_epoch(LENGTHS, micro_batch=4, grad_accum=1, world_size=2, seed=0, epoch=0)
    assert e0 == plan_epoch(LENGTHS, micro_batch=4, grad_accum=1, world_size=2, seed=0, epoch=0)
    assert e0 != plan_epoch(LENGTHS, micro_batch=4, grad_accum=1, world_size=2, seed=0, epoch=1)
    assert e0 != plan_epoch(LENGTHS, micro_batch=4, grad_accum=1, world_size=2, seed=1, epoch=0)


def test_group_by_length_cuts_padding_and_runs_the_longest_first():
    kw = {"micro_batch": 4, "grad_accum": 1, "world_size": 2, "seed": 0, "epoch": 0}
    plain = plan_epoch(LENGTHS, **kw)
    grouped = plan_epoch(LENGTHS, group_by_length=True, **kw)
    assert padding_efficiency(LENGTHS, grouped) > padding_efficiency(LENGTHS, plain) + 0.15
    first = [i for rank in grouped[0] for m in rank for i in m]
    used = {i for step in grouped for rank in step for m in rank for i in m}
    assert max(LENGTHS[i] for i in first) == max(LENGTHS[i] for i in used)


def test_too_few_examples_make_no_step():
    assert global_batches([5, 6, 7], global_batch=4, seed=0, epoch=0, group_by_length=False) == []
