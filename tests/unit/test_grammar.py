"""The robot grammar recognizer: complete for canonical programs, sound against the checker, no dead ends."""

from __future__ import annotations

import random
import time
from fractions import Fraction

import pytest

from robolora.robot.checker import check
from robolora.robot.generator import generate_records
from robolora.robot.grammar import (
    ALPHABET,
    MAX_DEPTH,
    NUMBER_RANGES,
    _number_prefix_ok,
    accepts,
    advance,
    completion,
    is_complete,
    is_valid_prefix,
    start,
)
from robolora.robot.spec import CALLS, COLORS, LOCATIONS, SIZES

CHARS = sorted(ALPHABET)


@pytest.fixture(scope="module")
def outputs() -> list[str]:
    return [r["output"] for r in generate_records(3000, seed=0)]


def test_every_canonical_output_and_each_of_its_prefixes_is_accepted(outputs):
    for out in outputs:
        state = start()
        for i, ch in enumerate(out):
            state = advance(state, ch)
            assert state is not None, f"refused at {out[: i + 1]!r}"
        assert is_complete(state), out
        assert accepts(out + "\n")


def test_reading_in_pieces_reaches_the_same_state(outputs):
    rng = random.Random(1)
    for out in outputs[:300]:
        whole = advance(start(), out)
        state, i = start(), 0
        while i < len(out):
            n = rng.randint(1, 12)
            state = advance(state, out[i : i + n])
            i += n
        assert state == whole
        assert hash(state) == hash(whole)


def _nested(depth: int) -> str:
    """A call inside ``depth`` nested loops."""
    return "".join(f"{'    ' * d}for _ in range(2):\n" for d in range(depth)) + "    " * depth + "robot.stop()"


ACCEPTED = [
    "robot.move_forward(distance=3)",
    "robot.move_forward(speed=2, distance=0.5)",
    "robot.move_forward(distance=3.0,speed=1.0)",
    "robot.gripper.pick_up(size='large', object_type='cup')",
    "robot.say(text='she said \"hi\"')",
    'robot.say(text="it\'s #1 {ok}")',
    "robot.arm.move_to(z=-1, y=1.0, x=-0.000001)",
    "robot.turn_left(angle=360)",
    "robot.sensors.scan()",
    "robot.stop()\n",
    "for _ in range(20):\n    robot.wait(seconds=999999.999999)",
    'if robot.sensors.detect(object_type="cup"):\n    robot.stop()\nelif robot.sensors.detect(object_type="ball"):\n'
    "    robot.go_home()\nelse:\n    robot.arm.home()\nrobot.stop()",
    'for _ in range(2):\n    if robot.sensors.detect(object_type="cup"):\n        for _ in range(3):\n'
    '            robot.stop()\n    else:\n        robot.say(text="no")\n    robot.go_home()',
    _nested(MAX_DEPTH),
]


@pytest.mark.parametrize("code", ACCEPTED)
def test_variants_are_accepted_and_api_valid(code):
    assert accepts(code)
    assert check(code).api_valid, check(code).errors


REFUSED = [
    "",
    "robot.move_forward(distance=3.0, speed=3.01)",
    "robot.move_forward(distance=0)",
    "robot.move_forward(speed=1.0)",  # distance is required
    "robot.move_forward(distance=1.0, distance=2.0)",
    "robot.move_forward(3.0)",
    "robot.fly(height=2.0)",
    'robot.set_light(color="any")',
    'robot.navigate_to(location="moon")',
    'robot.gripper.pick_up(object_type="cup", size="huge")',
    'robot.say(text="  ")',
    "robot.turn_left(angle=360.01)",
    "robot.arm.move_to(x=1.5, y=0.0, z=0.0)",
    "for _ in range(0):\n    robot.stop()",
    "for _ in range(21):\n    robot.stop()",
    "for _ in range(2):\nrobot.stop()",
    "for _ in range(2):",
    "for _ in range(2):\n    robot.stop()\nelse:\n    robot.stop()",
    "robot.stop()\nelse:\n    robot.stop()",
    'if robot.sensors.detect(object_type="cup"):\n    robot.stop()\nelse:\n    robot.stop()\nelse:\n    robot.stop()',
    "if robot.sensors.scan():\n    robot.stop()",
    "robot.stop()\n    robot.stop()",
    "robot.stop",
    "import os",
    "x = robot.stop()",
]


@pytest.mark.parametrize("code", REFUSED)
def test_invalid_code_is_refused(code):
    assert not accepts(code)
    assert not check(code).api_valid


