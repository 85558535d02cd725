"""Judging predictions, aggregating per category, the tables, the predictions file and code extraction."""

from __future__ import annotations

import builtins
import json
import os

import pytest

from robolora.evaluate import (
    Judgement,
    Scores,
    compare,
    compare_dict,
    extract_code,
    judge,
    score,
    write_predictions,
)

MOVE = "robot.move_forward(distance=3.0, speed=1.0)"
PICK = 'robot.gripper.pick_up(object_type="ball", color="red", size="medium")'
SQUARE_LOOP = "for _ in range(2):\n    robot.move_forward(distance=1.0, speed=1.0)\n    robot.turn_right(angle=90.0)"
SQUARE_UNROLLED = "\n".join(["robot.move_forward(distance=1.0, speed=1.0)", "robot.turn_right(angle=90.0)"] * 2)


def verdict(j: Judgement) -> tuple[bool, bool, bool, bool]:
    return j.syntax, j.api_valid, j.exact, j.semantic


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        pytest.param(MOVE, MOVE, (True, True, True, True), id="exactly-right"),
        pytest.param(f"\n{MOVE}   \n\n", MOVE, (True, True, True, True), id="whitespace-only"),
        pytest.param(MOVE.replace("speed=1.0", "speed=2.0"), MOVE, (True, True, False, False), id="wrong-value"),
        pytest.param("robot.move_forward(distance=3.0)", MOVE, (True, True, False, True), id="omitted-default"),
        pytest.param(
            'robot.gripper.pick_up(size="medium", object_type="ball", color="red")',
            PICK,
            (True, True, False, True),
            id="swapped-keywords",
        ),
        pytest.param("robot.move_forward(distance=3.0", MOVE, (False, False, False, False), id="invalid-code"),
        pytest.param("robot.fly(height=2.0)", MOVE, (True, False, False, False), id="api-invalid"),
        pytest.param(SQUARE_LOOP, SQUARE_UNROLLED, (True, True, False, True), id="loop-vs-unrolled"),
        pytest.param(MOVE.replace("3.0", "3.009"), MOVE, (True, True, False, True), id="float-within-0.01"),
        pytest.param(MOVE.replace("3.0", "3.02"), MOVE, (True, True, False, False), id="float-beyond-0.01"),
        pytest.param(MOVE, "robot.fly()", (True, True, False, False), id="invalid-reference"),
        pytest.param(
            "for _ in range(20):\n    for _ in range(20):\n        for _ in range(20):\n            robot.stop()",
            "robot.stop()",
            (True, True, False, False),
            id="beyond-max-steps",
        ),
    ],
)
def test_judge(prediction, reference, expected):
    assert verdict(judge(prediction, reference)) == expected


def test_judge_gives_the_checkers_reasons_only_for_invalid_predictions():
    assert judge(MOVE, MOVE).errors == []
    assert judge("robot.fly(height=2.0)", MOVE).errors == ["line 1: unknown call robot.fly"]
    assert judge("robot.move_forward(distance=3.0", MOVE).errors[0].startswith("line 1: ")


@pytest.mark.parametrize("prediction", [None, 3, "\0", "\ud800", "(" * 10_000, "for _ in range(20):\n" * 50 + "    x"])
def test_judge_never_raises(prediction):
    assert verdict(judge(prediction, MOVE)) == (False, False, False, False)


def test_judge_never_executes_a_malicious_prediction(tmp_path, monkeypatch):
    marker = tmp_path / "robolora_pwned"

    def forbidden(*args, **kwargs):
        pytest.fail("generated code reached exec/eval/os.system")

    # Not compile: ast.parse is built on it, and parsing is how the checker reads code.
    for name in ("exec", "eval"):
        monkeypatch.setattr(builtins, name, forbidden)
    monkeypatch.setattr(os, "system", forbidden)
    j = judge(f'__import__("os").system("touch {marker}")', MOVE)
    assert verdict(j) == (False, False, False, False)
    assert j.errors == ["line 1: only direct robot.* calls are allowed, not calls of computed expressions"]
    assert not marker.exists()


RECORDS = [
    {"input": "go forward 3 m", "output": MOVE, "category": "movement"},
    {"input": "turn left", "output": "robot.turn_left(angle=90.0)", "category": "movement"},
    {"input": "stop", "output": "robot.stop()", "category": "movement"},
    {"input": "go home", "output": "robot.go_home()", "category": "navigation"},
    {"input": "pick up the red ball", "output": PICK},
]
PREDICTIONS = [
    MOVE,  # all four
    "robot.turn_left(angle=90)",  # semantic, not exact
    "robot.stop(",  # nothing
    "robot.go_home(speed=2.0)",  # syntax only
    PICK,  # all four
]
OUTPUTS = [r["output"] for r in RECORDS]


