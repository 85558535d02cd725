"""Synthetic dataset: natural-language robot commands paired with canonical robot code.

The generator is a small grammar. Per-call phrase builders return a :class:`Phrase` (the words and
the program they mean); combinators join phrases into sequences, loops and conditionals; a decorator
layer then adds what people add to commands (politeness, addressing the robot, casing, punctuation,
the odd typo). Programs are built as IR and rendered by :func:`format_program`, so every output is
canonical by construction, and every number in an output is the spoken number after the spec's unit
conversion ("50 cm" -> ``distance=0.5``, "3 feet" -> ``0.91``, "two minutes" -> ``seconds=120.0``).

Conventions the spec leaves open, kept the same everywhere:

* "follow me" / "come with me" / "stay with me" -> ``robot.follow(target="me")``; following anyone or
  anything else uses the spoken noun without its article ("follow that dog" -> ``target="dog"``).
* A number without a unit is metres for distances, degrees for angles, seconds for waits and m/s for speed.
* "say hello" -> ``text="hello"``: unquoted text is the words after the verb, verbatim, without the
  sentence's final punctuation; quoted text is the quoted string verbatim.
* "take a photo of the red ball" -> ``look_at(object_type="ball", color="red")`` then ``take_photo()``.
* "look for a cup" / "is there a cup?" on their own -> ``robot.sensors.detect(...)``; in "if you see a
  cup, ..." the detect is only the ``if``'s test.
* "pick it up" after "if you see a large red ball" picks up that object with the spoken colour and size
  (``detect`` has no size, so the size only reaches ``pick_up``).
* "bring it to the kitchen" (after a pick-up) -> ``navigate_to(location="kitchen")``.
* "do a square" -> 4 x (forward 1 m, ``turn_right`` 90); other polygons turn 360/sides; "to the left" or
  "counterclockwise" turns left.
* "do a U-turn" / "do a 180" / "face the other way" are "turn around": ``turn_left(angle=180.0)``, or
  ``turn_right`` where the words say right ("face the opposite direction, turning right").
* A plural in a question asks about one kind of thing, named singular: "any apples around?" ->
  ``detect(object_type="apple")``; "do you see my keys?" -> ``object_type="key"``.
* A place said bare with a courtesy ("kitchen please", "to the office, thanks") is going there.

Example:
    >>> records = generate_records(7, seed=0)
    >>> sorted({r["category"] for r in records}) == sorted(CATEGORY_MIX)
    True
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from robolora.fileio import atomic_write_text
from robolora.robot.normalize import ONES_WORDS, SHAPE_SIDES, TENS_WORDS, digits
from robolora.robot.program import Call, If, Loop, Program, format_program
from robolora.robot.spec import CALLS, COLORS, SIZES

#: Share of each category in a generated dataset (sums to 1).
CATEGORY_MIX: dict[str, float] = {
    "movement": 0.15,
    "navigation": 0.10,
    "manipulation": 0.15,
    "perception": 0.10,
    "communication": 0.10,
    "sequence": 0.22,
    "control_flow": 0.18,
}

#: Fraction of records that get one realistic single-character typo in a non-number word.
TYPO_RATE = 0.04

#: Fraction of records typed without punctuation ("is there a cup if yes grab it"), where that stays unambiguous.
PLAIN_RATE = 0.08

#: Draws per record before a category counts as exhausted (no unseen input found).
MAX_TRIES = 300

Rng = random.Random
T = TypeVar("T")

# Spans the decorators must leave alone (the text of a `say`): typos and casing would change the output.
_OPEN, _CLOSE = "\ue000", "\ue001"
_PROTECTED = re.compile(f"({_OPEN}[^{_CLOSE}]*{_CLOSE})")


@dataclass(frozen=True)
class Phrase:
    """Words and the program they mean.

    ``mood`` says which decorations fit: ``imperative`` ("please ..."), ``statement`` (an if-sentence,
    only addressed: "robot, if ..."), ``question`` ("is there a cup?") or ``terse`` (words that are the whole
    command, courtesy included: "kitchen please", only addressed).
    """

    text: str
    program: Program
    mood: str = "imperative"
    #: The repetition count comes last ("a and b, 3 times"): a step said before it would read as repeated too.
    count_last: bool = False
    #: The words close the block ("turn left 3 times", "take 4 photos"): a step joined after it with "then"
    #: reads as coming after the loop, not inside it.
    closed: bool = False


class _Weighted(Generic[T]):
    """A weighted choice over a fixed table, drawn with the caller's Random."""

    def __init__(self, pairs: Sequence[tuple[T, float]]) -> None:
        self.items = [item for item, _ in pairs]
        self.cum = list(itertools.accumulate(weight for _, weight in pairs))

    def __call__(self, rng: Rng) -> T:
        return rng.choices(self.items, cum_weights=self.cum)[0]


def _pick(rng: Rng, table: Sequence[T], more: Sequence[T], share: float) -> T:
    """A template of ``table``, or with probability ``share`` one of ``more`` (rarer wordings, drawn less often)."""
    return rng.choice(more if rng.random() < share else table)


def _protect(text: str) -> str:
    return f"{_OPEN}{text}{_CLOSE}"


def _call(name: str, **kwargs: object) -> Call:
    return Call(name, kwargs)


# ---------------------------------------------------------------------------------------------------
# Numbers and quantities
# ---------------------------------------------------------------------------------------------------

# Words a typo must never touch: a misspelt number or colour would change what the command means.
_NO_TYPO = frozenset(
    list(ONES_WORDS)
    + list(TENS_WORDS[2:])
    + ["hundred", "half", "quarter", "couple", "twice", "thrice", "point", "minus", "negative", "once"]
    + list(COLORS)
    + ["small", "little", "tiny", "medium", "large", "big", "then", "than"]
)


def int_words(n: int, rng: Rng) -> str:
    """English words for 0 <= n < 1000, with the usual variants ("forty-five", "a hundred and eighty")."""
    if n < 20:
        return ONES_WORDS[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return TENS_WORDS[tens] if not ones else TENS_WORDS[tens] + rng.choice(("-", " ")) + ONES_WORDS[ones]
    hundreds, rest = divmod(n, 100)
    head = rng.choice(("one hundred", "a hundred")) if hundreds == 1 else f"{ONES_WORDS[hundreds]} hundred"
    return head if not rest else head + rng.choice((" and ", " ")) + int_words(rest, rng)


@dataclass(frozen=True)
class Unit:
    """A spoken unit: its names and abbreviations and the factor to the spec's unit."""

    factor: float
    singular: tuple[str, ...]
    plural: tuple[str, ...]
    abbrevs: tuple[str, ...] = ()  # appended to digits verbatim (" cm", "cm")
    article: str = "a"


METRE = Unit(1.0, ("meter", "metre"), ("meters", "metres"), (" m", "m"))
CENTIMETRE = Unit(0.01, ("centimeter", "centimetre"), ("centimeters", "centimetres"), (" cm", "cm"))
FOOT = Unit(0.3048, ("foot",), ("feet",), (" ft", "ft"))
INCH = Unit(0.0254, ("inch",), ("inches",), article="an")
DEGREE = Unit(1.0, ("degree",), ("degrees",), ("°", " deg"))
SECOND = Unit(1.0, ("second",), ("seconds",), (" s", "s", " sec", " secs"))
MINUTE = Unit(60.0, ("minute",), ("minutes",), (" min", " mins", "min"))
METRE_PER_SECOND = Unit(
    1.0, ("meter per second", "metre per second"), ("meters per second", "metres per second"), (" m/s", "m/s")
)
CENTIMETRE_PER_SECOND = Unit(
    0.01, ("centimeter per second",), ("centimeters per second", "centimetres per second"), (" cm/s",)
)


def amount(rng: Rng, value: float, unit: Unit) -> str:
    """How a person might write ``value`` of ``unit``: "2.5 m", "two and a half metres", "half a foot"."""
    r = rng.random()
    if unit.abbrevs and r < 0.25:
        return digits(value) + rng.choice(unit.abbrevs)
    singular, plural = rng.choice(unit.singular), rng.choice(unit.plural)
    whole, frac = int(value), round(value - int(value), 2)
    # People spell out whole numbers and halves; "two point three" is rare, so mostly digits for other decimals.
    wordy = frac in (0, 0.5) or value == 0.25 or rng.random() < 0.1
    if r < 0.62 or not wordy or value >= 1000 or value < 0:
        number = digits(value)
        if number.startswith("0.") and rng.random() < 0.1:
            number = number[1:]  # ".5 m"
        return f"{number} {singular if value == 1 else plural}"
    art = unit.article
    if value == 0.5:
        return f"half {art} {singular}"
    if value == 0.25:
        return f"a quarter of {art} {singular}"
    if value == 1:
        return rng.choice((f"{art} {singular}", f"one {singular}"))
    if value == 2 and rng.random() < 0.5:
        return rng.choice((f"a couple of {plural}", f"a couple {plural}"))
    if frac == 0:
        return f"{int_words(whole, rng)} {plural}"
    if frac == 0.5 and whole >= 1:
        if whole == 1 and rng.random() < 0.4:
            return f"{art} {singular} and a half"
        return f"{int_words(whole, rng)} and a half {plural}"
    decimals = digits(frac)[2:]
    return f"{int_words(whole, rng)} point {' '.join(ONES_WORDS[int(d)] for d in decimals)} {plural}"


def _sampler(common: Sequence[float], lo: float, hi: float, step: float) -> Callable[[Rng], float]:
    """Half the time a round, common value; otherwise any multiple of ``step`` in [lo, hi]."""
    n_lo, n_hi = round(lo / step), round(hi / step)

    def sample(rng: Rng) -> float:
        if rng.random() < 0.5:
            return rng.choice(common)
        return round(rng.randint(n_lo, n_hi) * step, 2)

    return sample


#: A kind of quantity: the units people use for it, each with a sampler of spoken magnitudes.
Measure = _Weighted[tuple[Unit, Callable[[Rng], float]]]

DISTANCE: Measure = _Weighted(
    (
        ((METRE, _sampler((0.5, 1, 1.5, 2, 2.5, 3, 4, 5, 10), 0.1, 10, 0.1)), 0.55),
        ((CENTIMETRE, _sampler((10, 20, 25, 30, 50, 75, 100, 150), 1, 300, 1)), 0.2),
        ((FOOT, _sampler((1, 2, 3, 5, 10), 1, 20, 0.5)), 0.15),
        ((INCH, _sampler((6, 12, 18, 24, 36), 1, 60, 1)), 0.1),
    )
)
SHORT_DISTANCE: Measure = _Weighted(  # following distance, scan radius
    (
        ((METRE, _sampler((0.5, 1, 1.5, 2, 3, 5), 0.3, 5, 0.1)), 0.65),
        ((CENTIMETRE, _sampler((30, 50, 80, 100, 150), 20, 300, 10)), 0.2),
        ((FOOT, _sampler((2, 3, 5, 6, 10), 1, 20, 1)), 0.15),
    )
)
_COMMON_ANGLES = (90, 90, 90, 45, 45, 30, 60, 180, 120, 135, 270, 360, 15, 10, 20)
ANGLE: Measure = _Weighted((((DEGREE, _sampler(_COMMON_ANGLES, 5, 360, 5)), 1.0),))
DURATION: Measure = _Weighted(
    (
        ((SECOND, _sampler((1, 2, 3, 5, 10, 15, 20, 30, 0.5, 60), 1, 120, 1)), 0.8),
        ((MINUTE, _sampler((1, 2, 5, 0.5, 1.5, 3, 10), 1, 10, 1)), 0.2),
    )
)
SPEED: Measure = _Weighted(
    (
        ((METRE_PER_SECOND, _sampler((0.5, 1, 1.5, 2, 2.5, 3, 0.8, 0.3), 0.1, 3, 0.1)), 0.85),
        ((CENTIMETRE_PER_SECOND, _sampler((20, 30, 50, 80), 10, 300, 10)), 0.15),
    )
)


def measure(rng: Rng, kind: Measure, bare: float = 0.0) -> tuple[str, float]:
    """A spoken quantity and its value in the spec's unit, rounded to 2 places.

    With probability ``bare`` a base-unit quantity is written as a number alone ("move forward 3").
    """
    unit, sample = kind(rng)
    spoken = sample(rng)
    if unit.factor == 1 and rng.random() < bare:
        return digits(spoken), round(spoken, 2)
    return amount(rng, spoken, unit), round(spoken * unit.factor, 2)


_SPEED_FORMS = ("at {v}", "at {v}", "at {v}", "at a speed of {v}", "with a speed of {v}", "at speed {v}")


def _speed(rng: Rng) -> tuple[str, float, bool]:
    """An optional speed phrase, its value, and whether it may also go before the verb ("slowly move",
    "fast go to the kitchen")."""
    r = rng.random()
    if r < 0.6:
        return "", 1.0, False
    if r < 0.72:
        return "slowly", 0.5, True
    if r < 0.8:
        return "quickly", 2.0, True
    if r < 0.85:
        return "fast", 2.0, True
    form = rng.choice(_SPEED_FORMS)
    text, value = measure(rng, SPEED, bare=0.15 if "speed" in form else 0.0)  # "at a speed of 2" yes, "at 2" no
    return form.format(v=text), value, False


def _with_speed(rng: Rng, text: str) -> tuple[str, float]:
    adverb, speed, either = _speed(rng)
    if not adverb:
        return text, speed
    if adverb in ("slowly", "quickly", "fast") and rng.random() < 0.25:  # "go to the office, slowly please"
        tail = rng.choice(("", "", " please", " please", " now", " if you can"))
        return f"{text}{rng.choice((', ', ', ', ' - ', '... '))}{adverb}{tail}", speed
    if either and rng.random() < (0.25 if adverb == "fast" else 0.4):  # "slowly back up 2 m", "fast go home"
        return f"{adverb} {text}", speed
    return f"{text} {adverb}", speed


def _times(rng: Rng, n: int) -> str:
    """A repetition count in words: "twice", "3 times", "five times"."""
    if n == 2:
        return rng.choice(("twice", "twice", "two times", "2 times", "a couple of times"))
    if n == 3 and rng.random() < 0.05:
        return "thrice"
    return f"{n if rng.random() < 0.5 else int_words(n, rng)} times"


# ---------------------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------------------

_ROOMS = ("kitchen", "living_room", "bedroom", "bathroom", "office", "garage")
_LOCATION_WORDS: dict[str, tuple[str, ...]] = {
    "kitchen": ("the kitchen",),
    "living_room": ("the living room", "the living room", "the lounge"),
    "bedroom": ("the bedroom", "the bedroom", "my bedroom"),
    "bathroom": ("the bathroom", "the bathroom", "the restroom", "the washroom"),
    "office": ("the office", "the office", "my office"),
    "garage": ("the garage",),
    "charging_station": ("the charging station", "the charger", "your charger", "the charging dock", "your dock"),
    "front_door": ("the front door", "the front door", "the entrance", "the main door"),
    "table": ("the table",),
    "shelf": ("the shelf",),
    "box": ("the box",),
    "floor": ("the floor",),
}
_NAV_LOCATIONS: _Weighted[str] = _Weighted(
    [(room, 3.0) for room in _ROOMS]
    + [("charging_station", 2.0), ("front_door", 2.0), ("table", 1.0), ("shelf", 0.7), ("box", 0.5)]
)
_PLACE_LOCATIONS: _Weighted[str] = _Weighted(
    [("table", 4.0), ("shelf", 3.0), ("box", 3.0), ("floor", 2.0), ("charging_station", 0.3), ("front_door", 0.5)]
    + [(room, 0.6) for room in _ROOMS]
)
# Prepositions that sound right before each place.
_PLACE_PREPS: dict[str, tuple[str, ...]] = {
    "table": ("on", "on", "onto"),
    "shelf": ("on", "on", "onto"),
    "floor": ("on", "on", "down on"),
    "box": ("in", "into", "inside"),
    "charging_station": ("at", "by", "next to"),
    "front_door": ("at", "by", "next to"),
} | {room: ("in",) for room in _ROOMS}


def _location_text(rng: Rng, location: str) -> str:
    text = rng.choice(_LOCATION_WORDS[location])
    if text.startswith("the ") and rng.random() < 0.1:
        return text[4:]  # terse: "go to kitchen"
    return text


_GRASPABLE = (
    "ball", "cup", "bottle", "box", "block", "cube", "book", "can", "mug", "apple", "toy", "remote", "pen",
    "bowl", "plate", "sock", "shoe", "bag", "towel", "spoon", "marker", "package", "phone", "key", "card",
    "banana", "wallet", "hammer", "wrench", "screwdriver", "glass", "jar", "tray", "pillow", "hat", "umbrella",
    "backpack", "notebook", "tablet", "battery", "brush", "basket", "flashlight", "fork", "knife", "doll",
)  # fmt: skip
_ANIMATE = ("person", "dog", "cat")
# Things to look at, photograph or detect, though not to pick up: an open list teaches the model to copy the noun.
_FIXTURES = (
    "chair", "plant", "door", "robot", "window", "lamp", "sofa", "couch", "television", "clock", "painting",
    "fridge", "sink", "printer", "laptop", "monitor", "vase", "bin", "bicycle", "car", "tree", "sign", "poster",
    "desk", "bench", "cabinet", "drawer", "mirror", "fence",
)  # fmt: skip
_VISIBLE = _GRASPABLE + _ANIMATE + _FIXTURES
_NAMED_COLORS = tuple(c for c in COLORS if c != "any")
# Colours that sound plausible for some nouns ("a purple dog" would teach nothing useful).
_NOUN_COLORS: dict[str, tuple[str, ...]] = {
    "person": (),
    "dog": ("black", "white"),
    "cat": ("black", "white", "orange"),
    "apple": ("red", "green", "yellow"),
    "plant": ("green",),
    "banana": ("yellow",),
}
_SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "small", "little", "tiny"),
    "medium": ("medium", "medium-sized", "mid-sized"),
    "large": ("large", "big", "big"),
}


