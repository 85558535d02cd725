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
