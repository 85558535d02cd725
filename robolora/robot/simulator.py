"""Interpret robot programs into traces of calls, and compare programs by what they do.

The simulator walks the parsed tree (never ``exec``/``eval``): loops are unrolled, an ``if``
asks the :class:`World` whether ``robot.sensors.detect`` sees the object, and every call is
recorded with all its keyword arguments (defaults filled in, floats as ``float``).

Two programs are *semantically equal* when their traces match in every world of a set that
exercises their conditions (:func:`worlds_for`): with at most :data:`MAX_EXHAUSTIVE_OBJECTS`
distinct detected objects that set holds every combination, so the comparison is exact.

Example:
    >>> simulate("for _ in range(2):\\n    robot.turn_left(angle=90)")
    [('robot.turn_left', (('angle', 90.0),)), ('robot.turn_left', (('angle', 90.0),))]
    >>> semantic_equal("robot.move_forward(distance=3)", "robot.move_forward(speed=1.0, distance=3.004)")
    True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

from robolora.robot.checker import API, RUNTIME, RobotCodeError, parse_program, validate_program
from robolora.robot.program import Call, If, Loop, Program, complete_kwargs
from robolora.robot.spec import CALLS

TraceEntry = tuple[str, tuple[tuple[str, object], ...]]

#: Floats in two traces are equal when they differ by at most this much.
FLOAT_TOLERANCE = 0.01
#: Decimal literals are not exact in binary (3.01 - 3.0 > 0.01); this absorbs that error.
_FLOAT_SLACK = 1e-9
#: A program that makes more calls than this is stopped (loops nest, so 20**4 is easy to write).
MAX_STEPS = 10_000
#: Up to this many distinct detected objects, :func:`worlds_for` tries every combination (2**6 worlds).
MAX_EXHAUSTIVE_OBJECTS = 6
#: The colour of an object that only ``detect(color="any")`` asks about: no program can name it.
OTHER_COLOR = "other"

_DETECT = "robot.sensors.detect"


@dataclass(frozen=True)
class World:
    """What the robot's sensors see: ``(object_type, color)`` pairs, fixed while a program runs."""

    objects: frozenset[tuple[str, str]] = frozenset()

    def detect(self, object_type: str, color: str = "any") -> bool:
        """Whether an object of this type (and colour, unless ``any``) is in the world."""
        return any(kind == object_type and color in ("any", shade) for kind, shade in self.objects)


EMPTY_WORLD = World()
DEMO_WORLD = World(frozenset({("ball", "red"), ("cup", "blue"), ("box", "green")}))
#: Fixed worlds for demos; :func:`semantic_equal` builds its worlds from the programs instead.
DEFAULT_WORLDS: tuple[World, ...] = (EMPTY_WORLD, DEMO_WORLD)

ARM_HOME = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class RobotState:
    """The robot after a program: pose (metres, degrees counter-clockwise from +x), gripper, arm and outputs.

    ``location`` is the last named place reached (``home`` at start), None once the robot drives off it.
    """

    x: float = 0.0
    y: float = 0.0
    heading: float = 0.0
    location: str | None = "home"
    held: tuple[str, str, str] | None = None
    gripper_open: bool = True
    arm: tuple[float, float, float] = ARM_HOME
    light: str | None = None
    photos: int = 0
    said: tuple[str, ...] = ()


@dataclass(frozen=True)
class SimResult:
    """The calls a program made, in order, and the state it left the robot in."""

    trace: list[TraceEntry]
    state: RobotState


def _drive(state: RobotState, distance: float) -> RobotState:
    angle = math.radians(state.heading)
    # Rounded so that a quarter turn then a metre gives y=1.0, x=0.0 rather than 6e-17.
    x = round(state.x + distance * math.cos(angle), 9) + 0.0
    y = round(state.y + distance * math.sin(angle), 9) + 0.0
    return replace(state, x=x, y=y, location=None)


def _turn(state: RobotState, degrees: float) -> RobotState:
    return replace(state, heading=(state.heading + degrees) % 360)


_Effect = Callable[[RobotState, dict[str, object]], RobotState]

#: How each call changes the state; calls not listed (stop, wait, follow, scans) leave it as it is.
_EFFECTS: dict[str, _Effect] = {
    "robot.move_forward": lambda s, a: _drive(s, a["distance"]),  # type: ignore[arg-type]
    "robot.move_backward": lambda s, a: _drive(s, -a["distance"]),  # type: ignore[operator]
    "robot.turn_left": lambda s, a: _turn(s, a["angle"]),  # type: ignore[arg-type]
    "robot.turn_right": lambda s, a: _turn(s, -a["angle"]),  # type: ignore[operator]
    "robot.navigate_to": lambda s, a: replace(s, location=a["location"]),
    "robot.go_home": lambda s, a: replace(s, x=0.0, y=0.0, heading=0.0, location="home"),
    "robot.gripper.pick_up": lambda s, a: replace(
        s, held=(a["object_type"], a["color"], a["size"]), gripper_open=False
    ),
    "robot.gripper.place": lambda s, a: replace(s, held=None, gripper_open=True),
    "robot.gripper.open": lambda s, a: replace(s, held=None, gripper_open=True),
    "robot.gripper.close": lambda s, a: replace(s, gripper_open=False),
    "robot.arm.move_to": lambda s, a: replace(s, arm=(a["x"], a["y"], a["z"])),
    "robot.arm.home": lambda s, a: replace(s, arm=ARM_HOME),
    "robot.camera.take_photo": lambda s, a: replace(s, photos=s.photos + 1),
    "robot.say": lambda s, a: replace(s, said=(*s.said, a["text"])),
    "robot.set_light": lambda s, a: replace(s, light=a["color"]),
}


