"""Constrained decoding, grammar side: a character-level recognizer of robot programs.

The recognizer reads a program left to right and knows after every character whether the text so
far can still become a valid program. It is a hand-written state machine (line start and
indentation, a trie of statement openings, a trie of argument names per call, a lexer per value
type), so extending a cached state by a short token costs a few microseconds. Everything it
accepts is api-valid for :func:`robolora.robot.checker.check`, and it accepts every canonical
program; in between it takes these variants:

* keyword arguments in any order, defaults left out, ``,`` with or without one space after it;
* numbers as ints or decimals (``3``, ``3.0``, ``-0.25``): at most 6 digits before the point and
  6 after, no exponent, no ``.5`` or ``3.``; strings in double or single quotes, printable ASCII
  without backslashes;
* ``for _ in range(N):``, ``if``/``elif robot.sensors.detect(...):`` and ``else:``, bodies indented
  by exactly 4 spaces per level, at most :data:`MAX_DEPTH` levels deep;
* no blank lines, comments or trailing spaces; one newline may end the program.

Values are checked as soon as they can be: an enumerated string (a location, a colour, a size)
follows a trie of its allowed values, and a number prefix is refused once no number that starts
with it is in range (``speed=4`` dies at the ``4``), so every state the recognizer reaches can
still be completed. A finished value is judged by the spec's own rule.

Example:
    >>> state = advance(start(), "robot.move_forward(distance=3")
    >>> advance(state, ".0, speed=-") is None  # no speed is negative
    True
    >>> state = advance(state, ".0, speed=1.0)")
    >>> is_complete(state), is_complete(advance(state, "\\n"))
    (True, True)
    >>> accepts('robot.set_light(color="any")'), is_valid_prefix("for _ in range(21")
    (False, False)
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any, NamedTuple

from robolora.robot.spec import CALLS, COLORS, LOCATIONS, LOOP_MAX, LOOP_MIN, SIZES, CallSpec, Param

#: Spaces per indentation level.
INDENT = 4
#: Deepest block nesting accepted (a body at this depth may hold calls only).
MAX_DEPTH = 8
#: Digits a number may have before and after its decimal point.
MAX_INT_DIGITS = 6
MAX_FRAC_DIGITS = 6

#: Characters a string literal may hold (besides the other kind of quote): no escapes, so no backslash.
STRING_CHARS: frozenset[str] = frozenset(chr(i) for i in range(0x20, 0x7F)) - {"\\"}
#: Every character that can occur in an accepted program.
ALPHABET: frozenset[str] = STRING_CHARS | {"\n"}

#: The only call an ``if`` may test (the checker rejects any other condition).
CONDITION = "robot.sensors.detect"

#: Each numeric parameter's rule as an interval: (low, low excluded, high or None, high excluded).
#: It only prunes number prefixes; a finished number is judged by the spec's own rule.
NUMBER_RANGES: dict[str, tuple[float, bool, float | None, bool]] = {
    "distance": (0, True, None, False),
    "speed": (0, True, 3, False),
    "angle": (0, True, 360, False),
    "seconds": (0, True, None, False),
    "radius": (0, True, None, False),
    "x": (-1, False, 1, False),
    "y": (-1, False, 1, False),
    "z": (-1, False, 1, False),
}

_DIGITS = frozenset("0123456789")
_NUMBER_CHARS = _DIGITS | {"."}
_LOOP_COUNTS = frozenset(str(n) for n in range(LOOP_MIN, LOOP_MAX + 1))
_LOOP_PREFIXES = frozenset(count[:i] for count in _LOOP_COUNTS for i in range(1, len(count) + 1))

# Modes of the machine: what the next character may be.
_LINE = 0  # indentation at the start of a line
_STMT = 1  # the statement's opening, in the statement trie
_ARG_FIRST = 2  # right after "(": an argument name or ")"
_ARG_COMMA = 3  # right after ",": a space or an argument name
_ARG_SPACE = 4  # after ", ": an argument name
_NAME = 5  # in the argument-name trie, up to and including "="
_VALUE = 6  # right after "=": the first character of the value
_NUMBER = 7
_STRING = 8  # free text up to the closing quote
_ENUM = 9  # in the trie of a parameter's allowed values
_AFTER_VALUE = 10  # "," or ")"
_LOOP = 11  # the digits of a loop count, then ")"
_TAIL = 12  # the fixed rest of the line (":" of a header), then "\n"

# Kinds of statement, remembered per depth: an else or elif may only follow an if or elif.
_CALL_KIND, _FOR_KIND, _IF_KIND, _ELSE_KIND = range(4)


class _Node:
    """A trie node: children by character, the bits of the entries below it, and its entry's payload."""

    __slots__ = ("end", "mask", "next")

    def __init__(self) -> None:
        self.next: dict[str, _Node] = {}
        self.mask = 0
        self.end: object = None


