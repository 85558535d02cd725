"""The generated GBNF grammar against the recognizer (the oracle): the same next characters after every prefix.

Each engine reads the grammar with a vocabulary of single characters (plus EOS), so its token mask after a
prefix is the set of characters that may follow it; the recognizer's set is every character it can advance by,
and EOS where the text is a whole program. The two sets must be equal at every prefix of generated programs,
of their variants (argument order, quotes, spacing, ints, defaults left out) and of corrupted ones, up to the
character where the recognizer refuses (which the engine must refuse too) or the end (where both must or
must not allow EOS).
"""

from __future__ import annotations

import random
import re

import pytest

from robolora.robot import grammar
from robolora.robot.ebnf import Interval, integers, interval_of, number_rule, robot_ebnf, robot_lark, string_rule
from robolora.robot.generator import generate_records
from robolora.robot.spec import CALLS, COLORS, LOCATIONS, Param
from tests.unit.test_grammar import ACCEPTED, NUMBERS, REFUSED, RESTRICTIONS

CHARS = sorted(grammar.ALPHABET)
EOS = 0  # token 0 ends; token i + 1 is CHARS[i]
TOKEN = {c: i + 1 for i, c in enumerate(CHARS)}


class _XGrammar:
    def __init__(self, text: str) -> None:
        xgr = pytest.importorskip("xgrammar")
        vocab = [b""] + [c.encode() for c in CHARS]
        info = xgr.TokenizerInfo(vocab, xgr.VocabType.RAW, vocab_size=len(vocab), stop_token_ids=[EOS])
        self.grammar = xgr.GrammarCompiler(info).compile_grammar(text)
        self.mask = xgr.allocate_token_bitmask(1, len(vocab))
        self.xgr = xgr

    def start(self):
        return self.xgr.GrammarMatcher(self.grammar)

    @staticmethod
    def fork(matcher):
        return matcher.fork()

    def fill(self, matcher) -> None:
        matcher.fill_next_token_bitmask(self.mask, 0)

    @staticmethod
    def accept(matcher, token: int) -> bool:
        return matcher.accept_token(token)


class _CharTokenizer:
    """The tokenizer llguidance's wrapper expects: token bytes, EOS, and an encoder."""

    eos_token_id = EOS
    bos_token_id = None
    tokens = (b"<eos>", *(c.encode() for c in CHARS))
    special_token_ids = (EOS,)

    def __call__(self, text: bytes | str) -> list[int]:
        return [TOKEN[c] for c in (text.decode() if isinstance(text, bytes) else text)]