# Valid robot code outside the recognised form: the grammar accepts a subset of what the checker does.
RESTRICTIONS = [
    "robot.stop()\n\nrobot.stop()",  # blank lines, or more than one newline at the end
    "robot.stop()\n\n",
    "robot.stop()  # done",  # comments
    "robot.stop() ",  # trailing spaces
    "robot.move_forward(distance = 3.0)",  # spaces around =, or inside the parentheses
    "robot.move_forward( distance=3.0 )",
    "robot.move_forward(distance=3.0,)",  # a trailing comma
    "robot.move_forward(distance=3.)",  # numbers as 3. .5 1e3 1_0 or with 7 digits on a side
    "robot.move_forward(distance=.5)",
    "robot.move_forward(distance=1e3)",
    "robot.move_forward(distance=1234567.0)",
    "robot.move_forward(distance=0.1234567)",
    'robot.say(text="caf\\u00e9")',  # escapes and non-ASCII text
    'robot.say(text="café")',
    "robot.say(text='''hi''')",
    "for _ in range(2):\n\trobot.stop()",  # tabs, or bodies indented by other than 4 spaces
    "for _ in range(2):\n        robot.stop()",
    "for _ in range(2): robot.stop()",  # a body on the header's line
    _nested(MAX_DEPTH + 1),
]


@pytest.mark.parametrize("code", RESTRICTIONS)
def test_documented_restrictions(code):
    assert check(code).api_valid, check(code).errors
    assert not accepts(code)


NUMBERS = [
    "0", "0.0", "-0", "-0.0", "0.01", "0.000001", "1", "1.0", "-1", "-1.0", "-1.01", "1.01", "1.000001", "2.5",
    "3", "3.0", "3.000001", "3.01", "359.99", "360", "360.0", "360.000001", "400", "-0.5", "999999.999999", "-7",
]  # fmt: skip
STRINGS = ["", " ", "ball", "any", "me", *LOCATIONS, *COLORS, *SIZES]


def _calls_with(name: str, values: list[str], kind: type) -> list[str]:
    """The call with every argument at a valid default, and the one named ``name`` set to each value."""
    out = []
    for call, spec in CALLS.items():
        if name not in spec.by_name or spec.by_name[name].type is not kind:
            continue
        base = {p.name: '"ball"' if p.type is str else "0.5" for p in spec.params if p.required}
        base.pop(name, None)
        for value in values:
            args = ", ".join(f"{k}={v}" for k, v in {**base, name: value}.items())
            out.append(f"{call}({args})")
    return out


def test_value_rules_match_the_checker_exactly():
    codes = []
    for spec in CALLS.values():
        for p in spec.params:
            if p.type is float:
                codes += _calls_with(p.name, NUMBERS, float)
            else:
                codes += _calls_with(p.name, [f'"{s}"' for s in STRINGS] + [f"'{s}'" for s in STRINGS], str)
    assert len(codes) > 500
    for code in set(codes):
        assert accepts(code) == check(code).api_valid, code


def test_number_ranges_match_the_spec():
    tiny = Fraction(1, 10**6)
    grid = [Fraction(n, 4) for n in range(-1600, 1601)] + [b + d for b in (-1, 0, 1, 3, 360) for d in (-tiny, tiny)]
    for spec in CALLS.values():
        for p in spec.params:
            if p.type is not float:
                continue
            low, low_open, high, high_open = NUMBER_RANGES[p.name]
            for v in grid:
                inside = (v > low if low_open else v >= low) and (
                    high is None or (v < high if high_open else v <= high)
                )
                assert (p.validate(float(v)) is None) == inside, (spec.name, p.name, v)


def test_number_prefixes_are_pruned_exactly():
    """With 2 digits a side, by enumeration: a prefix passes exactly when some number in range starts with it."""
    fracs = ["", *(f".{d}" for d in range(10)), *(f".{d:02d}" for d in range(100))]
    numbers = [s + w + f for s in ("", "-") for w in ["0", *map(str, range(1, 100))] for f in fracs]
    prefixes = {n[:i] for n in numbers for i in range(len(n) + 1)}
    for rng in set(NUMBER_RANGES.values()):
        low, low_open, high, high_open = rng
        viable = set()
        for n in numbers:
            v = Fraction(n)
            if (v > low if low_open else v >= low) and (high is None or (v < high if high_open else v <= high)):
                viable.update(n[:i] for i in range(len(n) + 1))
        for p in prefixes:
            assert _number_prefix_ok(p, rng, 2, 2) == (p in viable), (rng, p)
    for bad in ("00", "01", "-.", ".5", "1.2.", "123"):
        assert not _number_prefix_ok(bad, (-1000, False, None, False), 2, 2)


