"""The checker: what it accepts, what it rejects and why, and that it never runs anything."""

from __future__ import annotations

import builtins
import random

import pytest

from robolora.robot import (
    CALLS,
    Call,
    If,
    Loop,
    RobotCodeError,
    canonicalize,
    check,
    parse_program,
    semantic_equal,
    validate_program,
)
from robolora.robot.simulator import simulate

SPEC_EXAMPLES = [
    "robot.move_forward(distance=3.0, speed=1.0)\n"
    'robot.gripper.pick_up(object_type="ball", color="red", size="medium")',
    """\
for _ in range(3):
    robot.move_forward(distance=1.0, speed=1.0)
    robot.turn_right(angle=90.0)
if robot.sensors.detect(object_type="ball", color="red"):
    robot.gripper.pick_up(object_type="ball", color="red", size="medium")
else:
    robot.say(text="I cannot see a red ball")""",
]

#: A valid value for every parameter name in the table (0.5 fits every float rule).
SAMPLE_STR = {
    "location": "kitchen",
    "target": "person",
    "object_type": "ball",
    "color": "red",
    "size": "small",
    "text": "hello",
}


def required_only(name: str) -> str:
    """``name(...)`` with only its required arguments, given valid sample values."""
    spec = CALLS[name]
    args = [f"{p.name}={0.5 if p.type is float else repr(SAMPLE_STR[p.name])}" for p in spec.params if p.required]
    return f"{name}({', '.join(args)})"


def errors_of(code: str) -> list[str]:
    return check(code).errors


def assert_rejected(code: str, *fragments: str, syntax_ok: bool) -> None:
    result = check(code)
    assert not result.api_valid and result.program is None
    assert result.syntax_ok is syntax_ok, result.errors
    text = "\n".join(result.errors)
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {result.errors}"
    with pytest.raises(RobotCodeError):
        parse_program(code)


# --- accepted -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", SPEC_EXAMPLES)
def test_spec_examples_are_valid_and_already_canonical(code):
    result = check(code)
    assert result.syntax_ok and result.api_valid and result.errors == []
    assert result.program is not None
    assert canonicalize(code) == code


def test_parse_builds_the_tree_with_floats_in_table_order():
    program = parse_program("for _ in range(2):\n    robot.move_forward(speed=2, distance=3)")
    assert program == (Loop(2, (Call("robot.move_forward", {"distance": 3.0, "speed": 2.0}),)),)
    assert list(program[0].body[0].kwargs) == ["distance", "speed"]
    assert isinstance(program[0].body[0].kwargs["distance"], float)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_every_call_round_trips_with_defaults_written(name):
    canonical = canonicalize(required_only(name))
    spec = CALLS[name]
    for param in spec.params:
        assert f"{param.name}=" in canonical
    assert canonicalize(canonical) == canonical
    assert check(canonical).api_valid


def test_canonical_form_examples():
    assert canonicalize('robot.follow(target="person")') == 'robot.follow(target="person", distance=1.0)'
    assert canonicalize("robot.sensors.scan()") == "robot.sensors.scan(radius=2.0)"
    assert canonicalize('robot.camera.look_at(color="blue", object_type="cup")') == (
        'robot.camera.look_at(object_type="cup", color="blue")'
    )
    assert canonicalize("robot.arm.move_to(x=-0.5, y=0.914, z=1)") == "robot.arm.move_to(x=-0.5, y=0.91, z=1.0)"
    assert canonicalize("robot.stop()  # done\n\n\nrobot.go_home()") == "robot.stop()\nrobot.go_home()"


def test_elif_and_bare_detect_and_semicolons_are_accepted():
    code = """\
if robot.sensors.detect(object_type="cup"):
    robot.stop()
elif robot.sensors.detect(object_type="ball", color="red"):
    robot.go_home()
else:
    robot.wait(seconds=2)
robot.sensors.detect(object_type="cup"); robot.stop()"""
    assert check(code).api_valid
    assert canonicalize(code).splitlines()[2] == "else:"
    assert 'if robot.sensors.detect(object_type="ball", color="red"):' in canonicalize(code)