def _article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


@dataclass(frozen=True)
class ObjectRef:
    """A spoken object: its words and its arguments (colour ``any`` and size ``medium`` when unsaid)."""

    text: str
    noun: str
    color: str
    size: str

    def the(self) -> str:
        """The same object with a definite article ("the red ball"), for a later mention."""
        return "the " + self.text.split(" ", 1)[1]


def _object_ref(rng: Rng, nouns: Sequence[str], *, sized: bool, definite: float) -> ObjectRef:
    """A noun phrase like "the small red ball" or "a cup"; ``definite`` is the share of "the/that/this"."""
    noun = rng.choice(nouns)
    colors = _NOUN_COLORS.get(noun, _NAMED_COLORS)
    color = rng.choice(colors) if colors and rng.random() < (0.7 if len(colors) > 3 else 0.3) else "any"
    sized = sized and noun in _GRASPABLE
    size = rng.choice(SIZES) if sized and rng.random() < 0.3 else "medium"
    words = [noun]
    if color != "any":
        words.insert(0, color)
    if size != "medium" or (sized and rng.random() < 0.03):
        words.insert(0, rng.choice(_SIZE_WORDS[size]))
    if rng.random() < definite:
        det = rng.choice(("the", "the", "the", "that", "this"))
    elif color == "any" and rng.random() < 0.15:
        det = "any"
    else:
        det = _article(words[0])
    return ObjectRef(f"{det} {' '.join(words)}", noun, color, size)


_NAMES = ("Alice", "Bob", "Sam", "Maria", "John", "Priya", "Chen", "Lucas", "Emma", "Omar", "Grandma", "Dad", "Mom")
_SAY_TEXTS = (
    "hello", "hello", "hi", "hi there", "hello there", "good morning", "good night", "goodbye", "bye",
    "thank you", "thanks", "welcome", "welcome home", "excuse me", "sorry", "yes", "no", "okay", "I'm sorry",
    "Hello!", "Hi, how are you?", "Good afternoon", "Good evening", "Nice to meet you", "How can I help?",
    "I have arrived", "I'm here", "Task complete", "Task completed", "Mission accomplished", "All done",
    "Done", "I am ready", "Ready when you are", "On my way", "Coming through", "Please step aside",
    "Please move out of the way", "Watch out", "Careful, I am moving", "Battery low", "My battery is low",
    "I need to charge", "Dinner is ready", "Lunch is ready", "The package has arrived", "Someone is at the door",
    "Time to wake up", "It is time for your medicine", "Don't forget your keys", "Have a nice day",
    "See you later", "Happy birthday!", "Follow me", "I found it", "I could not find it", "Obstacle ahead",
    "Path is clear", "Stand back", "Scanning the area", "Picture taken", "Please wait", "One moment please",
    "Beep beep", "I am a robot", "Let's go", "The door is open", "Meeting starts in five minutes",
    "Please close the door", "Cleaning complete", "Hello world", "Testing, one two three",
)  # fmt: skip
_SAY_TEMPLATES = (
    "Hello, {name}!",
    "Good job, {name}!",
    "Welcome back, {name}!",
    "See you soon, {name}!",
    "{name}, are you there?",
    "Is anyone in the {room}?",
    "Hello, {name}",
    "Hi {name}",
    "Good morning, {name}",
    "Welcome home, {name}",
    "{name}, dinner is ready",
    "{name}, you have a visitor",
    "I'm going to the {room}",
    "I am in the {room}",
    "I am heading to the {room}",
    "The {noun} is on the {place}",
    "I found the {color} {noun}",
    "I picked up the {noun}",
    "Here is your {noun}",
    "Please take the {noun}",
    "Where is the {noun}?",
    "The light is {color} now",
)


# Longer texts, with commas and apostrophes: the model must copy every word, not stop at the first comma.
_SAY_LONG = (
    "I'll be right back, don't go anywhere", "Don't worry, I'll take care of it", "Hi, I'm your robot helper",
    "Sorry, I can't reach that shelf", "Hey, it's time to get ready for bed", "Excuse me, you're blocking the hall",
    "Welcome, please make yourself at home", "Good morning, breakfast is on the table", "Hold on, I'm almost there",
    "Don't touch that, it's hot", "I'm done here, what's next?", "Careful, the floor is wet",
    "Okay, I'll wait for you here", "Thanks, I couldn't have done it without you", "Please don't leave the door open",
    "It's getting late, you should rest", "I can't find it, sorry about that", "Hey there, how's it going?",
    "Let's go, we're running late", "I'm on my way, don't start without me", "Come in, the door's open",
    "Nice work, that's the last one", "Hello, I'll show you to the kitchen", "Wake up, it's a beautiful day",
    "Sorry to bother you, dinner's ready", "I'm here to help, just ask", "Don't forget, the meeting is soon",
    "Good night, sleep well and sweet dreams", "Oops, I dropped it, sorry", "Hey, someone's at the front door",
)  # fmt: skip
_SAY_LONG_TEMPLATES = (
    "{name}, I'll be in the {room} if you need me", "Hi {name}, don't forget your {noun}",
    "Sorry {name}, I couldn't find your {noun}", "Welcome back, {name}, I've missed you",
    "{name}, your {noun} is on the {place}", "Hey {name}, it's time for dinner", "Hello {name}, how was your day?",
    "{name}, I'm going to clean the {room} now", "Good morning {name}, I hope you slept well",
    "Excuse me {name}, you left your {noun} here", "{name}, don't leave your {noun} on the {place}",
    "Thanks {name}, I'll take it to the {room}",
)  # fmt: skip


# Words people add to a short phrase ("good morning everyone"): the model learns to copy a quoted text whole
# instead of stopping at the familiar phrase it knows. Phrases of at most three words take one.
_SAY_TAILS = (
    " everyone", " everybody", " please", " so much", " very much", " again", " all", " friends", " team",
    " now", " today", " to you", " guys", " for now", " my friend",
)  # fmt: skip


# Sayings and slang, said whole: the model must copy a set phrase, not stop at the words it knows.
_SAY_IDIOMS = (
    "see you on the other side", "take it easy", "hang in there", "break a leg", "no worries", "you got this",
    "keep your chin up", "long time no see", "peace out", "piece of cake", "rise and shine",
    "chill out", "my bad", "all good", "sleep tight", "hold your horses", "it's a wrap", "you rock", "way to go",
    "let's roll", "game on", "over and out", "roger that", "copy that", "fingers crossed", "cool beans",
    "the coast is clear", "what's cooking", "howdy partner", "stay cool", "don't sweat it",
    "nailed it", "back in a jiffy", "hit the road", "knock knock", "cheers mate", "good vibes only",
    "keep calm and carry on", "smooth sailing", "easy does it", "same old same old", "not my first rodeo",
    "what's up buttercup", "time to hit the hay", "you're a star", "better late than never", "speak of the devil",
    "bob's your uncle", "rock on", "mind the gap", "onwards and upwards", "no rest for the wicked",
)  # fmt: skip


def _say_text(rng: Rng) -> str:
    r = rng.random()
    if r < 0.25:
        pool = _SAY_LONG if rng.random() < 0.55 else _SAY_LONG_TEMPLATES
        return rng.choice(pool).format(
            name=rng.choice(_NAMES),
            room=rng.choice(_ROOMS).replace("_", " "),
            noun=rng.choice(_GRASPABLE),
            place=rng.choice(("table", "shelf", "floor")),
        )
    if r < 0.7:
        text = rng.choice(_SAY_TEXTS)
        if rng.random() < 0.3 and text[-1].isalpha() and len(text.split()) <= 3:
            text += rng.choice(_SAY_TAILS)
        return text
    if r < 0.75:
        return rng.choice(_SAY_IDIOMS)
    return rng.choice(_SAY_TEMPLATES).format(
        name=rng.choice(_NAMES),
        room=rng.choice(_ROOMS).replace("_", " "),
        noun=rng.choice(_GRASPABLE),
        place=rng.choice(("table", "shelf", "floor")),
        color=rng.choice(_NAMED_COLORS),
    )


# ---------------------------------------------------------------------------------------------------
# Per-call phrase builders: each returns bare imperative words (no politeness) and one call
# ---------------------------------------------------------------------------------------------------

# Each phrase with "{d}" takes a distance; the bare lists mean the spec's default (1 m, 90 degrees, 1 s).
_FORWARD = (
    "move forward {d}", "move {d} forward", "go forward {d}", "go {d} forward", "drive forward {d}",
    "drive {d} forward", "head forward {d}", "roll forward {d}", "roll {d} forward", "move ahead {d}",
    "move {d} ahead", "go straight {d}", "go straight ahead {d}", "drive straight {d}", "advance {d}",
    "advance by {d}", "move forward by {d}", "go forward for {d}", "drive forward for {d}", "move forwards {d}",
    "travel forward {d}", "go ahead {d}", "move {d} straight ahead", "drive straight ahead for {d}",
    "move forward about {d}", "go {d} straight",
)  # fmt: skip
_FORWARD_BARE = (
    "move forward", "go forward", "drive forward", "advance", "move ahead", "go straight", "roll forward",
    "head forward", "go straight ahead", "move forwards", "drive ahead", "move forward a meter",
    "go forward one meter", "move ahead one metre",
)  # fmt: skip
_BACKWARD = (
    "move backward {d}", "move backwards {d}", "move back {d}", "go back {d}", "go backward {d}",
    "go backwards {d}", "back up {d}", "back up by {d}", "reverse {d}", "reverse by {d}", "drive backward {d}",
    "drive backwards {d}", "drive in reverse for {d}", "roll back {d}", "step back {d}", "move {d} back",
    "move {d} backward", "go {d} backwards", "back off {d}", "retreat {d}", "reverse for {d}", "back up about {d}",
)  # fmt: skip
_BACKWARD_BARE = (
    "back up", "reverse", "move backward", "move backwards", "move back", "go backwards", "step back", "back off",
    "roll back", "drive backward", "back up a meter", "reverse one meter", "move back one metre",
)  # fmt: skip


def _drive(rng: Rng, name: str, with_distance: Sequence[str], bare: Sequence[str]) -> Phrase:
    if rng.random() < 0.82:
        spoken, distance = measure(rng, DISTANCE, bare=0.06)
        text = rng.choice(with_distance).format(d=spoken)
    else:
        text, distance = rng.choice(bare), 1.0
    text, speed = _with_speed(rng, text)
    return Phrase(text, (_call(name, distance=distance, speed=speed),))


def forward(rng: Rng) -> Phrase:
    """Drive forward: "move forward 2 meters", "slowly advance 50 cm", "go straight 3 feet at 1.5 m/s"."""
    return _drive(rng, "robot.move_forward", _FORWARD, _FORWARD_BARE)


def backward(rng: Rng) -> Phrase:
    """Drive backward: "back up 1 metre", "reverse two feet", "move backwards"."""
    return _drive(rng, "robot.move_backward", _BACKWARD, _BACKWARD_BARE)


_SIDES = ("left", "right")
_CLOCK = {"left": ("counterclockwise", "counter-clockwise", "anticlockwise"), "right": ("clockwise",)}
# "{a}" an angle, "{n}" its compact adjective form ("45-degree"), "{side}" left/right, "{clock}" (counter)clockwise.
_TURN_ANGLE = (
    "turn {side} {a}", "turn {side} {a}", "turn {a} to the {side}", "turn {side} by {a}", "rotate {side} {a}",
    "rotate {a} to the {side}", "rotate {side} by {a}", "turn {a} {side}", "pivot {side} {a}", "spin {side} {a}",
    "turn to the {side} {a}", "turn to your {side} by {a}", "rotate to the {side} by {a}", "rotate {a} {clock}",
    "turn {a} {clock}", "rotate {clock} {a}", "rotate {clock} by {a}", "make a {n} {side} turn",
    "do a {n} turn to the {side}", "turn {side} about {a}",
)  # fmt: skip
_TURN_DEFAULT = (
    "turn {side}", "turn {side}", "turn {side}", "turn to the {side}", "turn to your {side}", "rotate {side}",
    "make a {side} turn", "make a {side}", "hang a {side}", "take a {side}", "do a {side} turn", "pivot {side}",
    "rotate to the {side}", "rotate {clock}", "turn {clock}",
)  # fmt: skip
# (words, side or None for "either, said in the words", angle)
_TURN_FIXED: tuple[tuple[str, str | None, float], ...] = (
    ("turn around", "left", 180),
    ("turn around", "left", 180),
    ("turn around", "left", 180),
    ("turn around", "left", 180),
    ("turn yourself around", "left", 180),
    ("turn all the way around", "left", 180),
    ("turn back around", "left", 180),
    ("face the other way", "left", 180),
    ("do a u-turn", "left", 180),
    ("make a U-turn", "left", 180),
    ("do a 180", "left", 180),
    ("turn around to the {side}", None, 180),
    ("turn around to your {side}", None, 180),
    ("turn around {clock}", None, 180),
    ("turn around towards your {side}", None, 180),
    ("turn around toward the {side}", None, 180),
    ("spin around to the {side}", None, 180),
    ("turn all the way around to your {side}", None, 180),
    ("turn around on your {side}", None, 180),
    ("make a quarter turn to the {side}", None, 90),
    ("do a quarter turn {side}", None, 90),
    ("turn {side} a quarter turn", None, 90),
    ("make a quarter turn {clock}", None, 90),
    ("make a half turn to the {side}", None, 180),
    ("turn {side} half a turn", None, 180),
    ("do a full turn to the {side}", None, 360),
    ("spin {side} in a full circle", None, 360),
    ("make a full circle to the {side}", None, 360),
    ("rotate {clock} a full turn", None, 360),
    ("make a three-quarter turn to the {side}", None, 270),
)
# Rarer wordings of a turn, each table drawn at a small share of its kind.
_TURN_DEFAULT_MORE = (
    "swing {side}", "swing {side}", "veer {side}", "veer {side}", "veer to the {side}", "swing to the {side}",
    "hang a {side} here", "veer off to the {side}", "swing out to the {side}", "hook a {side}",
)  # fmt: skip
_TURN_ANGLE_MORE = (
    "swing {side} {a}", "veer {side} {a}", "veer {a} to the {side}", "swing {a} to the {side}",
    "veer {side} by {a}", "swing {side} by about {a}", "swivel {side} {a}", "swivel {a} to the {side}",
)  # fmt: skip
_TURN_FIXED_MORE: tuple[tuple[str, str | None, float], ...] = (
    ("face the opposite direction", "left", 180),
    ("face the opposite direction", "left", 180),
    ("face the other way", "left", 180),
    ("turn to face the other way", "left", 180),
    ("turn and face the opposite way", "left", 180),
    ("face the other way, turning {side}", None, 180),
    ("face the opposite direction by turning {side}", None, 180),
    ("turn {side} until you face the other way", None, 180),
    ("face the other way by turning to your {side}", None, 180),
)


