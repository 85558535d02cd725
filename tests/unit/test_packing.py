"""Packed rows (``--packing``) train exactly as their examples would one by one."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from robolora.data import IGNORE_INDEX, collate, pack_examples, target_count
from robolora.loss import TargetLogitsLM, model_inputs


def _examples(count: int, seed: int, max_length: int = 40) -> list[dict[str, list[int]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        prompt = [1] + [rng.randrange(3, 64) for _ in range(rng.randrange(2, 12))]
        response = [rng.randrange(3, 64) for _ in range(rng.randrange(1, 10))] + [2]
        ids = (prompt + response)[:max_length]
        out.append({"input_ids": ids, "labels": ([IGNORE_INDEX] * len(prompt) + response)[:max_length]})
    return out


def test_packing_places_every_example_once_in_rows_that_fit():
    examples = _examples(300, seed=1)
    rows = pack_examples(examples, max_length=40)
    assert all(len(r["input_ids"]) == len(r["labels"]) == len(r["position_ids"]) <= 40 for r in rows)
    # every example appears once, whole, at positions 0..n-1 within its row
    found = []
    for row in rows:
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0] + [len(row["input_ids"])]
        found += [tuple(row["input_ids"][a:b]) for a, b in itertools.pairwise(starts)]
        assert row["position_ids"] == [p for a, b in itertools.pairwise(starts) for p in range(b - a)]
    assert sorted(found) == sorted(tuple(e["input_ids"]) for e in examples)
    assert sum(target_count(r["labels"]) for r in rows) == sum(target_count(e["labels"]) for e in examples)
    tokens = sum(len(e["input_ids"]) for e in examples)
    assert len(rows) <= -(-tokens // 40) + 2  # best fit decreasing leaves almost no room unused


def test_packing_refuses_an_example_longer_than_a_row():
    with pytest.raises(ValueError, match="example 0 has 5 tokens"):
        pack_examples([{"input_ids": [1, 2, 3, 4, 5], "labels": [IGNORE_INDEX] * 5}], max_length=4)


def test_a_packed_row_masks_no_loss_across_examples():
    # a response token first would make the next example's first token a target of the previous one
    a = {"input_ids": [7, 8], "labels": [7, 8]}
    (row,) = pack_examples([a, a], max_length=4)
    assert row["labels"] == [IGNORE_INDEX, 8, IGNORE_INDEX, 8]


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_packed_rows_give_the_loss_and_gradients_of_the_examples_trained_apart(attention):
    from transformers import LlamaConfig, LlamaForCausalLM

    from robolora.models import TINY_LLAMA

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, attn_implementation=attention, **TINY_LLAMA))
    lm = TargetLogitsLM(model)
    examples = _examples(12, seed=2)
    rows = pack_examples(examples, max_length=40)
    assert len(rows) < len(examples)  # several examples share rows
    total = sum(target_count(e["labels"]) for e in examples)

    def loss_and_grads(batches):
        model.zero_grad()
        loss = sum(lm(**model_inputs(collate(b, pad_id=0)), num_items_in_batch=total).loss for b in batches)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    packed = model_inputs(collate(rows, pad_id=0))
    assert "attention_mask" not in packed and "position_ids" in packed
    got_loss, got = loss_and_grads([rows])
    want_loss, want = loss_and_grads([[e] for e in examples])
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-5, atol=1e-6)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6, msg=name)


def test_without_position_ids_the_same_rows_would_mix_examples():
    """The check above can fail: the same packed rows read as one sequence each give another loss."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from robolora.models import TINY_LLAMA

    torch.manual_seed(0)
    lm = TargetLogitsLM(LlamaForCausalLM(LlamaConfig(vocab_size=64, attn_implementation="eager", **TINY_LLAMA)))
    examples = _examples(12, seed=2)
    rows = pack_examples(examples, max_length=40)
    mixed = [{k: v for k, v in r.items() if k != "position_ids"} for r in rows]
    with torch.no_grad():
        apart = sum(lm(**model_inputs(collate([e], pad_id=0))).loss for e in examples)
        # a random tiny model barely reads context: the mixing shows at 1e-4 of the loss, not at 1e-5
        assert abs(lm(**model_inputs(collate(mixed, pad_id=0))).loss - apart) > 1e-4 * apart
        torch.testing.assert_close(lm(**model_inputs(collate(rows, pad_id=0))).loss, apart, rtol=1e-5, atol=1e-6)
