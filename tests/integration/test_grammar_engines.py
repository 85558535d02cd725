"""The grammar engines with the real SmolLM2 tokenizer and a real model: the same token masks as the recognizer,
and the same greedy programs in batched ``generate``."""

from __future__ import annotations

import sys

import pytest
import torch

from robolora.infer import Generator
from robolora.models import load_config, load_model, load_tokenizer
from robolora.robot import grammar
from robolora.robot.checker import check
from robolora.robot.engines import ENGINES, GrammarLogitsProcessor, check_engine, compiled, logits_processor
from robolora.robot.generator import generate_records

pytestmark = pytest.mark.usefixtures("one_thread")
GRAMMAR_ENGINES = [e for e in ENGINES if e != "recognizer"]
COMMANDS = [
    "move forward two meters",
    "say hello to everyone in the kitchen",
    "turn left",
    "if you see a red ball, pick it up",
    "go to the kitchen, then wait five seconds",
    "stop",
]


@pytest.fixture(scope="module")
def vocab_size() -> int:
    return load_config("smollm2-135m").vocab_size


def _allowed(engine, matcher) -> set[int]:
    mask = engine.allocate(1)
    engine.fill(matcher, mask, 0)
    row = torch.zeros(1, engine.vocab_size)
    engine.apply(row, mask, [0])
    return set(torch.isfinite(row[0]).nonzero().flatten().tolist())


@pytest.mark.parametrize("name", GRAMMAR_ENGINES)
def test_token_masks_equal_the_recognizers(name, tokenizer, vocab_size, index):
    """After every prefix of generated programs (strings, numbers, blocks), token for token: special tokens
    inside a string, EOS only once the program is whole."""
    engine = compiled(name, tokenizer, vocab_size)
    assert compiled(name, tokenizer, vocab_size) is engine  # compiled once per tokenizer
    programs = [r["output"] for r in generate_records(40, seed=2)]
    programs = sorted(programs, key=lambda p: -p.count("\n"))[:6] + programs[::5]
    special = set(tokenizer.all_special_ids) - {tokenizer.eos_token_id}
    for program in programs:
        ids = tokenizer(program + "\n", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        matcher, state = engine.matcher(), grammar.start()
        for i, token_id in enumerate(ids):
            want = set(index.all_allowed(state, first=i == 0))
            got = _allowed(engine, matcher)
            assert got == want, (name, tokenizer.decode(ids[:i]), sorted(got ^ want)[:10])
            assert not got & special
            if token_id == tokenizer.eos_token_id:
                break
            assert engine.accept(matcher, token_id)
            state = index.step(state, token_id, first=i == 0)


@pytest.mark.parametrize("name", GRAMMAR_ENGINES)
def test_rows_are_judged_by_their_own_ids(name, tokenizer, vocab_size):
    """Per-row prompt lengths, rows reordered between calls, a row forced out of the grammar (may only end),
    one that ended (left alone), and logits wider than the grammar's vocabulary (the extra ids masked)."""
    eos = tokenizer.eos_token_id
    texts = ("robot.stop()", "robot.", "hello")
    generated = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts] + [[eos, eos]]
    width = 5 + max(map(len, generated))
    lengths = [width - len(g) for g in generated]
    ids = torch.tensor([[7] * n + g for n, g in zip(lengths, generated, strict=True)])
    scores = torch.randn(4, vocab_size + 64, generator=torch.Generator().manual_seed(0))
    processor = GrammarLogitsProcessor(compiled(name, tokenizer, vocab_size), lengths)
    first = processor(ids, scores.clone())
    processor.prompt_lengths = lengths[::-1]
    assert torch.equal(processor(ids.flip(0), scores.flip(0)), first.flip(0))
    assert torch.isfinite(first[0, eos]) and not torch.isfinite(first[1, eos])
    assert torch.isfinite(first[2]).nonzero().flatten().tolist() == [eos]
    assert torch.equal(first[3, :vocab_size], scores[3, :vocab_size])
    assert not torch.isfinite(first[:, vocab_size:]).any()