def _mutate(rng: random.Random, code: str) -> str:
    pool = [*CHARS, "\t", "é", "\\", '"', "'", "0", "9", "-", ".", "(", ")", ",", ":", "\n", " "]
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        i = rng.randrange(len(code) + 1)
        op = rng.random()
        if op < 0.35 and code:
            code = code[:i] + code[i + 1 :]
        elif op < 0.7:
            code = code[:i] + rng.choice(pool) + code[i:]
        else:
            code = code[:i] + rng.choice(pool) + code[i + 1 :]
    return code


def test_mutated_programs_are_accepted_only_when_api_valid(outputs):
    rng = random.Random(0)
    accepted = 0
    for out in outputs[:600]:
        for _ in range(25):
            code = _mutate(rng, out)
            if accepts(code):
                accepted += 1
                assert check(code).api_valid, (code, check(code).errors)
    assert accepted > 500  # the fuzzing reaches accepted programs, not just garbage


def _walk(rng: random.Random, max_len: int) -> str | None:
    """A random program read character by character, often closing what is open so values stay short."""
    state, text = start(), ""
    while len(text) < max_len:
        if is_complete(state) and rng.random() < 0.3:
            return text
        branch = rng.choice(("else:", "elif robot.sensors.detect("))
        if (after := advance(state, branch)) is not None and rng.random() < 0.5:
            state, text = after, text + branch  # rare for single characters to find
            continue
        options = [(ch, after) for ch in CHARS if (after := advance(state, ch)) is not None]
        assert options, f"dead end after {text!r}"
        closing = [o for o in options if o[0] in ")\"',:\n"]
        ch, state = rng.choice(closing if closing and rng.random() < 0.3 else options)
        text += ch
    return None


def test_random_walks_never_dead_end_and_end_api_valid():
    rng = random.Random(0)
    programs = [p for p in (_walk(rng, 300) for _ in range(150)) if p is not None]
    assert len(programs) > 40
    assert all(any(word in p for p in programs) for word in ("for _", "elif ", "else:", "'", "-"))
    for code in programs:
        assert check(code).api_valid, (code, check(code).errors)


def test_is_valid_prefix_and_completion():
    assert is_valid_prefix("")
    assert is_valid_prefix("robot.gripper.pick_up(object_type='cup', color='gr")
    assert not is_valid_prefix("robot.gripper.pick_up(object_type='cup', color='gold")
    assert not is_valid_prefix('robot.gripper.pick_up(color="red"), ')
    assert not is_valid_prefix("robot.move_forward(distance=1.0, speed=1.0, ")  # nothing left to pass
    assert not is_valid_prefix("robot.move_forward(distance=1.0, speed=4")
    assert not is_valid_prefix("robot.arm.move_to(x=-2")
    assert not is_complete(advance(start(), "for _ in range(3):\n"))
    assert not is_complete(advance(start(), "robot.stop()\nrobot.go_home("))


def test_advance_from_a_cached_state_is_fast():
    cases = [
        ("robot.", "gripper"),
        ("robot.move_forward(distance=3", ".0, speed"),
        ('robot.say(text="', "hello there"),
        ("for _ in range(3):\n", "    robot"),
    ]
    states = [(advance(start(), prefix), token) for prefix, token in cases]
    n = 2000
    began = time.perf_counter()
    for _ in range(n):
        for state, token in states:
            advance(state, token)
    per_call = (time.perf_counter() - began) / (n * len(states))
    assert per_call < 50e-6, f"{per_call * 1e6:.1f} us per advance"


def test_every_reachable_state_completes_to_a_valid_program(outputs):
    """What a generation cut short holds can always be finished: prefixes of canonical programs and of
    random walks through the grammar, each completed, are whole api-valid programs."""
    rng = random.Random(2)
    prefixes = [out[:i] for out in outputs[:200] for i in range(len(out) + 1)]
    for _ in range(500):
        state, text = start(), rng.choice(outputs)[: rng.randint(0, 40)]
        state = advance(state, text)
        for _ in range(rng.randint(0, 25)):
            options = [(ch, after) for ch in CHARS if (after := advance(state, ch)) is not None]
            ch, state = rng.choice(options)
            text += ch
        prefixes.append(text)
    for text in prefixes:
        rest = completion(advance(start(), text))
        assert rest is not None and accepts(text + rest), (text, rest)
        assert check(text + rest).api_valid, text + rest
    assert completion(advance(start(), "robot.stop()")) == ""
