"""Commands with their quantities in the robot API's units, written as digits.

The canonical form converts units (centimetres /100, feet x0.3048, inches x0.0254, minutes x60) and
spells every number as a literal. A small model learns to copy a number far more reliably than to
multiply it or to read "one hundred and three", so every prompt, in training and in inference alike,
shows the command with its quantities already in metres, metres per second and seconds, in digits:

    >>> normalize_command("go straight ahead ten feet at fifty cm/s, then wait two and a half minutes")
    'go straight ahead 3.05 m at 0.5 m/s, then wait 150 seconds'
    >>> normalize_command('say "wait five minutes" twice')
    'say "wait five minutes" 2 times'

Only the numbers and units change; quoted text is left as it is, and so is a lone "one" that counts
nothing ("pick that one up"). Degrees, metres and seconds keep their values. Quantities a phrase implies
are shown too: turning around is 180 degrees, and a shape driven as a path has its sides and turns:

    >>> normalize_command("turn around, then drive a triangle")
    'turn around 180 degrees, then drive a triangle (3 turns of 120 degrees)'

A slip of the finger in a word the robot knows is read as that word first (:func:`correct_spelling`):
the generator never misspells a colour, size or number, so a model never learns to read "yelow" or
"fiev", and the few slips it sees teach it little.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from robolora.robot.vocabulary import NEVER_CORRECTED, VOCABULARY

#: Number words by value (0-19), and the tens by their digit (2-9); the dataset generator speaks with them.
ONES_WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
)  # fmt: skip
TENS_WORDS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
ONES = {w: i for i, w in enumerate(ONES_WORDS)}
TENS = {w: 10 * i for i, w in enumerate(TENS_WORDS) if w}

#: Unit words -> factor to the API's unit (metres).
LENGTH = {
    **dict.fromkeys(("centimeter", "centimeters", "centimetre", "centimetres", "cm", "cms"), 0.01),
    **dict.fromkeys(("millimeter", "millimeters", "millimetre", "millimetres", "mm"), 0.001),
    **dict.fromkeys(("foot", "feet", "ft"), 0.3048),
    **dict.fromkeys(("inch", "inches"), 0.0254),
    **dict.fromkeys(("yard", "yards", "yd", "yds"), 0.9144),
    **dict.fromkeys(("kilometer", "kilometers", "kilometre", "kilometres", "km"), 1000.0),
}
#: Unit words -> factor to seconds.
TIME = {
    **dict.fromkeys(("minute", "minutes", "min", "mins"), 60.0),
    **dict.fromkeys(("hour", "hours", "hr", "hrs"), 3600.0),
}
#: Units whose values already are the API's: numbers before them are rewritten as digits only.
KEPT = (
    "meter", "meters", "metre", "metres", "m", "second", "seconds", "sec", "secs", "s",
    "degree", "degrees", "deg", "time", "times",
)  # fmt: skip
UNITS = {*LENGTH, *TIME, *KEPT}
#: The length units of a speed said in words ("a metre per second"), already the API's.
SPEED_LENGTH = ("meter", "meters", "metre", "metres", "m")
PER_SECOND = (["per", "second"], ["a", "second"], ["per", "sec"])
HALF = ["and", "a", "half"]
_UNIT_NAMES = sorted(UNITS)  # a fixed order: a slip that reads as two units always reads as the same one

_QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”|‘[^’]*’|(?<![A-Za-z])'[^']*'(?![A-Za-z])")
_QUOTED_SPLIT = re.compile(f"({_QUOTED.pattern})")
_TOKEN = re.compile(r"[A-Za-z]+|-?\d*\.?\d+|\S")


def _one_slip(typed: str, word: str) -> bool:
    """Whether ``typed`` is ``word`` with one slip of the finger: a letter dropped, doubled, added,
    replaced, or two neighbours swapped.

    >>> _one_slip("fet", "feet"), _one_slip("centiemters", "centimeters"), _one_slip("feet", "feet")
    (True, True, False)
    """
    if typed == word or abs(len(typed) - len(word)) > 1:
        return False
    i = next((k for k, (a, b) in enumerate(zip(typed, word, strict=False)) if a != b), min(len(typed), len(word)))
    return (
        typed[i + 1 :] == word[i:]  # one added
        or typed[i:] == word[i + 1 :]  # one dropped
        or typed[i + 1 :] == word[i + 1 :]  # one replaced
        or (typed[i : i + 2] == word[i : i + 2][::-1] and typed[i + 2 :] == word[i + 2 :])  # neighbours swapped
    )


def _unit(word: str) -> str:
    """``word`` as a unit name, read through one slip where it is a long one ("fet", "centiemters");
    "" when it names no unit."""
    if word in UNITS:
        return word
    if len(word) >= 3:
        return next((u for u in _UNIT_NAMES if len(u) >= 4 and _one_slip(word, u)), "")
    return ""


def digits(value: float) -> str:
    """A value as the canonical form rounds it, in its shortest writing: at most 2 decimals, no trailing
    zeros (3.048 -> "3.05", 60.0 -> "60", 0.50 -> "0.5")."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _is_number(token: str) -> bool:
    return bool(re.fullmatch(r"-?\d*\.?\d+", token))