def test_strings_with_quotes_and_escapes_round_trip():
    code = 'robot.say(text="say \\"hi\\"\\n to \\u00e9 \\\\d")'
    canonical = canonicalize(code)
    assert parse_program(canonical) == parse_program(code)


def test_validate_program_accepts_parsed_programs_and_names_problems_of_built_ones():
    for code in SPEC_EXAMPLES:
        assert validate_program(parse_program(code)) == []
    bad = (
        Loop(25, ()),
        If(Call("robot.say", {"text": "x"}), (Call("robot.turn_left", {"angle": 0, "side": "l"}),)),
        Call("robot.set_light", {}),
    )
    assert validate_program(bad) == [
        "loop count must be an int in 1..20, got 25",
        "empty loop body",
        "if conditions must be robot.sensors.detect, not robot.say",
        "robot.turn_left: unknown argument side",
        "robot.turn_left: angle=0 must be in (0, 360]",
        "robot.set_light: missing required argument color",
    ]
    assert validate_program(()) == ["empty program"]


# --- rejected: api errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "fragments"),
    [
        ("robot.move_fwd(distance=1.0)", ["line 1: unknown call robot.move_fwd"]),
        ("robot.fly(height=2.0)", ["line 1: unknown call robot.fly"]),
        ("robot.move_forward(3.0)", ["line 1: robot.move_forward: positional arguments are not allowed"]),
        ("robot.move_forward(speed=1.0)", ["line 1: robot.move_forward: missing required argument distance"]),
        ("robot.move_forward(distance=1.0, foo=2)", ["line 1: robot.move_forward: unknown argument foo"]),
        ("robot.move_forward(distance=1.0, distance=2.0)", ["line 1: robot.move_forward: duplicate argument distance"]),
        ('robot.move_forward(distance="3")', ["line 1: robot.move_forward: distance='3' expects a number, got str"]),
        ("robot.say(text=1.5)", ["line 1: robot.say: text=1.5 expects a str, got float"]),
        ("robot.move_forward(distance=True)", ["line 1: robot.move_forward: distance=True expects a number, got bool"]),
        ("robot.say(text=None)", ["expects a str, got NoneType"]),
        ("robot.move_forward(distance=1.0, speed=0)", ["line 1: robot.move_forward: speed=0 must be in (0, 3]"]),
        ("robot.move_forward(distance=1.0, speed=3.5)", ["speed=3.5 must be in (0, 3]"]),
        ("robot.move_forward(distance=-1.0)", ["distance=-1.0 must be > 0"]),
        ("robot.move_forward(distance=1e400)", ["distance=inf must be a finite number"]),
        ("robot.move_forward(distance=1" + "0" * 400 + ")", ["must be a finite number"]),
        ("robot.turn_left(angle=361)", ["line 1: robot.turn_left: angle=361 must be in (0, 360]"]),
        ("robot.arm.move_to(x=1.5, y=0.0, z=0.0)", ["line 1: robot.arm.move_to: x=1.5 must be in [-1, 1]"]),
        ('robot.navigate_to(location="moon")', ["location='moon' must be one of kitchen"]),
        ('robot.gripper.place(location="moon")', ["robot.gripper.place: location='moon' must be one of"]),
        ('robot.set_light(color="any")', ["robot.set_light: color='any' must be one of red"]),
        ('robot.gripper.pick_up(object_type="ball", size="huge")', ["size='huge' must be one of small, medium"]),
        ('robot.say(text="")', ["line 1: robot.say: text='' must be a non-empty string"]),
        ('robot.follow(target="  ")', ["must be a non-empty string"]),
        (
            "if robot.move_forward(distance=1.0):\n    robot.stop()",
            ["line 1: robot.move_forward does not return a bool"],
        ),
    ],
)
def test_api_errors(code, fragments):
    assert_rejected(code, *fragments, syntax_ok=True)


def test_every_api_error_is_reported_with_its_line():
    code = "robot.stop()\nrobot.fly()\nfor _ in range(2):\n    robot.turn_left(angle=0, side=1)\nrobot.say()"
    assert errors_of(code) == [
        "line 2: unknown call robot.fly",
        "line 4: robot.turn_left: unknown argument side",
        "line 4: robot.turn_left: angle=0 must be in (0, 360]",
        "line 5: robot.say: missing required argument text",
    ]


