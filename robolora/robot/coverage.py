"""What a command states that its program leaves out (every number and quoted text it gives), and what the
program names that the command never states (a colour or an object).

People state quantities because they matter: "take 3 photos" needs a loop of 3, "wait 10 seconds" a wait of
10. The numbers are read from the prompt the model is shown (:func:`~robolora.robot.normalize.normalize_command`:
quantities in the API's units, in digits), outside quoted text and list markers ("1. go ...", "step 2: ...").
A program uses a number when one of its arguments (within the canonical rounding), loop counts or said texts
holds it, one use per mention: "3 feet forward, then 3 feet back" needs two. A quoted text is used when the
program says it (its final punctuation aside).

Colours and object types are the words people type ("the red cups" asks about `cup` and `red`), so a program
naming one the command never mentions ("photo please" answered by looking at a `person`) made it up. The same
holds for a place (`kitchen`), a photo, going home and a turn's side: a program that drives to a place, takes a
photo or goes home where the command names none, or turns right where the command says only "left", made it up;
likewise a follow target the command never names, closing the gripper where it says only "unclench", backing up
where it says nothing of going back, or pointing the camera where it says nothing of looking.

The same holds for the blocks of a program: a condition (``if robot.sensors.detect``) where the command asks
about nothing the robot senses, an ``else`` branch where it says nothing of what to do otherwise, or homing the
arm where it names no arm, were made up, as was speech the command never typed ("say hi" is not "hi hi"); and a
loop must span the steps its count is said of: all the steps after "3 times:", all the steps before a closing
", 3 times", the rest of a sentence opened by "twice,", and no step after "3 times, then" (:func:`misscoped`).

The other way round, a command that names a colour, a room, the charger or the front door, a photo, home, a
light or a scan (outside what the program says aloud) wants a call that uses it: "go to the kitchen, then grab
the cup" answered by the grab alone dropped a step (:func:`unused`). A condition on what the robot senses ("when
you see a person, say hi", "should there be a cat around, ...") wants a ``detect`` call.

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
    >>> unused("go to the kitchen, then grab the cup", 'robot.gripper.pick_up(object_type="cup")')
    ['kitchen']
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from robolora.robot.checker import RobotCodeError, parse_program
from robolora.robot.normalize import normalize_command
from robolora.robot.program import Call, If, Loop, Program, complete_kwargs
from robolora.robot.spec import COLORS

#: Quoted text: in double or curly quotes, or in single quotes that are not apostrophes.
QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”|(?<![A-Za-z])'[^']*'(?![A-Za-z])")
#: A number as the normaliser writes it (digits, an optional sign and decimal point).
NUMBER = re.compile(r"-?\d*\.?\d+")
#: A list marker numbering steps: "1. go ...", "2: say ...", "step 3: ...".
LIST_MARKER = re.compile(r"(?:\bstep\s+)?(?<![\d.-])\b\d+[.:](?=\s|$)")
#: Canonical floats have 2 places, so a stated 0.914 is written 0.91.
TOLERANCE = 0.011
_END_PUNCTUATION = ".!?,;: "

#: How a command mentions each place a program may name (its words, aliases, and prefixes like "charg").
PLACE_WORDS: dict[str, str] = {
    "kitchen": r"kitchen",
    "living_room": r"living\s*room|lounge",
    "bedroom": r"bed\s*room",
    "bathroom": r"bath\s*room|restroom|washroom|toilet",
    "office": r"office",
    "garage": r"garage",
    "charging_station": r"charg|dock|plug",
    "front_door": r"door|entrance",
    "table": r"table",
    "shelf": r"shel(?:f|ves)",
    "box": r"box",
    "floor": r"floor|ground",
}
#: The places a command names only to go there or put something there (not "the door" seen as an object, nor
#: "the cup on the table"): a command naming one wants a call that uses it.
DESTINATIONS: dict[str, re.Pattern[str]] = {
    place: re.compile(rf"\b(?:{words})")
    for place, words in (PLACE_WORDS | {
        "charging_station": r"charging station|charger|dock\b",
        "front_door": r"front door|main door|entrance",
    }).items()
    if place not in ("table", "shelf", "box", "floor")
}  # fmt: skip
PHOTO = re.compile(r"\b(?:photo\w*|fotos?|pictures?|pics?|snapshots?|snap|shots?|images?|capture)\b")
HOME = re.compile(r"\bhome\b|\bbase\b|start(?:ed|ing)")
#: The arm, as people name it: homing the arm where the command names none ("go home") made it up.
ARM = re.compile(r"\b(?:arm|gripper|claw|hand|end effector)\b")
#: Words that ask for an action, and the calls that do it.
ACTIONS: dict[str, tuple[re.Pattern[str], frozenset[str]]] = {
    "take_photo": (PHOTO, frozenset({"robot.camera.take_photo"})),
    "home": (HOME, frozenset({"robot.go_home", "robot.arm.home"})),
    "stop": (re.compile(r"\b(?:stop\w*|freeze|halt)\b"), frozenset({"robot.stop"})),
    "wait": (re.compile(r"\b(?:wait|pause|hold on)\b"), frozenset({"robot.wait"})),
    "arm": (re.compile(r"\barm\b"), frozenset({"robot.arm.move_to", "robot.arm.home"})),
    "light": (re.compile(r"\b(?:light|led)s?\b"), frozenset({"robot.set_light"})),
    # "scan for a cup" asks whether there is one (detect); "scan the room", "run a sweep" scan.
    "scan": (re.compile(r"\b(?:scan\w*|sweep\w*)\b(?!\s+for\b)"), frozenset({"robot.sensors.scan"})),
}
#: Words for each way of a two-way call: a program calling one way where the command says only the other's words
#: made it up ("unclench the claw" answered by closing it, "go ahead 75 cm" by backing up).
GRIPPER_OPEN = re.compile(
    r"\b(?:open\w*|unclench\w*|releas\w*|let go|loosen\w*|relax\w*|drop\w*|spread|wide|unclamp\w*)\b"
)
GRIPPER_CLOSE = re.compile(
    r"\b(?:close\w*|clench\w*|shut\w*|grip\w*|squeez\w*|clamp\w*|tighten\w*|pinch\w*|grasp\w*|grab\w*|hold|fist)\b"
)
BACKWARD = re.compile(r"\b(?:back\w*|revers\w*|retreat\w*|rear\w*|behind|away)\b")
#: Words that point the camera: looking at an object where the command says none of them made it up.
LOOK = re.compile(
    r"\b(?:look\w*|fac(?:e|ing)|point\w*|camera|photo\w*|pic\w*|snap\w*|watch\w*|eye\w*|stare|focus\w*|aim\w*|"
    r"view\w*|glanc\w*|observ\w*|shots?|images?|captur\w*|check\w*|inspect\w*|examin\w*|turn to|gaze|peek\w*)\b"
)
#: Words that ask about what the robot senses: a program that tests a condition (``if robot.sensors.detect``)
#: where the command says none of them made the condition up ("look at the red ball 3 times"). (A question is
#: one ``detect`` call, asked in too many ways to list: only a condition is checked.)
SENSING = re.compile(
    r"\b(?:if|when\w*|in case|in the event|should|provided|assuming|unless|once|whether|see\w*|saw|spot\w*|"
    r"detect\w*|notic\w*|find\w*|found|come across|run into|encounter\w*|there|any|check\w*|look\w* for|"
    r"search\w*|visible|seen|sight|around|present|"
    r"each time|every time)\b"
)
#: A condition on what the robot senses, in the words people open one with ("if you see", "when there's",
#: "should you spot", "in case you find", "is there ...?"): a command asking one wants a ``detect`` call.
ASKS_SENSING = re.compile(
    r"\b(?:if|when|whenever|in case|in the event|should|provided|assuming|once)\b[^.;:!?]*?"
    r"\b(?:you (?:\w+ )?(?:see|spot|detect|notice|find|come across|run into)|there(?:'s| is| are| be)|"
    r"your sensors detect)\b|\b(?:is|are) there\b|\b(?:do|can) you (?:\w+ )?(?:see|spot|detect)\b"
)
#: Words that say what to do when a condition fails: a program with an ``else`` where the command says none of
#: them made the other branch up.
OTHERWISE = re.compile(r"\b(?:otherwise|else|not|no|none|nothing|nobody|cannot|can't|don't|isn't|aren't|won't)\b")
#: A count that heads a list of steps ("3 times: scan, and if you see a cat, take a photo"): every step after the
#: colon is in the loop, so the program ends with it.
HEADED_COUNT = re.compile(r"(\d+) times\s*:")
#: A count that opens the command before a comma ("twice, turn right and wait 1 second"): the loop comes first and
#: spans every step up to the end of the sentence.
OPENING_COUNT = re.compile(
    r"^\W*(?:(?:please|now|ok|okay|alright|robot|hey|can you|could you)\W+)*(?:repeat\s+|do (?:this|that|it)\s+)?"
    r"(\d+) times\s*,"
)
SENTENCE_BREAK = re.compile(r"[.;!?]\s")
#: A count followed by "then" ("turn right 3 times, then take a photo"): the loop closes at the count, so a step
#: follows it.
COUNT_THEN = re.compile(r"(\d+) times\s*,?\s*(?:and\s+)?(?:then|after that|afterwards|next)\b")
#: A count that closes the command after a comma ("wait 3 seconds then turn left, 4 times in total"): every step
#: before it is in the loop, so the program is that one loop.
CLOSING_COUNT = re.compile(
    r",\s*(\d+) times(?: in total| over| in a row| altogether)?\W*(?:please|thanks|thank you|now|for me)?\W*$"
)
#: The words that name a turn's side; a shape's turns ("4 turns of 90 degrees") and turning around take either.
LEFT = re.compile(r"\bleft\b|counter-?clockwise|anti-?clockwise|\baround\b|u-?turn|turns of")
RIGHT = re.compile(r"\bright\b|(?<!counter)(?<!counter-)(?<!anti)(?<!anti-)clockwise|turns of")


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
    return _left_out(shown, _parsed(code))


def _parsed(code: str) -> Program | None:
    try:
        return parse_program(code)
    except RobotCodeError:
        return None


def _left_out(shown: str, program: Program | None) -> list[str]:
    numbers, quotes = stated_numbers(shown), quoted_texts(shown)
    used, said = _uses(program) if program is not None else ([], [])
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


def _unsaid(shown: str, calls: list[Call]) -> str:
    """The prompt in lower case without its quoted text and without what the program says aloud (the words of
    "say I am in the kitchen" name no place the robot goes)."""
    text = free_text(shown).lower()
    for c in calls:
        said = c.kwargs.get("text") if c.name == "robot.say" else None
        if isinstance(said, str) and _bare(said):
            text = re.sub(rf"(?<!\w){re.escape(_bare(said).lower())}(?!\w)", " ", text)
    return text


def unstated(command: str, code: str, *, normalized: bool = False) -> list[str]:
    """What ``code`` names that ``command`` never mentions (outside quoted text): colours, object types and
    places by their names, and ``take_photo``, ``go_home``, ``turn_left`` or ``turn_right`` by the calls; a
    condition, an ``else`` branch, homing the arm; and ``"said"`` for a said text that is not, as written, in
    the command (speech is said as typed: "say hi" is not "hi hi", nor " hi")."""
    shown = command if normalized else normalize_command(command)
    program = _parsed(code)
    return _unstated(shown, program) + _not_typed(command, shown, program) if program is not None else []


def _not_typed(command: str, shown: str, program: Program) -> list[str]:
    """``["said"]`` where a said text is not word for word in the command as typed or as shown, or has spaces at
    an end."""
    for c in _calls(program):
        text = c.kwargs.get("text") if c.name == "robot.say" else None
        if isinstance(text, str) and (text != text.strip() or (text not in shown and text not in command)):
            return ["said"]
    return []


def _blocks(program: Program) -> Iterator[Program]:
    """A program's blocks: the program itself, then every loop body and branch within it, nested ones too."""
    yield program
    for stmt in program:
        if isinstance(stmt, Loop):
            yield from _blocks(stmt.body)
        elif isinstance(stmt, If):
            yield from _blocks(stmt.body)
            yield from _blocks(stmt.orelse)


