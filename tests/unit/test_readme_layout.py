"""The README's layout section names every module of the package, so a newcomer sees the whole of it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_layout_lists_every_module():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^ {2}(\w+\.py) ", layout, flags=re.MULTILINE))
    modules = {p.name for p in (ROOT / "robolora").glob("*.py") if p.name != "__init__.py"}
    assert modules - listed == set(), "README.md's layout does not list these modules"
    assert listed - modules == set(), "README.md's layout lists modules that do not exist"
