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
from typing import NamedTuple

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


def advance(state: PrefixState, text: str) -> PrefixState | None:
    """The state after reading ``text`` from ``state``, or None when no valid program continues that way."""
    mode, frames, pending, indent, node, call, given, param, buf, quote, tail, header = state
    for c in text:
        if mode == _STRING:
            if c == quote:
                if param.validate(buf) is not None:
                    return None
                given |= param.bit
                mode, buf = _AFTER_VALUE, ""
            elif c in STRING_CHARS:
                buf += c
            else:
                return None
            continue
        if mode == _NAME:
            node = node.next.get(c)
            if node is None or not node.mask & ~given:
                return None
            if node.end is not None:  # the name's "=" was read
                param, mode = node.end, _VALUE
            continue
        if mode == _NUMBER:
            if c in _NUMBER_CHARS:
                buf += c
                if not _prefix_ok(buf, param.range):
                    return None
                continue
            if not _number_ok(buf, param):
                return None
            given |= param.bit
            mode, buf = _AFTER_VALUE, ""
            # The character that ended the number is read as what follows a value.
        if mode == _AFTER_VALUE:
            if c == ",":
                if not call.all & ~given:  # nothing left to pass
                    return None
                mode = _ARG_COMMA
            elif c == ")" and not call.required & ~given:
                mode = _TAIL
            else:
                return None
            continue
        if mode == _ENUM:
            if c == quote:
                if not node.end:
                    return None
                given |= param.bit
                mode, node = _AFTER_VALUE, None
            else:
                node = node.next.get(c)
                if node is None:
                    return None
            continue
        if mode == _VALUE:
            if param.range is not None:
                if not (c in _DIGITS or c == "-") or not _prefix_ok(c, param.range):
                    return None
                mode, buf = _NUMBER, c
            elif c == '"' or c == "'":
                quote = c
                if param.options is None:
                    mode, buf = _STRING, ""
                else:
                    mode, node = _ENUM, param.options
            else:
                return None
            continue
        if mode == _ARG_COMMA and c == " ":
            mode = _ARG_SPACE
            continue
        if mode == _ARG_FIRST and c == ")":
            if call.required:
                return None
            mode = _TAIL
            continue
        if mode in (_ARG_FIRST, _ARG_COMMA, _ARG_SPACE):
            node = call.names.next.get(c)
            if node is None or not node.mask & ~given:
                return None
            mode = _NAME
            continue
        if mode == _TAIL:
            if tail:
                if c != tail[0]:
                    return None
                tail = tail[1:]
            elif c == "\n":
                mode, indent, pending, header = _LINE, 0, header, False
                node, call, param, given = None, None, None, 0
            else:
                return None
            continue
        if mode == _LOOP:
            if c == ")":
                if buf not in _LOOP_COUNTS:
                    return None
                mode, buf = _TAIL, ""
            else:
                buf += c
                if buf not in _LOOP_PREFIXES:
                    return None
            continue
        if mode == _LINE:
            if c == " ":
                indent += 1
                # A line may sit at any open depth, or must open the pending body.
                if indent > INDENT * (len(frames) if pending else len(frames) - 1):
                    return None
                continue
            depth, misaligned = divmod(indent, INDENT)
            if misaligned or (pending and depth != len(frames)):
                return None
            if c == "e":  # else / elif: only right after an if chain's body at this depth
                if pending or frames[depth] != _IF_KIND:
                    return None
            elif c != "r" and depth >= MAX_DEPTH:  # a header needs room for its body
                return None
            mode, node = _STMT, _STATEMENTS
            # The character is the statement's first.
        # mode == _STMT
        node = node.next.get(c)
        if node is None:
            return None
        if node.end is not None:
            kind, mode, call, tail, header = node.end
            depth = indent // INDENT
            frames = (*frames, kind) if pending else (*frames[:depth], kind)
            pending, node, given = False, None, 0
    return PrefixState(mode, frames, pending, indent, node, call, given, param, buf, quote, tail, header)


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