def _ifs(program: Program) -> list[If]:
    return [stmt for block in _blocks(program) for stmt in block if isinstance(stmt, If)]


def _unstated(shown: str, program: Program) -> list[str]:
    calls = _calls(program)
    text = free_text(shown).lower()
    words = set(re.findall(r"[a-z]+", text))
    named = [v for c in calls for k, v in c.kwargs.items() if k in ("color", "object_type") and v != "any"]
    made_up = [v for v in dict.fromkeys(named) if isinstance(v, str) and not _forms(v) & words]
    places = [c.kwargs.get("location") for c in calls]
    made_up += [p for p in dict.fromkeys(places) if p in PLACE_WORDS and not re.search(PLACE_WORDS[p], text)]
    names = {c.name for c in calls}
    # Turning around (180 degrees) takes either side.
    sides = {
        c.name for c in calls if c.name in ("robot.turn_left", "robot.turn_right") and c.kwargs.get("angle") != 180
    }
    ifs = _ifs(program)
    if ifs and not SENSING.search(text):
        made_up.append("condition")
    if any(stmt.orelse for stmt in ifs) and not OTHERWISE.search(text):
        made_up.append("else")
    if "robot.camera.take_photo" in names and not PHOTO.search(text):
        made_up.append("take_photo")
    targets = [c.kwargs.get("target") for c in calls if c.name == "robot.follow"]
    made_up += [t for t in dict.fromkeys(targets) if isinstance(t, str) and not _forms(t) & words]
    if "robot.gripper.close" in names and GRIPPER_OPEN.search(text) and not GRIPPER_CLOSE.search(text):
        made_up.append("gripper.close")
    if "robot.gripper.open" in names and GRIPPER_CLOSE.search(text) and not GRIPPER_OPEN.search(text):
        made_up.append("gripper.open")
    if "robot.move_backward" in names and not BACKWARD.search(text):
        made_up.append("move_backward")
    if "robot.camera.look_at" in names and not LOOK.search(text):
        made_up.append("look_at")
    if "robot.arm.home" in names and not ARM.search(text):
        made_up.append("arm")
    if "robot.go_home" in names and not HOME.search(text):
        made_up.append("go_home")
    if "robot.turn_left" in sides and RIGHT.search(text) and not LEFT.search(text):
        made_up.append("turn_left")
    if "robot.turn_right" in sides and LEFT.search(text) and not RIGHT.search(text):
        made_up.append("turn_right")
    return made_up


