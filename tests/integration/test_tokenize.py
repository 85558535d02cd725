"""Response-only labels with the real bundled tokenizer, checked against an independent computation."""

from __future__ import annotations

import copy
import json

import pytest

from robolora.data import IGNORE_INDEX, collate, tokenize_records
from robolora.prompts import SYSTEM_PROMPT

RECORDS = [
    {"input": "move forward 3 meters", "output": "robot.move_forward(distance=3.0, speed=1.0)", "category": "movement"},
    {
        "input": "if you see a red ball pick it up, otherwise say no ball",
        "output": 'if robot.sensors.detect(object_type="ball", color="red"):\n'
        '    robot.gripper.pick_up(object_type="ball", color="red", size="medium")\n'
        "else:\n"
        '    robot.say(text="no ball")',
        "category": "control_flow",
    },
    {"input": "Répète: tourne à gauche 😀", "output": "robot.turn_left(angle=90.0)", "category": "movement"},
]


def _independent_labels(tokenizer, record):
    """Tokenize the whole conversation (with the assistant's answer) in one pass and mark, by character
    offsets, the tokens that belong to the answer and its end-of-turn token."""
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": record["input"]},
    ]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": record["output"]}], tokenize=False
    )
    assert full.startswith(prompt + record["output"] + tokenizer.eos_token)
    start, end = len(prompt), len(prompt) + len(record["output"]) + len(tokenizer.eos_token)
    enc = tokenizer(full[:end], add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    labels = [tok if s >= start else IGNORE_INDEX for tok, (s, _) in zip(enc["input_ids"], offsets, strict=True)]
    return enc["input_ids"], labels


def test_labels_match_independent_computation_token_by_token(tokenizer):
    ds, report = tokenize_records(RECORDS, tokenizer, max_length=256)
    assert (report.examples, report.truncated, report.dropped) == (3, 0, 0)
    for rec, row in zip(RECORDS, ds, strict=True):
        ids, labels = _independent_labels(tokenizer, rec)
        assert row["input_ids"] == ids
        assert row["labels"] == labels
        assert row["labels"][-1] == tokenizer.eos_token_id
        assert tokenizer.decode([t for t in row["labels"] if t != IGNORE_INDEX]) == rec["output"] + tokenizer.eos_token


def test_plain_template_without_chat_template(tokenizer):
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    ds, _ = tokenize_records(RECORDS[:1], plain, max_length=256)
    row = ds[0]
    n_prompt = row["labels"].count(IGNORE_INDEX)
    prompt_text = plain.decode(row["input_ids"][:n_prompt])
    assert prompt_text.endswith("### Command:\nmove forward 3 meters\n\n### Code:\n")
    assert plain.decode(row["input_ids"][n_prompt:]) == RECORDS[0]["output"] + plain.eos_token


def test_truncation_is_reported_and_keeps_the_response(tokenizer):
    long = {"input": "please " * 200 + "stop", "output": "robot.stop()", "category": "movement"}
    ds, report = tokenize_records([long, RECORDS[0]], tokenizer, max_length=64)
    assert (report.examples, report.truncated, report.dropped) == (2, 1, 0)
    row = ds[0]
    assert len(row["input_ids"]) == 64
    assert tokenizer.decode([t for t in row["labels"] if t != IGNORE_INDEX]) == "robot.stop()" + tokenizer.eos_token
    assert "truncated on the left" in report.describe("train", 64)


def test_response_too_long_is_dropped_and_counted(tokenizer):
    huge = {"input": "say it", "output": 'robot.say(text="' + "la " * 200 + '")', "category": "communication"}
    _, report = tokenize_records([huge, RECORDS[0]], tokenizer, max_length=32)
    assert (report.examples, report.dropped) == (1, 1)


def test_collated_batch_masks_padding(tokenizer):
    ds, _ = tokenize_records(RECORDS, tokenizer, max_length=256)
    batch = collate(list(ds), pad_id=tokenizer.pad_token_id)
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
        n = sum(mask)
        assert all(lab == IGNORE_INDEX for lab in labels[n:])
        assert all(t == tokenizer.pad_token_id for t in ids[n:])


def test_tokenized_examples_are_cached_and_read_back_unchanged(tokenizer, tmp_path, monkeypatch):
    import robolora.data as data

    first, report = data.tokenize_cached(RECORDS, tokenizer, 256, tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 1
    expected = tokenize_records(RECORDS, tokenizer, 256)[0].to_dict()

    def no_tokenizing(*args):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(data, "_tokenized_rows", no_tokenizing)
    again, report_again = data.tokenize_cached(RECORDS, tokenizer, 256, tmp_path)
    assert again.to_dict() == first.to_dict() == expected
    assert report_again == report
    # other records or another max_length are other keys
    with pytest.raises(AssertionError, match="tokenized again"):
        data.tokenize_cached(RECORDS, tokenizer, 128, tmp_path)
    changed = [dict(RECORDS[0], output="robot.move_forward(distance=4.0, speed=1.0)"), *RECORDS[1:]]
    with pytest.raises(AssertionError, match="tokenized again"):
        data.tokenize_cached(changed, tokenizer, 256, tmp_path)


def test_a_damaged_or_unwritable_cache_is_ignored(tokenizer, tmp_path):
    from robolora.data import tokenize_cached, tokenized_key

    expected = tokenize_records(RECORDS, tokenizer, 256)[0].to_dict()
    key = tokenized_key(RECORDS, tokenizer, 256)
    (tmp_path / f"{key}.json").write_text('{"rows": [1, 2')  # cut short
    assert tokenize_cached(RECORDS, tokenizer, 256, tmp_path)[0].to_dict() == expected
    assert json.loads((tmp_path / f"{key}.json").read_text())["rows"] == expected  # rewritten whole
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert tokenize_cached(RECORDS, tokenizer, 256, blocked / "cache")[0].to_dict() == expected
    assert tokenize_cached(RECORDS, tokenizer, 256, None)[0].to_dict() == expected


def test_the_cache_keeps_only_the_newest_files(tokenizer, tmp_path, monkeypatch):
    import os

    import robolora.data as data

    monkeypatch.setattr(data, "TOKENIZED_CACHE_KEEP", 2)
    for i in range(3):
        old = tmp_path / f"old{i}.json"
        old.write_text("{}")
        os.utime(old, (1000 + i, 1000 + i))
    data.tokenize_cached(RECORDS, tokenizer, 256, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.json")) == sorted(
        ["old2.json", f"{data.tokenized_key(RECORDS, tokenizer, 256)}.json"]
    )