def _words_value(words: list[str], i: int) -> tuple[float, int] | None:
    """The whole number spelt from ``words[i]`` on ("a hundred and three", "forty-five") and the index
    after it; None when no number starts there."""
    total, j = 0, i
    w = words[j] if j < len(words) else ""
    if w in ("a", "an", "one") and j + 1 < len(words) and words[j + 1] == "hundred":
        total, j = 100, j + 2
    elif w in ONES and j + 1 < len(words) and words[j + 1] == "hundred":
        total, j = 100 * ONES[w], j + 2
    if total:  # the rest after "hundred": "and three", "twenty five"
        k = j + 1 if j < len(words) and words[j] == "and" else j
        rest = _below_hundred(words, k)
        if rest:
            total, j = total + rest[0], rest[1]
        return total, j
    return _below_hundred(words, i)


def _below_hundred(words: list[str], i: int) -> tuple[int, int] | None:
    if i >= len(words):
        return None
    w = words[i]
    if w in ONES:
        return ONES[w], i + 1
    if w in TENS:
        k = i + 2 if i + 1 < len(words) and words[i + 1] == "-" else i + 1
        if k < len(words) and words[k] in ONES and 0 < ONES[words[k]] < 10:
            return TENS[w] + ONES[words[k]], k + 1
        return TENS[w], i + 1
    return None


def _number_at(words: list[str], i: int) -> tuple[float, int] | None:
    """A spoken or written quantity starting at ``words[i]``: its value and the index after it.

    Covers digits, "-3", "negative three", number words, "point" decimals, "and a half", "half a",
    "a quarter of a" and "a couple (of)".
    """
    n = len(words)
    w = words[i]
    if w in ("negative", "minus") and i + 1 < n:
        inner = _number_at(words, i + 1)
        return (-inner[0], inner[1]) if inner and inner[0] > 0 else None
    if w == "half" and i + 1 < n and words[i + 1] in ("a", "an"):
        return 0.5, i + 2
    if w == "a" and words[i + 1 : i + 4] in (["quarter", "of", "a"], ["quarter", "of", "an"]):
        return 0.25, i + 4
    if w == "a" and i + 1 < n and words[i + 1] == "couple":
        return 2, i + 3 if i + 2 < n and words[i + 2] == "of" else i + 2
    if _is_number(w):
        value, j = float(w), i + 1
    else:
        found = _words_value(words, i)
        if found is None:
            return None
        value, j = found
        if j + 1 < n and words[j] == "point" and words[j + 1] in ONES:
            decimals = ""
            j += 1
            while j < n and words[j] in ONES and ONES[words[j]] < 10:
                decimals += str(ONES[words[j]])
                j += 1
            value = float(f"{int(value)}.{decimals}")
    if words[j : j + 3] == HALF:
        value, j = value + 0.5, j + 3
    return value, j


#: Units that may follow "a"/"an" as a quantity of one ("a meter and a half", "hold on a second").
_ARTICLE_UNITS = UNITS - {
    "m", "s", "min", "mins", "hr", "hrs", "ft", "cm", "cms", "mm", "km", "yd", "yds", "time", "times",
}  # fmt: skip

#: Words after which "a second" is a duration ("wait a second then go"), not an ordinal ("a second cup").
_AFTER_A_SECOND = {"and", "then", "or", "please", "before", "after", "first", "next", "finally", "now", "so"}


def _quantity(words: list[str], i: int) -> tuple[float, int, bool] | None:
    """A quantity starting at ``words[i]``: its value, the index after its number, and whether it was
    written in words; the article of "a|an UNIT" counts as the number one."""
    if words[i] in ("a", "an") and i + 1 < len(words) and words[i + 1] in _ARTICLE_UNITS:
        after = words[i + 2] if i + 2 < len(words) else ""
        if words[i + 1] == "second" and after.isalpha() and after not in _AFTER_A_SECOND:
            return None  # the ordinal: "take a second photo"
        return 1.0, i + 1, True
    found = _number_at(words, i)
    if found is None:
        return None
    value, j = found
    return value, j, not _is_number(words[i])


