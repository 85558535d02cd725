"""Tests of the synthetic dataset generator: determinism, mix, validity, coverage and unit conversion."""

from __future__ import annotations

import itertools
import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from robolora.robot import generator as gen
from robolora.robot.checker import canonicalize, check, parse_program
from robolora.robot.normalize import ONES, TENS, normalize_command
from robolora.robot.program import Call, If, Loop, Program
from robolora.robot.spec import CALLS, CATEGORIES, COLORS, LOCATIONS, SIZES


@pytest.fixture(scope="module")
def records() -> list[dict[str, str]]:
    return gen.generate_records(5000, seed=0)


def _calls(program: Program) -> list[Call]:
    """Every call of a program, if-tests included, in order."""
    out: list[Call] = []
    for stmt in program:
        if isinstance(stmt, Call):
            out.append(stmt)
        elif isinstance(stmt, Loop):
            out.extend(_calls(stmt.body))
        elif isinstance(stmt, If):
            out.append(stmt.test)
            out.extend(_calls(stmt.body) + _calls(stmt.orelse))
    return out


# ------------------------------------------------------------------------------------------------
# Determinism, mix, uniqueness
# ------------------------------------------------------------------------------------------------


def test_same_seed_same_records() -> None:
    assert gen.generate_records(500, seed=7) == gen.generate_records(500, seed=7)


def test_different_seeds_differ() -> None:
    a = gen.generate_records(200, seed=1)
    b = gen.generate_records(200, seed=2)
    assert a != b
    assert len({r["input"] for r in a} & {r["input"] for r in b}) < 50


def test_does_not_touch_global_random() -> None:
    random.seed(123)
    expected = random.random()
    random.seed(123)
    gen.generate_records(50, seed=0)
    assert random.random() == expected


def test_record_shape(records: list[dict[str, str]]) -> None:
    for record in records[:200]:
        assert set(record) == {"input", "output", "category"}
        assert record["input"] == record["input"].strip() and record["input"]
        assert "  " not in record["input"]
        assert "\ue000" not in record["input"] and "\ue001" not in record["input"]


def test_category_mix() -> None:
    assert sum(gen.CATEGORY_MIX.values()) == pytest.approx(1.0)
    assert set(gen.CATEGORY_MIX) == set(CATEGORIES)
    records = gen.generate_records(2000, seed=3)
    assert len(records) == 2000
    counts = Counter(r["category"] for r in records)
    assert set(counts) == set(CATEGORIES)
    for category, share in gen.CATEGORY_MIX.items():
        assert abs(counts[category] / 2000 - share) < 0.02, (category, counts[category])


def test_category_counts_sum() -> None:
    for n in (0, 1, 7, 999, 2001):
        assert sum(gen.category_counts(n).values()) == n


def test_no_duplicate_inputs(records: list[dict[str, str]]) -> None:
    keys = [gen.normalize_input(r["input"]) for r in records]
    assert len(set(keys)) == len(keys)


def test_twenty_thousand_unique() -> None:
    records = gen.generate_records(20_000, seed=0)
    assert len(records) == 20_000
    assert len({gen.normalize_input(r["input"]) for r in records}) == 20_000


