"""The robot grammar as GBNF text, generated from the API table, for grammar engines (xgrammar, llguidance, vLLM).

:func:`robot_ebnf` writes a context-free grammar of exactly the programs the recognizer
(:mod:`robolora.robot.grammar`) accepts: the calls, argument names and enumerated values come from
:data:`robolora.robot.spec.CALLS`, the number intervals from :data:`robolora.robot.grammar.NUMBER_RANGES`, and
the layout (indentation, depth, digits per number, string characters) from the recognizer's constants. Nothing
in it is a copy by hand of the API: a call added to the spec appears in both.

Everything the recognizer checks is regular or bounded in depth, so the grammar is exact, with no known
difference:

* keyword arguments in any order, each at most once, the required ones all given: one rule per set of
  arguments written so far (at most 2**3 per call);
* a number's range: its integer part as digit ranges, its fraction free, non-zero or zero where the integer
  part sits on an open or closed end of the interval (``speed`` in (0, 3]: ``0.`` then a non-zero fraction,
  ``1`` and ``2`` with any fraction, ``3`` with zeros only);
* a free-text string: any printable ASCII but the backslash and its own quote, with a character other than a
  space; an enumerated string: one of its values;
* blocks: one rule per depth (``block_0`` .. ``block_8``); ``elif``/``else`` only inside an ``if`` chain's
  rule; a header's body one level deeper; at the deepest level calls only.

Where the recognizer calls the spec's own rule on a finished value, the grammar needs that rule in a form it
can write, and refuses to be generated otherwise (:class:`ValueError` naming the parameter): a number's rule
must be the interval of ``NUMBER_RANGES`` with integer ends (checked on both sides of each end), a free-text
rule must be "not empty after strip". tests/unit/test_ebnf.py compares the grammar (on xgrammar and
llguidance) with the recognizer on generated programs, their variants and corrupted copies, at every prefix.

Tokens are the engines' business: llguidance, unless told otherwise, allows only the canonical tokenization of
text the grammar fixes (:func:`robot_lark` tells it otherwise); given this GBNF (vLLM's llguidance backend does
that) it accepts the same programs from fewer token sequences than the recognizer.

Example:
    >>> text = robot_ebnf()
    >>> text.splitlines()[0]
    'root ::= program'
    >>> 'call_robot_turn_left ::= "robot.turn_left(" args_robot_turn_left_0' in text
    True
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from robolora.robot.grammar import (
    CONDITION,
    INDENT,
    MAX_DEPTH,
    MAX_FRAC_DIGITS,
    MAX_INT_DIGITS,
    NUMBER_RANGES,
    STRING_CHARS,
)
from robolora.robot.spec import CALLS, COLORS, LOCATIONS, LOOP_MAX, LOOP_MIN, SIZES, CallSpec, Param

#: A string no enumerated rule takes (as in the recognizer): a parameter whose rule accepts it is free text.
_UNLISTED = "an unlisted value"
#: The quotes a string may open with; it closes with the same one.
_QUOTES = ('"', "'")


@dataclass(frozen=True)
class Interval:
    """A set of numbers between integer ends; ``high`` None: no upper end (only the digit limit)."""

    low: int
    low_open: bool
    high: int | None
    high_open: bool

    @property
    def name(self) -> str:
        """A rule name for the interval, e.g. ``gt_0_le_3``, ``ge_m1_le_1``."""

        def num(n: int) -> str:
            return f"m{-n}" if n < 0 else str(n)

        low = f"{'gt' if self.low_open else 'ge'}_{num(self.low)}"
        return low if self.high is None else f"{low}_{'lt' if self.high_open else 'le'}_{num(self.high)}"

    def __contains__(self, v: float) -> bool:
        above = v > self.low if self.low_open else v >= self.low
        below = self.high is None or (v < self.high if self.high_open else v <= self.high)
        return above and below


# ----------------------------------------------------------------------------- GBNF text pieces


def _lit(text: str) -> str:
    """A GBNF string literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _alt(options: Iterable[str]) -> str:
    """Alternatives, grouped where there are several."""
    items = list(dict.fromkeys(options))
    return items[0] if len(items) == 1 else "(" + " | ".join(items) + ")"


def _seq(*items: str) -> str:
    return " ".join(i for i in items if i)