def test_parse_program_raises_a_syntax_error_before_an_earlier_api_error():
    with pytest.raises(RobotCodeError) as info:
        parse_program("robot.fly()\nimport os")
    assert (info.value.line, info.value.kind, str(info.value)) == (2, "syntax", "line 2: imports are not allowed")


def test_error_messages_stay_short_for_huge_names_and_values():
    result = check("robot." + "a" * 100_000 + '(text="' + "b" * 100_000 + '")')
    assert result.errors and all(len(e) < 200 for e in result.errors)


# --- rejected: syntax errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "fragments"),
    [
        ("robot.move_forward(distance=1.0", ["line 1: "]),
        ("import os", ["line 1: imports are not allowed"]),
        ("from os import system", ["line 1: imports are not allowed"]),
        ("robot.stop()\nx = 1", ["line 2: assignments are not allowed"]),
        ("robot.speed += 1", ["line 1: assignments are not allowed"]),
        ("while True:\n    robot.stop()", ["line 1: while loops are not allowed"]),
        ('print("hi")', ["line 1: print is not a robot API call"]),
        ('os.system("ls")', ["line 1: os.system is not a robot API call"]),
        ("robot.stop", ["line 1: attribute access outside a call is not allowed"]),
        ("robot.stop()\nrobot", ["line 2: the name robot is not allowed as a statement"]),
        ("robot.arm.home()[0]", ["line 1: a subscript is not allowed as a statement"]),
        ("pass", ["line 1: pass is not allowed"]),
        ("def f():\n    robot.stop()", ["line 1: definitions are not allowed"]),
        ("'just a string'", ["line 1: bare literals are not allowed"]),
        ("", ["line 1: empty program"]),
        ("# a comment\n\n", ["line 1: empty program"]),
        ("robot.move_forward(distance=d)", ["line 1: robot.move_forward: distance must be a literal, not the name d"]),
        ('robot.say(text=f"hi {x}")', ["line 1: robot.say: text must be a literal, not an f-string"]),
        ("robot.move_forward(distance=abs(-1))", ["distance must be a literal, not a call"]),
        ("robot.move_forward(distance=1+2)", ["distance must be a literal, not an arithmetic expression"]),
        ("robot.move_forward(distance=--1)", ["distance must be a literal, not an operator expression"]),
        ("robot.move_forward(distance=robot.x)", ["distance must be a literal, not an attribute"]),
        ("robot.move_forward(*args)", ["robot.move_forward: *args are not allowed"]),
        ("robot.move_forward(**kwargs)", ["robot.move_forward: **kwargs are not allowed"]),
        ("for _ in range(0):\n    robot.stop()", ["line 1: loop count must be in 1..20, got 0"]),
        ("for _ in range(21):\n    robot.stop()", ["line 1: loop count must be in 1..20, got 21"]),
        ("for _ in range(2.0):\n    robot.stop()", ["line 1: loop count must be an int literal, not the literal 2.0"]),
        ("for _ in range(True):\n    robot.stop()", ["loop count must be an int literal, not the literal True"]),
        ("for _ in range(n):\n    robot.stop()", ["loop count must be an int literal, not the name n"]),
        ("for _ in [1, 2]:\n    robot.stop()", ["line 1: loops must be written for _ in range(N):"]),
        ("for i in range(2):\n    robot.stop()", ["loops must be written for _ in range(N):"]),
        ("for _ in range(0, 2):\n    robot.stop()", ["loops must be written for _ in range(N):"]),
        ("for _ in range(2):\n    robot.stop()\nelse:\n    robot.stop()", ["line 1: for ... else is not allowed"]),
        ("if True:\n    robot.stop()", ["line 1: if conditions must be a robot.sensors.detect(...) call"]),
        ('if not robot.sensors.detect(object_type="cup"):\n    robot.stop()', ["if conditions must be a robot"]),
        ("if x:\n    robot.stop()", ["if conditions must be a robot.sensors.detect(...) call, not the name x"]),
        ('if print("x"):\n    robot.stop()', ["line 1: print is not a robot API call"]),
    ],
)
def test_syntax_errors(code, fragments):
    assert_rejected(code, *fragments, syntax_ok=False)


