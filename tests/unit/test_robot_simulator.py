"""The simulator: traces, worlds, robot state, and the semantic and exact judges."""

from __future__ import annotations

import pytest

from robolora.robot import (
    EMPTY_WORLD,
    Call,
    If,
    Loop,
    RobotCodeError,
    World,
    exact_match,
    parse_program,
    run,
    semantic_equal,
    simulate,
    traces_equal,
    worlds_for,
)
from robolora.robot.simulator import OTHER_COLOR

BRANCHY = """\
if robot.sensors.detect(object_type="ball", color="red"):
    robot.gripper.pick_up(object_type="ball", color="red", size="medium")
else:
    robot.say(text="I cannot see a red ball")"""

DETECT_RED_BALL = ("robot.sensors.detect", (("object_type", "ball"), ("color", "red")))


def test_trace_has_every_argument_with_defaults_and_floats():
    assert simulate("robot.move_forward(distance=3)\nrobot.gripper.pick_up(object_type='cup')") == [
        ("robot.move_forward", (("distance", 3.0), ("speed", 1.0))),
        ("robot.gripper.pick_up", (("object_type", "cup"), ("color", "any"), ("size", "medium"))),
    ]
    assert isinstance(simulate("robot.turn_left(angle=90)")[0][1][0][1], float)


def test_loops_are_unrolled_and_nested():
    trace = simulate("for _ in range(2):\n    for _ in range(3):\n        robot.stop()\n    robot.go_home()")
    assert [name for name, _ in trace] == ["robot.stop"] * 3 + ["robot.go_home"] + ["robot.stop"] * 3 + [
        "robot.go_home"
    ]


def test_if_records_the_detect_then_the_branch_taken():
    seen = World(frozenset({("ball", "red")}))
    assert simulate(BRANCHY, seen) == [
        DETECT_RED_BALL,
        ("robot.gripper.pick_up", (("object_type", "ball"), ("color", "red"), ("size", "medium"))),
    ]
    assert simulate(BRANCHY) == [DETECT_RED_BALL, ("robot.say", (("text", "I cannot see a red ball"),))]
    assert simulate(BRANCHY, World(frozenset({("ball", "blue")})))[1][0] == "robot.say"


def test_elif_chains_and_a_bare_detect():
    code = """\
robot.sensors.detect(object_type="cup")
if robot.sensors.detect(object_type="cup", color="blue"):
    robot.say(text="blue")
elif robot.sensors.detect(object_type="cup"):
    robot.say(text="some cup")"""
    names_texts = [(n, dict(a).get("text")) for n, a in simulate(code, World(frozenset({("cup", "green")})))]
    assert names_texts == [
        ("robot.sensors.detect", None),
        ("robot.sensors.detect", None),
        ("robot.sensors.detect", None),
        ("robot.say", "some cup"),
    ]
    assert len(simulate(code)) == 3  # no branch taken, no else


def test_world_detect_matches_type_and_colour():
    world = World(frozenset({("ball", "red"), ("cup", OTHER_COLOR)}))
    assert world.detect("ball", "red") and world.detect("ball", "any") and world.detect("ball")
    assert not world.detect("ball", "blue") and not world.detect("box")
    assert world.detect("cup", "any") and not world.detect("cup", "red")
    assert not EMPTY_WORLD.detect("ball")


def test_simulate_accepts_a_hand_built_program():
    program = (
        Loop(2, (Call("robot.turn_right", {"angle": 90}),)),
        If(Call("robot.sensors.detect", {"object_type": "x"}), (Call("robot.stop"),)),
    )
    assert simulate(program) == [("robot.turn_right", (("angle", 90.0),))] * 2 + [
        ("robot.sensors.detect", (("object_type", "x"), ("color", "any")))
    ]


@pytest.mark.parametrize(
    ("program", "message"),
    [
        ((Call("robot.fly"),), "unknown call robot.fly"),
        ((If(Call("robot.stop"), (Call("robot.stop"),)),), "if conditions must be robot.sensors.detect"),
        ((Loop(0, (Call("robot.stop"),)),), "loop count must be an int in 1..20, got 0"),
        ((Call("robot.move_forward", {"distance": "far"}),), "distance='far' expects a number"),
    ],
)
def test_an_invalid_hand_built_program_is_not_run(program, message):
    with pytest.raises(RobotCodeError) as info:
        simulate(program)
    assert message in str(info.value)
    assert info.value.kind == "api"
    assert not semantic_equal(program, program)


