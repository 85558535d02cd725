"""Commands are shown to the model with their quantities in the API's units, in digits."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from robolora.prompts import render_prompt
from robolora.robot.normalize import normalize_command

DATASET = Path(__file__).resolve().parents[2] / "data" / "robot_dataset.json"


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        # units converted as the canonical form converts them, rounded to 2 places
        ("go straight ahead 10 feet", "go straight ahead 3.05 m"),
        ("move backwards 1ft slowly", "move backwards 0.3 m slowly"),
        ("head forward 6 inches", "head forward 0.15 m"),
        ("back up about 100 centimeters fast", "back up about 1 m fast"),
        ("scan within 300 cm", "scan within 3 m"),
        ("go 25 mm forward", "go 0.03 m forward"),
        ("drive 2 yards", "drive 1.83 m"),
        ("at 50 cm/s", "at 0.5 m/s"),
        ("at fifty centimeters per second", "at 0.5 m per second"),
        ("hang on for 9 minutes", "hang on for 540 seconds"),
        ("stay put for 1 minute", "stay put for 60 seconds"),
        ("pause 1.5 min", "pause 90 seconds"),
        ("wait an hour", "wait 3600 seconds"),
        # number words, halves, quarters, couples, decimals in words, negatives
        ("go backward eighteen inches", "go backward 0.46 m"),
        ("idle for one hundred and three seconds", "idle for 103 seconds"),
        ("turn right by two hundred and sixty five degrees", "turn right by 265 degrees"),
        ("turn forty-five degrees", "turn 45 degrees"),
        ("advance two and a half metres", "advance 2.5 metres"),
        ("move a meter and a half", "move 1.5 meter"),
        ("wait one minute and a half", "wait 90 seconds"),
        ("go home at a metre per second and a half.", "go home at 1.5 metre per second."),
        ("go at two meters a second and a half", "go at 2.5 meters a second"),
        ("wait a second then go", "wait 1 second then go"),
        ("go half a foot", "go 0.15 m"),
        ("go a quarter of a meter", "go 0.25 meter"),
        ("scan within a couple of feet", "scan within 0.61 m"),
        ("move three point five meters", "move 3.5 meters"),
        ("move .5 m", "move 0.5 m"),
        ("x = negative 65 cm, y minus 0.1", "x = -0.65 m, y -0.1"),
        ("x = -50 cm", "x = -0.5 m"),
        ("hold on a second", "hold on 1 second"),
        # a slip of the finger in a unit's name
        ("back off nine and a half fet", "back off 2.9 m"),
        ("move 20 centiemters", "move 0.2 m"),
        ("wait 2 minuets", "wait 120 seconds"),
        ("turn 45 dgeree", "turn 45 degree"),
        ("wait a minute", "wait 60 seconds"),
        # repetition counts
        ("repeat eight times", "repeat 8 times"),
        ("blink twice", "blink 2 times"),
        ("do it thrice", "do it 3 times"),
        ("take ten pics", "take 10 pics"),
        # a share of a whole turn, in degrees
        ("turn right half a turn", "turn right a 180 degree turn"),
        ("make a quarter turn to the left", "make a 90 degree turn to the left"),
        ("make a three-quarter turn to the left", "make a 270 degree turn to the left"),
        ("do a full turn to the right", "do a 360 degree turn to the right"),
        ("spin left in a full circle", "spin left in a 360 degree circle"),
        # left alone: metres, seconds and degrees in digits, a lone "one", ordinals, plain words
        ("move forward 3 meters", "move forward 3 meters"),
        ("pick that one up", "pick that one up"),
        ("take a second photo of the cup", "take a second photo of the cup"),
        ("make a turn to the left", "make a turn to the left"),
        ("go to the kitchen", "go to the kitchen"),
    ],
)
def test_quantities_are_rewritten(command, expected):
    assert normalize_command(command) == expected


def test_quoted_text_is_left_as_said():
    for command in (
        'say "wait five minutes" then wait five minutes',
        "say 'Meeting starts in ten minutes' twice",
        "say “two feet” and go two feet",
    ):
        quoted = re.findall(r"\"[^\"]*\"|'[^']*'|“[^”]*”", command)
        out = normalize_command(command)
        assert [q for q in quoted if q in out] == quoted
    assert normalize_command('say "wait five minutes" then wait five minutes').endswith("wait 300 seconds")


def test_a_command_in_capitals_is_read_in_lower_case_but_its_quotes_are_not():
    assert normalize_command("DRIVE BETWEEN THE OFFICE AND THE HALL A COUPLE OF TIMES.") == (
        "drive between the office and the hall 2 times."
    )
    assert normalize_command('SAY "Hi THERE" AND TURN LEFT') == 'say "Hi THERE" and turn left'
    # One lower-case letter outside the quotes: the capitals are the user's own, kept.
    assert normalize_command("say OK and turn left") == "say OK and turn left"
    assert normalize_command('say "HELLO"') == 'say "HELLO"'


def test_the_prompt_shows_the_normalized_command():
    class Plain:
        chat_template = None

    text, _ = render_prompt(Plain(), "go two feet")
    assert "go 0.61 m" in text and "two feet" not in text


def test_shipped_commands_state_the_numbers_their_programs_use():
    """After normalization almost every number a reference program holds is written in its command
    (the rest are implied: a triangle's 120 degrees, a full turn's 360), and no text argument changes."""
    records = json.loads(DATASET.read_text())
    implied = {1.0, 0.5, 2.0, 90.0, 180.0}  # defaults and the spec's words ("slowly", "turn around")

    def numbers(text: str) -> set[float]:
        return {round(float(x), 2) for x in re.findall(r"-?\d*\.?\d+", text)}

    def unstated(command: str, program: str) -> set[float]:
        return {round(float(v), 2) for v in re.findall(r"=(-?\d+\.\d+)", program)} - numbers(command) - implied

    before = sum(bool(unstated(r["input"], r["output"])) for r in records)
    after = sum(bool(unstated(normalize_command(r["input"]), r["output"])) for r in records)
    assert before > 0.1 * len(records)
    assert after < 0.02 * len(records)
    for r in records:
        out = normalize_command(r["input"]).lower()
        for text in re.findall(r'(?:text|target|object_type)="([^"]*)"', r["output"]):
            assert text.lower() not in r["input"].lower() or text.lower() in out


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("turn around", "turn around 180 degrees"),
        ("TURN AROUND AND GO HOME", "turn around 180 degrees and go home"),
        ("spin all the way around to your right", "spin all the way around 180 degrees to your right"),
        ("do a u-turn", "do a u-turn 180 degrees"),
        ("turn around 90 degrees", "turn around 90 degrees"),  # an angle said stays the angle
        ("follow me around", "follow me around"),
        ('say "turn around"', 'say "turn around"'),
    ],
)
def test_turning_around_shows_its_180_degrees(command, shown):
    assert normalize_command(command) == shown


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("do a square", "do a square (4 turns of 90 degrees)"),
        (
            "drive a triangle with 2 m sides, turning left",
            "drive a triangle (3 turns of 120 degrees) with 2 m sides, turning left",
        ),
        ("2 laps of a 1 meter hexagon", "2 laps of a 1 meter hexagon (6 turns of 60 degrees)"),
        ("trace an octagon", "trace an octagon (8 turns of 45 degrees)"),
    ],
)
def test_a_shape_shows_its_turns(command, shown):
    assert normalize_command(command) == shown


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("make 8 quarter turns to the left", "make 8 turns of 90 degrees to the left"),
        ("do two half turns", "do 2 turns of 180 degrees"),
        ("turn right a quarter turn", "turn right a 90 degree turn"),
    ],
)
def test_counted_shares_of_a_turn(command, shown):
    assert normalize_command(command) == shown