def test_exhausted_space_returns_fewer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A category with a single possible input yields one record, and generation still ends."""
    monkeypatch.setattr(gen, "MAX_TRIES", 5)
    monkeypatch.setattr(gen, "decorate", lambda rng, phrase: phrase.text)
    monkeypatch.setitem(gen.CATEGORY_BUILDERS, "movement", lambda rng: gen.Phrase("stop", (Call("robot.stop"),)))
    records = gen.generate_records(100, seed=0)
    movement = [r for r in records if r["category"] == "movement"]
    assert len(movement) == 1
    assert len(records) == 100 - gen.category_counts(100)["movement"] + 1


def test_negative_count_rejected() -> None:
    with pytest.raises(ValueError):
        gen.generate_records(-1, seed=0)


# ------------------------------------------------------------------------------------------------
# Outputs: valid, canonical, categorised, covering the API
# ------------------------------------------------------------------------------------------------


def test_outputs_valid_and_canonical(records: list[dict[str, str]]) -> None:
    for record in records:
        result = check(record["output"])
        assert result.api_valid, (record, result.errors)
        assert canonicalize(record["output"]) == record["output"], record


def test_category_matches_program(records: list[dict[str, str]]) -> None:
    for record in records:
        assert gen.category_of(parse_program(record["output"])) == record["category"], record


def test_every_call_covered(records: list[dict[str, str]]) -> None:
    names = {call.name for r in records for call in _calls(parse_program(r["output"]))}
    assert names == set(CALLS)


def test_every_location_colour_and_size_covered(records: list[dict[str, str]]) -> None:
    calls = [call for r in records for call in _calls(parse_program(r["output"]))]
    locations = {c.kwargs["location"] for c in calls if "location" in c.kwargs}
    assert locations == set(LOCATIONS)
    lights = {c.kwargs["color"] for c in calls if c.name == "robot.set_light"}
    assert lights == set(COLORS) - {"any"}
    picked = [c for c in calls if c.name == "robot.gripper.pick_up"]
    assert {c.kwargs["color"] for c in picked} == set(COLORS)
    assert {c.kwargs["size"] for c in picked} == set(SIZES)


def test_sequences_and_control_flow_shapes(records: list[dict[str, str]]) -> None:
    sequences = [parse_program(r["output"]) for r in records if r["category"] == "sequence"]
    assert all(len(p) >= 2 and all(isinstance(s, Call) for s in p) for p in sequences)
    step_categories = {CALLS[s.name].category for p in sequences for s in p}
    assert step_categories == {"movement", "navigation", "manipulation", "perception", "communication"}
    flows = [parse_program(r["output"]) for r in records if r["category"] == "control_flow"]
    assert any(isinstance(s, Loop) for p in flows for s in p)
    assert any(isinstance(s, If) and s.orelse for p in flows for s in p)
    assert any(isinstance(s, If) and not s.orelse for p in flows for s in p)


def test_a_count_said_last_repeats_everything_before_it(records: list[dict[str, str]]) -> None:
    """ "turn left and patrol between a and b, 4 times" would repeat the turn too, so a loop whose count
    ends the command never has a step before it that stays outside the loop."""
    count_last = re.compile(r"\b\d+ times( in total)?\W*((please|thanks|thank you|now|for me)\W*)?$", re.IGNORECASE)
    for record in records:
        program = parse_program(record["output"])
        step_then_loop = len(program) >= 2 and isinstance(program[-1], Loop) and not isinstance(program[0], Loop)
        if step_then_loop and record["category"] == "control_flow":
            assert not count_last.search(normalize_command(record["input"])), record


def test_a_photo_of_something_is_taken(records: list[dict[str, str]]) -> None:
    """ "take a photo of the cup" looks at the cup and takes the photo, wherever it is said."""
    for record in records:
        said = len(re.findall(r"\b(photo|picture|photograph) of\b", record["input"].lower()))
        if said and "detect" in record["output"]:
            assert record["output"].count("take_photo()") >= said, record


def test_say_text_appears_verbatim(records: list[dict[str, str]]) -> None:
    """Decorations (typos, casing) never touch what the robot is told to say."""
    for record in records:
        for call in _calls(parse_program(record["output"])):
            if call.name == "robot.say":
                assert call.kwargs["text"] in record["input"], record


def test_a_said_text_with_a_number_is_quoted() -> None:
    """Unquoted, "five minutes" in a text would be read as a quantity: such texts are always quoted."""
    rng = random.Random(0)
    said = [gen.say(rng) for _ in range(4000)]
    numbered = [p for p in said if gen._NUMBER_IN_TEXT.search(p.program[0].kwargs["text"])]
    assert len(numbered) >= 20
    for phrase in numbered:
        quoted = r"[\"'“‘]" + re.escape(gen._OPEN + phrase.program[0].kwargs["text"])
        assert re.search(quoted, phrase.text), phrase


def test_short_phrases_are_said_with_added_words_too(records: list[dict[str, str]]) -> None:
    """ "good morning everyone": the familiar phrase is not where the text always stops."""
    texts = {
        call.kwargs["text"]
        for record in records
        for call in _calls(parse_program(record["output"]))
        if call.name == "robot.say"
    }
    extended = {t for t in texts if any(t.endswith(tail) for tail in gen._SAY_TAILS)}
    assert len(extended) >= 20
    assert any(t.lower().startswith("good morning ") for t in extended)


def test_spoken_colours_reach_the_output(records: list[dict[str, str]]) -> None:
    for record in records:
        if record["category"] in ("manipulation", "perception"):
            for call in _calls(parse_program(record["output"])):
                color = call.kwargs.get("color", "any")
                if call.name != "robot.set_light" and color != "any":
                    assert color in record["input"].lower(), record


def test_a_step_joined_by_then_after_a_count_comes_after_the_loop(records: list[dict[str, str]]) -> None:
    """ "turn right 30 degrees 3 times, then take a photo": the count closes the loop, the photo follows it."""
    closed_then = re.compile(r"\b(\d+ times|twice)( in a row)?,? (and )?(then|after that) ", re.IGNORECASE)
    hits = 0
    for record in records:
        program = parse_program(record["output"])
        said = record["category"] == "control_flow" and closed_then.search(normalize_command(record["input"]))
        if said and isinstance(program[0], Loop) and len(program) == 2:
            hits += 1
            assert isinstance(program[1], Call), record
    assert hits >= 10


def test_two_things_seen_nest_one_condition_in_the_other() -> None:
    rng = random.Random(7)
    for _ in range(50):
        phrase = gen._nested_conditional(rng)
        (outer,) = phrase.program
        assert isinstance(outer, If) and not outer.orelse
        (inner,) = outer.body
        assert isinstance(inner, If) and inner.test != outer.test
        for test in (outer.test, inner.test):
            assert test.kwargs["object_type"] in phrase.text


def test_conditions_one_after_the_other_stay_apart() -> None:
    rng = random.Random(8)
    for _ in range(50):
        first, second = gen._two_conditionals(rng).program
        assert isinstance(first, If) and isinstance(second, If) and first.test != second.test


def test_a_check_repeated_puts_the_condition_inside_the_loop() -> None:
    rng = random.Random(9)
    for _ in range(50):
        phrase = gen._loop_with_check(rng)
        (loop,) = phrase.program
        assert isinstance(loop, Loop) and isinstance(loop.body[-1], If)
        assert len(loop.body) <= 2


def test_an_object_handled_by_pronoun_keeps_its_colour_and_size() -> None:
    """ "look at the big green bottle, then grab it": the pick-up is of the big green bottle."""
    rng = random.Random(10)
    for _ in range(50):
        look, grab, *rest = [s for p in gen._handle_it(rng) for s in p.program]
        assert look.name == "robot.camera.look_at" and grab.name == "robot.gripper.pick_up"
        assert (grab.kwargs["object_type"], grab.kwargs["color"]) == (look.kwargs["object_type"], look.kwargs["color"])
        assert [s.name for s in rest] in ([], ["robot.gripper.place"])


def test_things_that_cannot_be_carried_are_never_picked_up(records: list[dict[str, str]]) -> None:
    fixtures = set(gen._FIXTURES) | set(gen._ANIMATE)
    for record in records:
        for call in _calls(parse_program(record["output"])):
            if call.name == "robot.gripper.pick_up":
                assert call.kwargs["object_type"] not in fixtures, record


def test_commands_typed_without_punctuation_stay_unambiguous(records: list[dict[str, str]]) -> None:
    """Without punctuation nothing says where a condition's branch ends, so no step follows a condition."""
    plain = [r for r in records if not re.search(r"[,;:!?]|\.(?!\d)", re.sub(r'"[^"]*"|“[^”]*”', "", r["input"]))]
    assert len(plain) >= 100
    for record in plain:
        program = parse_program(record["output"])
        assert not any(isinstance(s, If) for s in program[:-1]), record