def _char_class(chars: Iterable[str]) -> str:
    """A character class of ``chars`` (ASCII), written as ranges of ``\\xHH`` escapes."""
    codes = sorted({ord(c) for c in chars})
    if not codes:
        raise ValueError("an empty character class")
    spans: list[list[int]] = []
    for code in codes:
        if spans and code == spans[-1][1] + 1:
            spans[-1][1] = code
        else:
            spans.append([code, code])
    parts = [f"\\x{a:02X}" if a == b else f"\\x{a:02X}-\\x{b:02X}" for a, b in spans]
    return "[" + "".join(parts) + "]"


def _digit(low: str, high: str) -> str:
    return _lit(low) if low == high else f"[{low}-{high}]"


def _any_digits(n: int) -> str:
    return "" if n == 0 else "[0-9]" if n == 1 else f"[0-9]{{{n}}}"


# ----------------------------------------------------------------------------- numbers


def _same_length(low: str, high: str) -> str:
    """Every digit string from ``low`` to ``high`` (both of the same length, ``low <= high``)."""
    n = len(low) - 1
    if n < 0:
        return ""
    if low[0] == high[0]:
        return _seq(_lit(low[0]), _same_length(low[1:], high[1:]))
    zeros, nines = "0" * n, "9" * n
    if low[1:] == zeros and high[1:] == nines:
        return _seq(_digit(low[0], high[0]), _any_digits(n))
    options = []
    first, last = int(low[0]), int(high[0])
    if low[1:] != zeros:
        options.append(_seq(_lit(low[0]), _same_length(low[1:], nines)))
        first += 1
    if high[1:] != nines:
        last -= 1
    if first <= last:
        options.append(_seq(_digit(str(first), str(last)), _any_digits(n)))
    if high[1:] != nines:
        options.append(_seq(_lit(high[0]), _same_length(zeros, high[1:])))
    return _alt(options)


def integers(low: int, high: int) -> str | None:
    """The decimal integers from ``low`` to ``high`` (``0 <= low``), without leading zeros; None if none.

    >>> integers(1, 359)
    '([1-9] | [1-9] [0-9] | ([1-2] [0-9]{2} | "3" [0-5] [0-9]))'
    """
    if low > high:
        return None
    options = []
    for width in range(len(str(low)), len(str(high)) + 1):
        lo = max(low, 10 ** (width - 1) if width > 1 else 0)
        hi = min(high, 10**width - 1)
        if lo <= hi:
            options.append(_same_length(str(lo), str(hi)))
    return _alt(options)


def _fractions(digits: int) -> dict[str, str]:
    """What may follow an integer part: any fraction (or none), a zero one (or none), a non-zero one."""

    def up_to(n: int) -> str:
        return f"[0-9]{{0,{n}}}" if n else ""

    nonzero = _alt(_seq(_lit("0" * k) if k else "", "[1-9]", up_to(digits - 1 - k)) for k in range(digits))
    return {
        "any": f'("." [0-9]{{1,{digits}}})?',
        "zero": f'("." "0"{{1,{digits}}})?',
        "nonzero": _seq(_lit("."), nonzero),
    }


def magnitudes(span: Interval) -> str | None:
    """Unsigned number texts (``I`` or ``I.F``) whose value lies in ``span`` (``span.low >= 0``); None if none.

    An integer part strictly inside takes any fraction; one on the lower end a non-zero fraction where that
    end is open; one on the upper end a zero fraction (none where that end is open).
    """
    largest = 10**MAX_INT_DIGITS - 1
    frac = _fractions(MAX_FRAC_DIGITS)
    low, high = span.low, largest + 1 if span.high is None else span.high
    if low > largest or low > high or (low == high and (span.low_open or span.high_open)):
        return None
    if low == high:
        return _seq(_lit(str(low)), frac["zero"])
    options = [_seq(_lit(str(low)), frac["nonzero" if span.low_open else "any"])]
    inner = integers(low + 1, min(high - 1, largest))
    if inner:
        options.append(_seq(inner, frac["any"]))
    if high <= largest and not span.high_open:
        options.append(_seq(_lit(str(high)), frac["zero"]))
    return _alt(options)


