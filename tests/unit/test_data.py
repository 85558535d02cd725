"""Dataset loading, validation (exact messages through the CLI), splitting, labels and collation."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from robolora.data import IGNORE_INDEX, build_example, collate, load_records, read_records, split_records

GOOD = {
    "input": "move forward 3 meters",
    "output": "robot.move_forward(distance=3.0, speed=1.0)",
    "category": "movement",
}
PICK = {
    "input": "pick up the red ball",
    "output": 'robot.gripper.pick_up(object_type="ball", color="red", size="medium")',
    "category": "manipulation",
}


def test_json_list_and_jsonl_load_the_same(write_json):
    a = load_records(write_json("a.json", [GOOD, PICK]))
    b = load_records(write_json("b.jsonl", "\n".join(json.dumps(r) for r in (GOOD, PICK)) + "\n\n"))
    assert a == b == [GOOD, PICK]


def test_missing_category_becomes_uncategorized(write_json):
    recs = load_records(write_json("a.json", [{"input": "stop", "output": "robot.stop()"}]))
    assert recs == [{"input": "stop", "output": "robot.stop()", "category": "uncategorized"}]


def test_jsonl_detected_without_extension(write_json):
    assert len(read_records(write_json("data.txt", json.dumps(GOOD) + "\n" + json.dumps(PICK)))) == 2


# Each bad input: (file name, content, the exact error lines after "robolora: error: ", with {f} the path)
BAD = [
    ("empty.json", "", ['{f}: file is empty; expected a JSON list of {{"input", "output", "category"}} records']),
    ("blank.json", "  \n", ['{f}: file is empty; expected a JSON list of {{"input", "output", "category"}} records']),
    ("list.json", [], ['{f}: no records; expected a JSON list of {{"input", "output", "category"}} records']),
    (
        "trunc.json",
        '[{"input": "stop", "output"',
        ["{f}: not valid JSON (Expecting ':' delimiter at line 1 column 28)"],
    ),
    ("obj.json", {"input": "stop"}, ["{f}: expected a JSON list of records at the top level, got an object"]),
    ("bytes.json", b'[{"input": "\xff"}]', ["{f}: byte 12: not valid UTF-8; save the file as UTF-8"]),
    (
        "lines.jsonl",
        '{"input": "stop", "output": "robot.stop()"}\n{"input": oops}\n',
        ["{f}: line 2: not valid JSON (Expecting value at column 11)"],
    ),
    ("notobj.json", ["stop"], ['{f}: record 0: expected an object with "input" and "output", got a string']),
    (
        "missing.json",
        [{"output": "robot.stop()"}],
        ["{f}: record 0: field 'input': missing; every record needs a non-empty string 'input'"],
    ),
    (
        "empty_field.json",
        [{"input": "  ", "output": "robot.stop()"}],
        ["{f}: record 0: field 'input': is empty; every record needs a non-empty string 'input'"],
    ),
    (
        "nonstr.json",
        [{"input": "stop", "output": 3}],
        ["{f}: record 0: field 'output': expected a string, got a number"],
    ),
    (
        "nullout.json",
        [{"input": "stop", "output": None}],
        ["{f}: record 0: field 'output': expected a string, got null"],
    ),
    (
        "cat.json",
        [{"input": "stop", "output": "robot.stop()", "category": 7}],
        ["{f}: record 0: field 'category': expected a string, got a number"],
    ),
    (
        "emptycat.json",
        [{"input": "stop", "output": "robot.stop()", "category": ""}],
        ["{f}: record 0: field 'category': is empty; give a name or leave the field out"],
    ),
    (
        "dup.json",
        [GOOD, PICK, {**GOOD, "input": "Move  forward 3 meters"}],
        ["{f}: record 2: field 'input': duplicate of record 0; remove one of them"],
    ),
    (
        "api.json",
        [{"input": "fly", "output": "robot.fly(height=3.0)"}],
        [
            "{f}: record 0: field 'output': not valid robot API code (line 1: unknown call robot.fly); "
            "fix it or pass --no-check-api"
        ],
    ),
    (
        "many.json",
        [{"input": 1}, {"output": ""}],
        [
            "{f}: record 0: field 'input': expected a string, got a number",
            "{f}: record 0: field 'output': missing; every record needs a non-empty string 'output'",
            "{f}: record 1: field 'input': missing; every record needs a non-empty string 'input'",
            "{f}: record 1: field 'output': is empty; every record needs a non-empty string 'output'",
        ],
    ),
]


@pytest.mark.parametrize(("name", "content", "lines"), BAD, ids=[b[0] for b in BAD])
def test_bad_datasets_exact_errors(run_cli, write_json, name, content, lines):
    path = write_json(name, content)
    code, out, err = run_cli("data", "validate", path)
    assert code == 2
    assert out == ""
    got = err.splitlines()
    assert len(got) == len(lines)
    assert got == ["robolora: error: " + want.format(f=path) for want in lines]
    assert "Traceback" not in err


def test_missing_file(run_cli, tmp_path):
    code, _, err = run_cli("data", "validate", tmp_path / "nope.json")
    assert (code, err) == (2, f"robolora: error: {tmp_path / 'nope.json'}: no such file\n")


def test_directory_instead_of_file(run_cli, tmp_path):
    code, _, err = run_cli("data", "validate", tmp_path)
    expected = (
        f"robolora: error: {tmp_path}: is a directory, not a regular file; give the path of a JSON or JSONL dataset\n"
    )
    assert (code, err) == (2, expected)


def test_api_check_can_be_turned_off(run_cli, write_json):
    path = write_json("custom.json", [{"input": "fly up", "output": "drone.up(3)"}])
    code, out, _ = run_cli("data", "validate", "--no-check-api", path)
    assert code == 0 and out == f"{path}: OK, 1 records (uncategorized 1)\n"


def test_many_problems_are_capped(run_cli, write_json):
    path = write_json("bad.json", [{"input": ""} for _ in range(30)])
    code, _, err = run_cli("data", "validate", path)
    lines = err.splitlines()
    assert code == 2 and len(lines) == 21 and lines[-1] == "robolora: error: ... and 40 more"
    problems = [
        f"robolora: error: {path}: record {i}: field '{field}': {what}; every record needs a non-empty string '{field}'"
        for i in range(10)
        for field, what in (("input", "is empty"), ("output", "missing"))
    ]
    assert lines[:-1] == problems


# ----------------------------------------------------------------------------- split


def _recs(counts: dict[str, int]) -> list[dict[str, str]]:
    return [{"input": f"{c}{i}", "output": "robot.stop()", "category": c} for c, n in counts.items() for i in range(n)]


def test_split_is_stratified_seeded_and_disjoint():
    recs = _recs({"movement": 50, "sequence": 30, "control_flow": 20, "rare": 2, "single": 1})
    train, val = split_records(recs, 0.1, seed=3)
    cats = [r["category"] for r in val]
    assert (cats.count("movement"), cats.count("sequence"), cats.count("control_flow")) == (5, 3, 2)
    assert cats.count("rare") == 1 and cats.count("single") == 0
    assert len(train) + len(val) == len(recs)
    assert {r["input"] for r in train}.isdisjoint(r["input"] for r in val)
    assert split_records(recs, 0.1, seed=3) == (train, val)
    assert split_records(recs, 0.1, seed=4)[1] != val


# ----------------------------------------------------------------------------- labels and collation


def test_build_example_masks_prompt_and_appends_eos():
    ex = build_example([1, 10, 11], [20, 21], eos_id=2, max_length=16)
    assert ex == {"input_ids": [1, 10, 11, 20, 21, 2], "labels": [IGNORE_INDEX] * 3 + [20, 21, 2], "truncated": False}


def test_build_example_truncates_prompt_from_the_left_keeping_first_token():
    ex = build_example(list(range(100, 110)), [20, 21], eos_id=2, max_length=8)
    assert ex["input_ids"] == [100, 106, 107, 108, 109, 20, 21, 2]
    assert ex["labels"] == [IGNORE_INDEX] * 5 + [20, 21, 2]
    assert ex["truncated"] and len(ex["input_ids"]) == 8


def test_build_example_refuses_a_response_that_cannot_fit():
    with pytest.raises(ValueError, match="does not fit"):
        build_example([1, 2], list(range(10)), eos_id=2, max_length=8)


def test_collate_pads_right_with_ignored_labels():
    batch = collate(
        [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [5], "labels": [5]}],
        pad_id=0,
        pad_to_multiple_of=4,
    )
    assert batch["input_ids"] == [[5, 6, 7, 0], [5, 0, 0, 0]]
    assert batch["labels"] == [[-100, 6, 7, -100], [5, -100, -100, -100]]
    assert batch["attention_mask"] == [[1, 1, 1, 0], [1, 0, 0, 0]]


def test_a_data_error_crosses_processes_whole():
    import pickle

    from robolora.errors import DataError

    error = pickle.loads(pickle.dumps(DataError([f"d.json: record {i}: output: invalid" for i in range(25)])))
    assert len(error.problems) == 25 and str(error).endswith("... and 5 more")


# ----------------------------------------------------------------------------- category weights


def test_category_weights_change_what_an_epoch_holds_and_never_the_validation(write_json):
    from robolora.config import from_dict
    from robolora.data import load_datasets

    path = write_json("d.json", _recs({"loops": 40, "moves": 40, "talk": 20}))
    plain = load_datasets(from_dict({"data_json": str(path)}))
    weighted = load_datasets(from_dict({"data_json": str(path), "category_weights": "loops=2.5,talk=0.5"}))
    assert weighted[1] == plain[1]  # the same validation records
    counts = Counter(r["category"] for r in weighted[0])
    assert counts == {"loops": 90, "moves": 36, "talk": 9}  # 36 x 2.5, 36, 18 x 0.5
    assert {r["input"] for r in weighted[0]} <= {r["input"] for r in plain[0]}
    assert Counter(r["input"] for r in weighted[0] if r["category"] == "loops").most_common()[-1][1] == 2
    assert weighted[2].endswith("135 training examples per epoch with loops x2.5, talk x0.5")


def test_a_category_weight_for_a_category_the_data_lacks_is_refused(write_json):
    from robolora.config import from_dict
    from robolora.data import load_datasets
    from robolora.errors import UserError

    path = write_json("d.json", _recs({"loops": 10, "moves": 10}))
    with pytest.raises(UserError) as e:
        load_datasets(from_dict({"data_json": str(path), "category_weights": "loop=2"}))
    assert str(e.value) == (
        "--category-weights: no training record has the category 'loop'; the training records have: loops, moves"
    )
