"""What a command states that its program leaves out (every number and quoted text it gives), and what the
program names that the command never states (a colour or an object).

People state quantities because they matter: "take 3 photos" needs a loop of 3, "wait 10 seconds" a wait of
10. The numbers are read from the prompt the model is shown (:func:`~robolora.robot.normalize.normalize_command`:
quantities in the API's units, in digits), outside quoted text and list markers ("1. go ...", "step 2: ...").
A program uses a number when one of its arguments (within the canonical rounding), loop counts or said texts
holds it, one use per mention: "3 feet forward, then 3 feet back" needs two. A quoted text is used when the
program says it (its final punctuation aside).

Colours and object types are the words people type ("the red cups" asks about `cup` and `red`), so a program
naming one the command never mentions ("photo please" answered by looking at a `person`) made it up.

Decoding uses both as a check (:meth:`robolora.infer.Generator.generate`): a greedy program with a
:func:`mismatch` is decoded again with beam search, and the best beam without one replaces it. The check only
ever picks among programs the model itself wrote.

Example:
    >>> left_out("take 3 photos", "robot.camera.take_photo()")
    ['3']
    >>> left_out("take 3 photos", "for _ in range(3):\\n    robot.camera.take_photo()")
    []
    >>> left_out('say "see you soon"', 'robot.say(text="see you")')
    ['"see you soon"']
    >>> unstated("photo please", 'robot.camera.look_at(object_type="person", color="any")')
    ['person']
"""

from __future__ import annotations

import re

from robolora.robot.checker import RobotCodeError, parse_program
from robolora.robot.normalize import normalize_command
from robolora.robot.program import Call, If, Loop, Program, complete_kwargs

#: Quoted text: in double or curly quotes, or in single quotes that are not apostrophes.
QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”|(?<![A-Za-z])'[^']*'(?![A-Za-z])")
#: A number as the normaliser writes it (digits, an optional sign and decimal point).
NUMBER = re.compile(r"-?\d*\.?\d+")
#: A list marker numbering steps: "1. go ...", "2: say ...", "step 3: ...".
LIST_MARKER = re.compile(r"(?:\bstep\s+)?(?<![\d.-])\b\d+[.:](?=\s|$)")
#: Canonical floats have 2 places, so a stated 0.914 is written 0.91.
TOLERANCE = 0.011
_END_PUNCTUATION = ".!?,;: "


def free_text(text: str) -> str:
    """The text without its quoted parts."""
    return QUOTED.sub(" ", text)


def stated_numbers(shown: str) -> list[float]:
    """The numbers of an (already normalised) prompt, outside quoted text and list markers, in order."""
    return [float(n) for n in NUMBER.findall(LIST_MARKER.sub(" ", free_text(shown)))]


def quoted_texts(shown: str) -> list[str]:
    """The quoted texts of a prompt, without their quotes."""
    return [q[1:-1] for q in QUOTED.findall(shown) if q[1:-1].strip()]


def _uses(program: Program) -> tuple[list[float], list[str]]:
    """The numbers a program writes (arguments, loop counts, numbers in said texts) and the texts it says."""
    numbers: list[float] = []
    said: list[str] = []

    def call(c: Call) -> None:
        for value in complete_kwargs(c).values():
            if isinstance(value, str):
                if c.name == "robot.say":
                    said.append(value)
                    numbers.extend(float(n) for n in NUMBER.findall(value))
            elif isinstance(value, int | float) and not isinstance(value, bool):
                numbers.append(float(value))

    def walk(statements: Program) -> None:
        for stmt in statements:
            if isinstance(stmt, Loop):
                numbers.append(float(stmt.count))
                walk(stmt.body)
            elif isinstance(stmt, If):
                call(stmt.test)
                walk(stmt.body)
                walk(stmt.orelse)
            else:
                call(stmt)

    walk(program)
    return numbers, said


def _bare(text: str) -> str:
    return text.strip().rstrip(_END_PUNCTUATION).strip()


def left_out(command: str, code: str, *, normalized: bool = False) -> list[str]:
    """What ``command`` states that ``code`` leaves out, as the command shows it (numbers in digits, quoted texts
    in double quotes); empty when the program uses all of it. Code that does not parse uses nothing.
    ``normalized``: the command is already the prompt the model is shown."""
    shown = command if normalized else normalize_command(command)
    numbers, quotes = stated_numbers(shown), quoted_texts(shown)
    try:
        used, said = _uses(parse_program(code))
    except RobotCodeError:
        used, said = [], []
    missing = []
    for number in numbers:
        match = next((i for i, value in enumerate(used) if abs(value - number) <= TOLERANCE), None)
        if match is None:
            missing.append(f"{number:g}")
        else:
            del used[match]
    spoken = {_bare(text) for text in said}
    missing += [f'"{quote}"' for quote in quotes if _bare(quote) not in spoken]
    return missing


def _calls(program: Program) -> list[Call]:
    """Every call of a program, the tests of its conditions included."""
    calls: list[Call] = []
    for stmt in program:
        if isinstance(stmt, Loop):
            calls += _calls(stmt.body)
        elif isinstance(stmt, If):
            calls += [stmt.test, *_calls(stmt.body), *_calls(stmt.orelse)]
        else:
            calls.append(stmt)
    return calls


def _forms(noun: str) -> set[str]:
    """A noun as a command may type it: itself or a plural."""
    return {noun, noun + "s", noun + "es", noun[:-1] + "ies" if noun.endswith("y") else noun}


def unstated(command: str, code: str, *, normalized: bool = False) -> list[str]:
    """The colours and object types ``code`` names that ``command`` never mentions (outside quoted text)."""
    shown = command if normalized else normalize_command(command)
    words = set(re.findall(r"[a-z]+", free_text(shown).lower()))
    try:
        calls = _calls(parse_program(code))
    except RobotCodeError:
        return []
    named = [v for c in calls for k, v in c.kwargs.items() if k in ("color", "object_type") and v != "any"]
    return [v for v in dict.fromkeys(named) if isinstance(v, str) and not _forms(v) & words]


def mismatch(command: str, code: str) -> list[str]:
    """Everything :func:`left_out` and :func:`unstated` find: empty when the program fits its command."""
    shown = normalize_command(command)
    return left_out(shown, code, normalized=True) + unstated(shown, code, normalized=True)
