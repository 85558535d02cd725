"""The parsed form of a robot program and its canonical text.

A program is a tuple of statements; a statement is a :class:`Call`, a :class:`Loop` or an
:class:`If`. The checker builds this tree from source text, the generator builds it directly,
the simulator walks it and :func:`format_program` writes it back in canonical form.

Example:
    >>> prog = (Loop(2, (Call("robot.turn_right", {"angle": 90}),)),)
    >>> print(format_program(prog))
    for _ in range(2):
        robot.turn_right(angle=90.0)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from robolora.robot.spec import CALLS

INDENT = "    "


@dataclass(frozen=True)
class Call:
    """A call of the robot API with its keyword arguments (defaults may be omitted)."""

    name: str
    kwargs: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Loop:
    """``for _ in range(count):`` around a body."""

    count: int
    body: tuple[Statement, ...]


@dataclass(frozen=True)
class If:
    """``if <test>:`` where the test is a bool-returning call (``robot.sensors.detect``)."""

    test: Call
    body: tuple[Statement, ...]
    orelse: tuple[Statement, ...] = ()


Statement = Call | Loop | If
Program = tuple[Statement, ...]


def format_float(value: float) -> str:
    """Canonical float text: rounded to 2 places, always with a decimal point.

    >>> [format_float(v) for v in (3, 0.5, 0.914, -0.0, 2.999)]
    ['3.0', '0.5', '0.91', '0.0', '3.0']
    """
    text = f"{round(float(value), 2) + 0.0:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def format_value(value: object, type_: type) -> str:
    """Canonical literal for a value of a parameter of type ``type_`` (float or str)."""
    if type_ is float:
        return format_float(value)  # type: ignore[arg-type]
    return json.dumps(value, ensure_ascii=False)


def complete_kwargs(call: Call) -> dict[str, object]:
    """The call's arguments in the table's order with every omitted default filled in."""
    spec = CALLS[call.name]
    return {p.name: call.kwargs.get(p.name, p.default) for p in spec.params if p.name in call.kwargs or not p.required}


def format_call(call: Call) -> str:
    """``robot.x(a=..., b=...)`` with defaults written out and keyword arguments in table order."""
    spec = CALLS[call.name]
    args = complete_kwargs(call)
    parts = [f"{name}={format_value(value, spec.by_name[name].type)}" for name, value in args.items()]
    return f"{call.name}({', '.join(parts)})"


def _lines(statements: Program, depth: int) -> list[str]:
    pad = INDENT * depth
    out: list[str] = []
    for stmt in statements:
        if isinstance(stmt, Call):
            out.append(pad + format_call(stmt))
        elif isinstance(stmt, Loop):
            out.append(f"{pad}for _ in range({stmt.count}):")
            out.extend(_lines(stmt.body, depth + 1))
        else:
            out.append(f"{pad}if {format_call(stmt.test)}:")
            out.extend(_lines(stmt.body, depth + 1))
            if stmt.orelse:
                out.append(f"{pad}else:")
                out.extend(_lines(stmt.orelse, depth + 1))
    return out


def format_program(program: Program) -> str:
    """The canonical text of a program: one call per line, 4-space indentation, no trailing newline."""
    return "\n".join(_lines(program, 0))