@pytest.fixture(scope="module")
def bundled():
    """The bundled model with 3 worked examples in its prompt: it writes short programs and ends them."""
    return Generator(load_model("smollm2-135m"), load_tokenizer("smollm2-135m"), few_shot=3, name="smollm2-135m")


@pytest.fixture(scope="module")
def tiny():
    """The tiny random model: it rarely ends a program, so its rows run into max_new_tokens."""
    return Generator(load_model("tiny-llama"), load_tokenizer("tiny-llama"), name="tiny-llama")


def _greedy(gen: Generator, engine: str) -> list:
    return gen.generate(COMMANDS, batch_size=4, max_new_tokens=40, grammar_engine=engine)


@pytest.fixture(scope="module")
def by_recognizer(bundled, tiny) -> dict[str, list]:
    return {"bundled": _greedy(bundled, "recognizer"), "tiny": _greedy(tiny, "recognizer")}


@pytest.mark.parametrize("name", GRAMMAR_ENGINES)
def test_greedy_batches_equal_the_recognizers(name, bundled, tiny, by_recognizer):
    """Two batches (4 and 2 rows) of left-padded prompts: the bundled model ends its rows at different steps,
    the tiny one runs out of tokens (its code is then the longest whole program). The same text, all valid."""
    for label, gen in (("bundled", bundled), ("tiny", tiny)):
        out = _greedy(gen, name)
        assert [g.raw for g in out] == [g.raw for g in by_recognizer[label]], label
        for g in out:
            assert check(g.code).api_valid, (label, g.raw, check(g.code).errors)
    ended = [g for g in by_recognizer["bundled"] if g.finished]
    assert len(ended) >= 3 and len({len(g.raw) for g in ended}) > 1
    assert not any(g.finished for g in by_recognizer["tiny"])


@pytest.mark.parametrize("name", GRAMMAR_ENGINES)
def test_sampled_programs_stay_valid(name, bundled):
    out = bundled.generate(COMMANDS, batch_size=6, max_new_tokens=40, grammar_engine=name, temperature=1.0)
    assert any(g.finished for g in out)
    for g in out:
        assert grammar.is_valid_prefix(g.raw), g.raw
        assert check(g.code).api_valid, (g.raw, check(g.code).errors)


@pytest.mark.parametrize("name", GRAMMAR_ENGINES)
def test_one_processor_serves_several_generate_calls(name, tiny):
    """xgrammar's own transformers processor serves one ``generate`` call; this one follows each row's ids."""
    tok = tiny.tokenizer
    inputs = tok(COMMANDS[:3], return_tensors="pt", padding=True)
    width = inputs["input_ids"].shape[1]
    processor = logits_processor(name, tok, tiny.model.config.vocab_size, prompt_lengths=width)
    runs = [
        tiny.model.generate(**inputs, logits_processor=[processor], max_new_tokens=12, do_sample=False)
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])
    for row in runs[0][:, width:].tolist():
        assert grammar.is_valid_prefix(tok.decode(row, skip_special_tokens=True))


def test_a_missing_engine_package_is_one_error_naming_the_flag(run_cli, write_json, monkeypatch):
    data = write_json("data.json", [{"input": "stop", "output": "robot.stop()"}])
    monkeypatch.setitem(sys.modules, "llguidance", None)  # as if not installed: its import fails
    args = ["eval", "--base-only", "--model-name", "tiny-llama", "--data-json", data, "--grammar-engine", "llguidance"]
    code, _, err = run_cli(*args)
    assert code == 2
    assert err.startswith("robolora: error: --grammar-engine llguidance: the llguidance package is not installed")
    assert "--grammar-engine recognizer" in err and "Traceback" not in err
    code, _, err = run_cli("eval", "--base-only", "--grammar-engine", "fast")
    assert code == 2 and "--grammar-engine" in err and "xgrammar" in err
    with pytest.raises(Exception, match="unknown grammar engine"):
        check_engine("fast")
