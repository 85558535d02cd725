"""File writes that are never seen half-done, and reads that refuse what is not a small regular file."""

from __future__ import annotations

import errno
import itertools
import json
import os
import re
import stat
import unicodedata
import uuid
from pathlib import Path
from typing import Any

from robolora.errors import ConfigError, UserError


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place.

    A reader (or a crash) sees the old file or the new one, never a partial one. The temporary file
    is created exclusively ("x"), so it gets the usual permissions (0666 less the umask) and never
    clobbers anything.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        tmp.replace(path)  # atomic within one file system
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


# ----------------------------------------------------------------------------- bounded, checked reads

#: Largest config-like file read (``--config``, sweep and pipeline files, a run's config.yaml,
#: adapter_config.json): far beyond any real one.
MAX_CONFIG_BYTES = 1 << 20
#: Largest dataset file read.
MAX_DATASET_BYTES = 1 << 30
#: Deepest nesting of lists and mappings accepted in a JSON or YAML file.
MAX_DEPTH = 64
#: Most nodes and scalar characters a YAML file may expand to through its aliases (``*name``): a file
#: without aliases is always below it; a "billion laughs" file is refused before it is built.
MAX_YAML_EXPANSION = 10_000_000
#: Longest value echoed in a message.
MAX_SHOWN = 100


class FileReadError(UserError):
    """A file that cannot be read as asked: the message is ``PATH: problem; fix`` (callers add the flag)."""