def _inputs_with(records: list[dict[str, str]], pattern: str) -> list[tuple[str, Program]]:
    """(input, program) of the records whose input matches ``pattern`` (case-insensitive)."""
    return [(r["input"], parse_program(r["output"])) for r in records if re.search(pattern, r["input"], re.I)]


def test_a_photo_of_the_scene_is_a_photo_alone(records: list[dict[str, str]]) -> None:
    """ "take a picture of the room" / "of what you see": nothing to look at, just the photo."""
    scene = (
        r"^(\w+\W+){0,3}(take|snap|get|capture|grab) an? (photo|picture|pic|snapshot|shot) of "
        r"(the room|the scene|the view|what you (can )?see|whatever('s| is) in front of you|everything around you)\W*$"
    )
    hits = [(t, p) for t, p in _inputs_with(records, scene) if not re.search(r"\btimes\b|twice|\d", t)]
    assert len(hits) >= 5
    for text, program in hits:
        assert program == (Call("robot.camera.take_photo", {}),), text


def test_the_hand_or_claw_moved_to_a_point_is_the_arm(records: list[dict[str, str]]) -> None:
    hits = _single(records, r"\b(your hand|the claw|the end effector|your end effector) (to|at) ", "manipulation")
    assert len(hits) >= 10
    for text, call in hits:
        assert call.name == "robot.arm.move_to", text