def test_invalid_text_raises():
    with pytest.raises(RobotCodeError, match=r"line 1: unknown call robot\.fly"):
        simulate("robot.fly()")


def test_max_steps_guard():
    huge = (
        "for _ in range(20):\n    for _ in range(20):\n        for _ in range(20):\n            for _ in range(20):\n"
    )
    with pytest.raises(RobotCodeError, match="more than 10000 calls") as info:
        simulate(huge + "                robot.stop()")
    assert info.value.line is None and info.value.kind == "runtime"
    assert len(simulate("for _ in range(5):\n    robot.stop()", max_steps=5)) == 5
    with pytest.raises(RobotCodeError, match="more than 4 calls"):
        simulate("for _ in range(5):\n    robot.stop()", max_steps=4)


def test_run_tracks_the_robot_state():
    code = """\
robot.turn_left(angle=90)
robot.move_forward(distance=2)
robot.move_backward(distance=0.5)
robot.gripper.pick_up(object_type="cup", color="blue")
robot.arm.move_to(x=0.1, y=0.2, z=0.3)
robot.camera.take_photo()
robot.say(text="done")
robot.set_light(color="green")"""
    state = run(code).state
    assert (state.x, state.y, state.heading, state.location) == (0.0, 1.5, 90.0, None)
    assert state.held == ("cup", "blue", "medium") and not state.gripper_open
    assert (state.arm, state.photos, state.said, state.light) == ((0.1, 0.2, 0.3), 1, ("done",), "green")
    after = run(code + '\nrobot.gripper.place(location="table")\nrobot.arm.home()\nrobot.go_home()').state
    assert after.held is None and after.gripper_open and after.arm == (0.0, 0.0, 0.0)
    assert (after.x, after.y, after.heading, after.location) == (0.0, 0.0, 0.0, "home")
    assert run('robot.navigate_to(location="kitchen")\nrobot.turn_right(angle=90)').state.location == "kitchen"
    assert run("robot.turn_right(angle=90)").state.heading == 270.0


# --- worlds ---------------------------------------------------------------------------------------------------


def test_worlds_cover_every_combination_of_detected_objects():
    program = parse_program(BRANCHY + '\nrobot.sensors.detect(object_type="cup")')
    worlds = worlds_for(program)
    assert worlds[0] == EMPTY_WORLD
    assert {w.objects for w in worlds} == {
        frozenset(),
        frozenset({("ball", "red")}),
        frozenset({("cup", OTHER_COLOR)}),
        frozenset({("ball", "red"), ("cup", OTHER_COLOR)}),
    }
    assert worlds_for(parse_program("robot.stop()")) == (EMPTY_WORLD,)


def test_many_detected_objects_fall_back_to_empty_all_single_and_all_but_one():
    code = "\n".join(f'robot.sensors.detect(object_type="o{i}")' for i in range(8))
    worlds = worlds_for(parse_program(code))
    assert len(worlds) == 1 + 1 + 8 + 8
    assert frozenset() in {w.objects for w in worlds}


# --- semantic equality ----------------------------------------------------------------------------------------


def test_loop_equals_its_unrolled_form():
    looped = "for _ in range(2):\n    robot.move_forward(distance=1.0)\n    robot.turn_right(angle=90.0)"
    unrolled = "robot.move_forward(distance=1.0)\nrobot.turn_right(angle=90.0)\n" * 2
    assert semantic_equal(looped, unrolled)
    assert not semantic_equal(looped, unrolled + "robot.stop()")


def test_keyword_order_and_omitted_defaults_do_not_matter():
    assert semantic_equal("robot.move_forward(speed=1.0, distance=3.0)", "robot.move_forward(distance=3)")
    assert semantic_equal(
        'robot.gripper.pick_up(object_type="ball")',
        'robot.gripper.pick_up(size="medium", color="any", object_type="ball")',
    )
    assert not semantic_equal(
        'robot.gripper.pick_up(object_type="ball")', 'robot.gripper.pick_up(object_type="ball", color="red")'
    )