#: A share of a whole turn, said in words: "half a turn", "a quarter of a turn", "a full circle".
_TURN_SHARE = re.compile(
    r"\b(?:(?:a|one)\s+)?(quarter|half|three[- ]quarters?|full|complete)(?:\s+(?:a|of\s+a))?\s+(turn|circle)\b",
    re.IGNORECASE,
)
_TURN_DEGREES = {"quarter": 90, "half": 180, "full": 360, "complete": 360}


#: Several shares of a turn, counted: "8 quarter turns", "two half turns".
_TURN_SHARES = re.compile(
    rf"\b(\d+|{'|'.join(ONES_WORDS[2:])})\s+(quarter|half|full|complete)\s+(turn|circle)s\b", re.IGNORECASE
)


def _turn_share(match: re.Match) -> str:
    """ "half a turn" -> "a 180 degree turn"."""
    share = match.group(1).lower()
    degrees = _TURN_DEGREES.get(share, 270)  # the rest are three quarters
    return f"a {degrees} degree {match.group(2)}"


def _turn_shares(match: re.Match) -> str:
    """ "8 quarter turns" -> "8 turns of 90 degrees"."""
    return f"{match.group(1)} {match.group(3)}s of {_TURN_DEGREES[match.group(2).lower()]} degrees"


#: Turning around without an angle: the canonical form's 180 degrees, shown ("turn around" -> "turn around 180
#: degrees"), so the model copies it as it copies a said angle; not where a number follows ("turn around 90").
_AROUND = re.compile(
    r"\b(?:(?:turn|spin|swing|whip|rotate)(?:\s+(?:yourself|back|all\s+the\s+way))*\s+a?round|about[- ]face"
    r"|u[- ]?turn)\b(?!\s+(?:by\s+)?-?\d)",
    re.IGNORECASE,
)
#: A shape driven as a path: its turns, shown ("a triangle" -> "a triangle (3 turns of 120 degrees)").
#: The shapes a robot drives, by their number of sides (the generator speaks of them too).
SHAPE_SIDES = {"square": 4, "triangle": 3, "pentagon": 5, "hexagon": 6, "octagon": 8}
_SHAPE = re.compile(rf"\b(?:a|an|the)\s+(?:[-\w.]+\s+){{0,3}}?({'|'.join(SHAPE_SIDES)})\b", re.IGNORECASE)


def _shape(match: re.Match) -> str:
    sides = SHAPE_SIDES[match.group(1).lower()]
    return f"{match.group(0)} ({sides} turns of {digits(360 / sides)} degrees)"


def _rewrite(text: str) -> str:
    """Quantities in ``text`` (which holds no quoted text) rewritten; everything between them kept."""
    return _SHAPE.sub(_shape, _AROUND.sub(lambda m: f"{m.group(0)} 180 degrees", _rewrite_numbers(text)))


def _rewrite_numbers(text: str) -> str:
    """Numbers and units in ``text`` rewritten as digits in the API's units."""
    text = _TURN_SHARE.sub(_turn_share, _TURN_SHARES.sub(_turn_shares, text))
    tokens = [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]
    words = [t.lower() for t, _, _ in tokens]
    out, last, i = [], 0, 0
    while i < len(tokens):
        if words[i] in ("twice", "thrice"):
            replacement, end = ("2 times" if words[i] == "twice" else "3 times"), i + 1
        else:
            found = _quantity(words, i)
            if found is None:
                i += 1
                continue
            value, j, spelt = found
            unit = _unit(words[j]) if j < len(words) else ""
            # A speed said in words is one unit of three, kept as said, where a half follows it ("a metre per
            # second and a half": the half belongs to the number).
            speed = unit in SPEED_LENGTH and words[j + 1 : j + 3] in PER_SECOND and words[j + 3 : j + 6] == HALF
            unit_end = j + 3 if speed else j + 1
            end = unit_end
            if unit and words[unit_end : unit_end + 3] == HALF and value == int(value):
                # "a meter and a half", "one minute and a half", "a metre per second and a half"
                value, end = value + 0.5, unit_end + 3
            if unit in LENGTH:
                replacement = f"{digits(value * LENGTH[unit])} m"
            elif unit in TIME:
                replacement = f"{digits(value * TIME[unit])} seconds"
            elif unit in KEPT:
                said = tokens[j][0] if words[j] == unit else unit
                replacement = f"{digits(value)} {said}{text[tokens[j][2] : tokens[unit_end - 1][2]]}"
            elif spelt and words[i:j] not in (["one"], ["a"], ["an"]):
                replacement, end = digits(value), j  # a number in words, no unit: "repeat eight" -> 8
            else:
                i += 1
                continue
        out.append(text[last : tokens[i][1]] + replacement)
        last, i = tokens[end - 1][2], end
    out.append(text[last:])
    return "".join(out)