def test_rarer_gripper_verbs_open_and_close() -> None:
    rng = random.Random(4)
    for _ in range(300):
        opened, closed = gen.gripper_open(rng), gen.gripper_close(rng)
        assert opened.program == (Call("robot.gripper.open", {}),) and "clench" not in opened.text.replace(
            "unclench", ""
        )
        assert closed.program == (Call("robot.gripper.close", {}),) and "unclench" not in closed.text
    words = " ".join(gen._GRIPPER_OPEN + gen._GRIPPER_CLOSE)
    assert all(
        w in words for w in ("unclench", "loosen", "relax", "let go of your grip", "clench", "squeeze", "clamp shut")
    )


def test_open_then_close_it_again_keeps_every_step() -> None:
    """ "open the claw wide, then close it again": both calls, the last one never dropped."""
    rng = random.Random(5)
    for _ in range(100):
        steps = gen._gripper_cycle(rng)
        names = [s.program[0].name for s in steps if s.program[0].name != "robot.wait"]
        assert len(names) in (2, 3)
        assert all(a != b for a, b in itertools.pairwise(names))
        assert set(names) == {"robot.gripper.open", "robot.gripper.close"}


def test_a_stop_with_a_reason_is_one_stop() -> None:
    """ "halt, there's a wall!" / "FREEZE - you're too close" is a stop, never a wait or a condition."""
    rng = random.Random(6)
    phrases = [gen.stop_alone(rng) for _ in range(300)]
    alerts = [p for p in phrases if p.text not in gen._STOP]
    assert len(alerts) >= 80 and any(p.text.isupper() for p in alerts)
    assert all(p.program == (Call("robot.stop", {}),) for p in phrases)


def test_home_position_and_starting_spot_go_home(records: list[dict[str, str]]) -> None:
    hits = _single(records, r"home position|home base|starting spot|where you started", "navigation")
    assert len(hits) >= 10
    assert all(call == Call("robot.go_home", {}) for _, call in hits)


def test_greetings_and_long_texts_are_said_whole(records: list[dict[str, str]]) -> None:
    greet = _inputs_with(records, r"\b(greet \w+|welcome them) with ")
    assert len(greet) >= 5
    for text, program in greet:
        assert any(c.name == "robot.say" for c in _calls(program)), text
    texts = [c.kwargs["text"] for r in records for c in _calls(parse_program(r["output"])) if c.name == "robot.say"]
    long = [t for t in texts if 4 <= len(t.split()) <= 9 and "," in t and "'" in t]
    assert len(long) >= 50


def test_a_slip_in_say_keeps_the_whole_text(records: list[dict[str, str]]) -> None:
    slips = [(t, c) for t, c in _single(records, r"\b(sya|sayy|sy|saay|ssay) ", "communication")]
    assert len(slips) >= 5
    for text, call in slips:
        assert call.name == "robot.say" and 3 <= len(call.kwargs["text"].split()) <= 5, text
        assert text.rstrip(".!?").endswith(call.kwargs["text"].lower()), text