def _trie(entries: Iterable[tuple[str, object, int]]) -> _Node:
    root = _Node()
    for text, payload, bit in entries:
        node = root
        node.mask |= bit
        for ch in text:
            node = node.next.setdefault(ch, _Node())
            node.mask |= bit
        node.end = payload
    return root


class _ParamInfo:
    """One argument as the machine needs it: its bit, its rule and how its value is lexed."""

    __slots__ = ("bit", "options", "range", "validate")

    def __init__(self, call: str, param: Param, bit: int) -> None:
        self.bit = bit
        self.validate = param.validate
        self.range = None
        self.options = None
        if param.type is float:
            if param.name not in NUMBER_RANGES:
                raise ValueError(f"{call}.{param.name}: no entry in grammar.NUMBER_RANGES")
            self.range = NUMBER_RANGES[param.name]
        else:
            self.options = _enum_trie(call, param)


# A value no enumerated rule takes: a parameter whose rule accepts it is free text.
_UNLISTED = "an unlisted value"


def _enum_trie(call: str, param: Param) -> _Node | None:
    """The trie of the values a string parameter allows, or None where it takes free text."""
    if param.validate(_UNLISTED) is None:
        return None
    values = [v for v in dict.fromkeys((*LOCATIONS, *COLORS, *SIZES)) if param.validate(v) is None]
    if not values:
        raise ValueError(f"{call}.{param.name}: its rule accepts no known location, colour or size")
    return _trie((v, True, 0) for v in values)


class _CallInfo:
    """A call's argument-name trie (each name with its "=") and the bit masks of its arguments."""

    __slots__ = ("all", "names", "required")

    def __init__(self, spec: CallSpec) -> None:
        infos = [(p, _ParamInfo(spec.name, p, 1 << i)) for i, p in enumerate(spec.params)]
        self.names = _trie((p.name + "=", info, info.bit) for p, info in infos)
        self.all = sum(info.bit for _, info in infos)
        self.required = sum(info.bit for p, info in infos if p.required)


def _statement_trie() -> _Node:
    """Every way a statement opens, each with (kind, next mode, call, rest of line, is a header)."""
    calls = {name: _CallInfo(spec) for name, spec in CALLS.items()}
    entries: list[tuple[str, object, int]] = [
        (f"{name}(", (_CALL_KIND, _ARG_FIRST, info, "", False), 0) for name, info in calls.items()
    ]
    test = calls[CONDITION]
    entries += [
        (f"if {CONDITION}(", (_IF_KIND, _ARG_FIRST, test, ":", True), 0),
        (f"elif {CONDITION}(", (_IF_KIND, _ARG_FIRST, test, ":", True), 0),
        ("for _ in range(", (_FOR_KIND, _LOOP, None, ":", True), 0),
        ("else:", (_ELSE_KIND, _TAIL, None, "", True), 0),
    ]
    return _trie(entries)


_STATEMENTS = _statement_trie()