def unused(command: str, code: str, *, normalized: bool = False) -> list[str]:
    """What ``command`` names (outside quoted text and what the program says) that no call of ``code`` uses: a
    colour, a room, the charger or the front door, or an action of :data:`ACTIONS` (a photo, home, stopping,
    waiting, the arm). Code that does not parse uses nothing."""
    shown = command if normalized else normalize_command(command)
    program = _parsed(code)
    return _unused(shown, _calls(program) if program is not None else [])


def _unused(shown: str, calls: list[Call]) -> list[str]:
    text = _unsaid(shown, calls)
    words = set(re.findall(r"[a-z]+", text))
    used = {v for c in calls for v in c.kwargs.values() if isinstance(v, str)}
    names = {c.name for c in calls}
    missing = [color for color in COLORS if color != "any" and color in words and color not in used]
    missing += [place for place, named in DESTINATIONS.items() if named.search(text) and place not in used]
    missing += [what for what, (asked, doers) in ACTIONS.items() if asked.search(text) and not names & doers]
    if ASKS_SENSING.search(text) and "robot.sensors.detect" not in names:
        missing.append("detect")
    return missing


def misscoped(command: str, code: str, *, normalized: bool = False) -> list[str]:
    """``["loop"]`` where ``code``'s loop does not span the steps ``command`` counts: after a heading count ("3
    times: a, then b") nothing follows the loop, with a closing count ("a, then b, 3 times") nothing lies
    outside it, an opening count ("twice, a and b") opens the loop, which spans the rest of the sentence, and a
    count followed by "then" ("a 3 times, then b") closes its loop, which a step follows.
    Code that does not parse is left to the other checks."""
    shown = command if normalized else normalize_command(command)
    program = _parsed(code)
    return _misscoped(shown, program) if program is not None else []