def test_a_following_distance_in_its_own_clause() -> None:
    rng = random.Random(7)
    seen = 0
    for _ in range(1000):
        phrase = gen.follow(rng)
        (call,) = phrase.program
        if re.match(r"(stay|keep|keeping|staying|hang|at a distance)\b(?! with| following)", phrase.text):
            seen += 1
            shown = [float(n) for n in re.findall(r"\d+(?:\.\d+)?", normalize_command(phrase.text))]
            assert any(abs(n - call.kwargs["distance"]) < 0.011 for n in shown), phrase.text
    assert seen >= 30


def test_a_speed_word_after_a_comma_sets_the_speed(records: list[dict[str, str]]) -> None:
    hits = [(t, c) for t, c in _single(records, r", (slowly|quickly)\b", "navigation")]
    assert len(hits) >= 5
    for text, call in hits:
        assert call.kwargs["speed"] == (0.5 if "slowly" in text else 2.0), text


def test_a_step_said_last_of_a_repeated_kind_is_kept() -> None:
    """ "say 'hi', wait, then say 'bye'": three steps, the last of the first's kind."""
    rng = random.Random(8)
    for _ in range(200):
        steps = gen._echo(rng)
        program = [c for s in steps for c in s.program]
        if len(steps) == 3 and program[1].name != "robot.gripper.pick_up":
            assert len(program) == 3
            kind = {"move_backward": "move_forward", "turn_right": "turn_left", "gripper.close": "gripper.open"}
            first, last = (kind.get(c.name[6:], c.name[6:]) for c in (program[0], program[-1]))
            assert first == last, [s.text for s in steps]


def test_before_puts_the_later_words_first(records: list[dict[str, str]]) -> None:
    hits = _inputs_with(records, r"^before you ")
    assert len(hits) >= 5
    for text, program in hits:
        assert len(program) == 2 and all(isinstance(s, Call) for s in program), text


def test_fillers_are_not_conditions(records: list[dict[str, str]]) -> None:
    """ "when you get a chance" / "whenever you can" / "when you're ready" say when, not whether: no if."""
    pattern = r"when you get a chance|whenever you can|when you're ready"
    hits = [r for r in records if re.search(pattern, r["input"])]
    assert len([r for r in hits if r["category"] != "control_flow"]) >= 50
    said = r"\b(if|see|spot|find|detect|notice|should|is there|there.s|there is|(look|check|search|scan) for)\b"
    for record in hits:
        if not re.search(said, record["input"], re.I):
            assert "if robot" not in record["output"], record


def test_laps_photos_with_turns_and_shapes_repeated() -> None:
    rng = random.Random(9)
    kinds = Counter()
    for _ in range(300):
        phrase = gen._more_loops(rng, 3)
        (loop,) = phrase.program
        assert isinstance(loop, Loop) and loop.count == 3
        if isinstance(loop.body[0], Loop):
            kinds["shape"] += 1
            assert len(loop.body) == 1 and len(loop.body[0].body) == 2
        elif loop.body[0].name == "robot.camera.take_photo":
            kinds["photos"] += 1
            assert loop.body[1].name in ("robot.turn_left", "robot.turn_right")
        else:
            kinds["laps"] += 1
            assert len(loop.body) == 3
    assert min(kinds.values()) >= 50


def test_a_branch_of_two_steps_a_loop_or_another_condition() -> None:
    rng = random.Random(10)
    shapes = Counter()
    for _ in range(3000):
        (cond,) = gen._conditional(rng).program
        if len(cond.body) == 2 and all(isinstance(s, Call) for s in cond.body):
            shapes["two steps"] += 1
        if any(isinstance(s, Loop) for s in cond.body):
            shapes["loop"] += 1
        if len(cond.orelse) == 1 and isinstance(cond.orelse[0], If):
            shapes["chain"] += 1
            assert cond.orelse[0].orelse and cond.orelse[0].test != cond.test
    assert min(shapes.values()) >= 40, shapes


