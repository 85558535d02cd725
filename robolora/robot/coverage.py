"""What a command states that its program leaves out (every number and quoted text it gives), and what the
program names that the command never states (a colour or an object).

People state quantities because they matter: "take 3 photos" needs a loop of 3, "wait 10 seconds" a wait of
10. The numbers are read from the prompt the model is shown (:func:`~robolora.robot.normalize.normalize_command`:
quantities in the API's units, in digits), outside quoted text and list markers ("1. go ...", "step 2: ...").
A program uses a number when one of its arguments (within the canonical rounding), loop counts or said texts
holds it, one use per mention: "3 feet forward, then 3 feet back" needs two. A quoted text is used when the
program says it (its final punctuation aside).

Colours and object types are the words people type ("the red cups" asks about `cup` and `red`), so a program
naming one the command never mentions ("photo please" answered by looking at a `person`) made it up, as did one
naming a room, a colour or a plural as the object ("bathroom pls" is no pick-up of a `bathroom`; "my keys" is a
`key`). The same holds for a place (`kitchen`), a photo, going home and a turn's side: a program that drives to a
place, takes a photo or goes home where the command names none, or turns right where the command says only "left"
("turn around" alone is a left turn), made it up; likewise a follow target the command never names, closing the
gripper where it says only "unclench", backing up where it says nothing of going back, picking up where it says
nothing of taking, or pointing the camera where it says nothing of looking (a photo word points it only at what it
names: "a photo of the cat", not "take a photo if you see a bird").

The same holds for the blocks of a program: a condition (``if robot.sensors.detect``) where the command asks
about nothing the robot senses or only asks a question ("is there a towel?"), an ``else`` branch where it says
nothing of what to do otherwise, a loop where it counts nothing, or homing the arm where it names no arm, were made
up, as was speech the command never typed ("say hi" is not "hi hi") or starts mid-phrase ("say catch you later" is
not "you later"). A program's blocks and order follow the command's words (:func:`misscoped`): a loop spans the
steps its count is said of (all the steps after "3 times:", all before a closing ", 3 times", the rest of a
sentence opened by "twice,", the steps after "each time", none after "3 times, then"); a named shape is a loop of
its corners at its angle; each "otherwise" opens an ``else``; a step in a sentence after a condition's comes after
the ``if``; each photo named is a photo taken; and "before you go back to your charger, X" goes last.

The other way round, a command that names a colour, a room, the charger or the front door, a photo, home, a
light, a scan, following, "quickly" or "slowly", turning around or an arm position by its axes ("x 0 y 0 z 0.8")
(outside what the program says aloud) wants a call that uses it: "go to the kitchen, then grab the cup" answered by
the grab alone dropped a step (:func:`unused`). A condition on what the robot senses ("when you see a person, say
hi", "should there be a cat around, ...", "is a phone in view?") wants a ``detect`` call.

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
    ['person', 'look_at']
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
#: A photo as a thing, once per photo ("take a photo, then another photo" is two; "snap a photo" one).
PHOTO_NOUN = re.compile(
    r"(?<!each )(?<!every )(?<!the )\b(?:photo\w*|fotos?|pictures?|pics?|snapshots?|shots?|images?)\b(?!\s*\()"
)
PHOTO = re.compile(r"\b(?:photo\w*|fotos?|pictures?|pics?|snapshots?|snap|shots?|images?|capture)\b")
HOME = re.compile(r"\bhome\b|\bbase\b|start(?:ed|ing)")
#: The arm, as people name it: homing the arm where the command names none ("go home") made it up.
ARM = re.compile(r"\b(?:arm|gripper|claw|hand|end effector)\b")
#: Words that ask to follow someone: a command saying one wants a ``follow`` call ("tail the dog from 1.5 m").
FOLLOW = re.compile(
    r"\b(?:(?<!the )follow(?:s|ed)?(?!\s+(?:these|this|my|the)\s+(?:steps?|instructions?|list|orders?|plan))|"
    r"tail\w*|trail\w*|shadow\w*|tag along|go after|keep up with|stay with)\b"
)
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
    "follow": (FOLLOW, frozenset({"robot.follow"})),
    "gripper.open": (
        re.compile(r"\bopen\w*\s+(?:the|your|its|that)\s+(?:gripper|claw|hand)"),
        frozenset({"robot.gripper.open"}),
    ),
    "gripper.close": (
        re.compile(r"\b(?:close|shut)\w*\s+(?:the|your|its|that)\s+(?:gripper|claw|hand)"),
        frozenset({"robot.gripper.close"}),
    ),
}
#: Words that ask to pick something up: picking up where the command says none of them made it up ("pop it in the
#: box" is placing; "is there a towel in there?" asks only).
PICK = re.compile(
    r"\b(?:pick\w*|grab\w*|take|takes|taking|took|get|gets|getting|got|lift\w*|fetch\w*|collect\w*|hold\w*|"
    r"grasp\w*|snatch\w*|retriev\w*|nab\w*|scoop\w*|carry\w*|bring\w*|seize\w*|clutch\w*|pluck\w*|"
    r"claim\w*|secure\w*|acquire\w*|gather\w*|obtain\w*|hoist\w*|raise\w*|snag\w*|yoink\w*|nick|swipe|score|"
    r"up)\b"
)
#: Turning to face the other way: a command saying it wants a 180 degree turn.
TURN_AROUND = re.compile(
    r"\b(?:turn\w*|spin\w*|swing\w*|whirl\w*|rotat\w*|pivot\w*)\s+(?:\w+\s+)?around\b|"
    r"\b(?:other|opposite) (?:way|direction)|about[- ]face|\b180(?:\.0)?\s*(?:degrees?|deg\b|°)"
)
#: An arm position with its axes named ("x 0.1 y 0.2 z 0.3", "x=0, y=0, z=0.8"): the call's x, y and z.
_AXIS = r"\s*[=:]?\s*(-?\d*\.?\d+)\s*(?:m\b)?\s*,?\s*(?:and\s+)?"
ARM_AT = re.compile(rf"\bx{_AXIS}y{_AXIS}z{_AXIS}")
#: A command opened by where the robot goes afterwards ("before you go back to your charger, take a photo"):
#: the going comes last.
BEFORE_GOING = re.compile(
    r"^\W*(?:(?:please|now|ok|okay|hey|robot|and)\W+)*before\s+(?:you\s+)?(?:go|going|head|heading|return|returning|"
    r"drive|driving|come|coming|leave|leaving|move|moving)\b[^,;.]*[,;]"
)
#: The speed words the API doc fixes: "quickly"/"fast" is 2.0 m/s, "slowly" 0.5; a command saying one wants a
#: call at that speed.
SPEED_WORDS = ((re.compile(r"\b(?:quickly|fast)\b"), 2.0), (re.compile(r"\bslowly\b"), 0.5))
#: Words that count: a loop where the command has none of them ("scan 3 m around") made it up.
COUNTING = re.compile(
    r"\b(?:\d+\s*(?:\w+\s+)?(?:times?|x|laps?|rounds?|loops?|circuits?|reps?|repetitions?|sides?|corners?|"
    r"photos|pictures|pics|shots|snaps|snapshots|images|turns|spins|rotations|flashes|blinks)|twice|thrice|repeat\w*|again|square\w*|triangle\w*|rectangle\w*|pentagon\w*|"
    r"hexagon\w*|octagon\w*|laps?|each|every|times)\b"
    # "do 10 scans", "take 3 shots": a count of anything but a unit
    r"|\b\d+\s+(?:[a-z]+\s+)?(?!(?:seconds|secs|minutes|mins|hours|meters|metres|degrees|feet|foot|inches|"
    r"centimet\w+|millimet\w+|kilomet\w+|ms|cms|mms)\b)[a-z]+s\b"
)
#: Shapes people name, with the corners a loop drives and the angle it turns at each.
SHAPES = {"triangle": (3, 120.0), "square": (4, 90.0)}
#: Object types that are no objects: a place, a colour, a pronoun or nothing ("bathroom pls" is no pick-up).
NOT_OBJECTS = frozenset(
    {*PLACE_WORDS, "room", "area", "surroundings", "it", "one", "that", "this", "them", "none", "nothing", "any"}
    - {"box", "table", "shelf", "floor"}
)
#: What may come just before unquoted speech: a word that says it ("say", "tell them") or a colon.
SPEECH_LEAD = re.compile(
    r"(?:\b(?:say|says|saying|said|s+(?:a+y*|y+a*)|sai|sey|tell|tells|telling|announce\w*|speak|shout\w*|yell\w*|whisper\w*|"
    r"utter|declare|state|greet|reply|respond|answer|call out|read out|out loud|aloud|that|with|"
    r"words?|phrase|message|me|them|him|her|us|everyone|everybody|people|user|room)|[:,\-])\W*$"
)
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
    r"\b(?:look\w*|fac(?:e|ing)|point\w*|camera|watch\w*|eye\w*|stare|focus\w*|aim\w*|"
    r"view\w*|glanc\w*|observ\w*|captur\w*|check\w*(?! (?:whether|if|for|that))|inspect\w*|examin\w*|"
    r"turn to|gaze|peek\w*)\b"
)
#: A photo word: it points the camera at an object it names ("a photo of the cat", "photograph the black cat",
#: "a picture of it"), not at one a condition asks about ("take a photo if you see a bird").
PHOTO_OF = r"\b(?:photo\w*|fotos?|pic\w*|snap\w*|shots?|images?)\s+(?:of\s+)?(?:[a-z]+\s+){0,3}?"
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
    r"\b(?:(?:you|u|ya) (?:\w+ )?(?:see|spot|detect|notice|find|come across|run into)|there(?:'s| is| are| be)|"
    r"your sensors detect)\b|\b(?:is|are) there\b|\b(?:do|can) (?:you|u) (?:\w+ )?(?:see|spot|detect)\b|"
    r"\b(?:is|are) (?:a|an|the|any|my|your)\b[^.;:!?]*\b(?:in view|in sight|visible)\b"
)
#: Words that say what to do when a condition fails: a program with an ``else`` where the command says none of
#: them made the other branch up.
OTHERWISE = re.compile(
    r"\b(?:otherwise|else|not|no|none|nothing|nobody|cannot|can't|don't|isn't|aren't|won't|failing|neither)\b"
)
#: Words that open the other branch of a condition ("otherwise", "if not", "failing that"): each asks for an
#: ``else``, so "if a, x. otherwise, if b, y. otherwise z" wants two.
ELSE_ASKED = re.compile(
    r"\b(?:otherwise|else|if not|if (?:there|it|they|you)\s*(?:is|are|do|does|can)?\s*(?:n't|not)\b(?!\s+mind)|"
    r"if (?:there|it|they)(?:'s| is| are) (?:none|nothing|no)\b|if (?:none|neither|nothing)|failing that|"
    r"if you (?:don't|do not|can't|cannot)(?: see| find| spot)?\s*(?:one|it|any|them)?\s*[,;.]|"
    r"if (?:there isn't|there aren't|it isn't|it's not|there's not))\b"
)
#: Words that make a condition of what follows ("if", "when you see", "should there be", "in case"): a
#: question alone ("go to the bathroom. is there a towel?") is one ``detect`` call, not a condition.
CONDITIONAL = re.compile(
    r"\b(?:if|iff|when\w*|wen|whn|in case|incase|in the event|should|provided|assuming|once|only|as soon as|"
    r"each time|every time|any time|the moment|otherwise|else|unless)\b"
)
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
#: Words of a sentence that asks nothing ("Thanks!", "That's all.").
_POLITE = frozenset(
    "thanks thank you thx cheers please ok okay great cool that's that is it all much appreciated bye".split()
)
#: Where a sentence ends ("... Slowly now" goes on the same one).
SENTENCE_END = re.compile(r"(?<![.])[.!?]\s")
#: A count followed by "then" ("turn right 3 times, then take a photo"): the loop closes at the count, so a step
#: follows it.
COUNT_THEN = re.compile(r"(\d+) times\s*,?\s*(?:and\s+)?(?:then|after that|afterwards|next)\b")
#: A count that closes the command after a comma ("wait 3 seconds then turn left, 4 times in total"): every step
#: before it is in the loop, so the program is that one loop.
CLOSING_COUNT = re.compile(
    r",\s*(\d+) times(?: in total| over| in a row| altogether)?\W*(?:please|thanks|thank you|now|for me)?\W*$"
)
#: The words that name a turn's side; a shape's turns ("4 turns of 90 degrees") and turning around take either.
LEFT = re.compile(
    r"\bleft\b|counter-?clockwise|anti-?clockwise|u-?turn|"
    r"\b(?:turn\w*|spin\w*|swing\w*|whirl\w*|rotat\w*|pivot\w*)\s+(?:\w+\s+)?around\b"
)
RIGHT = re.compile(r"\bright\b|(?<!counter)(?<!counter-)(?<!anti)(?<!anti-)clockwise")


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
    """``["said"]`` where a said text is not word for word in the command as typed or as shown, has spaces at an
    end, or (unquoted) starts mid-phrase: speech starts after the word that says it ("say catch you later" is
    not "you later")."""
    quoted = [_bare(q) for q in quoted_texts(shown) + quoted_texts(command)]
    for c in _calls(program):
        text = c.kwargs.get("text") if c.name == "robot.say" else None
        if not isinstance(text, str):
            continue
        if text != text.strip() or (text not in shown and text not in command):
            return ["said"]
        if _bare(text) in quoted or not _bare(text):
            continue
        where = command if text in command else shown
        starts = [m.start() for m in re.finditer(re.escape(text), where)]
        if starts and not any(i == 0 or SPEECH_LEAD.search(where[:i].lower()) for i in starts):
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


def _plural(noun: object, words: set[str]) -> bool:
    """An object type copied from a plural the command typed ("keys", "apples"): the API names one kind, in the
    singular. Words whose -s is not a plural's ("glass", "bus", "iris") and short ones ("gas") are left alone."""
    if not isinstance(noun, str) or len(noun) < 4 or not noun.endswith("s") or noun.endswith(("ss", "us", "is")):
        return False
    return noun in words