def number_rule(span: Interval) -> str:
    """Number texts (an optional ``-``, then :func:`magnitudes`) whose value lies in ``span``."""
    options = []
    if span.high is None or span.high >= 0:  # non-negative values
        low, low_open = (0, False) if span.low < 0 else (span.low, span.low_open)
        positive = magnitudes(Interval(low, low_open, span.high, span.high_open))
        if positive:
            options.append(positive)
    if span.low <= 0:  # "-m" with -m in span: m in [max(0, -high), -low]
        low, low_open = (0, False) if span.high is None or span.high > 0 else (-span.high, span.high_open)
        negative = magnitudes(Interval(low, low_open, -span.low, span.low_open))
        if negative:
            options.append(_seq(_lit("-"), negative))
    if not options:
        raise ValueError(f"no number lies in {span}")
    return _alt(options)


def _probes(span: Interval) -> list[float]:
    """Values around each end of ``span`` and zero, on the finest step a number may have."""
    step = 10.0**-MAX_FRAC_DIGITS
    ends = [span.low, 0] + ([span.high] if span.high is not None else [])
    return [e + d for e in ends for d in (-step, 0.0, step)] + [10.0**MAX_INT_DIGITS - step]


def interval_of(call: str, param: Param) -> Interval:
    """A numeric parameter's interval from the recognizer's table, checked against the spec's rule."""
    if param.name not in NUMBER_RANGES:
        raise ValueError(f"{call}.{param.name}: no entry in grammar.NUMBER_RANGES")
    low, low_open, high, high_open = NUMBER_RANGES[param.name]
    if low != int(low) or (high is not None and high != int(high)):
        raise ValueError(f"{call}.{param.name}: the grammar writes integer interval ends only, got {low}, {high}")
    span = Interval(int(low), low_open, None if high is None else int(high), high_open)
    for v in _probes(span):
        if (param.validate(v) is None) != (v in span):
            raise ValueError(f"{call}.{param.name}: the spec's rule and NUMBER_RANGES disagree at {v}")
    return span


# ----------------------------------------------------------------------------- strings


def _enum_values(param: Param) -> list[str] | None:
    """The values a string parameter allows (as the recognizer lists them), or None for free text."""
    if param.validate(_UNLISTED) is None:
        return None
    return [v for v in dict.fromkeys((*LOCATIONS, *COLORS, *SIZES)) if param.validate(v) is None]


def _check_free_text(call: str, param: Param) -> None:
    """The grammar writes free text as "some character that is not a space": refuse any other rule."""
    expected = {"": False, " ": False, "   ": False, "a": True, " a ": True, "x y": True, _UNLISTED: True}
    for text, ok in expected.items():
        if (param.validate(text) is None) != ok:
            raise ValueError(f"{call}.{param.name}: a free-text rule other than non-empty ({text!r})")


def string_rule(call: str, param: Param) -> str:
    """A quoted string the parameter's rule accepts, in either quote."""
    values = _enum_values(param)
    if values == []:
        raise ValueError(f"{call}.{param.name}: its rule accepts no known location, colour or size")
    if values is None:
        _check_free_text(call, param)
    options = []
    for quote in _QUOTES:
        if values is None:
            inner = STRING_CHARS - {quote}
            body = _seq(_lit(" ") + "*", _char_class(inner - {" "}), _char_class(inner) + "*")
        else:
            body = _alt(_lit(v) for v in values)
        options.append(_seq(_lit(quote), body, _lit(quote)))
    return _alt(options)


# ----------------------------------------------------------------------------- calls


class _Rules:
    """Named rules in order of definition; a value rule with the same text is defined once."""

    def __init__(self) -> None:
        self.rules: dict[str, str] = {}
        self._by_body: dict[str, str] = {}

    def add(self, name: str, body: str) -> str:
        self.rules[name] = body
        return name

    def shared(self, stem: str, body: str) -> str:
        """The rule with this body (defined under ``stem``, made unique, on first use)."""
        if body not in self._by_body:
            name, n = stem, 2
            while name in self.rules:
                name, n = f"{stem}_{n}", n + 1
            self._by_body[body] = self.add(name, body)
        return self._by_body[body]

    def text(self) -> str:
        return "".join(f"{name} ::= {body}\n" for name, body in self.rules.items())


