"""The `robolora` command end to end: help, generate, validate, robot check, config; errors as one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from robolora.robot.checker import check


def test_help_lists_the_commands(run_cli):
    with pytest.raises(SystemExit) as e:
        run_cli("--help")
    assert e.value.code == 0


def test_console_script_help_and_error_without_traceback(tmp_path):
    exe = [sys.executable, "-m", "robolora.cli"]
    ok = subprocess.run([*exe, "--help"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "data" in ok.stdout and "config" in ok.stdout
    bad = subprocess.run(
        [*exe, "data", "validate", str(tmp_path / "x.json")], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2
    assert bad.stderr == f"robolora: error: {tmp_path / 'x.json'}: no such file\n"


def test_generate_then_validate(run_cli, tmp_path):
    out = tmp_path / "d.json"
    code, stdout, _ = run_cli("data", "generate", "--num-examples", "300", "--seed", "7", "--output", out)
    assert code == 0 and stdout == f"wrote 300 records to {out} (seed 7)\n"
    records = json.loads(out.read_text())
    assert len(records) == 300 and all(check(r["output"]).api_valid for r in records)
    code, stdout, _ = run_cli("data", "validate", out)
    assert code == 0 and stdout.startswith(f"{out}: OK, 300 records (")


def test_generate_jsonl_is_deterministic(run_cli, tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    run_cli("data", "generate", "--num-examples", "50", "--seed", "1", "--output", a)
    run_cli("data", "generate", "--num-examples", "50", "--seed", "1", "--output", b)
    assert a.read_bytes() == b.read_bytes() and len(a.read_text().splitlines()) == 50


def test_generate_never_overwrites_without_force(run_cli, tmp_path):
    out = tmp_path / "d.json"
    out.write_text("precious")
    code, _, err = run_cli("data", "generate", "--num-examples", "5", "--output", out)
    assert code == 2
    assert (
        err == f"robolora: error: --output: {out} already exists; choose another path or pass --force to replace it\n"
    )
    assert out.read_text() == "precious"
    assert run_cli("data", "generate", "--num-examples", "5", "--output", out, "--force")[0] == 0
    assert len(json.loads(out.read_text())) == 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--num-examples", "0"], "--num-examples: must be a positive integer, got 0"),
        (
            ["--num-examples", "many"],
            "robolora data generate: argument --num-examples: invalid int value: 'many' "
            "(see `robolora data generate --help`)",
        ),
    ],
)
def test_generate_bad_flags(run_cli, tmp_path, args, message):
    code, _, err = run_cli("data", "generate", *args, "--output", tmp_path / "d.json")
    assert (code, err) == (2, f"robolora: error: {message}\n")
    assert not (tmp_path / "d.json").exists()


def test_generate_refuses_other_suffixes(run_cli, tmp_path):
    code, _, err = run_cli("data", "generate", "--output", tmp_path / "d.txt")
    assert code == 2
    assert err == (
        f"robolora: error: --output: {tmp_path / 'd.txt'} must end in .json (a JSON list) "
        "or .jsonl (one record per line)\n"
    )


def test_generated_file_is_world_readable(run_cli, tmp_path):
    run_cli("data", "generate", "--num-examples", "3", "--output", tmp_path / "d.json")
    assert (tmp_path / "d.json").stat().st_mode & 0o044 == 0o044


def test_generate_into_missing_directory(run_cli, tmp_path):
    code, _, err = run_cli("data", "generate", "--output", tmp_path / "no" / "d.json")
    assert (code, err) == (
        2,
        f"robolora: error: --output: directory {tmp_path / 'no'} does not exist; create it first\n",
    )


def test_stats_without_tokenizer(run_cli, write_json):
    path = write_json(
        "d.json",
        [
            {"input": "stop", "output": "robot.stop()", "category": "movement"},
            {"input": "go home", "output": "robot.go_home()", "category": "navigation"},
        ],
    )
    code, out, _ = run_cli("data", "stats", path, "--json")
    stats = json.loads(out)
    assert code == 0 and stats["records"] == 2 and stats["categories"] == {"movement": 1, "navigation": 1}


def test_robot_check(run_cli):
    code, out, _ = run_cli("robot", "check", "robot.turn_left(angle=90)")
    assert code == 0 and out == "valid robot code; canonical form:\nrobot.turn_left(angle=90.0)\n"
    code, _, err = run_cli("robot", "check", "robot.turn_left(angle=400)")
    assert code == 1 and err.startswith("api error: line 1: ")


def test_config_prints_resolved_yaml(run_cli, tmp_path):
    import yaml

    f = tmp_path / "c.yaml"
    f.write_text("data_json: d.json\nlora_r: 16\n")
    code, out, _ = run_cli("config", "--config", f, "--lora-alpha", "8")
    cfg = yaml.safe_load(out)
    assert code == 0 and (cfg["data_json"], cfg["lora_r"], cfg["lora_alpha"]) == ("d.json", 16, 8)
    code, _, err = run_cli("config", "--config", f, "--lora-r", "-2")
    assert (code, err) == (2, "robolora: error: --lora-r: must be a positive integer, got -2\n")


def test_every_numeric_training_field_has_a_bound():
    import dataclasses
    import typing

    from robolora.config import NUMBER_BOUNDS, TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    numeric = {
        f.name
        for f in dataclasses.fields(TrainConfig)
        if {int, float} & {hints[f.name], *typing.get_args(hints[f.name])} and not f.metadata["choices"]
    }
    assert numeric == set(NUMBER_BOUNDS)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-length", "10000000"], "--max-length: must be at most 131072 (an integer in 16..131072), got 10000000"),
        (["--lora-r", "1000000000"], "--lora-r: must be at most 4096 (an integer in 1..4096), got 1000000000"),
        (["--batch-size", str(10**9)], "--batch-size: must be at most 65536 (an integer in 1..65536), got 1000000000"),
        (["--seed", "1" * 31], f"--seed: must be at most 4294967295 (an integer in 0..4294967295), got {'1' * 31}"),
        (["--seed", "-1"], "--seed: must be an integer >= 0, got -1"),
        (["--learning-rate", "1e300"], "--learning-rate: must be at most 10 (a number in (0, 10]), got 1e+300"),
        (["--num-epochs", "1e9"], "--num-epochs: must be at most 10000 (a number in (0, 10000]), got 1000000000.0"),
        (
            ["--max-steps", str(10**10)],
            "--max-steps: must be at most 1000000000 (an integer in 1..1000000000), got 10000000000",
        ),
        (
            ["--dataloader-num-workers", str(10**6)],
            "--dataloader-num-workers: must be at most 256 (an integer in 0..256), got 1000000",
        ),
        (
            ["--loraplus-lr-ratio", "1e300"],
            "--loraplus-lr-ratio: must be at most 1000 (a number in [0, 1000]), got 1e+300",
        ),
        (["--weight-decay", "inf"], "--weight-decay: must be a number >= 0, got inf"),
        (["--max-grad-norm", "1e300"], "--max-grad-norm: must be at most 10000 (a number in [0, 10000]), got 1e+300"),
        (["--warmup-ratio", "1"], "--warmup-ratio: must be in [0, 1), got 1.0"),
        (["--num-workers", "5000"], "--num-workers: must be at most 4096 (an integer in 1..4096), got 5000"),
    ],
)
def test_absurd_training_values_are_refused_with_the_range(run_cli, args, message):
    code, out, err = run_cli("config", *args)
    assert (code, out, err) == (2, "", f"robolora: error: {message}\n")


def test_the_bounds_themselves_are_accepted(run_cli):
    code, _, _ = run_cli(
        "config", "--max-length", "131072", "--lora-r", "4096", "--seed", str(2**32 - 1), "--learning-rate", "10"
    )
    assert code == 0


def test_limits_of_the_model():
    from robolora.config import TrainConfig, check_against_model
    from robolora.errors import ConfigError

    cfg = TrainConfig(model_name="tiny-llama", max_length=1024, lora_r=64)
    check_against_model(cfg, 1024, 64)
    check_against_model(cfg.replace(max_length=100_000, lora_r=4096), None, None)  # not known: not checked
    with pytest.raises(ConfigError, match=r"^--max-length: must be at most 1024 for tiny-llama \(its max_position_"):
        check_against_model(cfg.replace(max_length=1025), 1024, 64)
    with pytest.raises(ConfigError, match=r"^--lora-r: must be at most 64 for tiny-llama \(its hidden_size\), got 65$"):
        check_against_model(cfg.replace(lora_r=65), 1024, 64)


@pytest.mark.parametrize(
    ("args", "flag", "message"),
    [
        (["eval", "--limit", "-1"], "--limit", "must be an integer in 0..10000000 (0: every record), got -1"),
        (["eval", "--batch-size", "0"], "--batch-size", "must be an integer in 1..4096, got 0"),
        (["eval", "--few-shot", "-1"], "--few-shot", "must be an integer in 0..8, got -1"),
        (["eval", "--max-new-tokens", "0"], "--max-new-tokens", "must be an integer in 1..8192, got 0"),
        (["demo", "--max-new-tokens", str(10**9)], "--max-new-tokens", "must be an integer in 1..8192, got 1000000000"),
        (["demo", "--few-shot", "99"], "--few-shot", "must be an integer in 0..8, got 99"),
        (["data", "stats", "d.json", "--max-length", "0"], "--max-length", "must be an integer in 16..131072, got 0"),
        (
            ["data", "generate", "--output", "d.json", "--seed", "1" * 31],
            "--seed",
            f"must be an integer in 0..4294967295, got {'1' * 31}",
        ),
        (["jobs", "list", "--timeout", "0"], "--timeout", "must be an integer in 1..3600, got 0"),
        (
            ["eval", "--limit", "9" * 5000],
            "--limit",
            f"invalid int value: '{'9' * 40}... (5,000 characters)'",
        ),
    ],
)
def test_bounded_flags_of_the_other_commands(run_cli, args, flag, message):
    from robolora.prompts import FEW_SHOT_EXAMPLES

    assert len(FEW_SHOT_EXAMPLES) == 8
    command = " ".join(args[:2]) if args[0] in ("data", "jobs") else args[0]
    code, _, err = run_cli(*args)
    assert (code, err) == (
        2,
        f"robolora: error: robolora {command}: argument {flag}: {message} (see `robolora {command} --help`)\n",
    )


def test_generate_refuses_absurd_counts(run_cli, tmp_path):
    code, _, err = run_cli("data", "generate", "--num-examples", str(10**9), "--output", tmp_path / "d.json")
    assert (code, err) == (
        2,
        "robolora: error: --num-examples: must be at most 1000000 (an integer in 1..1000000), got 1000000000\n",
    )
    assert not (tmp_path / "d.json").exists()


def test_robot_check_refuses_what_it_cannot_check(run_cli, monkeypatch):
    import io

    from robolora.commands import MAX_CODE_BYTES, MAX_CODE_LINES

    code, _, err = run_cli("robot", "check", "robot.stop()\n" * (MAX_CODE_LINES + 1))
    assert (code, err) == (
        2,
        "robolora: error: CODE: 1,001 lines of robot code; at most 1,000 lines are checked, check a shorter program\n",
    )
    code, _, err = run_cli("robot", "check", "robot.stop()" + " " * MAX_CODE_BYTES)
    assert (code, err) == (
        2,
        "robolora: error: CODE: more than 65,536 bytes (64 KiB) of robot code, the most that is checked; "
        "check a shorter program\n",
    )
    code, _, err = run_cli("robot", "check", "robot.stop()\udcff")  # an undecodable byte in argv
    assert (code, err) == (
        2,
        "robolora: error: CODE: not UTF-8 text (an undecodable byte at character 13); give robot code as UTF-8\n",
    )
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b'robot.say(text="h\xe9")')))
    code, _, err = run_cli("robot", "check", "-")
    assert (code, err) == (
        2,
        "robolora: error: stdin: not UTF-8 text (an undecodable byte at byte offset 17); give robot code as UTF-8\n",
    )
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO('robot.say(text="hé")'.encode())))
    code, out, _ = run_cli("robot", "check", "-")
    assert code == 0 and out.endswith('robot.say(text="hé")\n')


def test_robot_check_prints_at_most_20_problems(run_cli):
    code, _, err = run_cli("robot", "check", "robot.fly()\n" * 50)
    lines = err.splitlines()
    assert code == 1 and len(lines) == 21 and lines[-1] == "api error: ... and 30 more"


def test_eval_and_demo_take_their_defaults_from_the_eval_settings():
    from robolora.cli import build_parser
    from robolora.evaluate import EVAL_DEFAULTS

    parser = build_parser()
    ev = parser.parse_args(["eval", "--lora-path", "run"])
    assert (ev.constrained, ev.limit, ev.batch_size, ev.max_new_tokens) == (
        EVAL_DEFAULTS.constrained,
        EVAL_DEFAULTS.limit,
        EVAL_DEFAULTS.batch_size,
        EVAL_DEFAULTS.max_new_tokens,
    )
    demo = parser.parse_args(["demo", "--lora-path", "run"])
    assert (demo.constrained, demo.max_new_tokens) == (EVAL_DEFAULTS.constrained, EVAL_DEFAULTS.max_new_tokens)
    assert parser.parse_args(["eval", "--no-constrained"]).constrained is False
    assert parser.parse_args(["demo", "--constrained"]).constrained is True


def test_eval_help_shows_the_defaults(run_cli, capsys):
    with pytest.raises(SystemExit):
        run_cli("eval", "--help")
    text = " ".join(capsys.readouterr().out.split())
    assert "--constrained, --no-constrained only let the model emit code the robot API accepts (default: on)" in text
    assert "(default: 32)" in text and "(default: 128)" in text and "(default: 0, every record)" in text