def _number_intervals(text: str, int_digits: int, frac_digits: int) -> list[tuple[int, int]] | None:
    """The values of every number that starts with ``text``, as intervals in units of 10**-frac_digits.

    None when ``text`` starts no number. ``text`` holds only an optional leading ``-``, digits and points.
    """
    negative = text.startswith("-")
    body = text[1:] if negative else text
    whole, point, frac = body.partition(".")
    if (
        len(whole) > int_digits
        or len(frac) > frac_digits
        or "." in frac
        or (point and not whole)
        or (len(whole) > 1 and whole[0] == "0")  # Python refuses leading zeros in ints
    ):
        return None
    scale = 10**frac_digits
    if point:
        step = 10 ** (frac_digits - len(frac))
        low = int(whole) * scale + int(frac or "0") * step
        spans = [(low, low + step - 1)]
    elif not whole:
        spans = [(0, 10**int_digits * scale - 1)]
    elif whole == "0":
        spans = [(0, scale - 1)]
    else:
        # More digits may follow: "3" reaches 3.x, 3x.x, 3xx.x and so on.
        v = int(whole)
        spans = [(v * 10**j * scale, (v + 1) * 10**j * scale - 1) for j in range(int_digits - len(whole) + 1)]
    return [(-b, -a) for a, b in spans] if negative else spans


def _number_prefix_ok(
    text: str,
    rng: tuple[float, bool, float | None, bool],
    int_digits: int = MAX_INT_DIGITS,
    frac_digits: int = MAX_FRAC_DIGITS,
) -> bool:
    """Whether some number that starts with ``text`` lies in the interval ``rng``.

    Exact on the grid of numbers the lexer accepts, as long as the interval's ends lie on it.
    """
    spans = _number_intervals(text, int_digits, frac_digits)
    if spans is None:
        return False
    low, low_open, high, high_open = rng
    scale = 10**frac_digits
    lo = round(low * scale) + low_open
    hi = 10 ** (int_digits + frac_digits) if high is None else round(high * scale) - high_open
    return any(max(a, lo) <= min(b, hi) for a, b in spans)


@lru_cache(maxsize=1 << 16)
def _prefix_ok(text: str, rng: tuple[float, bool, float | None, bool]) -> bool:
    return _number_prefix_ok(text, rng)


@lru_cache(maxsize=1 << 16)
def _number_ok(text: str, param: _ParamInfo) -> bool:
    """Whether ``text`` is a whole number that the parameter's rule accepts."""
    whole, point, frac = text.lstrip("-").partition(".")
    if not whole or (point and not frac) or not _prefix_ok(text, param.range):
        return False
    return param.validate(float(text) if point else int(text)) is None


class PrefixState(NamedTuple):
    """Where the recognizer stands after some text. Immutable and hashable; the fields are internal.

    Attributes:
        mode: what the next character may be.
        frames: per depth, the kind of the last statement there (the open headers, then the last line's).
        pending: the last line was a block header, so this one opens its body one level deeper.
        indent: spaces read at the start of this line.
        node: position in the active trie (statement openings, argument names or allowed values).
        call: the call whose arguments are being read.
        given: bits of the arguments written so far.
        param: the argument whose value is being read.
        text: the number, string content or loop count read so far.
        quote: the quote that opened the current string.
        tail: what the line must still end with (``:`` of a header).
        header: the line is a block header.
    """

    mode: int
    frames: tuple[int, ...]
    pending: bool
    indent: int
    node: _Node | None
    call: _CallInfo | None
    given: int
    param: _ParamInfo | None
    text: str
    quote: str
    tail: str
    header: bool


# The first line is the body of an imaginary header at depth -1: it must sit at depth 0.
_START = PrefixState(_LINE, (), True, 0, None, None, 0, None, "", "", "", False)


def start() -> PrefixState:
    """The state before any text."""
    return _START