def _rule_name(call: str) -> str:
    return call.replace(".", "_")


def _call_rules(rules: _Rules, spec: CallSpec) -> str:
    """The rules of one call (its opening, each argument, one rule per set of arguments given); its name."""
    stem = _rule_name(spec.name)
    params = spec.params
    if len(params) > 6:
        raise ValueError(f"{spec.name}: too many parameters for one rule per set of them")
    args = []
    for p in params:
        if p.type is float:
            span = interval_of(spec.name, p)
            value = rules.shared(f"number_{span.name}", number_rule(span))
        else:
            free = _enum_values(p) is None
            value = rules.shared("text" if free else f"one_of_{p.name}", string_rule(spec.name, p))
        args.append(_seq(_lit(f"{p.name}="), value))
    required = sum(1 << i for i, p in enumerate(params) if p.required)
    full = (1 << len(params)) - 1
    for given in range(full + 1):  # after "(" (given 0) or after a value, with these arguments written
        options = [_lit(")")] if not required & ~given else []
        sep = "" if given == 0 else _seq(_lit(","), _lit(" ") + "?")
        for i in range(len(params)):
            if not given >> i & 1:
                options.append(_seq(sep, args[i], f"args_{stem}_{given | 1 << i}"))
        rules.add(f"args_{stem}_{given}", " | ".join(options))
    return rules.add(f"call_{stem}", _seq(_lit(spec.name + "("), f"args_{stem}_0"))


# ----------------------------------------------------------------------------- statements and blocks


def _block_rules(rules: _Rules, condition: str) -> None:
    """``block_d``: statements at depth d, headers with their bodies at d + 1, calls only at MAX_DEPTH."""
    loop = _alt(_lit(str(n)) for n in range(LOOP_MIN, LOOP_MAX + 1))
    rules.add("loop_count", loop)
    for depth in range(MAX_DEPTH + 1):
        pad = _lit(" " * (INDENT * depth)) if depth else ""
        statements = [_seq(pad, "call")]
        if depth < MAX_DEPTH:
            body = _seq(_lit(":\n"), f"block_{depth + 1}")
            test = _seq(condition, body)
            statements += [
                _seq(pad, _lit("for _ in range("), "loop_count", _lit(")"), body),
                _seq(
                    pad,
                    _lit("if "),
                    test,
                    f"({_seq(_lit(chr(10)), pad, _lit('elif '), test)})*",
                    f"({_seq(_lit(chr(10)), pad, _lit('else'), body)})?",
                ),
            ]
        rules.add(f"statement_{depth}", " | ".join(statements))
        rules.add(f"block_{depth}", f'statement_{depth} ("\\n" statement_{depth})*')


@lru_cache(maxsize=1)
def robot_ebnf() -> str:
    r"""The GBNF grammar (root rule ``root``) of every program the recognizer accepts.

    GBNF as llama.cpp defines it, which xgrammar's ``GrammarCompiler.compile_grammar`` reads as EBNF and
    llguidance (``llguidance.grammar_from("gbnf", ...)``) converts to Lark; vLLM takes it as
    ``structured_outputs: {"grammar": ...}`` with either backend. One newline may end a program.
    """
    rules = _Rules()
    # The program as one rule: llguidance then lexes it as one token, and its lexer, which extends a token as
    # far as it goes, does not refuse EOS after a final newline that could also have started a next line.
    rules.add("root", "program")
    rules.add("program", 'block_0 "\\n"?')
    _block_rules(rules, f"call_{_rule_name(CONDITION)}")
    names = [_call_rules(rules, spec) for spec in CALLS.values()]
    rules.add("call", " | ".join(names))
    return rules.text()


def robot_lark() -> str:
    """The same grammar in llguidance's Lark (llguidance's own GBNF converter writes it), told not to force bytes.

    Unless told otherwise, llguidance allows only the canonical tokenization of text the grammar fixes (after
    ``if`` the whole `` robot`` token, not `` r`` or `` rob``); ``no_forcing`` lets the model split such text as
    it likes, as the recognizer does. Needs the llguidance package.
    """
    from llguidance.gbnf_to_lark import gbnf_to_lark

    return '%llguidance {"no_forcing": true}\n' + gbnf_to_lark(robot_ebnf())