def _turn_call(side: str, angle: float) -> Call:
    return _call(f"robot.turn_{side}", angle=angle)


def turn(rng: Rng) -> Phrase:
    """Turn in place: "turn left 45 degrees", "rotate clockwise", "turn around", "a quarter turn right"."""
    r = rng.random()
    side = rng.choice(_SIDES)
    clock = rng.choice(_CLOCK[side])
    if r < 0.17:
        words, fixed_side, angle = _pick(rng, _TURN_FIXED, _TURN_FIXED_MORE, 0.12)
        side = fixed_side or side
        return Phrase(words.format(side=side, clock=clock), (_turn_call(side, float(angle)),))
    if r < 0.4:
        text = _pick(rng, _TURN_DEFAULT, _TURN_DEFAULT_MORE, 0.12).format(side=side, clock=clock)
        return Phrase(text, (_turn_call(side, 90.0),))
    spoken, angle = measure(rng, ANGLE, bare=0.12)
    compact = digits(angle) + rng.choice(("-degree", " degree", "°"))
    text = _pick(rng, _TURN_ANGLE, _TURN_ANGLE_MORE, 0.06).format(side=side, clock=clock, a=spoken, n=compact)
    return Phrase(text, (_turn_call(side, angle),))


_STOP = (
    "stop", "stop", "stop", "halt", "stop moving", "stop right there", "stop right now", "freeze", "stop immediately",
    "come to a stop", "stop where you are", "stop all motion", "emergency stop", "stop now", "stop everything",
    "hold it right there", "cease all movement", "stop the robot", "full stop",
)  # fmt: skip


# Said alone, a stop often comes with why: "halt, there's a wall!" is still one stop, never a wait.
_STOP_SHOUT = (
    "halt", "halt", "freeze", "freeze", "hold it", "hold it", "stop", "stop", "whoa, stop", "stop stop",
    "hold it right there", "stop right there", "halt right now", "freeze right there", "stop the wheels",
)  # fmt: skip
_STOP_REASON = (
    "there's a wall", "there is a wall in front of you", "you're about to hit the table", "there's a cat in the way",
    "someone is walking past", "you'll bump into the chair", "that's close enough", "the floor is wet",
    "there are stairs ahead", "something is blocking the way", "you're going the wrong way", "the door is closed",
    "there's a kid in front of you", "watch out for the dog", "you're too close", "careful, there's glass",
    "the cable is stuck", "that's far enough", "there's a box on the floor", "you almost hit me",
    "danger ahead", "you're going to fall", "obstacle", "I said stop", "you'll knock the vase over",
)  # fmt: skip
_STOP_MARK = (", ", ", ", "! ", "! ", " - ", "!! ", ". ", "... ")


def _stop_alert(rng: Rng) -> str:
    shout = rng.choice(_STOP_SHOUT)
    if rng.random() < 0.3:
        text = f"{rng.choice(_STOP_REASON)}{rng.choice((', ', '! ', '. ', ' so '))}{shout}"
    else:
        text = f"{shout}{rng.choice(_STOP_MARK)}{rng.choice(_STOP_REASON)}"
    return text.upper() if rng.random() < 0.25 else text


def stop(rng: Rng, reason: float = 0.0) -> Phrase:
    """Stop: "stop", "halt", "freeze"; as a command of its own, sometimes with why ("halt, there's a wall")."""
    if rng.random() < reason:
        # A shout, not a request: only addressed ("robot, halt!"), never "please ..." or "I need you to ...".
        return Phrase(_stop_alert(rng), (_call("robot.stop"),), mood="statement")
    return Phrase(rng.choice(_STOP), (_call("robot.stop"),))


def stop_alone(rng: Rng) -> Phrase:
    """A stop said on its own: the reason may follow it, as nothing else does."""
    return stop(rng, reason=0.45)


_WAIT = (
    "wait {t}", "wait for {t}", "wait for {t}", "pause for {t}", "pause {t}", "hold still for {t}",
    "stay still for {t}", "stay put for {t}", "hold on for {t}", "hang on for {t}", "wait here for {t}",
    "sit tight for {t}", "stay where you are for {t}", "do nothing for {t}", "hold your position for {t}",
    "idle for {t}", "pause for about {t}", "wait around for {t}",
)  # fmt: skip
_WAIT_BARE = (
    "wait", "wait", "pause", "wait here", "hold on", "wait a second", "wait one second", "wait a sec",
    "hold on a second", "pause for a second", "pause for one second",
)  # fmt: skip


def wait(rng: Rng) -> Phrase:
    """Wait: "wait 5 seconds", "pause for two minutes", "hold on a second"."""
    if rng.random() < 0.8:
        spoken, seconds = measure(rng, DURATION, bare=0.08)
        text = rng.choice(_WAIT).format(t=spoken)
    else:
        text, seconds = rng.choice(_WAIT_BARE), 1.0
    return Phrase(text, (_call("robot.wait", seconds=seconds),))


_NAVIGATE = (
    "go to {l}", "go to {l}", "go to {l}", "navigate to {l}", "navigate to {l}", "head to {l}", "head over to {l}",
    "drive to {l}", "move to {l}", "make your way to {l}", "go over to {l}", "travel to {l}", "proceed to {l}",
    "find your way to {l}", "get to {l}", "go back to {l}", "return to {l}", "come to {l}", "roll over to {l}",
    "drive over to {l}", "take yourself to {l}", "go straight to {l}",
)  # fmt: skip
_NAVIGATE_ROOM = ("go into {l}", "enter {l}", "go inside {l}", "head into {l}")
_NAVIGATE_MORE = (
    "go stand by {l}", "get over to {l}", "swing by {l}", "head on over to {l}", "scoot over to {l}",
    "get yourself over to {l}", "pop over to {l}", "hop over to {l}", "zip over to {l}", "make tracks to {l}",
    "get going to {l}", "wander over to {l}", "go and stand by {l}", "swing over to {l}",
)  # fmt: skip
# A place said bare, with a courtesy: the whole command ("kitchen please", "to the office, thanks").
_PLACE_PLEASE = (
    "{l} please", "{l} please", "{l} pls", "{l}, please", "{l} plz", "to {l}, thanks", "to {l} please",
    "{l}, thanks", "to {l}, thank you", "{l} now please", "off to {l}, please", "{l} thx", "to {l} pls",
)  # fmt: skip
_CHARGE = (
    "go charge", "go recharge", "go charge yourself", "go and recharge your battery", "dock yourself",
    "go to your dock", "go plug yourself in", "return to your charger", "go back to your charging station",
)  # fmt: skip


def navigate(rng: Rng) -> Phrase:
    """Drive to a known place: "go to the kitchen", "head to the charger quickly", "go recharge"."""
    if rng.random() < 0.06:
        location, text = "charging_station", rng.choice(_CHARGE)
    else:
        location = _NAV_LOCATIONS(rng)
        rooms = location in _ROOMS and rng.random() < 0.15
        forms = _NAVIGATE_ROOM if rooms else _NAVIGATE_MORE if rng.random() < 0.1 else _NAVIGATE
        text = rng.choice(forms).format(l=_location_text(rng, location))
        if location in _ROOMS:
            text = text.replace("stand by", "stand in")  # by a door, in a room
    text, speed = _with_speed(rng, text)
    return Phrase(text, (_call("robot.navigate_to", location=location, speed=speed),))


def navigate_alone(rng: Rng) -> Phrase:
    """Going somewhere as a command of its own, sometimes just the place and a courtesy ("bathroom pls")."""
    if rng.random() < 0.06:
        location = rng.choice((*_ROOMS, *_ROOMS, "charging_station", "front_door"))
        form, where = rng.choice(_PLACE_PLEASE), _location_text(rng, location)
        if where.startswith("the ") and not form.startswith(("to ", "off to ")) and rng.random() < 0.4:
            where = where[4:]  # "kitchen please", but "to the kitchen, thanks"
        # Neither "please ..." nor "... please" is added: the words already are the command, courtesy and all.
        return Phrase(
            form.format(l=where),
            (_call("robot.navigate_to", location=location, speed=1.0),),
            mood="terse",
        )
    return navigate(rng)


_GO_HOME = (
    "go home", "go home", "return home", "head home", "go back home", "return to home", "return to your home position",
    "go back to your home position", "go to your home base", "return to base", "head back home", "drive home",
    "go back to home base", "return to your starting point", "go back to where you started", "come back home",
    "head back to base", "return to the home position",
    "retreat to your home position", "retreat to home base", "head back to your home position",
    "head back to the home position", "return to your starting spot", "go back to your starting spot",
    "head back to the starting spot", "make your way back to home base", "return to your home base",
    "drive back to your starting position", "go back to the spot you started from", "retreat back home",
    "head back to where you started", "return to the starting position", "go back to base",
    "retreat to the starting spot", "make your way back to your home position", "get back to home base",
)  # fmt: skip


def go_home(rng: Rng) -> Phrase:
    """Return home: "go home", "return to base"."""
    return Phrase(rng.choice(_GO_HOME), (_call("robot.go_home"),))


_FOLLOW_ME = (
    "follow me", "follow me", "follow me", "come with me", "follow me around", "stay with me", "keep following me",
    "follow behind me", "come along with me", "follow along behind me", "stick with me", "walk with me",
)  # fmt: skip
_FOLLOW = ("follow {t}", "follow {t}", "keep following {t}", "follow behind {t}", "stay with {t}", "go after {t}")
_FOLLOW_DISTANCE = (
    "follow {t} at {d}", "follow {t} at a distance of {d}", "follow {t} and keep {d} behind",
    "follow {t} from {d} away", "follow {t}, staying {d} behind", "follow {t}, keeping a distance of {d}",
    "follow {t} but stay {d} back", "follow {t} at about {d}",
)  # fmt: skip
# The distance in a clause of its own, after the follow or before it ("{p}": the target again, by pronoun).
_FOLLOW_DISTANCE_CLAUSE = (
    "follow {t}, stay {d} away", "follow {t}, keep {d} away", "follow {t}; stay about {d} back",
    "follow {t} and stay {d} behind {p}", "follow {t}, keep a gap of {d}", "follow {t}, staying {d} away from {p}",
    "follow {t} - keep {d} between you", "follow {t}. Keep your distance at {d}", "follow {t}, but keep {d} back",
    "follow {t}, remain {d} behind {p}", "follow {t} and don't get closer than {d}",
    "stay {d} behind {t} and follow {p}", "keep {d} between you and {t} and follow {p}",
    "keep {d} away from {t} and follow {p}", "keep a gap of {d} and follow {t}", "stay {d} back and follow {t}",
    "staying {d} behind, follow {t}", "keeping {d} away, follow {t}", "at a distance of {d}, follow {t}",
    "keep {d} of space from {t} while you follow {p}", "hang back {d} and follow {t}",
    "stay about {d} from {t}, and follow {p}",
)  # fmt: skip
# Other verbs of following ("tail the dog", "tag along behind me"); never opened by "stay"/"keep", which the
# distance clauses open.
_FOLLOW_MORE = (
    "tail {t}", "tail {t}", "trail {t}", "shadow {t}", "shadow {t}", "stick close to {t}", "tag along behind {t}",
    "try to keep up with {t}", "trail behind {t}", "tag along with {t}", "go tag along behind {t}",
    "stick close behind {t}", "follow close behind {t}", "try and keep pace with {t}",
)  # fmt: skip
_FOLLOW_MORE_DISTANCE = (
    "tail {t} from {d}", "tail {t} from {d} back", "trail {t} from {d} away", "trail {t} at {d}", "shadow {t} at {d}",
    "shadow {t} from {d} away", "stick close to {t}, about {d} behind", "tag along {d} behind {t}",
    "keep up with {t} but stay {d} back", "keep up with {t} from {d} away", "trail {d} behind {t}",
    "tail {t}, staying {d} back", "shadow {t}, keeping {d} behind", "tag along behind {t} at {d}",
)  # fmt: skip
_FOLLOW_TARGETS = ("person", "person", "man", "woman", "child", "kid", "dog", "cat", "robot", "guy")
_FOLLOW_PRONOUN = {"me": "me", "dog": "it", "cat": "it", "robot": "it", "man": "him", "guy": "him", "woman": "her"}


def follow(rng: Rng) -> Phrase:
    """Follow someone: "follow me" -> target "me"; "follow that dog at 2 m" -> target "dog", distance 2.0."""
    if rng.random() < 0.55:
        target, target_text = "me", "me"
    else:
        target = rng.choice(_FOLLOW_TARGETS)
        target_text = f"{rng.choice(('the', 'the', 'that', 'this'))} {target}"
    if rng.random() < 0.45:
        spoken, distance = measure(rng, SHORT_DISTANCE)
        forms = _FOLLOW_DISTANCE_CLAUSE if rng.random() < 0.5 else _FOLLOW_DISTANCE
        if rng.random() < 0.15:
            forms = _FOLLOW_MORE_DISTANCE
        pronoun = _FOLLOW_PRONOUN.get(target, "them")
        text = rng.choice(forms).format(t=target_text, d=spoken, p=pronoun)
    else:
        distance = 1.0
        if rng.random() < 0.15:
            text = rng.choice(_FOLLOW_MORE).format(t=target_text)
        else:
            text = rng.choice(_FOLLOW_ME) if target == "me" else rng.choice(_FOLLOW).format(t=target_text)
    return Phrase(text, (_call("robot.follow", target=target, distance=distance),))


_PICK_UP = (
    "pick up {o}", "pick up {o}", "pick up {o}", "pick {o} up", "grab {o}", "grab {o}", "grasp {o}", "lift {o}",
    "take {o}", "pick up {o} with your gripper", "grab {o} with the gripper", "use your gripper to pick up {o}",
    "get hold of {o}", "collect {o}", "lift up {o}", "grab hold of {o}", "pick up {o} for me",
)  # fmt: skip


def _pick_up_call(ref: ObjectRef) -> Call:
    return _call("robot.gripper.pick_up", object_type=ref.noun, color=ref.color, size=ref.size)