def test_floats_are_equal_within_a_hundredth():
    assert semantic_equal("robot.move_forward(distance=3.0)", "robot.move_forward(distance=3.01)")
    assert semantic_equal("robot.move_forward(distance=1.0)", "robot.move_forward(distance=1.01)")
    assert semantic_equal("robot.turn_left(angle=90)", "robot.turn_left(angle=89.995)")
    assert not semantic_equal("robot.move_forward(distance=3.0)", "robot.move_forward(distance=3.02)")
    assert not semantic_equal("robot.move_forward(distance=1.0)", "robot.move_forward(distance=1.0, speed=1.5)")


def test_order_and_strings_matter():
    assert not semantic_equal("robot.stop()\nrobot.go_home()", "robot.go_home()\nrobot.stop()")
    assert not semantic_equal('robot.say(text="hi")', 'robot.say(text="Hi")')
    assert not semantic_equal("robot.turn_left(angle=90)", "robot.turn_right(angle=90)")


def test_branches_are_compared_in_worlds_where_they_run():
    swapped = """\
if robot.sensors.detect(object_type="ball", color="red"):
    robot.say(text="I cannot see a red ball")
else:
    robot.gripper.pick_up(object_type="ball", color="red", size="medium")"""
    assert semantic_equal(BRANCHY, BRANCHY.replace(', size="medium"', ""))
    assert not semantic_equal(BRANCHY, swapped)
    # The else branch differs only when the ball is absent: the empty world catches it.
    assert not semantic_equal(BRANCHY, BRANCHY.replace("I cannot", "I can't"))
    # The detect call is part of the trace, so an `if` is not its body alone.
    body = 'robot.gripper.pick_up(object_type="ball", color="red", size="medium")'
    assert not semantic_equal(BRANCHY, body)


def test_nested_conditions_need_combinations_of_objects():
    a = """\
if robot.sensors.detect(object_type="ball"):
    if robot.sensors.detect(object_type="cup"):
        robot.stop()
    else:
        robot.go_home()
else:
    robot.go_home()"""
    b = a.replace(
        '    if robot.sensors.detect(object_type="cup"):\n        robot.stop()',
        '    if robot.sensors.detect(object_type="cup"):\n        robot.go_home()',
    )
    assert not semantic_equal(a, b)
    assert semantic_equal(a, a.replace('object_type="cup"', 'color="any", object_type="cup"'))


def test_detect_any_differs_from_a_coloured_detect():
    assert not semantic_equal(BRANCHY, BRANCHY.replace(', color="red"):', "):", 1))


def test_explicit_worlds_are_used():
    assert semantic_equal(BRANCHY, BRANCHY.replace("I cannot", "I can't"), worlds=[World(frozenset({("ball", "red")}))])


def test_invalid_code_is_never_equal_and_never_raises():
    assert not semantic_equal("robot.fly()", "robot.fly()")
    assert not semantic_equal("robot.stop()", "import os")
    assert not semantic_equal("x\0", "robot.stop()")
    assert not semantic_equal("(" * 10_000, "robot.stop()")
    assert not semantic_equal((Call("robot.fly"),), (Call("robot.stop"),))


def test_step_limit_counts_as_unequal_unless_identical():
    nest = (
        "for _ in range(20):\n    for _ in range(20):\n        for _ in range(20):\n            for _ in range(20):\n"
    )
    a = nest + "                robot.stop()"
    assert semantic_equal(a, a)
    assert not semantic_equal(a, a.replace("robot.stop()", "robot.stop()\n                robot.stop()"))


def test_traces_equal_compares_names_and_lengths():
    trace = simulate("robot.move_forward(distance=1.0)")
    assert traces_equal(trace, trace) and not traces_equal(trace, []) and not traces_equal(trace, trace * 2)
    assert not traces_equal(trace, [("robot.move_backward", trace[0][1])])


# --- exact match ----------------------------------------------------------------------------------------------


def test_exact_match_normalises_only_trailing_whitespace_and_blank_lines():
    reference = "for _ in range(2):\n    robot.stop()"
    assert exact_match("\nfor _ in range(2):   \n\n    robot.stop()\r\n\n", reference)
    assert not exact_match("for _ in range(2):\n  robot.stop()", reference)
    assert not exact_match("    robot.stop()", "robot.stop()")
    assert not exact_match("robot.move_forward(distance=3)", "robot.move_forward(distance=3.0, speed=1.0)")
    assert exact_match("", "  \n")