# Positions of PrefixState's fields in the list that :func:`advance` updates in place while it reads.
_F_MODE, _F_FRAMES, _F_PENDING, _F_INDENT, _F_NODE, _F_CALL = range(6)
_F_GIVEN, _F_PARAM, _F_TEXT, _F_QUOTE, _F_TAIL, _F_HEADER = range(6, 12)
# Builds a PrefixState from that list without NamedTuple's keyword-handling constructor (advance's hot path).
_as_state = tuple.__new__


def advance(state: PrefixState, text: str) -> PrefixState | None:
    """The state after reading ``text`` from ``state``, or None when no valid program continues that way."""
    s = list(state)
    readers = _READERS
    for c in text:
        if not readers[s[_F_MODE]](s, c):
            return None
    return _as_state(PrefixState, s)


# Each reader below takes one character in one mode: it updates the fields (a list, see advance) and
# says whether a valid program can still follow.


def _read_string(s: list[Any], c: str) -> bool:
    """Free text up to the closing quote, where the parameter's rule judges it."""
    if c == s[_F_QUOTE]:
        param = s[_F_PARAM]
        if param.validate(s[_F_TEXT]) is not None:
            return False
        s[_F_GIVEN] |= param.bit
        s[_F_MODE], s[_F_TEXT] = _AFTER_VALUE, ""
        return True
    if c in STRING_CHARS:
        s[_F_TEXT] += c
        return True
    return False


def _read_enum(s: list[Any], c: str) -> bool:
    """A string that must be one of the parameter's allowed values: a step in their trie, or the closing quote."""
    node = s[_F_NODE]
    if c == s[_F_QUOTE]:
        if not node.end:
            return False
        s[_F_GIVEN] |= s[_F_PARAM].bit
        s[_F_MODE], s[_F_NODE] = _AFTER_VALUE, None
        return True
    node = node.next.get(c)
    s[_F_NODE] = node
    return node is not None


def _read_number(s: list[Any], c: str) -> bool:
    """A number's digits and point, pruned to the parameter's range; any other character ends it."""
    param = s[_F_PARAM]
    if c in _NUMBER_CHARS:
        s[_F_TEXT] += c
        return _prefix_ok(s[_F_TEXT], param.range)
    if not _number_ok(s[_F_TEXT], param):
        return False
    s[_F_GIVEN] |= param.bit
    s[_F_MODE], s[_F_TEXT] = _AFTER_VALUE, ""
    return _read_after_value(s, c)  # the character that ended the number is read as what follows a value


def _read_value_start(s: list[Any], c: str) -> bool:
    """Right after ``=``: a number's first character, or the quote that opens a string."""
    param = s[_F_PARAM]
    if param.range is not None:
        if not (c in _DIGITS or c == "-") or not _prefix_ok(c, param.range):
            return False
        s[_F_MODE], s[_F_TEXT] = _NUMBER, c
        return True
    if c != '"' and c != "'":
        return False
    s[_F_QUOTE] = c
    if param.options is None:
        s[_F_MODE], s[_F_TEXT] = _STRING, ""
    else:
        s[_F_MODE], s[_F_NODE] = _ENUM, param.options
    return True


def _read_after_value(s: list[Any], c: str) -> bool:
    """After a value: ``,`` where an argument is left to pass, or ``)`` once the required ones are given."""
    call, given = s[_F_CALL], s[_F_GIVEN]
    if c == ",":
        if not call.all & ~given:  # nothing left to pass
            return False
        s[_F_MODE] = _ARG_COMMA
        return True
    if c == ")" and not call.required & ~given:
        s[_F_MODE] = _TAIL
        return True
    return False


def _read_first_argument(s: list[Any], c: str) -> bool:
    """Right after ``(``: ``)`` for a call that requires nothing, else an argument name."""
    if c == ")":
        if s[_F_CALL].required:
            return False
        s[_F_MODE] = _TAIL
        return True
    return _read_name_start(s, c)


def _read_after_comma(s: list[Any], c: str) -> bool:
    """Right after ``,``: one optional space, else the next argument name."""
    if c == " ":
        s[_F_MODE] = _ARG_SPACE
        return True
    return _read_name_start(s, c)