def test_turn_around_to_a_side_turns_that_way() -> None:
    rng = random.Random(11)
    for _ in range(300):
        phrase = gen._turn_around(rng)
        (call,) = phrase.program
        side = "right" if "right" in phrase.text else "left"
        assert call == Call(f"robot.turn_{side}", {"angle": 180.0}), phrase.text


# ------------------------------------------------------------------------------------------------
# Phrasing conventions
# ------------------------------------------------------------------------------------------------


def _single(records: list[dict[str, str]], pattern: str, category: str) -> list[tuple[str, Call]]:
    """(lower-case input, call) of single-call records of ``category`` whose input matches ``pattern``."""
    out = []
    for record in records:
        if record["category"] == category and re.search(pattern, record["input"].lower()):
            (call,) = parse_program(record["output"])
            out.append((record["input"].lower(), call))
    return out


def test_follow_me_targets_me(records: list[dict[str, str]]) -> None:
    hits = _single(records, r"\bfollow me\b", "navigation")
    assert hits
    assert all(call.kwargs["target"] == "me" for _, call in hits)


def test_turn_around_is_left_180(records: list[dict[str, str]]) -> None:
    hits = _single(records, r"^(robot, |hey robot, |please )?turn around[.!]*$", "movement")
    assert hits
    assert all(call == Call("robot.turn_left", {"angle": 180.0}) for _, call in hits)


def test_quarter_turn_is_90(records: list[dict[str, str]]) -> None:
    hits = _single(records, r"(?<!three-)quarter turn", "movement")
    assert hits
    assert all(call.kwargs["angle"] == 90.0 for _, call in hits)


def test_speed_words(records: list[dict[str, str]]) -> None:
    for category in ("movement", "navigation"):
        for text, call in _single(records, r"\bslowly\b", category):
            assert call.kwargs["speed"] == 0.5, text
        for text, call in _single(records, r"\b(quickly|fast)\b", category):
            assert call.kwargs["speed"] == 2.0, text


def test_defaults_when_quantities_omitted() -> None:
    rng = random.Random(0)
    for _ in range(300):
        phrase = gen.forward(rng)
        if not re.search(r"\d|meter|metre|feet|foot|inch|centi| m\b|cm|ft", phrase.text) and "speed" not in phrase.text:
            (call,) = phrase.program
            assert call.kwargs["distance"] == 1.0, phrase.text
        phrase = gen.wait(rng)
        if phrase.text in ("wait", "pause", "wait here", "hold on"):
            assert phrase.program == (Call("robot.wait", {"seconds": 1.0}),)
        phrase = gen.turn(rng)
        if re.fullmatch(r"turn (left|right)", phrase.text):
            assert phrase.program[0].kwargs["angle"] == 90.0


def test_square_is_four_sides_turning_right() -> None:
    rng = random.Random(0)
    seen = 0
    for _ in range(400):
        phrase = gen._shape(rng)
        if phrase.text in ("do a square", "drive in a square"):
            assert phrase.program == (
                Loop(
                    4,
                    (
                        Call("robot.move_forward", {"distance": 1.0, "speed": 1.0}),
                        Call("robot.turn_right", {"angle": 90.0}),
                    ),
                ),
            )
            seen += 1
    assert seen


def test_casing_and_punctuation_variety(records: list[dict[str, str]]) -> None:
    inputs = [r["input"] for r in records]
    assert any(i[0].isupper() for i in inputs) and any(i[0].islower() for i in inputs)
    assert any(i.endswith(".") for i in inputs) and any(i[-1].isalnum() for i in inputs)
    assert any(i.endswith("?") for i in inputs) and any(i.endswith("!") for i in inputs)
    assert any(i.lower().startswith(("please", "could you", "can you")) for i in inputs)


