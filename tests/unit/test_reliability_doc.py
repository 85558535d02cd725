"""RELIABILITY.md names the test behind each promise: every test it names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: ``tests/x.py``, ``tests/x.py::test_name`` or ``tests/x.py::test_name[param]``, and the names that follow
#: one after a comma (``, `test_other```), which belong to the same file.
CITED = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?[^`]*`((?:,\s*`\w+[^`]*`)*)")


def cited_tests(text: str) -> list[tuple[str, str | None]]:
    out = []
    for path, name, more in CITED.findall(text):
        out.append((path, name or None))
        out += [(path, extra) for extra in re.findall(r"`(\w+)", more) if extra.startswith("test_")]
    return out


def defined_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef)}


def test_every_test_reliability_names_exists():
    cited = cited_tests((ROOT / "RELIABILITY.md").read_text(encoding="utf-8"))
    assert len(cited) > 20
    missing = []
    for path, name in cited:
        file = ROOT / path
        if not file.is_file():
            missing.append(path)
        elif name and name not in defined_names(file):
            missing.append(f"{path}::{name}")
    assert not missing, f"RELIABILITY.md names tests that do not exist: {missing}"


def test_the_citation_reader_finds_names_after_a_comma():
    text = "| x | `tests/a.py::test_one[p]`, `test_two`; `tests/b.py` |"
    assert cited_tests(text) == [("tests/a.py", "test_one"), ("tests/a.py", "test_two"), ("tests/b.py", None)]