def pick_up(rng: Rng) -> Phrase:
    """Pick up: "pick up the red ball", "grab a big blue box" (colour "any", size "medium" when unsaid)."""
    ref = _object_ref(rng, _GRASPABLE, sized=True, definite=0.7)
    return Phrase(rng.choice(_PICK_UP).format(o=ref.text), (_pick_up_call(ref),))


_PLACE = (
    "put it {p} {l}", "put it {p} {l}", "place it {p} {l}", "place it {p} {l}", "set it down {p} {l}",
    "put it down {p} {l}", "drop it {p} {l}", "leave it {p} {l}", "put that {p} {l}", "place the object {p} {l}",
    "set it {p} {l}", "place what you're holding {p} {l}", "put the item {p} {l}", "drop it off {p} {l}",
    "release it {p} {l}", "place it carefully {p} {l}",
)  # fmt: skip
_PLACE_MORE = (
    "pop it {p} {l}", "pop it {p} {l}", "stick it {p} {l}", "stash it {p} {l}", "put it back {p} {l}",
    "pop that {p} {l}", "stick that {p} {l}", "set it back down {p} {l}", "plonk it {p} {l}", "tuck it {p} {l}",
    "leave that {p} {l}", "rest it {p} {l}", "lay it down {p} {l}", "park it {p} {l}", "set that down {p} {l}",
)  # fmt: skip


def place(rng: Rng) -> Phrase:
    """Put down what the gripper holds: "put it on the table", "drop it in the box"."""
    location = _PLACE_LOCATIONS(rng)
    form = _pick(rng, _PLACE, _PLACE_MORE, 0.2)
    text = form.format(p=rng.choice(_PLACE_PREPS[location]), l=_location_text(rng, location))
    return Phrase(text.replace("down down", "down"), (_call("robot.gripper.place", location=location),))


_GRIPPER_OPEN = (
    "open the gripper", "open the gripper", "open your gripper", "open the claw", "open your hand", "open gripper",
    "release the gripper", "let go", "open up the gripper", "open your claw", "relax the gripper",
    "unclench the gripper", "unclench your claw", "unclench your hand", "loosen the gripper", "loosen your grip",
    "relax your grip", "relax your hand", "let go of your grip", "let go with the gripper", "open the gripper wide",
    "open your claw wide", "open your hand all the way", "spread the gripper open", "release your grip",
    "open the claw up wide", "loosen the claw",
)  # fmt: skip
_GRIPPER_CLOSE = (
    "close the gripper", "close the gripper", "close your gripper", "close the claw", "close your hand",
    "close gripper", "shut the gripper", "clamp the gripper shut", "close your claw", "tighten the gripper",
    "clench the gripper", "clench your claw", "clench your hand", "squeeze the gripper", "squeeze your claw shut",
    "squeeze the gripper closed", "clamp shut", "clamp your claw shut", "clamp the gripper closed",
    "tighten your grip", "shut your claw", "close your hand tight", "make a fist", "pinch the gripper shut",
)  # fmt: skip


def gripper_open(rng: Rng) -> Phrase:
    """Open the gripper: "open the claw", "let go"."""
    return Phrase(rng.choice(_GRIPPER_OPEN), (_call("robot.gripper.open"),))


def gripper_close(rng: Rng) -> Phrase:
    """Close the gripper: "close your hand"."""
    return Phrase(rng.choice(_GRIPPER_CLOSE), (_call("robot.gripper.close"),))


# The gripper named once, then by "it": "open the claw wide, then close it again".
_GRIPPER_NOUN = ("the gripper", "your gripper", "the claw", "your claw", "your hand")
_OPEN_IT = ("open {g}", "open {g} wide", "unclench {g}", "open up {g}", "loosen {g}", "open {g} all the way")
_CLOSE_IT = ("close {g}", "shut {g}", "clench {g}", "squeeze {g} shut", "clamp {g} shut", "close {g} tight")
_AGAIN = ("close it again", "shut it again", "close it", "clench it again", "squeeze it shut again", "close it back up")
_REOPEN = ("open it again", "open it back up", "open it wide again", "unclench it again", "let go again")


def _gripper_cycle(rng: Rng) -> list[Phrase]:
    """Open then close (or close then open) the gripper, the second step by pronoun, sometimes once more."""
    noun = rng.choice(_GRIPPER_NOUN)
    opened, closed = (_call("robot.gripper.open"),), (_call("robot.gripper.close"),)
    if rng.random() < 0.75:
        steps = [Phrase(rng.choice(_OPEN_IT).format(g=noun), opened), Phrase(rng.choice(_AGAIN), closed)]
        if rng.random() < 0.2:
            steps.append(Phrase(rng.choice(_REOPEN), opened))
    else:
        steps = [Phrase(rng.choice(_CLOSE_IT).format(g=noun), closed), Phrase(rng.choice(_REOPEN), opened)]
    if rng.random() < 0.3:  # a pause between: "open the claw, wait 2 seconds, then close it again"
        steps.insert(1, wait(rng))
    return steps


_ARM_MOVE = (
    "move the arm to {c}", "move the arm to {c}", "move your arm to {c}", "position the arm at {c}",
    "put the arm at {c}", "bring the arm to {c}", "set the arm to {c}", "reach to {c}", "extend the arm to {c}",
    "move the end effector to {c}", "send the arm to {c}", "move arm to {c}", "move the gripper to {c}",
    "position your arm at {c}", "reach out to {c}",
    "move your hand to {c}", "move the hand to {c}", "put the claw at {c}", "move the claw to {c}",
    "put your gripper at {c}", "bring your gripper to {c}", "bring the claw to {c}", "position the claw at {c}",
    "position the gripper at {c}", "move your end effector to {c}", "put the end effector at {c}",
    "send the gripper to {c}", "get your hand to {c}", "place your hand at {c}", "place the claw at {c}",
    "move the tip of the arm to {c}", "reach your hand out to {c}", "put your hand at {c}",
)  # fmt: skip
_COORDS = (
    "x {x}, y {y}, z {z}", "x {x}, y {y}, z {z}", "x={x}, y={y}, z={z}", "x={x} y={y} z={z}", "x: {x}, y: {y}, z: {z}",
    "x {x} y {y} z {z}", "({x}, {y}, {z})", "({x}, {y}, {z})", "{x}, {y}, {z}", "coordinates ({x}, {y}, {z})",
    "position ({x}, {y}, {z})", "point {x}, {y}, {z}", "x of {x}, y of {y} and z of {z}", "x = {x}, y = {y}, z = {z}",
    "the point ({x}, {y}, {z})",
)  # fmt: skip


def _coordinate(rng: Rng, lo: int = -16) -> float:
    """A coordinate in metres: mostly a multiple of 5 cm, sometimes any centimetre; never below ``lo`` x 5 cm."""
    if rng.random() < 0.8:
        return round(rng.randint(lo, 16) * 0.05, 2)
    return round(rng.randint(lo * 5, 95) / 100, 2)


def _signed(rng: Rng, text: str) -> str:
    if text.startswith("-") and rng.random() < 0.25:
        return rng.choice(("minus ", "negative ")) + text[1:]
    return text


def arm_move(rng: Rng) -> Phrase:
    """Move the arm: "move the arm to x 0.2, y -0.1, z 0.3", "reach to (20 cm, 10 cm, 35 cm)"."""
    # Reaching below the base is rare, so z is mostly positive.
    xyz = [_coordinate(rng), _coordinate(rng), _coordinate(rng, lo=-2 if rng.random() < 0.85 else -16)]
    if rng.random() < 0.15:  # centimetres, converted like every other distance
        unit = rng.choice((" cm", "cm", " centimeters"))
        spoken = [_signed(rng, str(round(v * 100))) + unit for v in xyz]
    else:
        spoken = [_signed(rng, digits(v)) for v in xyz]
    coords = rng.choice(_COORDS).format(x=spoken[0], y=spoken[1], z=spoken[2])
    return Phrase(rng.choice(_ARM_MOVE).format(c=coords), (_call("robot.arm.move_to", x=xyz[0], y=xyz[1], z=xyz[2]),))


_ARM_HOME = (
    "move the arm home", "home the arm", "return the arm to its home position", "send the arm home",
    "put the arm back in its home position", "reset the arm", "retract the arm", "bring the arm back home",
    "park the arm", "move your arm to the rest position", "return your arm to rest", "put your arm down",
    "move the arm back to home", "reset your arm position", "return the arm home", "home your arm",
)  # fmt: skip
_ARM_HOME_MORE = (
    "park your arm", "park your arm", "tuck your arm in", "put the arm in its rest position", "stow your arm",
    "stow the arm away", "tuck the arm away", "fold your arm away", "put your arm away", "rest your arm",
    "bring your arm back to rest", "put your arm in the resting position", "tuck your arm back in",
)  # fmt: skip


def arm_home(rng: Rng) -> Phrase:
    """Arm to its rest pose: "home the arm", "retract the arm"."""
    return Phrase(_pick(rng, _ARM_HOME, _ARM_HOME_MORE, 0.25), (_call("robot.arm.home"),))


_TAKE_PHOTO = (
    "take a photo", "take a photo", "take a picture", "take a picture", "snap a photo", "snap a picture",
    "take a pic", "take a snapshot", "capture an image", "capture a photo", "take a photograph",
    "take a photo now", "grab a photo", "click a picture", "take a quick photo", "snap a pic", "take a shot",
)  # fmt: skip


# A photo of the scene, not of an object: a photo alone, nothing looked at.
_PHOTO_SCENE = (
    "the room", "the room", "the scene", "the view", "what you see", "what you can see", "whatever's in front of you",
    "whatever is in front of you", "everything around you", "your surroundings", "the whole room",
    "what's in front of you", "the area", "the space around you", "everything you see", "the hallway",
    "whatever you're looking at", "the place",
)  # fmt: skip
_PHOTO_SCENE_VERB = (
    "take a photo of {s}", "take a picture of {s}", "snap a photo of {s}", "snap a picture of {s}",
    "photograph {s}", "get a picture of {s}", "capture a photo of {s}", "take a pic of {s}", "grab a shot of {s}",
    "capture {s}", "take a snapshot of {s}", "get a photo of {s}",
)  # fmt: skip
_TAKE_PHOTO_MORE = (
    "grab a shot", "grab a shot", "capture a picture", "capture a picture", "grab a quick shot", "snap a shot",
    "shoot a photo", "get a shot", "take a quick snapshot", "grab a pic", "capture a snapshot", "shoot a picture",
)  # fmt: skip
_PHOTO_SCENE_VERB_MORE = (
    "capture a picture of {s}", "grab a picture of {s}", "shoot a photo of {s}", "take a shot of {s}",
    "grab a quick shot of {s}", "snap a shot of {s}", "grab a pic of {s}", "capture a snapshot of {s}",
)  # fmt: skip


def take_photo(rng: Rng) -> Phrase:
    """Take a photo: "snap a picture"; of the scene ("a photo of the room") it is still a photo alone."""
    if rng.random() < 0.3:
        text = _pick(rng, _PHOTO_SCENE_VERB, _PHOTO_SCENE_VERB_MORE, 0.15).format(s=rng.choice(_PHOTO_SCENE))
        return Phrase(text, (_call("robot.camera.take_photo"),))
    return Phrase(_pick(rng, _TAKE_PHOTO, _TAKE_PHOTO_MORE, 0.15), (_call("robot.camera.take_photo"),))


_LOOK_AT = (
    "look at {o}", "look at {o}", "look at {o}", "point the camera at {o}", "point your camera at {o}",
    "aim the camera at {o}", "turn the camera toward {o}", "turn your camera towards {o}", "focus on {o}",
    "look toward {o}", "direct your camera at {o}", "have a look at {o}", "train your camera on {o}",
    "face the camera toward {o}", "keep your eyes on {o}",
)  # fmt: skip


def _look_at_call(ref: ObjectRef) -> Call:
    return _call("robot.camera.look_at", object_type=ref.noun, color=ref.color)


def look_at(rng: Rng) -> Phrase:
    """Point the camera: "look at the green bottle", "point your camera at that cat"."""
    ref = _object_ref(rng, _VISIBLE, sized=False, definite=0.85)
    return Phrase(rng.choice(_LOOK_AT).format(o=ref.text), (_look_at_call(ref),))


_SCAN = (
    "scan the area", "scan the area", "scan the room", "scan your surroundings", "scan around", "do a scan",
    "perform a scan", "run a scan", "look around", "scan", "sweep the area", "scan the surroundings",
    "do a quick scan", "scan around you", "scan the environment", "run a sensor sweep",
)  # fmt: skip
_SCAN_RADIUS = (
    "scan within {d}", "scan within {d}", "scan the area within {d}", "scan with a radius of {d}",
    "scan everything within {d}", "scan {d} around you", "scan up to {d} away", "do a scan with a radius of {d}",
    "scan a radius of {d}", "scan the room within {d}", "run a scan out to {d}", "look around within {d}",
)  # fmt: skip


def scan(rng: Rng) -> Phrase:
    """Scan: "scan the area" (radius 2 m), "scan within 5 meters", "scan 300 cm around you"."""
    if rng.random() < 0.45:
        spoken, radius = measure(rng, SHORT_DISTANCE)
        text = rng.choice(_SCAN_RADIUS).format(d=spoken)
    else:
        text, radius = rng.choice(_SCAN), 2.0
    return Phrase(text, (_call("robot.sensors.scan", radius=radius),))


_DETECT = (
    "check if there is {o}", "check if there's {o}", "check whether there's {o}", "check for {o}", "detect {o}",
    "look for {o}", "look for {o}", "see if you can find {o}", "see if there is {o}", "search for {o}",
    "check if you can see {o}", "find out if there is {o}", "try to detect {o}", "use your sensors to detect {o}",
)  # fmt: skip
_DETECT_QUESTION = (
    "is there {o}", "is there {o}", "do you see {o}", "can you see {o}", "is there {o} nearby", "do you detect {o}",
    "is there {o} around", "can you detect {o}", "any sign of {o}",
)  # fmt: skip


# Whether one thing is in view: "{o}" mostly with "the" or "my" ("is my phone in view?").
_DETECT_IN_VIEW = (
    "is {o} in view", "is {o} in view", "is {o} in sight", "is {o} visible", "can you spot {o}", "can you spot {o}",
    "is {o} anywhere in sight", "is {o} visible from where you are", "is {o} in view right now",
    "do you have {o} in view", "can you catch sight of {o}", "do you spot {o}",
)  # fmt: skip
# Several of a kind, asked about by their plural ("any apples around?"): one detect of the singular noun.
_DETECT_PLURAL = (
    "any {p} around", "any {p} around", "any {p} nearby", "do you see any {p}", "are there any {p} around",
    "can you spot any {p}", "are any {p} visible", "see any {p}", "are there {p} here", "are there any {p} in view",
    "any {p} in sight", "do you detect any {p}",
)  # fmt: skip
_DETECT_MY_PLURAL = ("do you see my {p}", "can you see my {p}", "are my {p} in view", "can you spot my {p}")
# The plurals people type, written out so the normaliser knows them ("any bals?" reads back as "balls"); only
# regular ones ("cups", "boxes", "batteries"), as the decoding check reads a plural by the usual rule (no
# "people", no "knives").
_PLURALS: dict[str, str] = {
    "ball": "balls", "cup": "cups", "bottle": "bottles", "box": "boxes", "block": "blocks", "cube": "cubes",
    "can": "cans", "mug": "mugs", "apple": "apples", "toy": "toys", "remote": "remotes",
    "pen": "pens", "bowl": "bowls", "plate": "plates", "sock": "socks", "shoe": "shoes", "bag": "bags",
    "towel": "towels", "spoon": "spoons", "marker": "markers", "package": "packages", "phone": "phones",
    "key": "keys", "card": "cards", "banana": "bananas", "wallet": "wallets", "hammer": "hammers",
    "wrench": "wrenches", "screwdriver": "screwdrivers", "glass": "glasses", "jar": "jars", "tray": "trays",
    "pillow": "pillows", "hat": "hats", "umbrella": "umbrellas", "backpack": "backpacks", "notebook": "notebooks",
    "tablet": "tablets", "battery": "batteries", "brush": "brushes", "basket": "baskets",
    "flashlight": "flashlights", "fork": "forks", "doll": "dolls", "dog": "dogs", "cat": "cats", "chair": "chairs",
    "plant": "plants", "door": "doors", "robot": "robots", "window": "windows", "lamp": "lamps", "sofa": "sofas",
    "couch": "couches", "television": "televisions", "clock": "clocks", "painting": "paintings",
    "fridge": "fridges", "sink": "sinks", "printer": "printers", "laptop": "laptops", "monitor": "monitors",
    "vase": "vases", "bin": "bins", "bicycle": "bicycles", "car": "cars", "tree": "trees", "sign": "signs",
    "poster": "posters", "desk": "desks", "bench": "benches", "cabinet": "cabinets", "drawer": "drawers",
    "mirror": "mirrors", "fence": "fences",
}  # fmt: skip
_PLURAL_NOUNS = tuple(_PLURALS)
_OWNED = frozenset(_GRASPABLE + _ANIMATE) - {"person"}


