"""Render ``docs/API.md``, the robot API reference, from the call table so that it never drifts.

Regenerate after changing the table or the checker's messages::

    python -m robolora.robot.apidoc > docs/API.md

A unit test fails while the file differs from :func:`render_api_markdown`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from robolora.robot.checker import canonicalize, check
from robolora.robot.program import format_value
from robolora.robot.simulator import (
    FLOAT_TOLERANCE,
    MAX_EXHAUSTIVE_OBJECTS,
    MAX_STEPS,
    OTHER_COLOR,
    exact_match,
    semantic_equal,
)
from robolora.robot.spec import CALL_CATEGORIES, CALLS, COLORS, LOCATIONS, LOOP_MAX, LOOP_MIN, SIZES, CallSpec, Param

_INTRO = """\
# Robot API reference (v1)

<!-- Generated from robolora/robot/spec.py by `python -m robolora.robot.apidoc > docs/API.md`; do not edit. -->

This is the contract the fine-tuned models learn to write: a natural-language command goes in, a few
lines of Python-like robot code come out. Every dataset, generator, checker, simulator and evaluation in
robolora speaks it. Generated code is **never** executed by Python: `robolora.robot.check` parses it
with `ast.parse`, rejects anything outside this page, and the simulator interprets the parsed tree.

```python
robot.move_forward(distance=3.0, speed=1.0)
robot.gripper.pick_up(object_type="ball", color="red", size="medium")
```
"""

_CANONICAL = """\
## Canonical form

A dataset's `output` holds code in canonical form; `robolora.robot.canonicalize(code)` writes it.

- One call per line; keyword arguments always, in the table's order, **defaults written out**
  (`speed=1.0`, `color="any"`, `size="medium"`, `radius=2.0`, `distance=1.0` for `follow`).
- Floats always carry a decimal point, rounded to 2 places (`3.0`, `0.5`, `0.91`); strings in double quotes.
- Units are converted: centimetres /100, feet x0.3048, inches x0.0254; minutes x60 seconds.
  "turn around" is 180 degrees, "a quarter turn" 90. "slowly" is speed 0.5, "quickly"/"fast" 2.0.
- When a command leaves a quantity out: "move forward" is 1 metre, "turn left" is 90 degrees,
  "turn around" with no side is `turn_left(angle=180.0)`, "wait" is 1 second.
- Sequences ("then", "and", "after that") keep the spoken order, one line each (category `sequence`).
- Repetition uses a loop and conditions use `robot.sensors.detect`, indented by 4 spaces
  (category `control_flow`).
"""

_EXAMPLES: tuple[tuple[Callable[..., object], tuple[str, ...]], ...] = (
    (canonicalize, ("robot.move_forward(speed=2, distance=3)",)),
    (check, ("robot.turn_left(angle=400)",)),
    (semantic_equal, ("for _ in range(2):\n    robot.turn_left(angle=90)", "robot.turn_left(angle=90.0)\n" * 2)),
    (exact_match, ("robot.stop()  \n\n", "robot.stop()")),
)


def _judging_section() -> str:
    # Results are computed, not written, so the page always shows what the code does.
    examples = "\n".join(f"{fn.__name__}({', '.join(map(repr, args))})\n# {fn(*args)!r}" for fn, args in _EXAMPLES)
    return f"""\
## How outputs are judged

| metric | passes when | in Python |
|---|---|---|
| **syntax** | `ast.parse` accepts it and it uses only the constructs on this page | `check(code).syntax_ok` |
| **api-valid** | it passes syntax, every call exists, and argument names, types and values are right \
| `check(code).api_valid` |
| **exact** | it equals the reference after whitespace normalisation: trailing spaces and blank lines are \
dropped, indentation is kept | `exact_match(prediction, reference)` |
| **semantic** | both programs make the same calls, in the same order, with the same arguments (floats \
within {FLOAT_TOLERANCE}) in every simulated world | `semantic_equal(prediction, reference)` |