def _loops(program: Program) -> Iterator[tuple[Program, int, Loop]]:
    """Every loop of a program, nested ones too, with the block it is in and its place there."""
    for block in _blocks(program):
        for i, stmt in enumerate(block):
            if isinstance(stmt, Loop):
                yield block, i, stmt


def _misscoped(shown: str, program: Program) -> list[str]:
    text = free_text(shown).lower()
    last = program[-1] if program else None
    headed, closing = HEADED_COUNT.search(text), CLOSING_COUNT.search(text)
    if headed and not (isinstance(last, Loop) and last.count == int(headed.group(1))):
        return ["loop"]
    if closing and not (len(program) == 1 and isinstance(last, Loop) and last.count == int(closing.group(1))):
        return ["loop"]
    for then in COUNT_THEN.finditer(text):
        if not any(loop.count == int(then.group(1)) and i + 1 < len(block) for block, i, loop in _loops(program)):
            return ["loop"]
    opening = OPENING_COUNT.search(text)
    if opening:
        first = program[0] if program else None
        alone = not SENTENCE_BREAK.search(text[opening.end() :].rstrip(" .!?"))
        if not (isinstance(first, Loop) and first.count == int(opening.group(1)) and (len(program) == 1 or not alone)):
            return ["loop"]
    return []


def mismatch(command: str, code: str) -> list[str]:
    """Everything :func:`left_out`, :func:`unused`, :func:`unstated` and :func:`misscoped` find: empty when the
    program fits its command."""
    shown, program = normalize_command(command), _parsed(code)
    if program is None:
        return _left_out(shown, None) + _unused(shown, [])
    return (
        _left_out(shown, program)
        + _unused(shown, _calls(program))
        + _unstated(shown, program)
        + _not_typed(command, shown, program)
        + _misscoped(shown, program)
    )