def _detect_call(ref: ObjectRef) -> Call:
    return _call("robot.sensors.detect", object_type=ref.noun, color=ref.color)


def _detect_question(rng: Rng) -> Phrase:
    """Less common questions: "is the red ball in view?", "can you spot my phone?", "any apples around?"."""
    if rng.random() < 0.5:
        noun = rng.choice(_PLURAL_NOUNS)
        colors = _NOUN_COLORS.get(noun, _NAMED_COLORS)
        color = rng.choice(colors) if colors and rng.random() < 0.35 else "any"
        many = _PLURALS[noun] if color == "any" else f"{color} {_PLURALS[noun]}"  # "apples", "red apples"
        mine = noun in _OWNED and color == "any" and rng.random() < 0.3
        text = rng.choice(_DETECT_MY_PLURAL if mine else _DETECT_PLURAL).format(p=many)
        return Phrase(text, (_call("robot.sensors.detect", object_type=noun, color=color),), mood="question")
    ref = _object_ref(rng, _VISIBLE, sized=False, definite=0.75)
    if ref.noun in _OWNED and rng.random() < 0.3:
        ref = ObjectRef(
            rng.choice(("my", "my", "your")) + " " + ref.text.split(" ", 1)[1], ref.noun, ref.color, "medium"
        )
    return Phrase(rng.choice(_DETECT_IN_VIEW).format(o=ref.text), (_detect_call(ref),), mood="question")


def detect(rng: Rng) -> Phrase:
    """Detect on its own: "look for a red ball", "is there a cup?", "any apples around?" (object "apple")."""
    ref = _object_ref(rng, _VISIBLE, sized=False, definite=0.1)
    program = (_detect_call(ref),)
    r = rng.random()
    if r < 0.16:
        return _detect_question(rng)
    if r < 0.5:  # a question alone asks, and nothing more (compare "is there a cup? If so, ...")
        return Phrase(rng.choice(_DETECT_QUESTION).format(o=ref.text), program, mood="question")
    return Phrase(rng.choice(_DETECT).format(o=ref.text), program)


_SAY_QUOTED = (
    "say {q}", "say {q}", "say {q}", "say {q}", "announce {q}", "tell them {q}", "say out loud {q}",
    "speak the words {q}", "say the phrase {q}", "say: {q}", "tell everyone {q}", "use your speaker to say {q}",
    "announce: {q}", "say the words {q}", "read out {q}", "speak {q}",
)  # fmt: skip
_SAY_QUOTED += (
    "greet {name} with {q}", "greet them with {q}", "welcome them with {q}", "welcome {name} with {q}",
    "greet the guests with {q}", "tell them {q}", "tell {name} {q}", "let them know {q}", "say to them {q}",
    "welcome our guest with {q}", "greet everyone with {q}", "tell the visitor {q}",
)  # fmt: skip
_SAY_UNQUOTED = ("say {t}", "say {t}", "say {t}", "say: {t}", "announce: {t}", "say out loud {t}", "speak: {t}")
# A slip in the verb itself, the text after it still copied whole ("sya good morning to you"). The slips are
# spelled out by letters, so the vocabulary (read from this file's literals) never learns them as words.
_S = "say"
_SAY_SLIPS = (_S[0] + _S[2] + _S[1], _S + _S[2], _S[0] + _S[2], _S[:2] + _S[1:], _S[0] + _S, _S[0] + _S[2] + _S[1])
_SAY_SLIPPED = tuple(slip + " {t}" for slip in _SAY_SLIPS)
_QUOTES = (('"', '"'), ('"', '"'), ('"', '"'), ("'", "'"), ("“", "”"))


_NUMBER_IN_TEXT = re.compile(rf"\d|\b(?:{'|'.join(w for w in ONES_WORDS + TENS_WORDS if w)})\b", re.IGNORECASE)
# A photo named without quotes would be read as one to take ("say picture taken").
_PHOTO_IN_TEXT = re.compile(r"\b(?:photo|picture|pic|snapshot|image|shot)s?\b", re.IGNORECASE)


def say(rng: Rng, quoted: bool = False) -> Phrase:
    """Speak: 'say "Task complete"' -> text "Task complete"; "say hello" -> text "hello".

    Unquoted text runs to the end of the command, so ``quoted=True`` forces quotes where more words follow.
    """
    text = _say_text(rng)
    # A number said without quotes would be read as a quantity ("say meeting starts in five minutes").
    unquoted = not quoted and "," not in text and not _NUMBER_IN_TEXT.search(text)
    if unquoted and not _PHOTO_IN_TEXT.search(text) and rng.random() < 0.4:
        text = text.rstrip(".!?")
        if rng.random() < 0.4 and not text.startswith(("I ", "I'")):
            text = text[0].lower() + text[1:]
        slip = TYPO_RATE > 0 and 3 <= len(text.split()) <= 5 and rng.random() < 0.5  # a typo: off with typos
        forms = _SAY_SLIPPED if slip else _SAY_UNQUOTED
        words = rng.choice(forms).format(t=_protect(text))
    else:
        if text[-1].isalpha() and rng.random() < 0.12:
            text += rng.choice(("!", "!", "?")) if text.startswith(("Are", "Is", "Can", "Where")) else "!"
        left, right = rng.choice(_QUOTES)
        if "'" in text:
            left, right = '"', '"'
        words = rng.choice(_SAY_QUOTED).format(q=left + _protect(text) + right, name=rng.choice(_NAMES))
    return Phrase(words, (_call("robot.say", text=text),))


_SET_LIGHT = (
    "set the light to {c}", "set the light to {c}", "set your light to {c}", "turn the light {c}",
    "turn your light {c}", "change the light to {c}", "change your light color to {c}", "make the light {c}",
    "make your light {c}", "switch the light to {c}", "set the LED to {c}", "turn the LED {c}", "light up {c}",
    "glow {c}", "set the status light to {c}", "set light to {c}", "show a {c} light", "turn on the {c} light",
    "change the LED colour to {c}", "set your lights to {c}", "switch your light to {c}", "make your LED {c}",
    "change the light colour to {c}", "set the light color to {c}",
)  # fmt: skip
_SET_LIGHT_MORE = (
    "make your LED glow {c}", "make your LED glow {c}", "make the light glow {c}", "have your light glow {c}",
    "switch your LED to {c}", "turn your lamp {c}", "make your lamp {c}", "set your lamp to {c}",
    "change your status light to {c}", "put your status light on {c}", "flip your light to {c}",
    "get your LED to glow {c}", "let your light glow {c}", "make your status light {c}",
)  # fmt: skip
# The light and its colour, said tersely: the whole command ("status light to green").
_SET_LIGHT_TERSE = (
    "status light to {c}", "status light to {c}", "status light {c}", "lamp {c}", "lamp {c}", "lamp to {c}",
    "LED {c}", "LED to {c}", "light to {c} please", "lamp {c} please", "{c} light please", "{c} light, please",
    "status light {c}, thanks", "LED to {c}, thanks",
)  # fmt: skip


def set_light(rng: Rng) -> Phrase:
    """Set the status light: "turn your light green", "set the LED to purple"."""
    color = rng.choice(_NAMED_COLORS)
    text = _pick(rng, _SET_LIGHT, _SET_LIGHT_MORE, 0.12).format(c=color)
    return Phrase(text, (_call("robot.set_light", color=color),))


def set_light_alone(rng: Rng) -> Phrase:
    """The light set as a command of its own, sometimes tersely ("lamp blue", "status light to red")."""
    if rng.random() < 0.1:
        color = rng.choice(_NAMED_COLORS)
        text = rng.choice(_SET_LIGHT_TERSE).format(c=color)
        return Phrase(text, (_call("robot.set_light", color=color),), mood="terse")
    return set_light(rng)


#: Single-call builders per call category, weighted roughly by how often people say such things.
CALL_BUILDERS: dict[str, _Weighted[Callable[[Rng], Phrase]]] = {
    "movement": _Weighted(((forward, 5), (backward, 3), (turn, 6), (stop_alone, 1.5), (wait, 2))),
    "navigation": _Weighted(((navigate_alone, 6), (go_home, 2), (follow, 2.5))),
    "manipulation": _Weighted(
        ((pick_up, 5), (place, 3), (gripper_open, 1.3), (gripper_close, 1.3), (arm_move, 3), (arm_home, 1))
    ),
    "perception": _Weighted(((take_photo, 2.5), (look_at, 3), (scan, 3), (detect, 3))),
    "communication": _Weighted(((say, 6), (set_light_alone, 3))),
}


# ---------------------------------------------------------------------------------------------------
# Combinators: sequences, loops, conditionals
# ---------------------------------------------------------------------------------------------------


def _say_quoted(rng: Rng) -> Phrase:
    return say(rng, quoted=True)


_PHOTO_OF = ("take a photo of {o}", "take a picture of {o}", "snap a photo of {o}", "photograph {o}")


def photo_of(rng: Rng) -> Phrase:
    """ "take a photo of the red ball" -> look_at then take_photo."""
    ref = _object_ref(rng, _VISIBLE, sized=False, definite=0.9)
    text = rng.choice(_PHOTO_OF).format(o=ref.text)
    return Phrase(text, (_look_at_call(ref), _call("robot.camera.take_photo")))


# Steps of a sequence: every call but detect (meaningless on its own mid-sequence); say is quoted because
# unquoted text would swallow the next step.
_STEP: _Weighted[Callable[[Rng], Phrase]] = _Weighted(
    (
        (forward, 5),
        (backward, 2),
        (turn, 5),
        (stop, 0.7),
        (wait, 2),
        (navigate, 5),
        (go_home, 1.2),
        (follow, 1),
        (pick_up, 4),
        (place, 3),
        (gripper_open, 0.8),
        (gripper_close, 0.8),
        (arm_move, 1.2),
        (arm_home, 0.8),
        (take_photo, 2),
        (look_at, 1.5),
        (scan, 2),
        (photo_of, 0.8),
        (_say_quoted, 2.5),
        (set_light, 1.5),
    )
)
_TURN_AROUND = ("turn around", "turn around", "turn around", "turn yourself around", "turn back around")


def _turn_around(rng: Rng) -> Phrase:
    """ "turn around" (left 180); "turn around to the right" / "towards your right" (right 180)."""
    if rng.random() < 0.65:
        return Phrase(rng.choice(_TURN_AROUND), (_turn_call("left", 180.0),))
    side = rng.choice(_SIDES)
    form = rng.choice(("turn around to the {s}", "turn around towards your {s}", "turn around to your {s}"))
    return Phrase(form.format(s=side), (_turn_call(side, 180.0),))


# Steps that can stand after "if ..., " or "otherwise".
_REACTION: _Weighted[Callable[[Rng], Phrase]] = _Weighted(
    (
        (stop, 3),
        (turn, 1.5),
        (_turn_around, 1),
        (backward, 1.5),
        (forward, 1),
        (navigate, 2),
        (go_home, 1.5),
        (wait, 1),
        (take_photo, 1),
        (scan, 1),
        (_say_quoted, 3),
        (set_light, 2),
    )
)

_THEN = (", then ", " then ", " and then ", ", and then ", ", after that ", ". Then ", ". After that, ", "; then ")
_THEN += (", next ", ". Next, ", ", then ", ", then ", " and ", " and ", ", ")
_FINALLY = (", and finally ", ", finally ", ". Finally, ", ", and lastly ", ", then ")
_FIRST_THEN = (", then ", ", then ", ". Then ")
_THEN_IN_BLOCK = (", then ", " then ", " and ", " and then ", ", and then ", ", ")
_FINALLY_IN_BLOCK = (", then ", " and then ")
# Joiners after a loop or if-sentence: a sentence break, so the next step is not read as part of the block.
_AFTER_BLOCK = (". Then ", ". After that, ", ". Once done, ", ". When you're done, ", ". Finally, ", ". Then, ")