def test_score_aggregates_per_category_sorted_with_uncategorized():
    report = score(RECORDS, PREDICTIONS)
    assert list(report.per_category) == ["movement", "navigation", "uncategorized"]
    assert report.per_category["movement"] == Scores(n=3, syntax=2, api_valid=2, exact=1, semantic=2)
    assert report.per_category["navigation"] == Scores(n=1, syntax=1, api_valid=0, exact=0, semantic=0)
    assert report.per_category["uncategorized"] == Scores(n=1, syntax=1, api_valid=1, exact=1, semantic=1)
    assert report.overall == Scores(n=5, syntax=4, api_valid=3, exact=2, semantic=3)
    assert report.overall.syntax_rate == 0.8 and report.overall.exact_rate == 0.4
    assert [verdict(j) for j in report.judgements][1:3] == [(True, True, False, True), (False, False, False, False)]


def test_report_to_dict_is_json_with_counts_and_rounded_rates():
    data = json.loads(json.dumps(score(RECORDS, PREDICTIONS).to_dict()))
    assert data["per_category"]["movement"] == {
        "n": 3,
        "syntax": 2,
        "api_valid": 2,
        "exact": 1,
        "semantic": 2,
        "syntax_rate": 0.6667,
        "api_valid_rate": 0.6667,
        "exact_rate": 0.3333,
        "semantic_rate": 0.6667,
    }
    assert data["overall"]["semantic_rate"] == 0.6
    assert list(data["per_category"]) == ["movement", "navigation", "uncategorized"]


def test_scores_of_nothing_rate_zero():
    assert Scores().rate("semantic") == 0.0
    assert score([], []).table().splitlines()[-1] == "overall   0     0.0        0.0    0.0       0.0"


def test_score_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="5 records but 4 predictions"):
        score(RECORDS, PREDICTIONS[:4])


def test_table():
    assert score(RECORDS, PREDICTIONS).table() == (
        "category       n  syntax  api-valid  exact  semantic\n"
        "-------------  -  ------  ---------  -----  --------\n"
        "movement       3    66.7       66.7   33.3      66.7\n"
        "navigation     1   100.0        0.0    0.0       0.0\n"
        "uncategorized  1   100.0      100.0  100.0     100.0\n"
        "overall        5    80.0       60.0   40.0      60.0"
    )


def test_compare_puts_models_side_by_side():
    reports = {
        "base": score(RECORDS, ["robot.stop()"] * 5),
        "adapter": score(RECORDS, PREDICTIONS),
        "ensemble": score(RECORDS[:4], OUTPUTS[:4]),
    }
    assert compare(reports) == (
        "cells: semantic % / api-valid %\n"
        "category           n          base        adapter       ensemble\n"
        "-------------  -----  ------------  -------------  -------------\n"
        "movement           3  33.3 / 100.0    66.7 / 66.7  100.0 / 100.0\n"
        "navigation         1   0.0 / 100.0      0.0 / 0.0  100.0 / 100.0\n"
        "uncategorized      1   0.0 / 100.0  100.0 / 100.0              -\n"
        "overall        5/5/4  20.0 / 100.0    60.0 / 60.0  100.0 / 100.0"
    )


def test_compare_dict_mirrors_the_table():
    data = compare_dict({"base": score(RECORDS[:1], ["robot.stop()"]), "adapter": score(RECORDS, PREDICTIONS)})
    assert data["models"] == ["base", "adapter"]
    assert data["overall"]["base"]["n"] == 1 and data["overall"]["adapter"]["semantic_rate"] == 0.6
    assert list(data["per_category"]) == ["movement", "navigation", "uncategorized"]
    assert set(data["per_category"]["navigation"]) == {"adapter"}
    json.dumps(data)


def test_compare_needs_a_report():
    with pytest.raises(ValueError, match="no reports"):
        compare({})