def _read_name_start(s: list[Any], c: str) -> bool:
    """An argument name's first character: a step into the call's name trie, towards an argument not given yet."""
    node = s[_F_CALL].names.next.get(c)
    if node is None or not node.mask & ~s[_F_GIVEN]:
        return False
    s[_F_MODE], s[_F_NODE] = _NAME, node
    return True


def _read_name(s: list[Any], c: str) -> bool:
    """An argument name up to and including its ``=``, which starts the value."""
    node = s[_F_NODE].next.get(c)
    if node is None or not node.mask & ~s[_F_GIVEN]:
        return False
    s[_F_NODE] = node
    if node.end is not None:  # the name's "=" was read
        s[_F_PARAM], s[_F_MODE] = node.end, _VALUE
    return True


def _read_loop_count(s: list[Any], c: str) -> bool:
    """The digits of ``range(N)``, a count the spec allows, then ``)``."""
    if c == ")":
        if s[_F_TEXT] not in _LOOP_COUNTS:
            return False
        s[_F_MODE], s[_F_TEXT] = _TAIL, ""
        return True
    s[_F_TEXT] += c
    return s[_F_TEXT] in _LOOP_PREFIXES


def _read_tail(s: list[Any], c: str) -> bool:
    """The fixed rest of the line (a header's ``:``), then the newline that starts the next line."""
    tail = s[_F_TAIL]
    if tail:
        if c != tail[0]:
            return False
        s[_F_TAIL] = tail[1:]
        return True
    if c != "\n":
        return False
    s[_F_MODE], s[_F_INDENT], s[_F_PENDING], s[_F_HEADER] = _LINE, 0, s[_F_HEADER], False
    s[_F_NODE], s[_F_CALL], s[_F_PARAM], s[_F_GIVEN] = None, None, None, 0
    return True


def _read_indent(s: list[Any], c: str) -> bool:
    """A line's indentation: at any open depth, or one level deeper where a header's body is pending;
    the first other character must start a statement that may stand at that depth."""
    frames, pending = s[_F_FRAMES], s[_F_PENDING]
    if c == " ":
        s[_F_INDENT] += 1
        return s[_F_INDENT] <= INDENT * (len(frames) if pending else len(frames) - 1)
    depth, misaligned = divmod(s[_F_INDENT], INDENT)
    if misaligned or (pending and depth != len(frames)):
        return False
    if c == "e":  # else / elif: only right after an if chain's body at this depth
        if pending or frames[depth] != _IF_KIND:
            return False
    elif c != "r" and depth >= MAX_DEPTH:  # a header needs room for its body
        return False
    s[_F_MODE], s[_F_NODE] = _STMT, _STATEMENTS
    return _read_statement(s, c)  # the character is the statement's first


def _read_statement(s: list[Any], c: str) -> bool:
    """A statement's opening, a step in the statement trie; a whole opening records the statement's kind
    at its depth and moves on to its arguments, loop count or line end."""
    node = s[_F_NODE].next.get(c)
    if node is None:
        return False
    s[_F_NODE] = node
    if node.end is not None:
        kind, s[_F_MODE], s[_F_CALL], s[_F_TAIL], s[_F_HEADER] = node.end
        depth = s[_F_INDENT] // INDENT
        frames = s[_F_FRAMES]
        s[_F_FRAMES] = (*frames, kind) if s[_F_PENDING] else (*frames[:depth], kind)
        s[_F_PENDING], s[_F_NODE], s[_F_GIVEN] = False, None, 0
    return True


#: The reader of each mode, by its number.
_READERS = (
    _read_indent,  # _LINE
    _read_statement,  # _STMT
    _read_first_argument,  # _ARG_FIRST
    _read_after_comma,  # _ARG_COMMA
    _read_name_start,  # _ARG_SPACE
    _read_name,  # _NAME
    _read_value_start,  # _VALUE
    _read_number,  # _NUMBER
    _read_string,  # _STRING
    _read_enum,  # _ENUM
    _read_after_value,  # _AFTER_VALUE
    _read_loop_count,  # _LOOP
    _read_tail,  # _TAIL
)


