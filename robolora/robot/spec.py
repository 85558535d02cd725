"""The robot API (v1) as data: every call, its keyword arguments, defaults and value rules.

This table is the single source of truth for the checker, the simulator, the canonical
formatter, the dataset generator and ``docs/API.md``.

Example:
    >>> spec = CALLS["robot.move_forward"]
    >>> [p.name for p in spec.params], spec.params[1].default
    (['distance', 'speed'], 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

LOCATIONS: tuple[str, ...] = (
    "kitchen",
    "living_room",
    "bedroom",
    "bathroom",
    "office",
    "garage",
    "charging_station",
    "front_door",
    "table",
    "shelf",
    "box",
    "floor",
)
COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "black", "white", "orange", "purple", "any")
SIZES: tuple[str, ...] = ("small", "medium", "large")

#: Categories of single calls, then the two composite ones. Seven in all.
CALL_CATEGORIES: tuple[str, ...] = ("movement", "navigation", "manipulation", "perception", "communication")
CATEGORIES: tuple[str, ...] = (*CALL_CATEGORIES, "sequence", "control_flow")

#: A ``for _ in range(N)`` loop count must be an int literal in this range.
LOOP_MIN, LOOP_MAX = 1, 20

_REQUIRED = object()


def _positive(v: float) -> str | None:
    return None if v > 0 else "must be > 0"


def _speed(v: float) -> str | None:
    return None if 0 < v <= 3 else "must be in (0, 3]"


def _angle(v: float) -> str | None:
    return None if 0 < v <= 360 else "must be in (0, 360]"


def _unit_range(v: float) -> str | None:
    return None if -1 <= v <= 1 else "must be in [-1, 1]"


def _non_empty(v: str) -> str | None:
    return None if v.strip() else "must be a non-empty string"


def _one_of(options: tuple[str, ...]) -> Callable[[str], str | None]:
    def check(v: str) -> str | None:
        return None if v in options else f"must be one of {', '.join(options)}"

    return check


@dataclass(frozen=True)
class Param:
    """One keyword argument of a call: its type (``float`` or ``str``), default and value rule."""

    name: str
    type: type
    default: object = _REQUIRED
    check: Callable[[object], str | None] | None = None
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def validate(self, value: object) -> str | None:
        """Return why ``value`` is not valid for this parameter, or None.

        An int literal is accepted where a float is expected (bool is not).
        """
        if self.type is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"expects a number, got {type(value).__name__}"
            try:
                finite = math.isfinite(value)
            except OverflowError:  # an int literal too large for a float would crash formatting later
                finite = False
            if not finite:
                return "must be a finite number"
        elif not isinstance(value, self.type):
            return f"expects a {self.type.__name__}, got {type(value).__name__}"
        return self.check(value) if self.check else None


@dataclass(frozen=True)
class CallSpec:
    """One robot API call: dotted name, parameters in canonical order, category."""

    name: str
    params: tuple[Param, ...]
    category: str
    doc: str
    returns_bool: bool = False
    by_name: dict[str, Param] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {p.name: p for p in self.params})


def _p(name, type_, default=_REQUIRED, check=None, doc=""):  # terse table rows
    return Param(name, type_, default, check, doc)


_SPEED = _p("speed", float, 1.0, _speed, "metres per second, in (0, 3]")
_COLOR = _p("color", str, "any", _one_of(COLORS), "a listed colour, or any")
_OBJECT = _p("object_type", str, check=_non_empty, doc="what to look for, e.g. ball, cup")

_TABLE: tuple[CallSpec, ...] = (
    CallSpec(
        "robot.move_forward",
        (_p("distance", float, check=_positive, doc="metres, > 0"), _SPEED),
        "movement",
        "Drive forward.",
    ),
    CallSpec(
        "robot.move_backward",
        (_p("distance", float, check=_positive, doc="metres, > 0"), _SPEED),
        "movement",
        "Drive backward.",
    ),
    CallSpec(
        "robot.turn_left",
        (_p("angle", float, check=_angle, doc="degrees, in (0, 360]"),),
        "movement",
        "Turn in place to the left.",
    ),
    CallSpec(
        "robot.turn_right",
        (_p("angle", float, check=_angle, doc="degrees, in (0, 360]"),),
        "movement",
        "Turn in place to the right.",
    ),
    CallSpec("robot.stop", (), "movement", "Stop all motion."),
    CallSpec("robot.wait", (_p("seconds", float, check=_positive, doc="seconds, > 0"),), "movement", "Wait in place."),
    CallSpec(
        "robot.navigate_to",
        (_p("location", str, check=_one_of(LOCATIONS), doc="a known location"), _SPEED),
        "navigation",
        "Plan a path to a known location and drive there.",
    ),
    CallSpec("robot.go_home", (), "navigation", "Return to the home position."),
    CallSpec(
        "robot.follow",
        (
            _p("target", str, check=_non_empty, doc="who or what to follow"),
            _p("distance", float, 1.0, _positive, "metres to keep, > 0"),
        ),
        "navigation",
        "Follow a target at a distance.",
    ),
    CallSpec(
        "robot.gripper.pick_up",
        (_OBJECT, _COLOR, _p("size", str, "medium", _one_of(SIZES), "small, medium or large")),
        "manipulation",
        "Pick up an object with the gripper.",
    ),
    CallSpec(
        "robot.gripper.place",
        (_p("location", str, check=_one_of(LOCATIONS), doc="a known location"),),
        "manipulation",
        "Place the held object at a location.",
    ),
    CallSpec("robot.gripper.open", (), "manipulation", "Open the gripper."),
    CallSpec("robot.gripper.close", (), "manipulation", "Close the gripper."),
    CallSpec(
        "robot.arm.move_to",
        tuple(_p(axis, float, check=_unit_range, doc="metres in the robot frame, in [-1, 1]") for axis in "xyz"),
        "manipulation",
        "Move the arm's end effector to a point.",
    ),
    CallSpec("robot.arm.home", (), "manipulation", "Move the arm to its rest pose."),
    CallSpec("robot.camera.take_photo", (), "perception", "Take a photo."),
    CallSpec("robot.camera.look_at", (_OBJECT, _COLOR), "perception", "Point the camera at an object."),
    CallSpec(
        "robot.sensors.scan",
        (_p("radius", float, 2.0, _positive, "metres, > 0"),),
        "perception",
        "Scan the surroundings.",
    ),
    CallSpec(
        "robot.sensors.detect",
        (_OBJECT, _COLOR),
        "perception",
        "Whether an object is visible (returns bool; usable as an if condition).",
        returns_bool=True,
    ),
    CallSpec(
        "robot.say", (_p("text", str, check=_non_empty, doc="what to say"),), "communication", "Speak a sentence."
    ),
    CallSpec(
        "robot.set_light",
        (
            _p(
                "color",
                str,
                check=_one_of(tuple(c for c in COLORS if c != "any")),
                doc="a listed colour other than any",
            ),
        ),
        "communication",
        "Set the status light's colour.",
    ),
)

#: Every call by its dotted name, in the table's order.
CALLS: dict[str, CallSpec] = {c.name: c for c in _TABLE}