def test_add_typo_changes_one_word() -> None:
    rng = random.Random(0)
    text = "move forward then turn left"
    changed = 0
    for _ in range(100):
        out = gen.add_typo(rng, text)
        assert len(out.split()) == 5
        diffs = [(a, b) for a, b in zip(out.split(), text.split(), strict=True) if a != b]
        assert len(diffs) <= 1
        if diffs:
            typo, word = diffs[0]
            assert typo[0] == word[0] and abs(len(typo) - len(word)) <= 1
            changed += 1
    assert changed > 90


def test_add_typo_spares_numbers_colours_and_protected_text() -> None:
    rng = random.Random(0)
    text = f"move forward three meters then say {gen._protect('Hello world')} and turn red"
    for _ in range(200):
        out = gen.add_typo(rng, text)
        assert "three" in out and "red" in out and "Hello world" in out and " then " in out
        assert sum(a != b for a, b in zip(out.split(), text.split(), strict=True)) <= 1


# ------------------------------------------------------------------------------------------------
# Units: the numbers in an input equal the output after conversion
# ------------------------------------------------------------------------------------------------

_WORD_VALUES = ONES | TENS

# Unit names and their factors to the spec's unit, written out here independently of the generator.
_DISTANCE_UNITS = {
    "m": 1.0, "meter": 1.0, "meters": 1.0, "metre": 1.0, "metres": 1.0,
    "cm": 0.01, "centimeter": 0.01, "centimeters": 0.01, "centimetre": 0.01, "centimetres": 0.01,
    "ft": 0.3048, "foot": 0.3048, "feet": 0.3048, "inch": 0.0254, "inches": 0.0254,
}  # fmt: skip
_DURATION_UNITS = {
    "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
    "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
}  # fmt: skip
_ANGLE_UNITS = {"°": 1.0, "deg": 1.0, "degree": 1.0, "degrees": 1.0}
_SPEED_UNITS = {
    "m/s": 1.0, "meter per second": 1.0, "meters per second": 1.0, "metre per second": 1.0,
    "metres per second": 1.0, "cm/s": 0.01, "centimeter per second": 0.01, "centimeters per second": 0.01,
    "centimetres per second": 0.01,
}  # fmt: skip


def _words_to_number(words: str) -> float:
    """ "two hundred and forty-five" -> 245; "one point two five" -> 1.25."""
    if " point " in words:
        whole, decimals = words.split(" point ")
        return _words_to_number(whole) + float("0." + "".join(str(_WORD_VALUES[d]) for d in decimals.split()))
    total = 0
    for token in words.replace("-", " ").split():
        if token == "and":
            continue
        if token == "hundred":
            total = (total or 1) * 100
        elif token == "a":
            total += 1
        else:
            total += _WORD_VALUES[token]
    return total


def _spoken_value(text: str, units: dict[str, float]) -> float:
    """Value in the spec's unit of a spoken quantity, parsed independently of the generator."""
    extra = 0.0
    if text.endswith(" and a half"):  # "a meter and a half"
        text, extra = text[: -len(" and a half")], 0.5
    factor = 1.0  # a bare number is in the base unit
    for name in sorted(units, key=len, reverse=True):
        if text.endswith(name) and (len(text) == len(name) or not text[-len(name) - 1].isalpha()):
            text, factor = text[: -len(name)].strip(), units[name]
            break
    if text.endswith(" and a half"):  # "two and a half meters"
        text, extra = text[: -len(" and a half")], 0.5
    if re.fullmatch(r"-?\d*\.?\d+", text):
        number = float(text)
    elif text in ("half a", "half an"):
        number = 0.5
    elif text in ("a quarter of a", "a quarter of an"):
        number = 0.25
    elif text in ("a", "an"):
        number = 1.0
    elif text in ("a couple", "a couple of"):
        number = 2.0
    else:
        number = _words_to_number(text)
    return round((number + extra) * factor, 2)


