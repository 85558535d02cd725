"""Constrained decoding with the real SmolLM2 tokenizer: references pass untouched, anything else stays valid."""

from __future__ import annotations

import pytest
import torch

from robolora.models import load_model
from robolora.robot.checker import check
from robolora.robot.constrained import RobotLogitsProcessor, allowed_tokens
from robolora.robot.generator import generate_records
from robolora.robot.grammar import accepts, advance, is_valid_prefix, start

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPT = 5  # every row's (fake) prompt length


@pytest.fixture(scope="module")
def references(tokenizer) -> list[list[int]]:
    """Token ids of canonical outputs, each ended by EOS, as the model is trained to write them."""
    records = generate_records(64, seed=1)
    return [tokenizer(r["output"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for r in records]


def greedy(processor, score_fn, batch: int, steps: int, eos: int, on_step=None) -> list[list[int]]:
    """What ``generate`` does greedily: score, process, argmax, pad rows that ended, stop when all have."""
    ids = torch.full((batch, PROMPT), 7)
    done = torch.zeros(batch, dtype=torch.bool)
    for step in range(steps):
        scores = processor(ids, score_fn(step))
        nxt = torch.where(done, torch.full((batch,), eos), scores.argmax(-1))
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        done |= nxt == eos
        if on_step:
            on_step(ids[:, PROMPT:].tolist())
        if done.all():
            break
    return ids[:, PROMPT:].tolist()


def test_the_index_spells_every_reference(index, tokenizer, references):
    assert index.eos_token_ids == {tokenizer.eos_token_id}
    assert index.text(tokenizer.convert_tokens_to_ids("ĊĠĠĠ")) == "\n   "
    for ref in references:
        text = "".join(index.text(t, first=i == 0) for i, t in enumerate(ref[:-1]))
        assert text == tokenizer.decode(ref, skip_special_tokens=True)
        assert accepts(text)


def test_references_pass_through_the_processor_unchanged(tokenizer, index, references):
    """Teacher forcing: the reference's next token scores highest, over random noise; the constraint never blocks it."""
    eos = tokenizer.eos_token_id
    gen = torch.Generator().manual_seed(0)
    for i in range(0, len(references), 8):
        batch = references[i : i + 8]

        def scores(step, batch=batch):
            s = torch.randn(len(batch), len(tokenizer), generator=gen)
            for b, ref in enumerate(batch):
                s[b, ref[min(step, len(ref) - 1)]] = 30.0
            return s

        out = greedy(RobotLogitsProcessor(tokenizer, PROMPT, index=index), scores, len(batch), 200, eos)
        for row, ref in zip(out, batch, strict=True):
            assert row[: len(ref)] == ref, (tokenizer.decode(row), tokenizer.decode(ref))


def test_random_scores_decode_to_valid_code(tokenizer, index):
    eos = tokenizer.eos_token_id
    gen = torch.Generator().manual_seed(0)
    ended: list[str] = []

    def scores(step):
        s = torch.randn(8, len(tokenizer), generator=gen)
        s[:, eos] += 3.0  # so that rows end where they may
        return s

    def every_step(rows):
        for row in rows:
            text = tokenizer.decode(row[: row.index(eos)] if eos in row else row, skip_special_tokens=True)
            assert is_valid_prefix(text), text

    for row in greedy(RobotLogitsProcessor(tokenizer, PROMPT, index=index), scores, 8, 60, eos, every_step):
        if eos in row:
            ended.append(tokenizer.decode(row[: row.index(eos)]))
    assert ended
    for text in ended:
        assert check(text).api_valid, (text, check(text).errors)


def test_without_an_allowed_top_token_the_best_allowed_ones_are_kept(tokenizer, index):
    processor = RobotLogitsProcessor(tokenizer, PROMPT, top_k=3, index=index)
    prefix = tokenizer("robot.move_forward(", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([[7] * PROMPT + prefix])
    scores = torch.randn(1, len(tokenizer), generator=torch.Generator().manual_seed(1))
    scores[0, tokenizer.convert_tokens_to_ids(["robot", "Ġthe", ")"])] = 50.0  # the top 3, none allowed here
    out = processor(ids, scores.clone())[0]
    kept = torch.isfinite(out).nonzero().flatten().tolist()
    state = advance(start(), "robot.move_forward(")
    every = index.all_allowed(state)
    assert sorted(kept) == sorted(sorted(every, key=lambda t: -scores[0, t].item())[:3])
    assert all(out[t] == scores[0, t] for t in kept)
    assert sorted(allowed_tokens(state, range(len(tokenizer)), index)) == sorted(every)


def test_rows_are_judged_by_their_own_ids(tokenizer, index):
    """Per-row prompt lengths; rows reordered between steps (as beam search does) or forced out of the grammar."""
    eos = tokenizer.eos_token_id
    generated = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("robot.stop()", "robot.", "hello")]
    width = PROMPT + max(map(len, generated))
    lengths = [width - len(g) for g in generated]
    ids = torch.tensor([[7] * n + g for n, g in zip(lengths, generated, strict=True)])
    scores = torch.zeros(3, len(tokenizer))
    processor = RobotLogitsProcessor(tokenizer, lengths, index=index)
    first = processor(ids, scores.clone())
    processor.prompt_lengths = lengths[::-1]
    assert torch.equal(processor(ids.flip(0), scores.clone()), first.flip(0))
    assert torch.isfinite(first[0, eos])  # "robot.stop()" is a whole program
    assert not torch.isfinite(first[1, eos])
    assert torch.isfinite(first[2]).nonzero().flatten().tolist() == [eos]  # out of the grammar: may only end


def test_generate_with_a_model(tokenizer, index):
    """The processor inside ``generate``, batched, greedy and sampling, with left-padded prompts."""
    model = load_model("tiny-llama")
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    inputs = tokenizer(["move forward two meters", "say hi", "turn left", "stop"], return_tensors="pt", padding=True)
    tokenizer.padding_side = side
    width = inputs["input_ids"].shape[1]
    for sample in (False, True):
        torch.manual_seed(0)
        out = model.generate(
            **inputs,
            logits_processor=[RobotLogitsProcessor(tokenizer, width, index=index)],
            max_new_tokens=40,
            do_sample=sample,
            pad_token_id=tokenizer.eos_token_id,
        )
        for row in out[:, width:].tolist():
            text = tokenizer.decode(row, skip_special_tokens=True)
            assert is_valid_prefix(text), text
            if tokenizer.eos_token_id in row:
                assert check(text).api_valid, (text, check(text).errors)
