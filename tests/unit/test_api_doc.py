"""docs/API.md is generated from the call table and must match it."""

from __future__ import annotations

from pathlib import Path

from robolora.robot import CALLS, COLORS, LOCATIONS
from robolora.robot.apidoc import render_api_markdown

API_MD = Path(__file__).resolve().parents[2] / "docs" / "API.md"


def test_api_md_is_up_to_date():
    assert API_MD.read_text(encoding="utf-8") == render_api_markdown(), (
        "docs/API.md is stale: run `python -m robolora.robot.apidoc > docs/API.md`"
    )


def test_every_call_location_and_colour_is_documented():
    text = render_api_markdown()
    for name in CALLS:
        assert f"| `{name}` |" in text
    for value in LOCATIONS + COLORS:
        assert f"`{value}`" in text
    assert "`speed: float = 1.0`" in text and '`color: str = "any"`' in text


def test_judging_and_canonical_sections_are_present():
    text = render_api_markdown()
    for heading in ("## Calls", "## Values", "## Control flow", "## Canonical form", "## How outputs are judged"):
        assert heading in text
    assert "line 1: imports are not allowed" in text  # the error example is produced by the checker