@pytest.mark.parametrize(
    ("measure", "units"),
    [
        (gen.DISTANCE, _DISTANCE_UNITS),
        (gen.SHORT_DISTANCE, _DISTANCE_UNITS),
        (gen.DURATION, _DURATION_UNITS),
        (gen.ANGLE, _ANGLE_UNITS),
        (gen.SPEED, _SPEED_UNITS),
    ],
)
def test_measure_text_matches_value(measure: gen.Measure, units: dict[str, float]) -> None:
    rng = random.Random(0)
    forms = set()
    for _ in range(3000):
        text, value = gen.measure(rng, measure, bare=0.1)
        assert value > 0
        assert _spoken_value(text, units) == pytest.approx(value), text
        forms.add(re.sub(r"[\d.]+", "N", text))
    assert len(forms) > 10  # digits, words, abbreviations, special forms


@pytest.mark.parametrize(
    ("value", "unit", "allowed"),
    [
        (0.5, gen.METRE, {"half a meter", "half a metre"}),
        (2.5, gen.FOOT, {"two and a half feet"}),
        (
            1.5,
            gen.METRE,
            {"a meter and a half", "a metre and a half", "one and a half meters", "one and a half metres"},
        ),
        (2, gen.MINUTE, {"two minutes", "a couple of minutes", "a couple minutes"}),
        (0.5, gen.INCH, {"half an inch"}),
    ],
)
def test_amount_word_forms(value: float, unit: gen.Unit, allowed: set[str]) -> None:
    rng = random.Random(0)
    texts = {gen.amount(rng, value, unit) for _ in range(300)}
    words = {t for t in texts if not re.search(r"\d", t)}
    assert words and words <= allowed


def test_int_words() -> None:
    rng = random.Random(0)
    assert gen.int_words(7, rng) == "seven"
    assert gen.int_words(45, rng) in ("forty-five", "forty five")
    assert _words_to_number(gen.int_words(180, rng)) == 180
    for n in range(0, 400):
        assert _words_to_number(gen.int_words(n, rng)) == n


@pytest.mark.parametrize(
    ("pattern", "factor"),
    [
        (r"(\d+(?:\.\d+)?) ?(?:cm|centimet(?:er|re)s?)\b", 0.01),
        (r"(\d+(?:\.\d+)?) ?(?:ft|feet|foot)\b", 0.3048),
        (r"(\d+(?:\.\d+)?) inch(?:es)?\b", 0.0254),
    ],
)
def test_record_distances_converted(records: list[dict[str, str]], pattern: str, factor: float) -> None:
    hits = 0
    for text, call in _single(records, pattern, "movement"):
        if call.name in ("robot.move_forward", "robot.move_backward") and "per second" not in text and "/s" not in text:
            spoken = float(re.search(pattern, text).group(1))
            assert call.kwargs["distance"] == round(spoken * factor, 2), text
            hits += 1
    assert hits


def test_record_minutes_converted(records: list[dict[str, str]]) -> None:
    pattern = r"(\d+(?:\.\d+)?) ?(?:min|mins|minutes?)\b"
    hits = _single(records, pattern, "movement")
    assert hits
    for text, call in hits:
        assert call.kwargs["seconds"] == round(float(re.search(pattern, text).group(1)) * 60, 2), text


def test_arm_coordinates_in_range(records: list[dict[str, str]]) -> None:
    moves = [c for r in records for c in _calls(parse_program(r["output"])) if c.name == "robot.arm.move_to"]
    assert moves
    for call in moves:
        assert all(-1 <= call.kwargs[axis] <= 1 for axis in "xyz")


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------


def test_write_json_and_jsonl(tmp_path: Path) -> None:
    records = gen.generate_records(30, seed=0)
    json_path = gen.write_dataset(records, tmp_path / "sub" / "data.json")
    assert json.loads(json_path.read_text(encoding="utf-8")) == records
    assert json_path.read_text(encoding="utf-8").startswith("[\n  {")
    jsonl_path = gen.write_dataset(records, tmp_path / "data.jsonl")
    lines = jsonl_path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == records
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl", "sub"]  # no temp files left


def test_write_keeps_unicode(tmp_path: Path) -> None:
    path = gen.write_dataset([{"input": "turn 90° left", "output": "x", "category": "movement"}], tmp_path / "d.json")
    assert "90°" in path.read_text(encoding="utf-8")


def test_write_rejects_other_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        gen.write_dataset([], tmp_path / "data.csv")