`check(code)` returns `syntax_ok`, `api_valid`, `errors` and, when valid, the parsed `program`; it never
raises, whatever the string. Each error reads `line N: message`. Syntax errors are Python's own and
constructs outside the grammar (imports, assignments, `print(...)`, `while`, a variable or an f-string
as an argument, a loop count that is not an int literal in {LOOP_MIN}..{LOOP_MAX}, an `if` not testing a
call). API errors are an unknown `robot.*` call (such as `robot.fly(...)`), a positional, unknown,
duplicated or missing argument, a wrong type or an out-of-range value; all of them are reported.

`semantic_equal` compares what the simulator makes of each program:

- Omitted defaults count as written, keyword order does not matter, a loop equals its unrolled form.
- The `detect` call that an `if` tests is part of the trace, followed by the branch taken.
- A world is the set of `(object_type, color)` objects that `detect` sees; it does not change while a
  program runs. The programs are compared in worlds built from the objects their `detect` calls ask
  about (a `color="any"` question is answered by an object of colour `{OTHER_COLOR}`): with up to
  {MAX_EXHAUSTIVE_OBJECTS} such objects, every combination of them, so both branches of every condition
  are taken; with more, the empty world, all of them, each alone and each missing.
- Invalid code on either side is never equal. A program making more than {MAX_STEPS} calls is stopped
  and counts as not equal, unless the two programs are identical.

```python
from robolora.robot import canonicalize, check, exact_match, semantic_equal

{examples}
```
"""


#: Invalid code whose errors the page shows, produced by the checker itself.
_ERROR_EXAMPLE = """\
import os
robot.move_forward(3.0, speed=5)
robot.fly(height=2.0)
robot.say(text=f"hello {name}")"""


def _signature(param: Param) -> str:
    text = f"{param.name}: {param.type.__name__}"
    return f"`{text}`" if param.required else f"`{text} = {format_value(param.default, param.type)}`"


def _call_row(spec: CallSpec) -> str:
    args = "<br>".join(f"{_signature(p)}: {p.doc}" for p in spec.params) or "none"
    return f"| `{spec.name}` | {args} | {spec.doc} |"


def _calls_section() -> str:
    lines = [
        "## Calls",
        "",
        "Arguments are keyword-only. An int literal is accepted where a float is expected (the canonical form",
        "writes floats); `text`, `target` and `object_type` must be non-empty strings.",
    ]
    for category in CALL_CATEGORIES:
        lines += ["", f"### {category.capitalize()}", "", "| call | arguments | what it does |", "|---|---|---|"]
        lines += [_call_row(spec) for spec in CALLS.values() if spec.category == category]
    return "\n".join(lines) + "\n"


def _values_section() -> str:
    def names(values: tuple[str, ...]) -> str:
        return ", ".join(f"`{v}`" for v in values)

    return f"""\
## Values

- Locations (`navigate_to`, `gripper.place`): {names(LOCATIONS)}.
- Colours: {names(COLORS)}. `any` matches every colour; `set_light` takes a colour other than `any`.
- Sizes (`gripper.pick_up`): {names(SIZES)}.
"""


def _control_flow_section() -> str:
    return f"""\
## Control flow

```python
for _ in range(3):
    robot.move_forward(distance=1.0, speed=1.0)
    robot.turn_right(angle=90.0)
if robot.sensors.detect(object_type="ball", color="red"):
    robot.gripper.pick_up(object_type="ball", color="red", size="medium")
else:
    robot.say(text="I cannot see a red ball")
```

- A loop is exactly `for _ in range(N):` with `N` an int literal from {LOOP_MIN} to {LOOP_MAX}, and no `else`.
- A condition is exactly a `robot.sensors.detect(...)` call (no `not`, `and` or comparisons);
  `elif` and `else` are allowed.
- Nothing else is valid robot code: no imports, assignments, other names (`print`, `os`, `exec`),
  `while`, `pass`, definitions, attribute access outside the table, or arguments that are not literals
  (a number, a negative number or a string).

The checker names each problem; for

```python
{_ERROR_EXAMPLE}
```

`check(code).errors` is

```text
{chr(10).join(check(_ERROR_EXAMPLE).errors)}
```
"""


def render_api_markdown() -> str:
    """The text of ``docs/API.md``."""
    sections = (_INTRO, _calls_section(), _values_section(), _control_flow_section(), _CANONICAL, _judging_section())
    return "\n".join(sections)


if __name__ == "__main__":
    sys.stdout.write(render_api_markdown())
