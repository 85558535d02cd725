"""Bad input, fuzzed: hundreds of malformed datasets, config files, flags and paths given to `robolora train`.

Every case must end in one kind of output only: ``robolora: error:`` lines (one, or one per dataset
problem) naming what is wrong, exit code 2 (a user error), no traceback, and no file created or changed anywhere
except inside the fresh output directory. The cases are generated from a seed, so a failure replays.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from robolora.cli import main
from robolora.robot.generator import generate_records
from tests.conftest import without_ray_lines

SEED = 20261125
TINY_FLAGS = ["--model-name", "tiny-llama", "--max-steps", "1", "--num-workers", "1", "--batch-size", "2"]


@dataclass
class Case:
    name: str
    #: Writes the case's files into its folder and returns the arguments after `robolora train`.
    setup: Callable[[Path], list[str]]


@functools.cache
def _record_text() -> str:
    return json.dumps(generate_records(40, seed=7))


def _records() -> list[dict]:
    return json.loads(_record_text())


def _dataset_text() -> str:
    return json.dumps(_records(), indent=1)


def data_case(name: str, content: bytes | str, suffix: str = ".json") -> Case:
    def setup(d: Path) -> list[str]:
        path = d / f"data{suffix}"
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
        return ["--data-json", str(path), "--output-dir", str(d / "out"), *TINY_FLAGS]

    return Case(name, setup)


def records_case(name: str, mutate: Callable[[list[dict]], None]) -> Case:
    records = _records()
    mutate(records)
    return data_case(name, json.dumps(records))


#: The tiny run's settings, for config files (a flag would override the file's bad value).
TINY_CONFIG = {"model_name": "tiny-llama", "max_steps": 1, "num_workers": 1, "batch_size": 2}


def config_case(name: str, content: bytes | str, suffix: str = ".yaml") -> Case:
    """A config file; text holding ``tiny:`` settings gets no flags, other text gets the tiny flags."""

    def setup(d: Path) -> list[str]:
        (d / "data.json").write_text(_dataset_text())
        path = d / f"config{suffix}"
        if isinstance(content, str):
            path.write_text(content.replace("DATA", str(d / "data.json")), encoding="utf-8")
        else:
            path.write_bytes(content)
        in_file = isinstance(content, str) and "model_name" in content
        return ["--config", str(path), "--output-dir", str(d / "out"), *([] if in_file else TINY_FLAGS)]

    return Case(name, setup)


def flags_case(name: str, *flags: str) -> Case:
    def setup(d: Path) -> list[str]:
        (d / "data.json").write_text(_dataset_text())
        args = ["--data-json", str(d / "data.json"), "--output-dir", str(d / "out"), *TINY_FLAGS]
        return args + [f.replace("DIR", str(d)) for f in flags]

    return Case(name, setup)


def out_case(name: str, prepare: Callable[[Path], Path], *flags: str) -> Case:
    def setup(d: Path) -> list[str]:
        (d / "data.json").write_text(_dataset_text())
        out = prepare(d)
        return ["--data-json", str(d / "data.json"), *TINY_FLAGS, *flags, "--output-dir", str(out)]

    return Case(name, setup)


def dataset_cases(rng: random.Random) -> list[Case]:
    text = _dataset_text()
    raw = text.encode()
    cases = []
    for cut in sorted(rng.sample(range(1, len(text) - 2), 30)):
        cases.append(data_case(f"truncated-json-at-{cut}", text[:cut]))
    for at in sorted(rng.sample(range(len(raw)), 12)):
        bad = rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xe2\x82", b"\x80"])
        cases.append(data_case(f"invalid-utf8-at-{at}", raw[:at] + bad + raw[at:]))
    odd_values = {"int": 7, "float": 2.5, "list": ["a"], "object": {"a": 1}, "null": None, "bool": True}
    for field in ("input", "output", "category"):
        for kind, value in odd_values.items():
            index = rng.randrange(40)
            cases.append(records_case(f"{field}-is-{kind}", lambda rs, f=field, v=value, i=index: rs[i].update({f: v})))
    for field in ("input", "output"):
        for token in ("NaN", "Infinity", "-Infinity"):
            index = rng.randrange(40)
            records = _records()
            records[index][field] = "@@"
            cases.append(data_case(f"{field}-is-{token}", json.dumps(records).replace('"@@"', token)))
    huge = {"input": "go " * 400_000, "output": "robot.stop()\n" * 100_000, "category": "c" * 1_000_000}
    for field, value in huge.items():
        cases.append(records_case(f"huge-{field}", lambda rs, f=field, v=value: rs[3].update({f: v})))
    for name, content in [
        ("empty-file", ""),
        ("whitespace-only", " \n\t\n"),
        ("empty-list", "[]"),
        ("object-not-list", '{"input": "stop", "output": "robot.stop()"}'),
        ("number", "42"),
        ("string", '"records"'),
        ("null", "null"),
        ("list-of-strings", '["stop", "go"]'),
        ("list-of-lists", "[[1, 2]]"),
        ("nested-empty-objects", "[{}, {}]"),
    ]:
        cases.append(data_case(name, content))
    lines = [json.dumps(r) for r in _records()]
    cases.append(data_case("jsonl-bad-line", "\n".join([*lines[:5], "{not json", *lines[5:]]), ".jsonl"))
    cases.append(data_case("jsonl-number-line", "\n".join([*lines[:5], "3", *lines[5:]]), ".jsonl"))
    cases.append(data_case("jsonl-truncated-last", "\n".join(lines)[:-7], ".jsonl"))
    for field in ("input", "output"):
        for index in rng.sample(range(40), 4):
            cases.append(records_case(f"missing-{field}-{index}", lambda rs, f=field, i=index: rs[i].pop(f)))
        for blank in ("", "   ", "\n\t"):
            cases.append(records_case(f"blank-{field}-{blank!r}", lambda rs, f=field, b=blank: rs[0].update({f: b})))
    cases.append(records_case("blank-category", lambda rs: rs[1].update({"category": " "})))
    for code in [
        "robot.fly()",
        "import os",
        '__import__("os").system("touch pwned")',
        'robot.move_forward(distance="far")',
        "robot.move_forward(distance=3.0",
        "while True:\n    robot.stop()",
        'exec("robot.stop()")',
        "print(1)",
        'os.system("ls")',
        "robot.move_forward(speed=1.0, distance=1.0, height=2)",
        "lambda: robot.stop()",
        "robot.stop",
    ]:
        cases.append(
            records_case(
                f"invalid-code-{len(cases)}-{code[:24]}", lambda rs, c=code: rs[rng.randrange(40)].update(output=c)
            )
        )
    cases.append(records_case("duplicate-record", lambda rs: rs.append(dict(rs[0]))))
    cases.append(
        records_case(
            "duplicate-input-case-and-spaces", lambda rs: rs.append({**rs[2], "input": rs[2]["input"].upper() + "  "})
        )
    )

    def missing(d: Path) -> list[str]:
        return ["--data-json", str(d / "nope.json"), "--output-dir", str(d / "out"), *TINY_FLAGS]

    def directory(d: Path) -> list[str]:
        (d / "a-dir.json").mkdir()
        return ["--data-json", str(d / "a-dir.json"), "--output-dir", str(d / "out"), *TINY_FLAGS]

    cases += [Case("data-missing", missing), Case("data-is-a-directory", directory)]
    return cases


BAD_VALUES = {
    "lora_r": ["abc", [8], {"a": 1}, 0, -8, 2.5, True, ".nan"],
    "lora_alpha": ["x", 0, -1],
    "learning_rate": ["fast", 0, -1.0e-4, ".nan", ".inf", "-.inf", [1]],
    "num_epochs": ["three", 0, -1, ".nan", ".inf"],
    "batch_size": [0, -4, 2.5, "eight", None],
    "gradient_accumulation_steps": [0, -1],
    "max_length": [0, -1, 8, "long"],
    "lora_dropout": [1.5, -0.1, 1.0, ".nan"],
    "warmup_ratio": [2, -0.5, 1.0],
    "val_ratio": [0, 1, 1.5, -0.1],
    "eval_steps": [0, -5],
    "save_steps": [0],
    "logging_steps": [0, -1],
    "max_grad_norm": [-1, ".nan"],
    "weight_decay": [-0.1, ".inf"],
    "max_steps": [0, -2],
    "save_total_limit": [-1],
    "early_stopping_patience": [-3],
    "max_failures": [-1],
    "num_workers": [0, -2],
    "cpus_per_worker": [0],
    "zero_stage": [1, 4, "three"],
    "offload": ["gpu", "yes"],
    "lr_scheduler_type": ["exponential", "c" * 100_000],
    "optim": ["sgd-fast"],
    "placement_strategy": ["EVERYWHERE"],
    "bf16": ["maybe", 2],
    "lora_target_modules": ["", " , ", 5],
    "lora_layers": ["top:0", "top:x", "5-2", "a,b", "top:99", "0-40"],
    "model_name": ["", "./no-such-model", "/" + "x" * 100_000, "~/no/such/model"],
    "output_dir": [""],
    "resume_from": ["/no/such/adapter"],
    "dashboard_host": ["", "0.0.0.0; rm -rf /", "host name"],
}


def config_cases(rng: random.Random) -> list[Case]:
    cases = []
    for key, values in BAD_VALUES.items():
        for value in values:
            doc = {"data_json": "DATA", **TINY_CONFIG, key: value}
            text = yaml.safe_dump(doc).replace("'.nan'", ".nan").replace("'.inf'", ".inf").replace("'-.inf'", "-.inf")
            cases.append(config_case(f"config-{key}={str(value)[:20]}", text))
    for key in ("lora_rank", "learningrate", "epochs", "batchsize", "model", "data", "lora-r", "LoRA_R", "seed2", "é"):
        cases.append(config_case(f"unknown-key-{key}", yaml.safe_dump({"data_json": "DATA", **TINY_CONFIG, key: 1})))
    good = json.dumps({"data_json": "DATA", "lora_r": 8, "learning_rate": 0.001, **TINY_CONFIG})
    for cut in sorted(rng.sample(range(1, len(good) - 1), 12)):
        cases.append(config_case(f"truncated-config-json-at-{cut}", good[:cut], ".json"))
    for at in sorted(rng.sample(range(len(good)), 5)):
        cases.append(config_case(f"config-invalid-utf8-at-{at}", good.encode()[:at] + b"\xff" + good.encode()[at:]))
    for name, text in [
        ("config-a-list", "- data_json: DATA\n"),
        ("config-a-number", "42\n"),
        ("config-a-string", "just text\n"),
        ("config-bad-yaml", "data_json: DATA\nlora_r: [8\n"),
        ("config-tab-indent", "data_json: DATA\n\tlora_r: 8\n"),
        ("config-empty-no-data", ""),
        ("config-both-data-and-train", "data_json: DATA\ntrain_json: DATA\n"),
        ("config-val-without-train", "val_json: DATA\n"),
        ("config-offload-all-zero2", "data_json: DATA\noffload: all\nzero_stage: 2\n"),
    ]:
        cases.append(config_case(name, text))

    def missing_config(d: Path) -> list[str]:
        return ["--config", str(d / "nope.yaml"), "--output-dir", str(d / "out"), *TINY_FLAGS]

    cases.append(Case("config-missing", missing_config))
    return cases


def flag_cases() -> list[Case]:
    return [
        flags_case("flag-lora-r-abc", "--lora-r", "abc"),
        flags_case("flag-lora-r-float", "--lora-r", "2.5"),
        flags_case("flag-epochs-nan", "--num-epochs", "nan"),
        flags_case("flag-lr-inf", "--learning-rate", "inf"),
        flags_case("flag-lr-negative", "--learning-rate", "-1"),
        flags_case("flag-batch-zero", "--batch-size", "0"),
        flags_case("flag-unknown", "--no-such-flag", "1"),
        flags_case("flag-typo", "--lora-rnak", "8"),
        flags_case("flag-zero-stage-4", "--zero-stage", "4"),
        flags_case("flag-offload-gpu", "--offload", "gpu"),
        flags_case("flag-layers-top-99", "--lora-layers", "top:99"),
        flags_case("flag-layers-range-backwards", "--lora-layers", "5-2"),
        flags_case("flag-placement", "--placement-strategy", "EVERYWHERE"),
        flags_case("flag-max-length-float", "--max-length", "1e9"),
        flags_case("flag-missing-value", "--learning-rate"),
        flags_case("flag-huge-number", "--max-length", "9" * 5000),
        flags_case("flag-resume-missing", "--resume-from", "DIR/no-adapter"),
        flags_case("flag-resume-not-adapter", "--resume-from", "DIR"),
        flags_case("flag-train-json-missing", "--train-json", "DIR/nope.json"),
    ]


def path_cases() -> list[Case]:
    def a_file(d: Path) -> Path:
        (d / "taken.txt").write_text("keep me")
        return d / "taken.txt"

    def under_a_file(d: Path) -> Path:
        (d / "taken.txt").write_text("keep me")
        return d / "taken.txt" / "out"

    def foreign(d: Path) -> Path:
        (d / "theirs").mkdir()
        (d / "theirs" / "notes.md").write_text("not a run")
        return d / "theirs"

    def finished(d: Path) -> Path:
        (d / "done").mkdir()
        (d / "done" / "robolora_run.json").write_text(json.dumps({"finished": True, "given": {}, "resolved": {}}))
        (d / "done" / "adapter_model.safetensors").write_bytes(b"weights")
        return d / "done"

    def other_settings(d: Path) -> Path:
        (d / "half").mkdir()
        marker = {"finished": False, "given": {"lora_r": 64}, "resolved": {"lora_r": 64}}
        (d / "half" / "robolora_run.json").write_text(json.dumps(marker))
        return d / "half"

    def long_name(d: Path) -> Path:
        return d / ("n" * 300)

    def in_proc(d: Path) -> Path:
        return Path("/proc/robolora-fuzz-out")

    def in_a_read_only_place(d: Path) -> Path:
        return Path("/sys/robolora-fuzz-out")

    return [
        out_case("out-is-a-file", a_file),
        out_case("out-under-a-file", under_a_file),
        out_case("out-holds-other-files", foreign),
        out_case("out-holds-a-finished-run", finished),
        out_case("out-holds-a-run-with-other-settings", other_settings),
        out_case("out-name-too-long", long_name),
        out_case("out-in-proc", in_proc),
        out_case("out-in-sys", in_a_read_only_place),
    ]


def all_cases() -> list[Case]:
    rng = random.Random(SEED)
    return dataset_cases(rng) + config_cases(rng) + flag_cases() + path_cases()


CASES = all_cases()


def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under root (except the fresh output directory) with its size and mtime."""
    out = {}
    for p in root.rglob("*"):
        if p == skip or skip in p.parents:
            continue
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def test_there_are_at_least_200_cases():
    assert len(CASES) >= 200
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input_gets_one_clear_error_and_changes_nothing(case, tmp_path, capsys):
    args = case.setup(tmp_path)
    fresh = tmp_path / "out"
    before = snapshot(tmp_path, fresh)
    capsys.readouterr()
    code = main(["train", *args])
    captured = capsys.readouterr()
    assert code == 2, f"{case.name}: exit {code} (a user error exits 2); {captured.err[-2000:]}"
    lines = without_ray_lines(captured.err).splitlines()
    assert lines, f"{case.name}: no error printed"
    assert all(line.startswith("robolora: error: ") for line in lines), captured.err[:2000]
    assert all(len(line) < 1100 for line in lines), "an error line echoes a huge value"
    assert "Traceback" not in captured.err + captured.out
    assert snapshot(tmp_path, fresh) == before, f"{case.name}: files outside the fresh output directory changed"
    for outside in (Path("/proc/robolora-fuzz-out"), Path("/sys/robolora-fuzz-out")):
        assert not outside.exists()
