"""Builds the word lists of :mod:`robolora.robot.vocabulary` from the generator and English word lists.

The known words are read from the generator's source (its string literals, never its docstrings, error
messages or regular expressions), so a new phrase's words reach the vocabulary without importing it.
The words never corrected need English word lists: Debian's ``wamerican`` and ``wbritish`` packages
(``apt-get install wamerican wbritish``), read from ``/usr/share/dict``. Run::

    python -m robolora.robot.vocabulary_build           # exit 1 when the committed lists are stale
    python -m robolora.robot.vocabulary_build --write   # rebuild them in robolora/robot/vocabulary.py
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from robolora.robot import vocabulary
from robolora.robot.normalize import ONES_WORDS, TENS_WORDS, UNITS, slip_targets, target_index
from robolora.robot.spec import COLORS, LOCATIONS, SIZES

#: Words typed to robots that no English word list holds: never read as a slip.
CHAT_WORDS = (
    "pls", "plz", "plss", "thx", "thnx", "thanx", "ty", "u", "ur", "ya", "yea", "yeah", "yep", "yup", "nope",
    "okey", "okie", "asap", "btw", "idk", "imo", "lol", "omg", "rn", "tho", "thru", "gonna", "wanna", "gotta",
    "lemme", "gimme", "kinda", "sorta", "cuz", "coz", "pix", "foto", "fotos", "selfie", "hmm", "heya", "hiya",
    "bot", "robo", "tv", "wifi", "alexa", "siri", "til", "ppl", "msg", "pic", "pics",
)  # fmt: skip
WORD_LISTS = (Path("/usr/share/dict/american-english"), Path("/usr/share/dict/british-english"))
GENERATOR = Path(__file__).with_name("generator.py")
LISTS = Path(vocabulary.__file__)
_LETTERS = re.compile(r"[A-Za-z]+")
_NAME = re.compile(r"[\w.]*_[\w.]*")


def _skipped_strings(tree: ast.AST) -> set[int]:
    """Ids of string nodes that are no phrase: docstrings, error messages and regular expressions."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and body and isinstance(body[0], ast.Expr):
            skipped.add(id(body[0].value))
        regex = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        regex = regex and isinstance(node.func.value, ast.Name) and node.func.value.id == "re"
        if isinstance(node, ast.Raise) or regex:
            skipped.update(id(inner) for inner in ast.walk(node))
    return skipped


def source_words(source: str) -> set[str]:
    """The lower-case words of every string literal in Python ``source`` that can reach a command.

    The generator is read as text, never imported: its words are its tables' and templates' words.

    >>> sorted(source_words('''_GO = ("go to {l}", "head home")\\nraise ValueError("bad size")'''))
    ['go', 'head', 'home', 'l', 'to']
    """
    tree = ast.parse(source)
    skipped = _skipped_strings(tree)
    words: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skipped:
            if _NAME.fullmatch(node.value):
                continue  # a call's, category's or location's name ("robot.turn_left", "control_flow")
            words.update(w.lower() for w in _LETTERS.findall(node.value))
    return words


def known_words(generator_source: str | None = None) -> set[str]:
    """What :data:`~robolora.robot.vocabulary.VOCABULARY` should hold: the generator's words, the API's
    and the normaliser's."""
    source = GENERATOR.read_text(encoding="utf-8") if generator_source is None else generator_source
    api = {*COLORS, *SIZES, *(part for location in LOCATIONS for part in location.split("_"))}
    numbers = {*ONES_WORDS, *TENS_WORDS} - {""}
    return source_words(source) | api | numbers | set(UNITS)


def never_corrected(known: Iterable[str], english: Iterable[str]) -> set[str]:
    """Words of ``english`` (any case, apostrophes dropped) and :data:`CHAT_WORDS` not in ``known`` that
    the slip rule could read as a word of ``known``."""
    known = set(known)
    index = target_index(known)
    # "theres" and "dont" typed without the apostrophe, but not a name's "Tims": "tims" is a slip of "times".
    words = {w.lower().replace("'", "") for w in english if not (w[:1].isupper() and w.endswith("'s"))}
    words |= set(CHAT_WORDS)
    return {w for w in words - known if w.isascii() and w.isalpha() and slip_targets(w, index)}


def read_word_lists(paths: Sequence[Path] = WORD_LISTS) -> list[str]:
    """The words of English word lists, one a line; a missing list is an error that says how to install it."""
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"no English word list at {', '.join(missing)}: install it with `apt-get install wamerican wbritish`"
        )
    return [line.strip() for p in paths for line in p.read_text(encoding="utf-8", errors="replace").splitlines()]


def _wrapped(words: Iterable[str], width: int = 116) -> str:
    lines, line = [], ""
    for word in sorted(words):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return "\n".join([*lines, line]) if line else ""


def rendered_lists(known: Iterable[str], never: Iterable[str]) -> str:
    """The generated block of the word lists' module for the given lists."""
    lists = (("_VOCABULARY_WORDS", known), ("_NEVER_CORRECTED_WORDS", never))
    return "".join(f'{name} = """\n{_wrapped(words)}\n"""\n' for name, words in lists)


def rewrite_module(known: Iterable[str], never: Iterable[str], path: Path = LISTS) -> None:
    """Replace the generated block of the word lists' module with the given lists."""
    from robolora.fileio import atomic_write_text

    text = path.read_text(encoding="utf-8")
    start = text.index("\n", text.index("# --- generated by")) + 1
    end = text.index("# --- end of generated lists ---")
    atomic_write_text(path, text[:start] + rendered_lists(known, never) + text[end:])


def main(argv: Sequence[str]) -> int:
    """Say whether the committed lists are current; with ``--write``, rebuild them in place."""
    if set(argv) - {"--write"}:
        unknown = sorted(set(argv) - {"--write"})[0]
        print(f"vocabulary: error: unknown argument {unknown!r}; the only flag is --write", file=sys.stderr)
        return 2
    known = known_words()
    try:
        never = never_corrected(known, read_word_lists())
    except FileNotFoundError as e:
        print(f"vocabulary: error: {e}", file=sys.stderr)
        return 2
    if "--write" in argv:
        rewrite_module(known, never)
        print(f"vocabulary: wrote {len(known)} known words and {len(never)} never corrected")
        return 0
    current = known == vocabulary.VOCABULARY and never == vocabulary.NEVER_CORRECTED
    print("vocabulary: the lists are current" if current else "vocabulary: stale; run with --write to rebuild")
    return 0 if current else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