def _capitalize_after_stop(text: str) -> str:
    """Upper-case the first letter after ". " so joined sentences read like sentences."""
    return re.sub(r"(\. )([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)


# A step may end in ", slowly" ("go to the office, slowly please"), so one starting with the adverb is never
# joined to it by a bare comma.
_ADVERB_FIRST = ("slowly ", "quickly ", "fast ")


def _join(rng: Rng, texts: Sequence[str], *, in_block: bool = False) -> str:
    """Join step texts in spoken order: "a, then b", "first a, then b, and finally c", "a, b and c".

    ``in_block`` (a loop body) keeps to one sentence, so no step reads as coming after the loop.
    """
    n = len(texts)
    style = rng.random()
    if n == 2 and not in_block and style > 0.93:  # "after you pick up the cup, put it on the shelf"
        return _capitalize_after_stop(
            rng.choice(("after you {a}, {b}", "once you {a}, {b}")).format(a=texts[0], b=texts[1])
        )
    if (
        n == 2
        and not in_block
        and style > 0.87
        and not texts[1].endswith(_CLOSE)
        and not re.search(r"\b(it|that|them)\b", texts[1])
    ):
        # "before you go to the kitchen, take a photo": the step said second is done first
        form = rng.choice(
            ("before you {b}, {a}", "before you {b}, {a}", "{a} before you {b}", "before you {b}, first {a}")
        )
        return _capitalize_after_stop(form.format(a=texts[0], b=texts[1]))
    if style < 0.15:
        out = "first " + texts[0]
        for i, text in enumerate(texts[1:], start=1):
            last = i == n - 1 and n > 2
            out += rng.choice(_FINALLY_IN_BLOCK if in_block else _FINALLY if last else _FIRST_THEN) + text
    elif style < 0.27 and n >= 3:
        out = ", ".join(texts[:-1]) + rng.choice((" and ", ", and ", ", then ", " and then ")) + texts[-1]
        if any(t.startswith(_ADVERB_FIRST) for t in texts[1:-1]):  # "go home, slowly drive ...": whose adverb?
            out = texts[0] + "".join(", then " + t for t in texts[1:])
    else:
        out = texts[0]
        for text in texts[1:]:
            joiner = rng.choice(_THEN_IN_BLOCK if in_block else _THEN)
            if joiner == ", " and text.startswith(_ADVERB_FIRST):  # ", slowly" may end the step before it
                joiner = ", then "
            out += joiner + text
    return _capitalize_after_stop(out)


def _sequence_of(rng: Rng, phrases: Sequence[Phrase]) -> Phrase:
    return Phrase(_join(rng, [p.text for p in phrases]), tuple(s for p in phrases for s in p.program))


_BRING = ("bring it to {l}", "carry it to {l}", "take it to {l}", "bring it over to {l}")


_FIND_FIRST = (
    "look at {o}", "find {o} with your camera", "point your camera at {o}", "focus on {o}", "look over at {o}",
    "aim your camera at {o}",
)  # fmt: skip
_GRAB_IT = ("pick it up", "grab it", "pick that up", "take it", "lift it", "grab that", "pick it up with your gripper")


def _handle_it(rng: Rng) -> list[Phrase]:
    """An object named once, then handled by pronoun: "look at the green bottle, then grab it and put it in the box"
    (the pronoun keeps the colour and size said the first time)."""
    ref = _object_ref(rng, _GRASPABLE, sized=True, definite=0.8)
    steps = [
        Phrase(rng.choice(_FIND_FIRST).format(o=ref.text), (_look_at_call(ref),)),
        Phrase(rng.choice(_GRAB_IT), (_pick_up_call(ref),)),
    ]
    if rng.random() < 0.6:
        steps.append(place(rng))
    return steps


def _gripper_round(rng: Rng) -> list[Phrase]:
    """The gripper opened before a pick-up and closed after it, each said as its own step."""
    steps = [gripper_open(rng), pick_up(rng)]
    if rng.random() < 0.7:
        steps.append(gripper_close(rng))
    return steps


_COME_BACK = ("come back {d}", "go back {d}", "back up {d}", "reverse {d}", "move back {d}", "drive back {d}")


def _echo(rng: Rng) -> list[Phrase]:
    """Three steps, the last of the same kind as the first: "say "hi", wait 2 seconds, then say "bye"",
    "go forward 2 m, wait, then come back 2 m", "go to the office, take a photo, then go to the garage"."""
    kind = rng.randrange(7)
    if kind == 0:
        first, last = _say_quoted(rng), say(rng)
        while last.program == first.program:
            last = say(rng)
        return [first, rng.choice((wait, wait, turn, set_light))(rng), last]
    if kind == 1:
        spoken, d = measure(rng, DISTANCE)
        out = Phrase(rng.choice(_FORWARD).format(d=spoken), (_call("robot.move_forward", distance=d, speed=1.0),))
        back = Phrase(rng.choice(_COME_BACK).format(d=spoken), (_call("robot.move_backward", distance=d, speed=1.0),))
        return [out, rng.choice((wait, wait, take_photo, scan, _say_quoted))(rng), back]
    if kind == 2:
        a, b = rng.sample(list(_NAV_LOCATIONS.items), 2)
        go = [
            Phrase(
                rng.choice(_NAVIGATE).format(l=_location_text(rng, x)),
                (_call("robot.navigate_to", location=x, speed=1.0),),
            )
            for x in (a, b)
        ]
        return [go[0], rng.choice((take_photo, scan, wait, _say_quoted, pick_up))(rng), go[1]]
    if kind == 3:
        return [take_photo(rng), rng.choice((turn, turn, forward))(rng), take_photo(rng)]
    if kind == 4:
        a, b = rng.sample(_NAMED_COLORS, 2)
        lights = [Phrase(rng.choice(_SET_LIGHT).format(c=c), (_call("robot.set_light", color=c),)) for c in (a, b)]
        return [lights[0], rng.choice((wait, _say_quoted))(rng), lights[1]]
    if kind == 5:
        return [turn(rng), rng.choice((forward, wait, take_photo))(rng), turn(rng)]
    return _gripper_cycle(rng)


def _scenario(rng: Rng) -> list[Phrase]:
    """A task people actually ask for in several steps: fetch and place, go and report, and the like."""
    kind = rng.randrange(9)
    if kind >= 7:
        return _echo(rng)
    if kind == 5:
        return _handle_it(rng)
    if kind == 6:
        return _gripper_round(rng)
    if kind == 0:  # fetch: go, pick up, (bring), place
        steps = [navigate(rng), pick_up(rng)]
        if rng.random() < 0.5:
            room = rng.choice(_ROOMS)
            text = rng.choice(_BRING).format(l=_location_text(rng, room))
            steps.append(Phrase(text, (_call("robot.navigate_to", location=room, speed=1.0),)))
        return [*steps, place(rng)]
    if kind == 1:
        return [pick_up(rng), place(rng)]
    if kind == 2:
        return [navigate(rng), say(rng)]  # last step: unquoted text is fine
    if kind == 3:
        return [rng.choice((navigate, forward, turn))(rng), rng.choice((photo_of, scan, take_photo))(rng)]
    return [rng.choice((navigate, go_home, forward))(rng), set_light(rng), rng.choice((say, wait, stop))(rng)]


def sequence(rng: Rng) -> Phrase:
    """2-4 steps in spoken order, mixing calls of every category (category ``sequence``)."""
    if rng.random() < 0.4:
        return _sequence_of(rng, _scenario(rng))
    if rng.random() < 0.06:  # "take a photo of the blue cup": two calls said as one
        return photo_of(rng)
    n = rng.choices((2, 3, 4), (0.42, 0.35, 0.23))[0]
    steps: list[Phrase] = []
    holding = False
    while len(steps) < n:
        step = _STEP(rng)(rng)
        name = step.program[0].name
        # Redraw what reads as a slip: the same words twice, a pick-up with the gripper full, a place with it empty.
        placed = any(s.program[0].name == "robot.gripper.place" for s in steps)
        if (
            any(step.text == s.text for s in steps)
            or (holding and name == "robot.gripper.pick_up")
            or (placed and not holding and name == "robot.gripper.place")
        ):
            continue
        holding = name == "robot.gripper.pick_up" or (holding and name != "robot.gripper.place")
        steps.append(step)
    return _sequence_of(rng, steps)


_SHAPE = (
    "do a {s}", "drive in a {s}", "move in a {s}", "make a {s}", "trace a {s}", "drive a {s} pattern",
    "go around in a {s}", "drive in the shape of a {s}", "move in a {s} pattern",
)  # fmt: skip
_SHAPE_SIDE = (
    "drive in a {s} with {d} sides", "make a {s} with sides of {d}", "drive a {s}, {d} on each side",
    "move in a {s} with {d} sides", "trace a {s} with each side {d} long", "do a {s} with {d} sides",
)  # fmt: skip
_SHAPE_TURN = {
    "left": (" to the left", " counterclockwise", " turning left"),
    "right": (" clockwise", " turning right", " to the right"),
}


def _shape(rng: Rng) -> Phrase:
    """ "do a square" -> 4 x (forward 1 m, turn right 90); sides and turning side may be spoken."""
    shape = rng.choice(("square", "square", "square", "triangle", "pentagon", "hexagon", "octagon"))
    sides = SHAPE_SIDES[shape]
    if rng.random() < 0.5:
        spoken, side = measure(rng, DISTANCE)
        text = rng.choice(_SHAPE_SIDE).format(s=shape, d=spoken)
    else:
        text, side = rng.choice(_SHAPE).format(s=shape), 1.0
    direction = "right"
    if rng.random() < 0.35:
        direction = rng.choice(_SIDES)
        text += rng.choice(_SHAPE_TURN[direction])
    text, speed = _with_speed(rng, text)
    body = (_call("robot.move_forward", distance=side, speed=speed), _turn_call(direction, round(360 / sides, 2)))
    return Phrase(text, (Loop(sides, body),), closed=True)


# Bodies worth repeating on their own ("turn left three times", "take 3 photos").
_REPEATABLE: _Weighted[Callable[[Rng], Phrase]] = _Weighted(
    ((forward, 3), (backward, 1), (turn, 3), (take_photo, 1.5), (_say_quoted, 1.5), (scan, 1), (wait, 0.5))
)
_REPEAT_ONE = ("{s} {n}", "{s} {n}", "{s} {n}", "{s}, {n}", "repeat {n}: {s}", "do this {n}: {s}", "{n}, {s}")
_REPEAT_MANY = (
    "repeat {n}: {s}", "repeat {n}: {s}", "do the following {n}: {s}", "{s}, {n}", "{s}. Do this {n}",
    "{s}. Do that {n} in total", "{n} in a row: {s}", "{s}, and do that {n}", "{n}: {s}", "repeat this {n}: {s}",
    "{n}, {s}", "{n} in a row, {s}",
)  # fmt: skip
_PATROL = (
    "patrol between {a} and {b} {n}", "go back and forth between {a} and {b} {n}",
    "alternate between {a} and {b} {n}", "drive between {a} and {b} {n}", "go to {a} and then {b}, {n}",
)  # fmt: skip
_ALTERNATE_LIGHT = (
    "alternate the light between {a} and {b} {n}", "switch the light between {a} and {b} {n}",
    "flash {a} and {b} {n}", "set the light to {a} then {b}, {n}", "blink {a} and {b} {n}",
)  # fmt: skip
_N_PHOTOS = (
    "take {k} photos", "take {k} pictures", "snap {k} pictures", "take {k} photos in a row", "take {k} pics",
    "fire off {k} photos", "snap {k} photos", "shoot {k} pictures", "take {k} snapshots", "capture {k} images",
    "fire off {k} shots", "grab {k} pictures", "take {k} pictures in a row", "snap {k} pics of the room",
    "take {k} photos of the scene",
)  # fmt: skip
# A photo, then a turn, both repeated: "take 4 photos, turning left 90 degrees after each one".
_PHOTO_TURNS = (
    "take {k} photos, turning {side} {a} after each one", "take {k} pictures, turning {a} to the {side} after each",
    "snap {k} photos and turn {side} {a} after every one", "take {k} pictures and rotate {side} {a} after each shot",
    "fire off {k} photos, turning {side} {a} after each", "take {k} pics, rotating {a} {side} after each one",
    "take {k} photos; after each one, turn {side} {a}",
)  # fmt: skip
# Laps through places said bare: "do 2 laps: office, garage, then back home".
_LAPS = (
    "do {k} laps: {a}, {b}, then {c}", "run {k} laps: {a}, {b}, then {c}", "{k} laps: {a}, {b} and {c}",
    "make {k} rounds: {a}, {b}, then {c}", "do {k} rounds through {a}, {b} and {c}", "do {k} loops: {a}, {b}, {c}",
    "go on {k} laps: {a}, then {b}, then {c}", "run {k} rounds, {a}, {b}, then {c}",
)  # fmt: skip
_LAP_HOME = ("back home", "home", "back to base", "home base")
# A shape driven several times: a loop of the shape's loop.
_SHAPE_LAPS = (
    "do {k} laps of a {s}{side}{turn}", "drive {k} laps around a {s}{side}{turn}", "run {k} laps of a {s}{side}{turn}",
    "go around a {s}{side} {n}{turn}", "drive a {s}{side} {n}{turn}", "do {k} rounds of a {s}{side}{turn}",
)  # fmt: skip
_SIDES_OF = (" with {d} sides", " with sides of {d}", " with {d} on each side", " with {d} sides", "")
_OUT_AND_BACK = (
    "go forward {d} and back {d}", "move forward {d} and then back {d}", "drive {d} forward and {d} back",
    "go {d} forward and come back {d}", "move ahead {d}, then back {d}",
)  # fmt: skip
# Errands a loop may repeat as a whole: "repeat twice: go to the kitchen, take a picture, come back home".
_ERRAND: _Weighted[Callable[[Rng], Phrase]] = _Weighted(
    ((navigate, 3), (go_home, 1.5), (take_photo, 2), (scan, 1), (_say_quoted, 1), (forward, 1), (turn, 1), (wait, 1))
)


def _count(rng: Rng) -> int:
    return rng.choices((2, 3, 4, 5, 6, 8, 10), (5, 5, 3, 2, 1, 0.5, 0.5))[0]


def _number(rng: Rng, n: int) -> str:
    return str(n) if rng.random() < 0.6 else int_words(n, rng)


def _bare_place(rng: Rng, location: str) -> str:
    return location.replace("_", " ") if rng.random() < 0.8 else _location_text(rng, location)


def _more_loops(rng: Rng, n: int) -> Phrase:
    """Laps through bare places, laps of a shape (a loop in a loop), photos with a turn after each."""
    kind = rng.random()
    if kind < 0.35:
        a, b = rng.sample(list(_NAV_LOCATIONS.items), 2)
        body = [_call("robot.navigate_to", location=a, speed=1.0), _call("robot.navigate_to", location=b, speed=1.0)]
        if rng.random() < 0.5:
            last, body = rng.choice(_LAP_HOME), [*body, _call("robot.go_home")]
        else:
            c = rng.choice([x for x in _NAV_LOCATIONS.items if x not in (a, b)])
            last, body = _bare_place(rng, c), [*body, _call("robot.navigate_to", location=c, speed=1.0)]
        text = rng.choice(_LAPS).format(k=_number(rng, n), a=_bare_place(rng, a), b=_bare_place(rng, b), c=last)
        return Phrase(text, (Loop(n, tuple(body)),), closed=True)
    if kind < 0.7:
        shape = rng.choice(("square", "square", "triangle", "pentagon", "hexagon"))
        sides = SHAPE_SIDES[shape]
        form = rng.choice(_SIDES_OF)
        side = 1.0
        if "{d}" in form:
            spoken, side = measure(rng, DISTANCE)
            form = form.format(d=spoken)
        direction = rng.choice(("right", "right", "left"))
        turning = rng.choice(_SHAPE_TURN[direction]) if rng.random() < 0.6 or direction == "left" else ""
        if turning.startswith(" turning") and rng.random() < 0.7:
            turning = "," + turning
        laps = rng.choice(_SHAPE_LAPS)
        text = laps.format(k=_number(rng, n), s=shape, side=form, n=_times(rng, n), turn=turning)
        body = (_call("robot.move_forward", distance=side, speed=1.0), _turn_call(direction, round(360 / sides, 2)))
        # "drive a square twice": the count comes after the shape, so no step may go before it.
        return Phrase(text, (Loop(n, (Loop(sides, body),)),), count_last="{n}" in laps, closed=True)
    side = rng.choice(_SIDES)
    spoken, angle = measure(rng, ANGLE, bare=0.1)
    text = rng.choice(_PHOTO_TURNS).format(k=_number(rng, n), side=side, a=spoken)
    return Phrase(text, (Loop(n, (_call("robot.camera.take_photo"), _turn_call(side, angle))),), closed=True)


def _loop_of(rng: Rng) -> Phrase:
    """A ``for`` loop: repeated steps, a shape, a patrol, light alternation or "take 3 photos"."""
    n = _count(rng)
    kind = rng.random()
    if rng.random() < 0.2:
        return _more_loops(rng, n)
    if kind < 0.2:
        return _shape(rng)
    if kind < 0.5:
        step = _REPEATABLE(rng)(rng)
        form = rng.choice(_REPEAT_ONE)
        mood = "statement" if form.startswith("{n}") else "imperative"  # "three times, turn left": no "please"
        text = form.format(s=step.text, n=_times(rng, n))
        last = form.startswith("{s}")
        return Phrase(text, (Loop(n, step.program),), mood, count_last=last, closed=last and form.endswith("{n}"))
    if kind < 0.55:  # "go forward 2 m and back 2 m, 3 times"
        spoken, d = measure(rng, DISTANCE)
        text = rng.choice(_OUT_AND_BACK).format(d=spoken)
        body = (_call("robot.move_forward", distance=d, speed=1.0), _call("robot.move_backward", distance=d, speed=1.0))
        form = rng.choice(("{s}, {n}", "{s} {n}", "repeat {n}: {s}", "{n}, {s}"))
        closed = form.endswith("{n}")
        return Phrase(form.format(s=text, n=_times(rng, n)), (Loop(n, body),), count_last=closed, closed=closed)
    if kind < 0.75:
        pool = _REPEATABLE if rng.random() < 0.7 else _ERRAND
        steps = [pool(rng)(rng) for _ in range(rng.choice((2, 3, 3)))]
        body = tuple(s for p in steps for s in p.program)
        form = rng.choice(_REPEAT_MANY)
        mood = "statement" if form.startswith("{n}") else "imperative"
        text = form.format(s=_join(rng, [p.text for p in steps], in_block=True), n=_times(rng, n))
        return Phrase(_capitalize_after_stop(text), (Loop(n, body),), mood, count_last=form.startswith("{s}"))
    if kind < 0.87:
        a, b = rng.sample(list(_NAV_LOCATIONS.items), 2)
        form = rng.choice(_PATROL)
        text = form.format(a=_location_text(rng, a), b=_location_text(rng, b), n=_times(rng, n))
        body = (_call("robot.navigate_to", location=a, speed=1.0), _call("robot.navigate_to", location=b, speed=1.0))
        return Phrase(text, (Loop(n, body),), count_last=True, closed=True)
    if kind < 0.92:
        a, b = rng.sample(_NAMED_COLORS, 2)
        text = rng.choice(_ALTERNATE_LIGHT).format(a=a, b=b, n=_times(rng, n))
        body = (_call("robot.set_light", color=a), _call("robot.set_light", color=b))
        return Phrase(text, (Loop(n, body),), count_last=True, closed=True)
    k = str(n) if rng.random() < 0.6 else int_words(n, rng)
    return Phrase(rng.choice(_N_PHOTOS).format(k=k), (Loop(n, (_call("robot.camera.take_photo"),)),), closed=True)


_CONDITION = (
    "you see {o}", "you see {o}", "you see {o}", "there is {o}", "there's {o}", "there's {o}", "you detect {o}",
    "you spot {o}", "you can see {o}", "you find {o}", "{o} is visible", "you notice {o}",
    "there is {o} in front of you", "there's {o} nearby", "your sensors detect {o}",
)  # fmt: skip
_CONDITION += ("you come across {o}", "you happen to see {o}", "you run into {o}", "there happens to be {o}")
_CONDITION += ("there is {o} there", "you see {o} there", "you find {o} there")
_IF = ("if {c}, {t}", "if {c}, {t}", "if {c}, {t}", "if {c} then {t}", "if {c}, then {t}", "if {c}, {t}")
# Other ways people open a condition: the same `if` in the program.
_IF += (
    "when {c}, {t}", "when {c}, {t}", "when {c} {t}", "in case {c}, {t}", "provided {c}, {t}",
    "provided that {c}, {t}", "assuming {c}, {t}", "in the event that {c}, {t}", "if it turns out {c}, {t}",
    "if {c} {t}", "if {c} go ahead and {t}", "only if {c}, {t}",
)  # fmt: skip
_SHOULD = (
    "should you see {o}, {t}", "should you spot {o}, {t}", "should you find {o}, {t}", "should you detect {o}, {t}",
    "should there be {o}, {t}", "should you come across {o}, {t}", "should you notice {o}, {t}",
    "should there be {o} around, {t}", "should there be {o} nearby, {t}", "should there be {o} in the room, {t}",
    "should there be {o} in front of you, {t}", "should you happen to see {o}, {t}",
)  # fmt: skip
# A question, then what to do for yes (and for no: _ELSE_ANSWER).
_ASK = (
    "is there {o}? If so, {t}", "is there {o}? If yes, {t}", "is there {o}? if yes {t}",
    "do you see {o}? If you do, {t}", "can you see {o}? If so, {t}", "is there {o} around? If there is, {t}",
    "do you see {o}? if yes, {t}", "any {n} around? If so, {t}", "check whether there's {o}; if yes, {t}",
    "see if there is {o}. If yes, {t}",
)  # fmt: skip
_ELSE_ANSWER = ("; if no, {e}", " if no {e}", ". If not, {e}", ", if not, {e}", ". If no, {e}", ". Otherwise, {e}")
# The common ways to say "else", a form repeated to be drawn more often.
_ELSE = (
    ", otherwise {e}", ", otherwise {e}", ", otherwise, {e}", "; otherwise {e}", ". Otherwise, {e}", ", else {e}",
    ", if not, {e}", ". If not, {e}", ", or else {e}", "; if not, {e}", ", else {e}", "; else {e}", " else {e}",
    ", otherwise {e}", ", if not, {e}",
)  # fmt: skip
# Rarer ways to say "else", each drawn less often than the common ones above.
_ELSE_RARE = (
    ", if you don't, {e}", ". If you don't see it, {e}", ", and if not, {e}", "; if no, {e}",
    ", if there isn't one, {e}", ". If it's not there, {e}", ", and if you can't find it, {e}",
)  # fmt: skip
# After a condition: the next step happens whatever the condition found.
_AFTER_IF = (
    ". Then, regardless, ", ". Either way, ", ". In any case, ", ". No matter what, ",
    ". After that, whatever happens, ", ". Regardless, ", ". Then, either way, ", ". Whatever you find, ",
)  # fmt: skip
_CHECK_FIRST = (
    "check for {o}. If you find it, {t}",
    "look for {o}. If it's there, {t}",
    "see if there's {o}; if so, {t}",
    "check if there is {o} and if there is, {t}",
    "look for {o}, and if you see it, {t}",
    "check if there's {o} and, if so, {t}",
    "check whether {o} is there and if it is, {t}",
    "see whether you can find {o}, and if you can, {t}",
    "check if there is {o} and, if so, {t}",
    "see if there's {o} and, if there is, {t}",
    "look around for {o} and, if you spot it, {t}",
    "check for {o} and, if it's there, {t}",
    "find out whether there's {o} and, if yes, {t}",
)
# "pick up the red ball if you see one": the action names the object, the condition follows.
_ACTION_FIRST = ("{t} if you see one", "{t} if there is one", "{t} if you can see it", "{t} if it's there")
_ACTION_FIRST += ("{t} if you find one", "{t}, but only if you see one")
_NOT_FOUND = (
    "I cannot see {o}", "I can't find {o}", "No {n} here", "I don't see {o}", "There is no {n}", "{N} not found",
    "I could not find {o}", "Nothing found",
)  # fmt: skip


def _reaction_to(rng: Rng, ref: ObjectRef) -> Phrase:
    """What to do with the object the condition found, by pronoun: "pick it up", "follow them"."""
    if ref.noun in _ANIMATE:
        pronoun = "them" if ref.noun == "person" else "it"
        options = [
            (f"follow {pronoun}", (_call("robot.follow", target=ref.noun, distance=1.0),)),
            (f"look at {pronoun}", (_look_at_call(ref),)),
            (f"take a picture of {pronoun}", (_look_at_call(ref), _call("robot.camera.take_photo"))),
        ]
        if ref.noun == "person":
            greeting = rng.choice(("Hello", "Hi there", "Hello!", "Good morning", "Welcome"))
            options.append((f'say "{_protect(greeting)}"', (_call("robot.say", text=greeting),)))
    elif ref.noun not in _GRASPABLE:  # a sofa is looked at, not picked up
        options = [
            (rng.choice(("look at it", "point your camera at it", "look at that")), (_look_at_call(ref),)),
            (
                rng.choice(("take a photo of it", "take a picture of it", "photograph it", "snap a pic of it")),
                (_look_at_call(ref), _call("robot.camera.take_photo")),
            ),
        ]
    else:
        surface = _PLACE_LOCATIONS(rng)
        put = rng.choice(("put it", "place it", "drop it"))
        where = f"{rng.choice(_PLACE_PREPS[surface])} {_location_text(rng, surface)}"
        options = [
            (rng.choice(("pick it up", "pick it up", "grab it", "pick that up")), (_pick_up_call(ref),)),
            (
                f"{rng.choice(('pick it up', 'grab it'))} and {put} {where}",
                (_pick_up_call(ref), _call("robot.gripper.place", location=surface)),
            ),
            (rng.choice(("look at it", "point your camera at it")), (_look_at_call(ref),)),
            (
                rng.choice(("take a photo of it", "take a picture of it")),
                (_look_at_call(ref), _call("robot.camera.take_photo")),
            ),
        ]
        if rng.random() < 0.25:  # "pick it up, carry it to the garage and put it on the floor"
            room = rng.choice(_ROOMS)
            carry = rng.choice(_BRING).format(l=_location_text(rng, room))
            text = f"{rng.choice(('pick it up', 'grab it'))}, {carry} and {put} {where}"
            program = (_pick_up_call(ref), _call("robot.navigate_to", location=room, speed=1.0))
            return Phrase(text, (*program, _call("robot.gripper.place", location=surface)))
    text, program = rng.choice(options)
    return Phrase(text, program)


def _action_naming(rng: Rng, ref: ObjectRef) -> Phrase:
    """An action that names its object in full, for "pick up the red ball if you see one"."""
    if ref.noun in _ANIMATE:
        return Phrase(f"follow {ref.the()}", (_call("robot.follow", target=ref.noun, distance=1.0),))
    if ref.noun in _GRASPABLE and rng.random() < 0.7:
        return Phrase(f"{rng.choice(('pick up', 'grab'))} {ref.the()}", (_pick_up_call(ref),))
    if rng.choice((True, False)):
        return Phrase(f"look at {ref.the()}", (_look_at_call(ref),))
    return Phrase(f"take a photo of {ref.the()}", (_look_at_call(ref), _call("robot.camera.take_photo")))


_FOUND = ("I found {o}", "I see {o}", "There is {o}", "Found it", "{N} detected", "I can see {o}", "Found {o}")


def _found(rng: Rng, ref: ObjectRef) -> Phrase:
    """Say what was seen: 'say "I found a red ball"' (quoted: more words may follow)."""
    text = rng.choice(_FOUND).format(o=_indefinite(ref), N=ref.noun.capitalize())
    return Phrase(f'{rng.choice(("say", "announce", "tell me"))} "{_protect(text)}"', (_call("robot.say", text=text),))


def _indefinite(ref: ObjectRef) -> str:
    """ "a red ball" whatever the reference's determiner."""
    words = ref.text.split(" ", 1)[1]
    return f"{_article(words)} {words}"


def _not_found(rng: Rng, ref: ObjectRef) -> Phrase:
    text = rng.choice(_NOT_FOUND).format(o=_indefinite(ref), n=ref.noun, N=ref.noun.capitalize())
    # The else branch ends the sentence, so unquoted text is unambiguous there.
    words = f"say {_protect(text)}" if rng.random() < 0.5 else f'say "{_protect(text)}"'
    return Phrase(words, (_call("robot.say", text=text),))


def _conditional(rng: Rng) -> Phrase:
    """ "if you see a red ball, pick it up, otherwise say ..." -> if robot.sensors.detect(...)."""
    sized = rng.random() < 0.15
    ref = _object_ref(rng, _VISIBLE, sized=sized, definite=0.0)
    test = _detect_call(ref)
    if rng.random() < 0.15:  # action first, no else
        action = _action_naming(rng, ref)
        text = rng.choice(_ACTION_FIRST).format(t=action.text)
        return Phrase(text, (If(test, action.program),))

    r = rng.random()
    then = _reaction_to(rng, ref) if r < 0.55 else _found(rng, ref) if r < 0.65 else _REACTION(rng)(rng)
    if rng.random() < 0.3:
        extra = _REACTION(rng)(rng)
        joiner = rng.choice((" and ", " and ", " and then ", ", then ", " and also ", ", and "))
        joined = then.text + joiner + extra.text
        then = Phrase(joined, then.program + extra.program)
    elif r >= 0.65 and rng.random() < 0.3:  # "drive forward 2 m and pick it up": the pronoun after another step
        handled = _reaction_to(rng, ref)
        joined = then.text + rng.choice((" and ", " and then ", ", then ")) + handled.text
        then = Phrase(joined, then.program + handled.program)
    elif rng.random() < 0.12:  # "look at it and take 2 pictures": a loop inside the branch
        k = rng.choice((2, 2, 3, 4, 5))
        shots = rng.choice(("take {k} pictures", "take {k} photos", "snap {k} pics", "take {k} photos of it"))
        pronoun = "them" if ref.noun == "person" else "it"
        shots = shots.replace(" it", f" {pronoun}")
        look = Phrase(
            rng.choice(("look at {p}", "point your camera at {p}", "face {p}")).format(p=pronoun), (_look_at_call(ref),)
        )
        photos = Loop(k, (_call("robot.camera.take_photo"),))
        first = look if rng.random() < 0.6 else rng.choice((stop, wait))(rng)
        then = Phrase(f"{first.text} and {shots.format(k=_number(rng, k))}", (*first.program, photos))
    orelse: Phrase | None = None
    if rng.random() < 0.5:
        orelse = _not_found(rng, ref) if rng.random() < 0.4 else _REACTION(rng)(rng)
        while orelse.program == then.program:  # "if ..., go home, otherwise go home" says nothing
            orelse = _REACTION(rng)(rng)
        if rng.random() < 0.15:  # "..., otherwise if you see a cat, follow it, otherwise go home"
            other = _object_ref(rng, _VISIBLE, sized=False, definite=0.0)
            while other.noun == ref.noun:
                other = _object_ref(rng, _VISIBLE, sized=False, definite=0.0)
            second = _reaction_to(rng, other) if rng.random() < 0.5 else _REACTION(rng)(rng)
            cond = rng.choice(_CONDITION).format(o=other.text)
            head = rng.choice(
                (", otherwise if {c}, {t}", ", otherwise, if {c}, {t}", "; else if {c}, {t}", ", or else if {c}, {t}",
                 ", otherwise if {c} {t}", ". Otherwise, if {c}, {t}", ", else if {c}, {t}")
            )  # fmt: skip
            tail = rng.choice(
                (
                    ", otherwise {e}",
                    ", otherwise {e}",
                    ", and otherwise {e}",
                    ", else {e}",
                    ". If neither, {e}",
                    "; if you see neither, {e}",
                    ", and if not, {e}",
                )
            )
            text = head.format(c=cond, t=second.text) + tail.format(e=orelse.text)
            orelse = Phrase(text, (If(_detect_call(other), second.program, orelse.program),), mood="chain")
    opener = rng.random()
    if opener < 0.12:
        text = rng.choice(_CHECK_FIRST).format(o=ref.text, t=then.text)
    elif opener < 0.24:
        text = rng.choice(_SHOULD).format(o=ref.text, t=then.text)
    elif opener < 0.36:
        text = rng.choice(_ASK).format(o=ref.text, n=ref.text.split(" ", 1)[1], t=then.text)
    else:
        text = rng.choice(_IF).format(c=rng.choice(_CONDITION).format(o=ref.text), t=then.text)
    if orelse is not None and orelse.mood == "chain":
        text += orelse.text
    elif orelse is not None:
        answers = _ELSE_ANSWER if 0.24 <= opener < 0.36 else _ELSE_RARE if rng.random() < 0.2 else _ELSE
        text += rng.choice(answers).format(e=orelse.text)
    program = (If(test, then.program, orelse.program if orelse else ()),)
    return Phrase(_capitalize_after_stop(text), program, mood="statement")


_BOTH = (
    "if you see {a} and you also see {b}, {t}", "if you see {a} and {b}, {t}", "if there's {a} and also {b}, {t}",
    "if {a} and {b} are both there, {t}", "when you see both {a} and {b}, {t}", "if you detect {a} as well as {b}, {t}",
    "if there is {a}, and there is also {b}, {t}",
)  # fmt: skip


def _nested_conditional(rng: Rng) -> Phrase:
    """Two things must be seen: "if you see a dog and also a ball, say ..." -> an `if` inside an `if`."""
    a, b = (_object_ref(rng, _VISIBLE, sized=False, definite=0.0) for _ in range(2))
    while b.noun == a.noun:
        b = _object_ref(rng, _VISIBLE, sized=False, definite=0.0)
    then = _found(rng, a) if rng.random() < 0.2 else _REACTION(rng)(rng)
    text = rng.choice(_BOTH).format(a=a.text, b=b.text, t=then.text)
    inner = If(_detect_call(b), then.program)
    return Phrase(text, (If(_detect_call(a), (inner,)),), mood="statement")


def _simple_if(rng: Rng) -> Phrase:
    """ "if you see a cup, pick it up": one condition, no else."""
    ref = _object_ref(rng, _VISIBLE, sized=False, definite=0.0)
    then = _reaction_to(rng, ref) if rng.random() < 0.6 else _REACTION(rng)(rng)
    opener = rng.choice(("if {c}, {t}", "if {c}, {t}", "when {c}, {t}", "if {c} {t}"))
    text = opener.format(c=rng.choice(_CONDITION).format(o=ref.text), t=then.text)
    return Phrase(text, (If(_detect_call(ref), then.program),), mood="statement")


def _two_conditionals(rng: Rng) -> Phrase:
    """Two conditions one after the other: "if you see a cup, pick it up; if you see a ball, look at it"."""
    first, second = _simple_if(rng), _simple_if(rng)
    while second.program[0].test == first.program[0].test:
        second = _simple_if(rng)
    joiner = rng.choice(("; ", ". ", ". And ", "; and ", ". Also, "))
    text = _capitalize_after_stop(first.text + joiner + second.text)
    return Phrase(text, first.program + second.program, mood="statement")


_EACH_TIME = (
    "{d} {n}, and each time you find one, {t}", "{d} {n} and every time it's there, {t}",
    "{d} {n}; each time you see it, {t}", "{d} {n}, and whenever you find one, {t}",
    "{n}, {d} and if it's there, {t}", "{n}: {d}, and if you find one, {t}",
)  # fmt: skip
_STEP_THEN_CHECK = (
    "{n}: {s}, and if {c}, {t}", "repeat {n}: {s}, then if {c}, {t}", "do this {n}: {s} and if {c}, {t}",
    "{n}, {s}, and if {c}, {t}",
)  # fmt: skip


def _loop_with_check(rng: Rng) -> Phrase:
    """A condition checked on every round: "look for a cup 3 times, and each time you find one, pick it up",
    "3 times: scan, and if you see a cat, take a picture"."""
    n = _count(rng)
    ref = _object_ref(rng, _VISIBLE, sized=False, definite=0.0)
    then = _reaction_to(rng, ref) if rng.random() < 0.7 else _found(rng, ref)
    test = If(_detect_call(ref), then.program)
    if rng.random() < 0.5:
        check = rng.choice(("look for {o}", "check for {o}", "search for {o}", "scan for {o}", "look around for {o}"))
        text = rng.choice(_EACH_TIME).format(d=check.format(o=ref.text), n=_times(rng, n), t=then.text)
        return Phrase(_capitalize_after_stop(text), (Loop(n, (test,)),), mood="statement")
    step = rng.choice((scan, turn, forward, take_photo, wait))(rng)
    cond = rng.choice(_CONDITION).format(o=ref.text)
    text = rng.choice(_STEP_THEN_CHECK).format(n=_times(rng, n), s=step.text, c=cond, t=then.text)
    return Phrase(text, (Loop(n, (*step.program, test)),), mood="statement")


# A step joined after a closed loop ("turn left 3 times, then take a photo") comes after the loop.
_THEN_AFTER_LOOP = (", then ", " then ", " and then ", ", and then ", ", after that ", " and after that ")


def control_flow(rng: Rng) -> Phrase:
    """A loop or a conditional, sometimes inside a loop or with a step before or after it."""
    r = rng.random()
    if r < 0.42:
        block = _loop_of(rng)
    elif r < 0.74:
        block = _conditional(rng)
    elif r < 0.8:
        block = _nested_conditional(rng)
    elif r < 0.86:
        block = _two_conditionals(rng)
    elif r < 0.94:
        block = _loop_with_check(rng)
    else:  # a conditional repeated: "repeat 3 times: if you see a cup, pick it up, otherwise move forward"
        inner = _conditional(rng)
        n = _count(rng)
        head = rng.choice(("repeat {n}: ", "do this {n}: ", "{n}, "))
        block = Phrase(head.format(n=_times(rng, n)) + inner.text, (Loop(n, inner.program),), mood="statement")
    if rng.random() < 0.2 and not block.count_last:
        before = _STEP(rng)(rng)
        first = "first " if rng.random() < 0.2 else ""
        text = first + before.text + rng.choice((", then ", " and ", ". Then ", ", and then ", ". ")) + block.text
        block = Phrase(_capitalize_after_stop(text), before.program + block.program, closed=block.closed)
    # After "repeat 3 times: a. b" a further sentence could be read as inside the loop, so no step follows.
    if ":" not in block.text and rng.random() < (0.5 if block.closed else 0.15):
        after = _STEP(rng)(rng)
        if block.closed and rng.random() < 0.8:
            joiner = rng.choice(_THEN_AFTER_LOOP)
        elif isinstance(block.program[-1], If) and rng.random() < 0.5:
            joiner = rng.choice(_AFTER_IF)
        else:
            joiner = rng.choice(_AFTER_BLOCK)
        text = block.text + joiner + after.text
        block = Phrase(_capitalize_after_stop(text), block.program + after.program, block.mood)
    return block


# ---------------------------------------------------------------------------------------------------
# Decorators: politeness, typos, casing, punctuation
# ---------------------------------------------------------------------------------------------------

_POLITE: _Weighted[str] = _Weighted(
    (
        ("", 50),
        ("please ", 8),
        ("could you ", 4),
        ("could you please ", 3),
        ("can you ", 4),
        ("can you please ", 2),
        ("would you ", 1.5),
        ("would you please ", 1),
        ("robot, ", 5),
        ("robot, please ", 2),
        ("hey robot, ", 3),
        ("hey, ", 2),
        ("ok robot, ", 1),
        ("okay, ", 1),
        ("I need you to ", 3),
        ("I want you to ", 2),
        ("I'd like you to ", 2),
        ("go ahead and ", 1.5),
        ("now ", 1),
        ("hey robot, can you ", 1),
        ("please, ", 1),
        ("kindly ", 0.5),
        ("robot: ", 0.5),
        ("alright robot, ", 0.5),
        ("ok, ", 1.5),
        ("ok ", 1),
        ("alright, ", 1.5),
        ("alright ", 0.5),
        ("now, ", 1),
        ("ok now ", 0.5),
        ("alright now, ", 0.5),
        ("when you're ready, ", 0.8),
        ("whenever you can, ", 0.6),
        ("when you get a chance, ", 0.6),
        ("when you have a moment, ", 0.4),
    )
)
_ADDRESS: _Weighted[str] = _Weighted(
    (
        ("", 75),
        ("robot, ", 10),
        ("hey robot, ", 6),
        ("okay, ", 3),
        ("hey, ", 3),
        ("ok, ", 2),
        ("alright, ", 2),
        ("now, ", 1),
    )
)
_SUFFIX: _Weighted[str] = _Weighted(
    (
        (" ", 76),
        (" please", 6),
        (", please", 6),
        (" for me", 3),
        (" now", 3),
        (", thanks", 2),
        (", thank you", 2),
        (" when you get a chance", 1),
        (", whenever you can", 1),
        (" when you're ready", 1),
        (", when you can", 0.7),
        (" whenever you get a moment", 0.5),
        (", if you don't mind", 0.5),
    )
)
_STATEMENT_SUFFIX: _Weighted[str] = _Weighted(((" ", 90), (", please", 5), (", thanks", 5)))
_PUNCTUATION_MARKS = re.compile(r"[,;:!?]|\.(?!\d)")
_PUNCTUATION: _Weighted[str] = _Weighted((("", 50), (".", 38), ("!", 10), ("...", 1), ("!!", 1)))


def _misspell(rng: Rng, word: str) -> str:
    """One realistic slip of the finger: swap two letters, drop one or double one (never the first)."""
    k = rng.randrange(1, len(word) - 1)
    op = rng.randrange(3)
    if op == 0:
        return word[:k] + word[k + 1] + word[k] + word[k + 2 :]
    if op == 1:
        return word[:k] + word[k + 1 :]
    return word[:k] + word[k] + word[k:]


# A say verb already slipped ("sya hello there"): the text has its one typo.
_SLIPPED_SAY = re.compile(rf"\b(?:{'|'.join(_SAY_SLIPS)}) {_OPEN}")


def add_typo(rng: Rng, text: str) -> str:
    """Misspell one word of 4+ letters outside protected spans, never a number, colour or size word; a text
    whose say verb is already slipped keeps its one slip."""
    if _SLIPPED_SAY.search(text):
        return text
    segments = _PROTECTED.split(text)
    candidates = [
        (i, m)
        for i, segment in enumerate(segments)
        if not segment.startswith(_OPEN)
        for m in re.finditer(r"[A-Za-z]{4,}", segment)
        if m.group().lower() not in _NO_TYPO
    ]
    if not candidates:
        return text
    i, m = rng.choice(candidates)
    for _ in range(4):
        new = _misspell(rng, m.group())
        if new != m.group() and new.lower() not in _NO_TYPO:
            segments[i] = segments[i][: m.start()] + new + segments[i][m.end() :]
            return "".join(segments)
    return text


def _map_free(text: str, fn: Callable[[str], str]) -> str:
    """Apply ``fn`` to the text outside protected spans."""
    return "".join(s if s.startswith(_OPEN) else fn(s) for s in _PROTECTED.split(text))


def decorate(rng: Rng, phrase: Phrase) -> str:
    """The phrase as a person might type it: politeness or address, maybe a typo, casing, punctuation."""
    text = phrase.text
    if phrase.mood == "imperative":
        prefix, suffix = _POLITE(rng), _SUFFIX(rng)
        word = suffix.strip(" ,")
        doubled = ("please" in prefix and word == "please") or (word and f" {word} " in f" {text} ")
        doubled = doubled or ("when" in prefix and "when" in suffix)
        if doubled:  # "please ... please", "stop now now"
            suffix = " "
    else:
        prefix = _ADDRESS(rng)
        suffix = " " if phrase.mood in ("question", "terse") else _STATEMENT_SUFFIX(rng)
    if text.endswith(_CLOSE):  # unquoted say text runs to the end: "say hello please" would say "hello please"
        suffix = " "
    text = prefix + text + suffix.rstrip()
    if rng.random() < TYPO_RATE:
        text = add_typo(rng, text)
    # One statement, or steps only: without punctuation the words still say where each step belongs.
    if rng.random() < PLAIN_RATE and (len(phrase.program) == 1 or all(isinstance(s, Call) for s in phrase.program)):
        text = _map_free(text, lambda t: _PUNCTUATION_MARKS.sub(" ", t))
        text = _map_free(text, str.lower) if rng.random() < 0.7 else text
        return re.sub(r"\s+", " ", text.replace(_OPEN, "").replace(_CLOSE, "")).strip()
    casing = rng.random()
    if casing < 0.5:
        text = text[0].upper() + text[1:]
    elif casing < 0.51 and _OPEN not in text:
        text = text.upper()
    elif casing < 0.53:
        text = _map_free(text, str.lower)
    question = phrase.mood == "question" or re.search(r"\b(could|can|would) you", prefix) is not None
    if question and ". " not in text and rng.random() < 0.6:
        text += "?"
    elif not text.endswith((".", "!", "?")):
        text += _PUNCTUATION(rng)
    text = text.replace(_OPEN, "").replace(_CLOSE, "")
    return re.sub(r"\s+", " ", text).strip()


# ---------------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------------

CATEGORY_BUILDERS: dict[str, Callable[[Rng], Phrase]] = {
    **{category: (lambda rng, c=category: CALL_BUILDERS[c](rng)(rng)) for category in CALL_BUILDERS},
    "sequence": sequence,
    "control_flow": control_flow,
}

_NORMALIZE = re.compile(r"[\"'“”‘’,;:!?()]|\.(?!\d)")


def normalize_input(text: str) -> str:
    """The form inputs are deduplicated on: lower case, no punctuation or quotes, single spaces."""
    return " ".join(_NORMALIZE.sub(" ", text.lower()).split())


def category_of(program: Program) -> str:
    """A program's category: ``control_flow`` with a loop or if, ``sequence`` with 2+ calls, else its call's."""
    if any(not isinstance(s, Call) for s in program):
        return "control_flow"
    if len(program) > 1:
        return "sequence"
    return CALLS[program[0].name].category


def category_counts(num_examples: int) -> dict[str, int]:
    """Records per category for ``num_examples`` under :data:`CATEGORY_MIX` (largest remainder)."""
    raw = {c: num_examples * share for c, share in CATEGORY_MIX.items()}
    counts = {c: int(v) for c, v in raw.items()}
    by_remainder = sorted(raw, key=lambda c: raw[c] - counts[c], reverse=True)
    for c in by_remainder[: num_examples - sum(counts.values())]:
        counts[c] += 1
    return counts


def make_record(rng: Rng, category: str) -> dict[str, str]:
    """One record of ``category``: decorated input, canonical output."""
    phrase = CATEGORY_BUILDERS[category](rng)
    return {"input": decorate(rng, phrase), "output": format_program(phrase.program), "category": category}


def generate_records(num_examples: int, seed: int) -> list[dict[str, str]]:
    """Generate up to ``num_examples`` records with unique inputs, deterministic for ``seed``.

    Categories follow :data:`CATEGORY_MIX`, in shuffled order. A category that yields no unseen input
    in :data:`MAX_TRIES` draws is exhausted and its remaining records are dropped, so fewer records
    come back rather than the loop running forever.

    Args:
        num_examples: how many records to make (>= 0).
        seed: seed of the ``random.Random`` that drives every choice.

    Returns:
        Records ``{"input", "output", "category"}``.
    """
    if num_examples < 0:
        raise ValueError(f"num_examples must be >= 0, got {num_examples}")
    rng = random.Random(seed)
    schedule = [c for c, k in category_counts(num_examples).items() for _ in range(k)]
    rng.shuffle(schedule)
    seen: set[str] = set()
    exhausted: set[str] = set()
    records: list[dict[str, str]] = []
    for category in schedule:
        if category in exhausted:
            continue
        for _ in range(MAX_TRIES):
            record = make_record(rng, category)
            key = normalize_input(record["input"])
            if key not in seen:
                seen.add(key)
                records.append(record)
                break
        else:
            exhausted.add(category)
    return records


def write_dataset(records: Sequence[dict[str, str]], path: str | os.PathLike[str]) -> Path:
    """Write records as a JSON list (``.json``, indent 2) or JSON lines (``.jsonl``), atomically.

    The file is written to a temporary file in the same directory and moved into place, so a reader
    never sees half a dataset.
    """
    path = Path(path)
    if path.suffix == ".json":
        text = json.dumps(list(records), indent=2, ensure_ascii=False) + "\n"
    elif path.suffix == ".jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    else:
        raise ValueError(f"dataset path must end in .json or .jsonl, got {path}")
    return atomic_write_text(path, text)