def test_write_predictions(tmp_path):
    path = tmp_path / "out" / "predictions.jsonl"
    report = score(RECORDS[3:], PREDICTIONS[3:])
    assert write_predictions(path, RECORDS[3:], PREDICTIONS[3:], report.judgements) == path
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert lines == [
        {
            "input": "go home",
            "prediction": "robot.go_home(speed=2.0)",
            "reference": "robot.go_home()",
            "category": "navigation",
            "syntax": True,
            "api_valid": False,
            "exact": False,
            "semantic": False,
            "errors": ["line 1: robot.go_home: unknown argument speed"],
        },
        {
            "input": "pick up the red ball",
            "prediction": PICK,
            "reference": PICK,
            "category": "uncategorized",
            "syntax": True,
            "api_valid": True,
            "exact": True,
            "semantic": True,
            "errors": [],
        },
    ]
    write_predictions(path, RECORDS[:1], ["robot.say(text='caf\u00e9 \ud800')"])
    assert json.loads(path.read_text(encoding="utf-8")) == {
        "input": "go forward 3 m",
        "prediction": "robot.say(text='caf\u00e9 \ud800')",
        "reference": MOVE,
        "category": "movement",
    }
    assert [p.name for p in path.parent.iterdir()] == ["predictions.jsonl"]


def test_write_predictions_rejects_mismatched_lengths(tmp_path):
    with pytest.raises(ValueError, match="2 records but 1 judgements"):
        write_predictions(tmp_path / "p.jsonl", RECORDS[:2], PREDICTIONS[:2], [judge(MOVE, MOVE)])
    with pytest.raises(ValueError, match="2 records but 3 logprobs"):
        write_predictions(tmp_path / "p.jsonl", RECORDS[:2], PREDICTIONS[:2], logprobs=[0.0] * 3)


def test_write_predictions_keeps_the_log_probabilities_a_vote_weighs(tmp_path):
    path = write_predictions(tmp_path / "p.jsonl", RECORDS[:2], PREDICTIONS[:2], logprobs=[-0.25, -1.5])
    assert [json.loads(line)["mean_logprob"] for line in path.read_text().splitlines()] == [-0.25, -1.5]


@pytest.mark.parametrize(
    ("generated", "expected"),
    [
        pytest.param(MOVE, MOVE, id="plain"),
        pytest.param(f"  {MOVE}\n\n", MOVE, id="surrounding-whitespace"),
        pytest.param(f"```python\n{MOVE}\n```", MOVE, id="fenced"),
        pytest.param(f"```\n{SQUARE_LOOP}\n```\nThis drives two sides of a square.", SQUARE_LOOP, id="fenced-prose"),
        pytest.param(f"Sure! Here is the code:\n```py\n{MOVE}\n```", MOVE, id="preamble-and-fence"),
        pytest.param(f"{MOVE}\n\nThis moves the robot 3 metres forward.", MOVE, id="trailing-prose"),
        pytest.param(f"{MOVE}\n\nDone.", MOVE, id="trailing-word"),
        pytest.param(f"{MOVE}<|im_end|>\n<|im_start|>user\nnext", MOVE, id="chat-end-token"),
        pytest.param(f"{MOVE}\n<|endoftext|>", MOVE, id="end-of-text"),
        pytest.param(f"{MOVE}</s>", MOVE, id="eos"),
        pytest.param(f"{MOVE}\nExplanation: it moves.", MOVE, id="explanation"),
        pytest.param(f"{MOVE}\nNote: speed is the default.", MOVE, id="note"),
        pytest.param(f"{MOVE}\n\n### Command:\nstop\n\n### Code:\nrobot.stop()", MOVE, id="next-few-shot-example"),
        pytest.param(f"{MOVE}\n```\n\n```python\nrobot.stop()\n```", MOVE, id="second-block-dropped"),
        pytest.param(f"{SQUARE_LOOP}\n\n{MOVE}", f"{SQUARE_LOOP}\n\n{MOVE}", id="blank-line-between-code"),
        pytest.param(f"else:\n    {MOVE}", f"else:\n    {MOVE}", id="keyword-line-is-code"),
        pytest.param("", "", id="empty"),
    ],
)
def test_extract_code(generated, expected):
    assert extract_code(generated) == expected


@pytest.mark.parametrize(
    "generated",
    [
        "import os\nrobot.stop()",  # invalid code stays invalid
        "Here is the code\nrobot.stop()",  # prose without a fence or a blank line before it is kept
        "robot.move_forward(distance=30.0, speed=9.0)",  # values are never touched
        "robot.stop()\nthen turn left",
    ],
)
def test_extract_code_never_fixes_the_program(generated):
    assert extract_code(generated) == generated