def _entry(call: Call) -> TraceEntry:
    """The call with every argument, in table order, floats as float."""
    spec = CALLS[call.name]
    args = complete_kwargs(call).items()
    return call.name, tuple((k, float(v) if spec.by_name[k].type is float else v) for k, v in args)  # type: ignore[arg-type]


def _calls(block: Iterable[Call | Loop | If], world: World) -> Iterator[TraceEntry]:
    for stmt in block:
        if isinstance(stmt, Loop):
            for _ in range(stmt.count):
                yield from _calls(stmt.body, world)
        elif isinstance(stmt, If):
            test = _entry(stmt.test)
            yield test
            args = dict(test[1])
            seen = world.detect(args["object_type"], args["color"])  # type: ignore[arg-type]
            yield from _calls(stmt.body if seen else stmt.orelse, world)
        else:
            yield _entry(stmt)


def _as_program(program: Program | str) -> Program:
    """Parse text; check a program built in code, so that only api-valid programs are ever run."""
    if isinstance(program, str):
        return parse_program(program)
    problems = validate_program(program)
    if problems:
        raise RobotCodeError(problems[0], kind=API)
    return program


def run(program: Program | str, world: World | None = None, max_steps: int = MAX_STEPS) -> SimResult:
    """Interpret a program (text is parsed first, never executed) in a world (empty by default).

    Raises:
        RobotCodeError: the program is not api-valid, or it makes more than ``max_steps`` calls.
    """
    trace: list[TraceEntry] = []
    state = RobotState()
    for name, args in _calls(_as_program(program), world or EMPTY_WORLD):
        if len(trace) >= max_steps:
            raise RobotCodeError(f"program makes more than {max_steps} calls", kind=RUNTIME)
        trace.append((name, args))
        effect = _EFFECTS.get(name)
        state = effect(state, dict(args)) if effect else state
    return SimResult(trace, state)


def simulate(program: Program | str, world: World | None = None, max_steps: int = MAX_STEPS) -> list[TraceEntry]:
    """The trace of calls a program makes: ``[(name, ((arg, value), ...)), ...]`` with every argument.

    Raises:
        RobotCodeError: as :func:`run`.
    """
    return run(program, world, max_steps).trace


def _detected_objects(block: Iterable[Call | Loop | If]) -> Iterator[tuple[str, str]]:
    """The object each ``detect`` call asks about; ``color="any"`` asks about one of :data:`OTHER_COLOR`."""
    for stmt in block:
        if isinstance(stmt, Loop):
            yield from _detected_objects(stmt.body)
        elif isinstance(stmt, If):
            yield from _detected_objects((stmt.test, *stmt.body, *stmt.orelse))
        elif stmt.name == _DETECT:
            args = complete_kwargs(stmt)
            color = str(args["color"])
            yield str(args["object_type"]), OTHER_COLOR if color == "any" else color


def worlds_for(*programs: Program) -> tuple[World, ...]:
    """Worlds that exercise every condition of the programs, always starting with the empty world.

    Each world holds some of the objects the programs' ``detect`` calls ask about. With at most
    :data:`MAX_EXHAUSTIVE_OBJECTS` of them, every subset; beyond, the empty world, all of them,
    each alone and each missing.
    """
    objects = sorted({obj for program in programs for obj in _detected_objects(program)})
    if len(objects) <= MAX_EXHAUSTIVE_OBJECTS:
        subsets: Iterable[Iterable[tuple[str, str]]] = itertools.chain.from_iterable(
            itertools.combinations(objects, size) for size in range(len(objects) + 1)
        )
    else:
        subsets = [(), objects, *([obj] for obj in objects), *([o for o in objects if o != obj] for obj in objects)]
    return tuple(dict.fromkeys(World(frozenset(subset)) for subset in subsets))


def _values_equal(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= FLOAT_TOLERANCE + _FLOAT_SLACK
    return type(a) is type(b) and a == b


def traces_equal(a: list[TraceEntry], b: list[TraceEntry]) -> bool:
    """Same calls in the same order with the same arguments, floats within :data:`FLOAT_TOLERANCE`."""
    return len(a) == len(b) and all(
        name_a == name_b
        and len(args_a) == len(args_b)
        and all(ka == kb and _values_equal(va, vb) for (ka, va), (kb, vb) in zip(args_a, args_b, strict=True))
        for (name_a, args_a), (name_b, args_b) in zip(a, b, strict=True)
    )


def semantic_equal(a: str | Program, b: str | Program, worlds: Iterable[World] | None = None) -> bool:
    """Whether two programs make the same calls in every world; False if either is invalid. Never raises.

    ``worlds`` defaults to :func:`worlds_for` of both programs. Identical programs are equal
    without running them, so only they are equal when they would exceed :data:`MAX_STEPS`.
    """
    try:
        prog_a, prog_b = _as_program(a), _as_program(b)
        if prog_a == prog_b:
            return True
        chosen = worlds_for(prog_a, prog_b) if worlds is None else worlds
        return all(traces_equal(simulate(prog_a, world), simulate(prog_b, world)) for world in chosen)
    except (RobotCodeError, RecursionError):
        return False


def normalize_whitespace(code: str) -> str:
    """Strip each line's trailing whitespace and drop blank lines; leading indentation is kept."""
    return "\n".join(line.rstrip() for line in code.split("\n") if line.strip())


def exact_match(prediction: str, reference: str) -> bool:
    """Whether two texts are equal after :func:`normalize_whitespace`."""
    return normalize_whitespace(prediction) == normalize_whitespace(reference)