# ---------------------------------------------------------------------------------------------------
# Slips of the finger in the words the robot knows
# ---------------------------------------------------------------------------------------------------


def target_index(words: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """The words of 3+ letters a slip may be read as, by first letter, in a fixed order."""
    index: dict[str, list[str]] = {}
    for word in sorted(words):
        if len(word) >= 3:
            index.setdefault(word[0], []).append(word)
    return {letter: tuple(group) for letter, group in index.items()}


#: Known words by first letter: a slip is read only as a word that starts like it.
_TARGETS = target_index(VOCABULARY)

#: The verbs whose unquoted words, to the end of the command, are what the robot says ("say helo"),
#: and the words that may come between them ("say out loud hello", "say the words hello").
_SAY_VERBS = frozenset(("say", "announce", "speak"))
_SAY_FILLERS = frozenset(("out", "loud", "the", "words", "phrase"))

#: A run of word characters and apostrophes; only letters alone, or with "'s", are read as a word: none
#: joined to a digit ("10cm": a unit, read with its number), no other contraction ("wouldn't").
_WORD = re.compile(r"[\w'’]+")
_READABLE = re.compile(r"([A-Za-z]+)((?:['’]s)?)")


def slip_targets(word: str, index: dict[str, tuple[str, ...]] | None = None) -> list[str]:
    """Words of ``index`` (by default the known words) that lower-case ``word`` may be one slip of, under
    the length rule of :func:`correct_spelling`: 4+ letters typed, any slip; 3 letters typed, only a
    letter dropped from a 4-letter word ("lok" -> look) or the last two letters swapped ("teh" -> the).

    >>> slip_targets("ofice"), slip_targets("lok"), slip_targets("lko"), slip_targets("fro")
    (['office'], ['look'], [], ['for', 'from'])
    """
    if len(word) < 3 or not word.isalpha():
        return []
    found = [w for w in (_TARGETS if index is None else index).get(word[0], ()) if _one_slip(word, w)]
    if len(word) == 3:
        found = [w for w in found if len(w) == 4 or w == word[0] + word[2] + word[1]]
    return found


def _slip_rank(typed: str, word: str) -> int:
    """How usual the slip that makes ``word`` into ``typed`` is (lower is more usual): 0 two neighbours
    swapped, 1 a letter doubled or a double letter typed once, 2 a letter dropped, 3 added, 4 replaced.

    >>> _slip_rank("pikc", "pick"), _slip_rank("baack", "back"), _slip_rank("pikc", "pic")
    (0, 1, 3)
    """
    if len(typed) == len(word):
        return 0 if sorted(typed) == sorted(word) else 4
    longer, shorter = (typed, word) if len(typed) > len(word) else (word, typed)
    i = next((k for k, (a, b) in enumerate(zip(longer, shorter, strict=False)) if a != b), len(shorter))
    if longer[i] in (longer[i - 1 : i] if i else "") + longer[i + 1 : i + 2]:
        return 1
    return 3 if len(typed) > len(word) else 2


def _spelling(word: str) -> str:
    """One spelling for words that differ only in it ("metres" and "meters")."""
    return re.sub(r"tre(s?)$", r"ter\1", word).replace("colour", "color")


@functools.lru_cache(maxsize=8192)
def _corrected(word: str) -> str:
    """``word`` (lower case) read as the known word it is a slip of; itself when that is unsure.

    Of several, the likeliest counts only where the slip is clear: neighbours swapped, a letter doubled
    or dropped, against a letter added or replaced ("pikc" -> pick, not pic); "tere" stays, as it is
    "tree" swapped as much as "there" with a letter dropped.
    """
    if word in VOCABULARY or word in NEVER_CORRECTED:
        return word
    ranks = sorted((_slip_rank(word, w), w) for w in slip_targets(word))
    if not ranks:
        return word
    if len({_spelling(w) for _, w in ranks}) == 1:  # "metrs": metres or meters, the same
        return ranks[0][1]
    return ranks[0][1] if ranks[0][0] <= 2 and ranks[1][0] >= 3 else word


def _same_case(typed: str, word: str) -> str:
    """``word`` written in ``typed``'s case: all capitals, Capitalised, or lower case."""
    if len(typed) > 1 and typed.isupper():
        return word.upper()
    return word.capitalize() if typed[0].isupper() else word


def _correct_free(text: str, speech_follows: bool = True) -> str:
    """Slips corrected in ``text``, which holds no quoted text; when no quote follows (``speech_follows``),
    only up to "say", whose unquoted words are what the robot says ("say helo": kept)."""
    out, end, said = [], 0, False
    for match in _WORD.finditer(text):
        readable = _READABLE.fullmatch(match.group())
        if readable is None:
            continue
        typed = readable.group(1)
        word = _corrected(typed.lower())
        if said and word not in _SAY_FILLERS:
            break
        if word != typed.lower():
            out.append(text[end : match.start()] + _same_case(typed, word) + readable.group(2))
            end = match.end()
        said = said or (speech_follows and word in _SAY_VERBS)
    out.append(text[end:])
    return "".join(out)


def correct_spelling(text: str) -> str:
    """``text`` with its slips of the finger in the words the robot knows corrected.

    A small model reads a slip badly ("go to the ofice" -> front_door) and cannot learn every one, so
    every prompt, in training and in inference, shows the word meant. A word is corrected when

    * it is in free text: never inside quotes, nor after an unquoted "say" (past "out loud", "the
      words"), as what the robot says is kept as typed;
    * it is letters alone, or letters and "'s" ("therre's"): none joined to a digit, no other apostrophe;
    * it is neither a known word (:data:`~robolora.robot.vocabulary.VOCABULARY`, the words of the dataset
      generator, so "book" is never read as "look") nor a real or chat word the vocabulary lacks
      (:data:`~robolora.robot.vocabulary.NEVER_CORRECTED`: "books", "form", "dont", "foto");
    * it is one slip (:func:`_one_slip`) from a known word of 3+ letters with the same first letter (the
      generator's typos never touch it, and a name such as "Kate" is no slip of "take"), and from only
      one, or one by a clearly likelier slip (:func:`_corrected`);
    * it has 4+ letters, or 3 for the two slips that seldom make another word: a letter dropped from a
      4-letter word ("lok" -> look) or the last two swapped ("teh" -> the). Shorter words never change.

    The word keeps its case: OFICE -> OFFICE, Ofice -> Office.

    >>> correct_spelling("pls navigate to the ofice")
    'pls navigate to the office'
    >>> correct_spelling('go ahead and clsoe your gripper, then say "clsoe"')
    'go ahead and close your gripper, then say "clsoe"'
    >>> correct_spelling("Pikc up the larg red cup and put it in teh BXO")
    'Pick up the large red cup and put it in the BOX'
    >>> correct_spelling("grab the book, then say helo wrld")
    'grab the book, then say helo wrld'
    """
    return "".join(_corrected_pieces(_QUOTED_SPLIT.split(text)))


def _corrected_pieces(pieces: list[str]) -> list[str]:
    """Free text, quoted, free text, ..., free text: the free texts corrected, the quoted kept."""
    last = len(pieces) - 1
    return [p if i % 2 else _correct_free(p, speech_follows=i == last) for i, p in enumerate(pieces)]


def normalize_command(text: str, *, spelling: bool = True) -> str:
    """``text`` with its quantities in the API's units and in digits, its slips of the finger in known
    words corrected (:func:`correct_spelling`; not with ``spelling=False``), its quoted text untouched.

    A command typed all in capitals is read in lower case (its quoted text still untouched): capitals
    say nothing to the robot, and a model reads lower-case words far better.

    >>> normalize_command("back up eighteen inches, then hold on a second")
    'back up 0.46 m, then hold on 1 second'
    >>> normalize_command("move x = negative 65 cm and wait 1.5 min")
    'move x = -0.65 m and wait 90 seconds'
    >>> normalize_command("turn left one hundred and ten degrees, twice")
    'turn left 110 degrees, 2 times'
    >>> normalize_command("turn right half a turn, then a quarter turn left")
    'turn right a 180 degree turn, then a 90 degree turn left'
    >>> normalize_command('GO FORWARD TEN FEET AND SAY "Hi"')
    'go forward 3.05 m and say "Hi"'
    >>> normalize_command("wait fiev secnods, then go to the kichen")
    'wait 5 seconds, then go to the kitchen'
    """
    pieces = _QUOTED_SPLIT.split(text)  # free text, quoted, free text, ..., free text
    free = pieces[::2]
    if any(c.isupper() for s in free for c in s) and not any(c.islower() for s in free for c in s):
        pieces[::2] = [s.lower() for s in free]
    if spelling:
        pieces = _corrected_pieces(pieces)
    pieces[::2] = [_rewrite(s) for s in pieces[::2]]
    return "".join(pieces)