def shown(value: object, limit: int = MAX_SHOWN) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for messages (a huge string is never formatted whole).

    >>> shown("x" * 500, limit=12)
    "'xxxxxxxxxxxx...' (500 characters)"
    >>> shown([1, 2]), shown(list(range(500)))
    ('[1, 2]', 'a list of 500 items')
    """
    if isinstance(value, str):
        text = repr(value[:limit])
        return text if len(value) <= limit else f"{text[:-1]}...{text[-1]} ({len(value):,} characters)"
    if isinstance(value, (list, dict, tuple, set)) and len(value) > limit:
        return f"a {type(value).__name__} of {len(value):,} items"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def shown_path(path: str | os.PathLike[str], limit: int = 160) -> str:
    """A path for a message, its middle cut when it is very long.

    >>> shown_path("/a/" + "b" * 300, limit=20)
    '/a/bbbbb...bbbbbbbb (303 characters)'
    """
    text = os.fspath(path)
    text = text if isinstance(text, str) else os.fsdecode(text)
    if len(text) <= limit:
        return text
    half = (limit - 3) // 2
    return f"{text[:half]}...{text[-half:]} ({len(text):,} characters)"


_KINDS = (
    (stat.S_ISDIR, "is a directory"),
    (stat.S_ISFIFO, "is a named pipe (FIFO)"),
    (stat.S_ISCHR, "is a character device"),
    (stat.S_ISBLK, "is a block device"),
    (stat.S_ISSOCK, "is a socket"),
)


def _kind_of(mode: int) -> str:
    return next((text for test, text in _KINDS if test(mode)), "is not a regular file")


def read_bytes(path: str | os.PathLike[str], what: str = "a file", max_bytes: int = MAX_CONFIG_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``, or one :class:`FileReadError` saying why not.

    Refused without blocking or reading much: a missing file, a path with a NUL byte or one too long,
    a directory, a FIFO, a device (``/dev/zero``, ``/dev/stdin``), a socket, a file over the limit.
    ``what`` names the expected content in messages ("a JSON or JSONL dataset").
    """
    text = shown_path(path)
    raw = os.fspath(path)
    if ("\0" if isinstance(raw, str) else b"\0") in raw:
        raise FileReadError(f"{text!r}: the path holds a NUL byte; give the file's real path")
    try:
        st = Path(os.fsdecode(raw)).stat()
    except FileNotFoundError:
        raise FileReadError(f"{text}: no such file") from None
    except NotADirectoryError:
        raise FileReadError(f"{text}: no such file (a part of the path is a file, not a directory)") from None
    except OSError as e:
        why = "the path is too long" if e.errno == errno.ENAMETOOLONG else (e.strerror or type(e).__name__)
        raise FileReadError(f"{text}: cannot be read ({why}); give the path of {what}") from None
    if not stat.S_ISREG(st.st_mode):
        raise FileReadError(f"{text}: {_kind_of(st.st_mode)}, not a regular file; give the path of {what}")
    too_big = FileReadError(
        f"{text}: over the limit of {max_bytes:,} bytes for {what}; is it the right file? (split it if it is)"
    )
    if st.st_size > max_bytes:
        raise too_big
    try:
        fd = os.open(raw, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise FileReadError(f"{text}: cannot be read ({e.strerror}); check its permissions") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped for something else since the check
            raise FileReadError(f"{text}: not a regular file; give the path of {what}")
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 24, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise FileReadError(f"{text}: cannot be read ({e.strerror})") from None
    finally:
        os.close(fd)
    if size > max_bytes:  # it grew, or its size is not known beforehand
        raise too_big
    return b"".join(chunks)


def read_text(path: str | os.PathLike[str], what: str = "a file", max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """:func:`read_bytes`, decoded as UTF-8 (a byte-order mark is dropped)."""
    data = read_bytes(path, what, max_bytes)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise FileReadError(f"{shown_path(path)}: byte {e.start}: not valid UTF-8; save the file as UTF-8") from None


_JSON_NOT_BRACKETS = re.compile(r'[^\[\]{}"]+|"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_depth(text: str) -> int:
    """How deep the lists and objects of a JSON text nest, found without parsing it (strings skipped).

    >>> json_depth('[{"a": [1, "]]]"]}]'), json_depth('3'), json_depth('[[[')
    (3, 0, 3)
    """
    brackets = _JSON_NOT_BRACKETS.sub("", text)
    return max(itertools.accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def _too_deep(path: str | os.PathLike[str], max_depth: int) -> FileReadError:
    return FileReadError(
        f"{shown_path(path)}: lists and mappings nest more than {max_depth} levels deep; "
        "no setting or record needs that, is it the right file?"
    )


def _one_line(error: Exception, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_json(text: str, path: str | os.PathLike[str], max_depth: int = MAX_DEPTH) -> Any:
    """A JSON text from ``path``: nesting beyond ``max_depth`` and bad JSON are :class:`FileReadError`.

    >>> parse_json('{"a": [1]}', "x.json")
    {'a': [1]}
    """
    if json_depth(text) > max_depth:
        raise _too_deep(path, max_depth)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise FileReadError(
            f"{shown_path(path)}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"
        ) from None
    except RecursionError:  # cannot happen below the depth checked, kept as a guard
        raise _too_deep(path, max_depth) from None


def load_json(
    path: str | os.PathLike[str],
    what: str = "a JSON file",
    max_bytes: int = MAX_CONFIG_BYTES,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """A JSON file read with :func:`read_text` and parsed with :func:`parse_json`."""
    return parse_json(read_text(path, what, max_bytes), path, max_depth)


def check_yaml(
    text: str, path: str | os.PathLike[str], max_depth: int = MAX_DEPTH, max_expansion: int = MAX_YAML_EXPANSION
) -> None:
    """Refuse a YAML text that nests deeper than ``max_depth`` or whose aliases expand beyond
    ``max_expansion`` nodes and characters, from its parse events (nothing is built, nothing recurses).

    >>> check_yaml("a: &x [1, 2]\\nb: *x\\n", "ok.yaml")
    >>> check_yaml("a: &x [*x]", "loop.yaml")
    Traceback (most recent call last):
    ...
    robolora.fileio.FileReadError: loop.yaml: the alias *x sits inside the value it names; write the value out
    """
    import yaml

    size = _YamlSize(path, max_depth, max_expansion)
    loader = yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.SafeLoader
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.AliasEvent):
            size.alias(event.anchor)
        elif isinstance(event, yaml.ScalarEvent):
            size.scalar(event.anchor, event.value)
        elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            size.open(event.anchor)
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            size.close()


class _YamlSize:
    """The nesting and alias expansion of a YAML text so far, fed its parse events by :func:`check_yaml`;
    each method raises :class:`FileReadError` as soon as a limit is passed."""

    def __init__(self, path: str | os.PathLike[str], max_depth: int, max_expansion: int) -> None:
        self.path, self.max_depth, self.max_expansion = path, max_depth, max_expansion
        # Each open collection: [anchor, expanded size so far, height below it].
        self.stack: list[list[Any]] = []
        self.anchors: dict[str, tuple[int, int]] = {}  # anchor -> (expanded size, height)
        self.total = 0

    def add(self, size: int, height: int) -> None:
        """Count a value of ``size`` nodes and characters, nesting ``height`` levels, into its collection."""
        self.total += size
        if self.total > self.max_expansion:
            raise FileReadError(
                f"{shown_path(self.path)}: its aliases (*name) expand to more than {self.max_expansion:,} values and "
                "characters; write the values out instead of repeating aliases of aliases"
            )
        if len(self.stack) + height > self.max_depth:
            raise _too_deep(self.path, self.max_depth)
        if self.stack:
            self.stack[-1][1] += size
            self.stack[-1][2] = max(self.stack[-1][2], height)

    def alias(self, anchor: str) -> None:
        """``*anchor``: the whole value it names, once more."""
        if anchor not in self.anchors:
            if any(entry[0] == anchor for entry in self.stack):
                raise FileReadError(
                    f"{shown_path(self.path)}: the alias *{anchor} sits inside the value it names; write the value out"
                )
            return  # an undefined alias: the loader names it
        self.add(*self.anchors[anchor])

    def scalar(self, anchor: str | None, value: str) -> None:
        """A scalar: one node and its characters."""
        size = 1 + len(value)
        self.add(size, 0)
        if anchor:
            self.anchors[anchor] = (size, 0)

    def open(self, anchor: str | None) -> None:
        """The start of a list or mapping."""
        if len(self.stack) >= self.max_depth:
            raise _too_deep(self.path, self.max_depth)
        self.stack.append([anchor, 1, 0])

    def close(self) -> None:
        """The end of the innermost open list or mapping: its size is known, and its anchor's."""
        anchor, size, height = self.stack.pop()
        self.add(size, height + 1)
        self.total -= size  # counted once already, as its children came
        if anchor:
            self.anchors[anchor] = (size, height + 1)


def parse_yaml(
    text: str, path: str | os.PathLike[str], max_depth: int = MAX_DEPTH, max_expansion: int = MAX_YAML_EXPANSION
) -> Any:
    """A YAML text from ``path`` (safe types only), after :func:`check_yaml`; bad YAML is :class:`FileReadError`.

    >>> parse_yaml("a: [1, two]", "x.yaml")
    {'a': [1, 'two']}
    """
    import yaml

    try:
        check_yaml(text, path, max_depth, max_expansion)
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        if "maximum nesting depth" in str(e):  # libyaml's own limit, met before ours in flow style
            raise _too_deep(path, max_depth) from None
        raise FileReadError(f"{shown_path(path)}: not valid YAML: {_one_line(e)}") from None
    except RecursionError:  # cannot happen below the depth checked, kept as a guard
        raise _too_deep(path, max_depth) from None


def load_yaml(
    path: str | os.PathLike[str],
    what: str = "a YAML file",
    max_bytes: int = MAX_CONFIG_BYTES,
    max_depth: int = MAX_DEPTH,
    max_expansion: int = MAX_YAML_EXPANSION,
) -> Any:
    """A YAML file read with :func:`read_text` and parsed with :func:`parse_yaml`."""
    return parse_yaml(read_text(path, what, max_bytes), path, max_depth, max_expansion)


_NOT_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def text_problem(value: str) -> str | None:
    """Why a string from a file is not text a person wrote, or None: a lone surrogate (a broken
    ``\\ud800`` escape), a control character other than tab and newline, or nothing visible at all.

    >>> text_problem("go 3 m"), text_problem("\\u200b\\u200b"), text_problem("a\\x00")
    (None, 'has no visible characters', 'holds the control character U+0000 at character 1; remove it')
    >>> text_problem("a\\ud800")
    'holds a lone surrogate (U+D800) at character 1, which is not text; fix the \\\\u escapes'
    """
    bad = _NOT_TEXT.search(value)
    if bad:
        char, at = bad.group(), bad.start()
        if "\ud800" <= char <= "\udfff":
            return (
                f"holds a lone surrogate (U+{ord(char):04X}) at character {at}, which is not text; fix the \\u escapes"
            )
        return f"holds the control character U+{ord(char):04X} at character {at}; remove it"
    if not any(not c.isspace() and unicodedata.category(c) not in ("Cf", "Cc", "Zs") for c in value):
        return "has no visible characters"
    return None


def check_new_file(path: str | os.PathLike[str], flag: str) -> Path:
    """Whether a file can be written at ``path`` (created, with its missing folders, or replaced): tried
    in the nearest existing folder, not guessed from permission bits, and nothing is left behind.

    Raises:
        UserError: ``flag``, the path and why not (a NUL byte, a name too long, a directory, a file
            where a folder should be, a read-only place).
    """
    import tempfile

    text = shown_path(path)
    raw = os.fsdecode(os.fspath(path))
    if "\0" in raw:
        raise UserError(f"{flag}: {text!r}: the path holds a NUL byte; choose another path")
    p = Path(raw)
    for part in p.parts:
        if len(os.fsencode(part)) > 255:
            raise UserError(f"{flag}: {text}: the name {part[:40]}... is too long (255 bytes at most)")
    try:
        if p.is_dir():
            raise UserError(f"{flag}: {text} is a directory; give the path of a file")
        base = next((q for q in p.parents if q.exists()), Path.cwd())
        if not base.is_dir():
            raise UserError(f"{flag}: {text} cannot be created: {shown_path(base)} is a file; choose another path")
        tempfile.TemporaryFile(dir=base).close()  # unnamed where the file system allows: no trace at all
    except OSError as e:
        why = "the path is too long" if e.errno == errno.ENAMETOOLONG else e.strerror or type(e).__name__
        raise UserError(f"{flag}: {text} cannot be written ({why}); choose a writable place") from None
    return p


def read_mapping(path: str | os.PathLike, flag: str = "--config") -> dict[str, Any]:
    """A YAML or JSON file that holds one mapping (an empty file is an empty mapping).

    The file must be a regular file of at most 1 MiB, nest at most 64 levels, expand its YAML aliases
    to at most 10 million values and characters, and hold no NUL, control character or lone surrogate
    in its strings; anything else is one :class:`ConfigError` naming ``flag``, the file and the key.
    """
    p = Path(path)
    is_json = p.suffix.lower() == ".json"
    try:
        data = (load_json if is_json else load_yaml)(p, "a YAML or JSON config file", MAX_CONFIG_BYTES)
    except FileReadError as e:
        raise ConfigError(f"{flag}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{flag}: {p}: expected a mapping of keys to values, got a {type(data).__name__}")
    bad = _bad_text(data)
    if bad:
        raise ConfigError(f"{flag}: {p}: {bad}")
    return data


def _bad_text(data: Any, where: str = "") -> str | None:
    """The first key or string value of a parsed file that is not text (control characters, lone
    surrogates), as ``key: problem``; the file's nesting is already bounded."""
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        here = f"{where}[{key}]" if isinstance(data, list) else f"{where}.{key}" if where else str(key)
        for text, what in ((key, "the key"), (value, "the value")):
            if isinstance(text, str) and _CONFIG_NOT_TEXT.search(text):
                problem = text_problem(text) or "is not text"
                return f"{here if len(here) <= 80 else here[:77] + '...'}: {what} {problem}"
        if isinstance(value, (dict, list)):
            found = _bad_text(value, here)
            if found:
                return found
    return None


#: Characters no config string may hold (C1 controls, which text_problem also refuses in dataset text, pass).
_CONFIG_NOT_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