def _unstated(shown: str, program: Program) -> list[str]:
    calls = _calls(program)
    text = free_text(shown).lower()
    words = set(re.findall(r"[a-z]+", text))
    named = [v for c in calls for k, v in c.kwargs.items() if k in ("color", "object_type") and v != "any"]
    made_up = [v for v in dict.fromkeys(named) if isinstance(v, str) and not _forms(v) & words]
    places = [c.kwargs.get("location") for c in calls]
    made_up += [p for p in dict.fromkeys(places) if p in PLACE_WORDS and not re.search(PLACE_WORDS[p], text)]
    names = {c.name for c in calls}
    # Turning around (180 degrees) is a left turn where no side is said, and takes a right one where "right" is.
    sides = {
        c.name
        for c in calls
        if c.name == "robot.turn_right" or (c.name == "robot.turn_left" and c.kwargs.get("angle") != 180)
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
    looked = [c.kwargs.get("object_type") for c in calls if c.name == "robot.camera.look_at"]
    if looked and not LOOK.search(text):
        pronouns = "it|them|that|this|one|those"
        shot = [
            o
            for o in looked
            if isinstance(o, str) and re.search(rf"{PHOTO_OF}(?:{'|'.join(_forms(o))}|{pronouns})\b", text)
        ]
        if len(shot) < len(looked):
            made_up.append("look_at")
    if ifs and not CONDITIONAL.search(text) and "condition" not in made_up:
        made_up.append("condition")
    objects = [c.kwargs.get("object_type") for c in calls]
    made_up += [o for o in dict.fromkeys(objects) if o in NOT_OBJECTS or o in COLORS or _plural(o, words)]
    if "robot.gripper.pick_up" in names and not PICK.search(text):
        made_up.append("pick_up")
    loops = [stmt for block in _blocks(program) for stmt in block if isinstance(stmt, Loop)]
    if loops and not COUNTING.search(text):
        made_up.append("loop")
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
    angles = {c.kwargs.get("angle") for c in calls}
    if TURN_AROUND.search(text) and 180.0 not in angles:
        missing.append("turn around")
    arm = [c for c in calls if c.name == "robot.arm.move_to"]
    for labelled in ARM_AT.finditer(text):
        at = tuple(float(v) for v in labelled.groups())
        if not any(
            all(abs(c.kwargs.get(k, 0.0) - v) <= TOLERANCE for k, v in zip("xyz", at, strict=True)) for c in arm
        ):
            missing.append("x y z")
    speeds = {c.kwargs.get("speed") for c in calls}
    missing += [f"speed {speed:g}" for said, speed in SPEED_WORDS if said.search(text) and speed not in speeds]
    return missing


def misscoped(command: str, code: str, *, normalized: bool = False) -> list[str]:
    """What in ``code``'s blocks and order goes against ``command``'s words: ``["loop"]`` where a loop does not
    span the steps the command counts (after a heading count, "3 times: a, then b", nothing follows the loop
    unless a later sentence adds steps; with a closing count, "a, then b, 3 times", nothing lies outside it; an
    opening count, "twice, a and b", opens the loop, which spans the rest of the sentence; a count followed by
    "then", "a 3 times, then b", closes its loop, which a step follows; "6 times; each time, ..." ends the program
    inside the loop), or a named shape is not a loop of its corners at its angle; ``["else"]`` where the command
    says "otherwise" more often than the program has ``else`` branches; ``["condition"]`` where a sentence after the
    last condition's adds steps but the program ends inside a condition; ``["take_photo"]`` where it names more
    photos than the program takes; ``["order"]`` where "before you go to X, ..." goes to X first.
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


def _last_path(program: Program) -> list[Program | Loop | If]:
    """The statements a program ends with: its last one, that one's last, and so on into nested blocks."""
    path: list[Program | Loop | If] = []
    block = program
    while block:
        last = block[-1]
        path.append(last)
        block = last.body if isinstance(last, Loop) else (last.orelse or last.body) if isinstance(last, If) else []
    return path


def _goes_to(call: Call, words: str) -> bool:
    """Whether ``call`` drives to a place (or home) that ``words`` name."""
    if call.name == "robot.go_home":
        return bool(HOME.search(words))
    place = call.kwargs.get("location") if call.name == "robot.navigate_to" else None
    return isinstance(place, str) and place in PLACE_WORDS and bool(re.search(PLACE_WORDS[place], words))


def _misscoped(shown: str, program: Program) -> list[str]:
    text = free_text(shown).lower()
    last = program[-1] if program else None
    headed, closing = HEADED_COUNT.search(text), CLOSING_COUNT.search(text)
    # "3 times: a, b" ends the program with its loop, unless a later sentence adds steps ("... Once done, go home").
    later = headed and SENTENCE_BREAK.search(text[headed.end() :].rstrip(" .!?"))
    if (
        headed
        and not later
        and not any(isinstance(s, Loop) and s.count == int(headed.group(1)) for s in _last_path(program))
    ):
        return ["loop"]
    if closing and not (len(program) == 1 and isinstance(last, Loop) and last.count == int(closing.group(1))):
        return ["loop"]
    for then in COUNT_THEN.finditer(text):
        if not any(loop.count == int(then.group(1)) and i + 1 < len(block) for block, i, loop in _loops(program)):
            return ["loop"]
    ifs = _ifs(program)
    if len(ELSE_ASKED.findall(text)) > sum(1 for stmt in ifs if stmt.orelse):
        return ["else"]
    photos = [c for c in _calls(program) if c.name == "robot.camera.take_photo"]
    if len(PHOTO_NOUN.findall(text)) > len(photos):
        return ["take_photo"]
    before, first = BEFORE_GOING.match(text), program[0] if program else None
    if before and isinstance(first, Call) and _goes_to(first, before.group()):
        return ["order"]
    # A condition's sentence ends it: a step in a later sentence ("if you see a ball, pick it up. Then go home")
    # comes after the ``if``, so the program does not end inside one.
    sentences = [s for s in SENTENCE_END.split(text.strip().rstrip(" .!?")) if set(re.findall("[a-z']+", s)) - _POLITE]
    opened = [i for i, s in enumerate(sentences) if CONDITIONAL.search(s)]
    tail = sentences[opened[-1] + 1 :] if opened else []
    if isinstance(last, If) and tail and not any(ELSE_ASKED.search(s) or OTHERWISE.search(s) for s in tail):
        return ["condition"]
    for shape, (corners, angle) in SHAPES.items():
        if re.search(rf"\b{shape}s?\b", text) and not any(
            loop.count == corners and any(getattr(c, "kwargs", {}).get("angle") == angle for c in loop.body)
            for _, _, loop in _loops(program)
        ):
            return ["loop"]
    each = re.search(r"(\d+) times\s*[,;:]?\s*(?:and\s+)?(?:each|every) time\b", text)
    if (
        each
        and not SENTENCE_END.search(text[each.end() :].rstrip(" .!?"))
        and not (isinstance(last, Loop) and last.count == int(each.group(1)))
    ):
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