def test_a_syntax_error_inside_a_block_names_its_line():
    code = 'if robot.sensors.detect(object_type="cup"):\n    robot.stop()\nelse:\n    x = 2'
    assert errors_of(code) == ["line 4: assignments are not allowed"]


@pytest.mark.parametrize(
    "code",
    [
        "x\0y",
        "robot.stop()\n\0",
        "(" * 10_000,
        "[" * 10_000 + "]" * 10_000,
        "-" * 100_000 + "1",
        "not " * 100_000 + "x",
        "x" * 1_000_000,
        "robot.say(text=" * 10_000,
        "\n".join(" " * (4 * i) + "for _ in range(2):" for i in range(120)) + "\n" + " " * 480 + "robot.stop()",
        "if robot.sensors.detect(object_type='a'):\n    robot.stop()\n"
        + "elif robot.sensors.detect(object_type='a'):\n    robot.stop()\n" * 3000,
        "\ufeff\x00\udcff",
        "robot.stop()\n\tbad indent",
    ],
)
def test_garbage_is_a_syntax_error_and_never_raises(code):
    result = check(code)
    assert not result.syntax_ok and not result.api_valid and result.program is None
    assert result.errors and all(e.startswith("line ") for e in result.errors)


def test_null_byte_error_points_at_its_line():
    assert check("robot.stop()\nrobot.stop()\0").errors == ["line 2: source code string cannot contain null bytes"]


def test_random_text_and_mutations_never_raise_and_valid_results_are_consistent():
    rng = random.Random(0)
    alphabet = "robt.mvefwadsinc_()=\",:0123456789 \n-+*[]{}#\\'\0"
    source = SPEC_EXAMPLES[1]
    for _ in range(300):
        noise = "".join(rng.choice(alphabet) for _ in range(rng.randrange(60)))
        assert not check(noise).api_valid or canonicalize(noise)
        cut = rng.randrange(len(source))
        mutated = source[:cut] + rng.choice(alphabet) + source[cut + rng.randrange(3) :]
        result = check(mutated)
        assert result.syntax_ok or not result.api_valid
        if result.api_valid:
            assert semantic_equal(mutated, canonicalize(mutated))


# --- security: nothing is ever executed ---------------------------------------------------------------------


@pytest.fixture
def no_exec(monkeypatch):
    """Make any use of exec/eval fail loudly: the checker must only ever parse."""

    def forbidden(*args, **kwargs):
        raise AssertionError("exec/eval called")

    monkeypatch.setattr(builtins, "exec", forbidden)
    monkeypatch.setattr(builtins, "eval", forbidden)


def hostile_programs(marker) -> list[str]:
    touch = f'__import__("os").system("touch {marker}")'
    return [
        touch,
        f'exec("open(\\"{marker}\\", \\"w\\")")',
        f'eval("open(\\"{marker}\\", \\"w\\")")',
        f"robot.say(text={touch})",
        f"robot.stop()\n{touch}",
        f'import os\nos.system("touch {marker}")',
        f"for _ in range(2):\n    {touch}",
        f"if {touch}:\n    robot.stop()",
        f'robot.__class__.__init__.__globals__["os"].system("touch {marker}")',
    ]


def test_hostile_code_is_rejected_and_nothing_runs(tmp_path, no_exec):
    marker = tmp_path / "pwned"
    for code in hostile_programs(marker):
        result = check(code)
        assert not result.api_valid and result.errors, code
        with pytest.raises(RobotCodeError):
            canonicalize(code)
        with pytest.raises(RobotCodeError):
            simulate(code)
        assert not semantic_equal(code, code)
        assert not semantic_equal(code, "robot.stop()")
    assert not marker.exists()


def test_hostile_calls_are_syntax_errors():
    assert check('__import__("os").system("touch /tmp/x")').errors == [
        "line 1: only direct robot.* calls are allowed, not calls of computed expressions"
    ]
    assert check('exec("import os")').errors == ["line 1: exec is not a robot API call; only robot.* calls are allowed"]