def is_complete(state: PrefixState) -> bool:
    """Whether the text read so far is a whole valid program (it may still go on)."""
    if state.mode == _TAIL:
        return not state.tail and not state.header
    return state.mode == _LINE and state.indent == 0 and not state.pending


#: What :func:`completion` writes where a body or a statement must be: the shortest call there is.
FILLER = "robot.stop()"


def _shortest_to_end(node: _Node, wanted: int | None = None) -> str:
    """The shortest path in a trie from ``node`` to an entry (with a bit in ``wanted``, where given)."""
    frontier = [(node, "")]
    while frontier:
        nxt = []
        for n, path in frontier:
            if n.end is not None and (wanted is None or n.mask & wanted):
                return path
            for ch, child in n.next.items():
                if wanted is None or child.mask & wanted:
                    nxt.append((child, path + ch))
        frontier = nxt
    raise ValueError("a trie state with no entry below it")


def _next_piece(state: PrefixState) -> str:
    """A short text that moves ``state`` towards a whole program (see :func:`completion`)."""
    mode, frames, pending, indent, node, call, given, param, buf, quote, tail, _ = state
    if mode == _STRING:
        return quote if param.validate(buf) is None else "a"
    if mode == _ENUM:
        return quote if node.end else _shortest_to_end(node)
    if mode == _NUMBER:
        if not _number_ok(buf, param):
            return next(c for c in ("0", ".0", "1", ".5", "5") if advance(state, c) is not None)
        mode, given = _AFTER_VALUE, given | param.bit  # a whole number: what follows a value, as in advance
    if mode == _VALUE:
        if param.range is None:
            return '"'
        return next(c for c in ("1", "0.5", "0") if advance(state, c) is not None)
    if mode == _AFTER_VALUE:
        return ")" if not call.required & ~given else ","
    if mode == _NAME:
        return _shortest_to_end(node, node.mask & ~given)
    if mode == _ARG_COMMA:
        return " "
    if mode in (_ARG_FIRST, _ARG_SPACE):
        missing = call.required & ~given
        if mode == _ARG_FIRST and not missing:
            return ")"
        return _shortest_to_end(call.names, missing or call.all & ~given)
    if mode == _TAIL:
        return tail or "\n"  # a header's line ends; its body follows
    if mode == _LOOP:
        return ")" if buf in _LOOP_COUNTS else next(d for d in "0123456789" if buf + d in _LOOP_PREFIXES)
    if mode == _LINE:
        depth = len(frames) if pending else -(-indent // INDENT)
        return " " * (INDENT * depth - indent) + FILLER
    return _shortest_to_end(node)  # _STMT: finish the opening, then its arguments


def completion(state: PrefixState, limit: int = 64) -> str | None:
    r"""A short text that makes the text read so far a whole valid program ("" when it is one already).

    Every state :func:`advance` returns can be completed: a string is closed, a number or a name
    finished, the missing required arguments given, and an open block gets :data:`FILLER` as its
    body. None only if that fails within ``limit`` pieces.

    >>> completion(advance(start(), 'robot.say(text="hel'))
    '")'
    >>> completion(advance(start(), "for _ in range(1"))
    '):\n    robot.stop()'
    >>> completion(advance(start(), "robot.move_forward(distance=3."))
    '0)'
    """
    text = ""
    for _ in range(limit):
        if is_complete(state):
            return text
        piece = _next_piece(state)
        nxt = advance(state, piece)
        if nxt is None:
            return None
        state, text = nxt, text + piece
    return None


def is_valid_prefix(text: str) -> bool:
    """Whether ``text`` can be extended into a valid program (or is one)."""
    return advance(_START, text) is not None


def accepts(text: str) -> bool:
    """Whether ``text`` is a whole valid program in the recognised form."""
    state = advance(_START, text)
    return state is not None and is_complete(state)