class _LLGuidance:
    def __init__(self, text: str, form: str) -> None:
        llg = pytest.importorskip("llguidance")
        import llguidance.torch  # noqa: F401  (fill_next_token_bitmask)
        import torch

        self.tokenizer = llg.LLTokenizer(llg.TokenizerWrapper(_CharTokenizer()))
        self.grammar = llg.grammar_from(form, text)
        self.mask = torch.full((1, (len(CHARS) + 1 + 31) // 32), -1, dtype=torch.int32)
        self.llg = llg
        self.fresh = llg.LLMatcher(self.tokenizer, self.grammar, log_level=0)  # building one takes milliseconds
        assert not self.fresh.get_error(), self.fresh.get_error()

    def start(self):
        return self.fresh.deep_copy()

    @staticmethod
    def fork(matcher):
        return matcher.deep_copy()

    def fill(self, matcher) -> None:
        self.llg.torch.fill_next_token_bitmask(matcher, self.mask, 0)

    @staticmethod
    def accept(matcher, token: int) -> bool:
        return matcher.consume_token(token)


ENGINES = {
    "xgrammar": lambda: _XGrammar(robot_ebnf()),
    "llguidance": lambda: _LLGuidance(robot_lark(), "lark"),  # as robolora.robot.engines gives it
    "llguidance-gbnf": lambda: _LLGuidance(robot_ebnf(), "gbnf"),  # as vLLM's llguidance backend converts it
}


@pytest.fixture(scope="module", params=list(ENGINES))
def engine(request):
    """Each engine with the robot grammar, compiled once for the module."""
    return ENGINES[request.param]()


def _engine_allowed(engine, matcher) -> set[int]:
    engine.fill(matcher)
    words = engine.mask[0].tolist()
    return {t for t in range(len(CHARS) + 1) if words[t >> 5] >> (t & 31) & 1}


def _oracle_allowed(state: grammar.PrefixState) -> set[int]:
    allowed = {TOKEN[c] for c in CHARS if grammar.advance(state, c) is not None}
    return allowed | {EOS} if grammar.is_complete(state) else allowed


def walk(engine, text: str, start=None) -> tuple[str | None, object, grammar.PrefixState | None]:
    """Read ``text`` with the engine and the recognizer side by side (from ``start``, a matcher and a state, else
    from the beginning), comparing the characters each allows next at every prefix, up to the recognizer's
    first refusal or the end; the engine must take each character the recognizer takes.

    Returns where they first differ (None if nowhere), the matcher and the recognizer's state (None if refused).
    """
    matcher, state = start or (engine.start(), grammar.start())
    for i in range(len(text) + 1):
        want, got = _oracle_allowed(state), _engine_allowed(engine, matcher)
        if want != got:
            names = sorted("EOS" if t == EOS else CHARS[t - 1] for t in want ^ got)
            return f"after {text[:i]!r}: only one allows {names}", matcher, state
        if i == len(text):
            break
        state = grammar.advance(state, text[i]) if text[i] in TOKEN else None
        if state is None:
            break
        if not engine.accept(matcher, TOKEN[text[i]]):
            return f"the engine refused {text[: i + 1]!r}", matcher, state
    return None, matcher, state


def disagreement(engine, text: str) -> str | None:
    """Where the engine and the recognizer first differ on the way through ``text`` (see :func:`walk`)."""
    return walk(engine, text)[0]


def _variant(rng: random.Random, program: str) -> str:
    """The same program as a person might write it: arguments reordered, ints, single quotes, no spaces."""

    def call(m: re.Match) -> str:
        args = [a for a in m.group(2).split(", ") if a]
        rng.shuffle(args)
        if len(args) > 1 and rng.random() < 0.3:
            args.pop()  # may drop a required one: a near miss then
        return f"{m.group(1)}({(',' if rng.random() < 0.5 else ', ').join(args)})"

    out = re.sub(r"(robot[\w.]*)\(([^()]*)\)", call, program)
    if rng.random() < 0.5:
        out = out.replace('"', "'")
    return re.sub(r"(\d+)\.0\b", r"\1", out) if rng.random() < 0.5 else out


def _corrupted(rng: random.Random, program: str) -> str:
    """One random edit: a character deleted, inserted, replaced or doubled, or a line indented or duplicated."""
    i = rng.randrange(len(program))
    lines = program.split("\n")
    j = rng.randrange(len(lines))
    edits = [
        lambda: program[:i] + program[i + 1 :],
        lambda: program[:i] + rng.choice(CHARS) + program[i:],
        lambda: program[:i] + rng.choice(CHARS) + program[i + 1 :],
        lambda: program[:i] + program[i] + program[i:],
        lambda: "\n".join([*lines[:j], "    " + lines[j], *lines[j + 1 :]]),
        lambda: "\n".join([*lines[: j + 1], lines[j], *lines[j + 1 :]]),
        lambda: program + rng.choice(["\n", "\n\n", " ", "\nelse:\n    robot.stop()"]),
    ]
    return rng.choice(edits)()


@pytest.fixture(scope="module")
def programs() -> list[str]:
    """Distinct generated programs, the multi-line ones first (they hold blocks, loops and conditions)."""
    outputs = list(dict.fromkeys(r["output"] for r in generate_records(400, seed=5)))
    return sorted(outputs, key=lambda p: -p.count("\n"))[:36] + outputs[::16]


def test_generated_programs_agree_at_every_prefix(engine, programs):
    assert len(programs) > 50 and any("elif" in p or "else" in p for p in programs)
    problems = [d for p in programs if (d := disagreement(engine, p + "\n"))]  # each prefix of p, then p + "\n"
    assert not problems, problems[:3]


def test_variants_and_corrupted_programs_agree(engine, programs):
    rng = random.Random(0)
    texts = [_variant(rng, p) for p in programs] + [_corrupted(rng, p) for p in programs for _ in range(2)]
    verdicts = {grammar.accepts(t) for t in texts}
    assert verdicts == {True, False}  # both kinds are exercised
    problems = [d for t in texts if (d := disagreement(engine, t))]
    assert not problems, problems[:3]


def _nested(depth: int) -> str:
    return "".join(f"{'    ' * d}for _ in range(2):\n" for d in range(depth)) + "    " * depth + "robot.stop()"


BLOCKS = [
    _nested(grammar.MAX_DEPTH),  # a body at the deepest level holds calls only
    _nested(grammar.MAX_DEPTH - 1).replace("robot.stop()", 'if robot.sensors.detect(object_type="x"):\n') + "x",
    _nested(grammar.MAX_DEPTH + 1),
    'if robot.sensors.detect(object_type="cup"):\n    robot.stop()\nelif robot.sensors.detect(object_type="b"):\n'
    "    robot.stop()\nelif robot.sensors.detect(object_type='c', color='red'):\n    robot.stop()\nelse:\n"
    "    robot.stop()\nelse:\n    robot.stop()",
    "for _ in range(2):\n    robot.stop()\n        robot.stop()",
    "for _ in range(2):\n    for _ in range(3):\n        robot.stop()\nrobot.stop()\n    robot.stop()",
    'robot.sensors.detect(object_type="cup")\nelse:\n    robot.stop()',
    'if robot.sensors.detect(object_type="cup"):\n    if robot.sensors.detect(object_type="b"):\n'
    "        robot.stop()\n    else:\n        robot.stop()\nelse:\n    robot.stop()\n",
    "for _ in range(20):\n    robot.stop()\nfor _ in range(21):\n    robot.stop()",
    "for _ in range(07):\n    robot.stop()",
]


@pytest.mark.parametrize("text", ACCEPTED + REFUSED + RESTRICTIONS + BLOCKS)
def test_hand_written_programs_agree(engine, text):
    assert disagreement(engine, text) is None


def _valid(param: Param) -> str:
    """A value the parameter accepts, as code."""
    if param.type is float:
        return "0.5"
    return next(f'"{v}"' for v in ("ball", *LOCATIONS, *COLORS) if param.validate(v) is None)


def _call_prefixes(name: str) -> list[str]:
    """Each call taking ``name``, up to its ``name=``, after its other required arguments (valid ones)."""
    out = []
    for call, spec in CALLS.items():
        if name in spec.by_name:
            base = "".join(f"{p.name}={_valid(p)}, " for p in spec.params if p.required and p.name != name)
            out.append(f"{call}({base}{name}=")
    return out


EDGE_NUMBERS = [
    f"{sign}{whole}{frac}"
    for sign in ("", "-")
    for whole in ("0", "00", "1", "2", "3", "4", "10", "359", "360", "361", "999999", "1000000")
    for frac in ("", ".", ".0", ".000000", ".0000000", ".000001", ".5", ".999999", ".1234567")
]
STRINGS = ["", " ", "  ", " a", "a ", "a'b", 'a"b', "a\\b", "~", "any", "anyway", "re", "kitchens", *LOCATIONS]


def test_value_edges_agree(engine):
    """Every argument of every call set to edge values: numbers on and beside each interval's ends, strings
    empty, blank, with quotes, backslashes, listed values and near misses; each value followed by ``)``."""
    params = {p.name: p.type for spec in CALLS.values() for p in spec.params}
    strings = [q + s + q for s in STRINGS for q in "\"'"] + ["\"a'", "'a\""]
    problems, count = [], 0
    for name, kind in params.items():
        for prefix in _call_prefixes(name):
            problem, matcher, state = walk(engine, prefix)
            assert problem is None and state is not None, problem
            for value in (NUMBERS + EDGE_NUMBERS) if kind is float else strings:
                count += 1
                problem = walk(engine, value + ")", (engine.fork(matcher), state))[0]
                if problem:
                    problems.append(prefix + problem)
    assert count > 2000
    assert not problems, problems[:3]


def test_integer_ranges_are_exact():
    xgr = pytest.importorskip("xgrammar")
    from xgrammar.testing import _is_grammar_accept_string as accepts

    for low, high in [(0, 0), (0, 20), (1, 359), (7, 1234), (100, 999), (95, 105), (0, 999999)]:
        g = xgr.Grammar.from_ebnf(f"root ::= {integers(low, high)}")
        probes = {*range(0, 1300), *range(999990, 1000010)}
        for n in probes:
            assert accepts(g, str(n)) == (low <= n <= high), (low, high, n)
        assert not accepts(g, "0" + str(max(low, 1)))  # no leading zeros
    assert integers(5, 4) is None


def test_number_rules_follow_the_interval_ends():
    assert '"-"' not in number_rule(Interval(0, True, None, False))  # positive: no sign at all
    zero = '"0" ("." "0"{1,6})?'
    assert number_rule(Interval(0, False, 0, False)) == f'({zero} | "-" {zero})'  # -0 is 0
    with pytest.raises(ValueError, match="no number lies"):
        number_rule(Interval(3, True, 3, False))


def test_a_rule_the_grammar_cannot_write_is_refused():
    """Ends off the integers, or a spec rule that disagrees with the recognizer's table, stop generation."""
    odd = Param("speed", float, 1.0, lambda v: None if 0 < v <= 2.5 else "must be in (0, 2.5]")
    with pytest.raises(ValueError, match="disagree"):
        interval_of("robot.move_forward", odd)
    unknown = Param("height", float, 1.0, None)
    with pytest.raises(ValueError, match="NUMBER_RANGES"):
        interval_of("robot.fly", unknown)
    short = Param("text", str, check=lambda v: None if len(v) <= 20 else "at most 20 characters")
    with pytest.raises(ValueError, match="free-text rule"):
        string_rule("robot.say", short)


def test_the_grammar_is_made_from_the_spec():
    text = robot_ebnf()
    for name, spec in CALLS.items():
        assert f'"{name}("' in text
        for p in spec.params:
            assert f'"{p.name}="' in text
    assert text.count(" ::= ") == len(text.splitlines())
