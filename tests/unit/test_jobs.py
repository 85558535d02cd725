"""`robolora submit` and `robolora jobs` before any cluster answers: the command checked here, the job's
runtime environment, the token's sources, and one-line refusals. (tests/integration/test_multinode.py
submits to a real cluster.)"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from robolora import jobs
from robolora.cli import build_parser
from robolora.errors import UserError

REPO = Path(__file__).resolve().parents[2]
TOKEN_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    for name in TOKEN_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_token_sources_in_rays_order(no_token, monkeypatch, tmp_path):
    assert jobs.load_token() is None
    (no_token / ".ray").mkdir(parents=True)
    (no_token / ".ray" / "auth_token").write_text("from-home\n")
    assert jobs.load_token() == "from-home"
    (tmp_path / "file").write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "file"))
    assert jobs.load_token() == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert jobs.load_token() == "from-env"
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert jobs.load_token() is None


def test_an_unreadable_token_path_is_an_error(no_token, monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(UserError, match=r"RAY_AUTH_TOKEN_PATH: .*missing: no such file"):
        jobs.load_token()


def test_address_from_flag_then_environment(monkeypatch):
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.2:8265")
    assert jobs.resolve_address(None) == "http://10.0.0.2:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://head:8265/")
    assert jobs.resolve_address(None) == "http://head:8265"
    assert jobs.resolve_address("https://ray.example.com") == "https://ray.example.com"
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS")
    monkeypatch.delenv("RAY_ADDRESS")
    with pytest.raises(UserError, match="--address: give the Ray dashboard URL"):
        jobs.resolve_address(None)


def test_train_arguments_are_checked_against_the_working_directory(tmp_path):
    parser = build_parser()  # robolora's own: the CLI hands it to jobs (which does not import the CLI)

    def check(argv):
        return jobs.command_line(argv, tmp_path, parser)

    (tmp_path / "run.yaml").write_text("data_json: d.json\nmodel_name: tiny-llama\n")
    (tmp_path / "d.json").write_text("[]")
    args = ["robolora", "train", "--config", "run.yaml", "--output-dir", "/shared/run", "--lora-r", "8"]
    assert check(args) == args[1:]
    with pytest.raises(UserError, match="--output-dir out: give an absolute path on storage"):
        check(["train", "--config", "run.yaml", "--output-dir", "out"])
    in_bucket = [*args[1:], "--storage-path", "s3://runs/robolora"]  # every node reaches a bucket
    assert check(in_bucket) == in_bucket
    with pytest.raises(UserError, match="--storage-path ray: give an absolute path on storage"):
        check([*args[1:], "--storage-path", "ray"])
    with pytest.raises(UserError, match=r"--data-json other\.json: not found in the working directory"):
        check(["train", "--data-json", "other.json", "--output-dir", "/shared/run"])
    with pytest.raises(UserError, match="unrecognized arguments: --lora-rank"):
        check(["train", "--lora-rank", "8"])
    with pytest.raises(UserError, match="give the robolora command to run after --"):
        check([])
    with pytest.raises(UserError, match="runs here, not as a job"):
        check(["jobs", "list"])
    assert check(["data", "validate", "d.json"]) == ["data", "validate", "d.json"]


def test_runtime_env_ships_the_checkout_without_environments_and_runs(monkeypatch, tmp_path):
    monkeypatch.setenv("ROBOLORA_CACHE", str(tmp_path / "cache"))
    env = jobs.runtime_env(REPO, jobs.parse_env(["HF_HOME=/mnt/hf"]))
    assert env["working_dir"] == str(REPO)
    assert {".venv/", ".git/", "models/"} <= set(env["excludes"])
    assert env["env_vars"] == {"PYTHONUNBUFFERED": "1", "ROBOLORA_CACHE": str(tmp_path / "cache"), "HF_HOME": "/mnt/hf"}
    with pytest.raises(UserError, match="--env HF_HOME: expected NAME=VALUE"):
        jobs.parse_env(["HF_HOME"])


def test_cli_refusals_are_one_line(run_cli, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = run_cli("jobs", "status", "raysubmit_x", "--address", f"127.0.0.1:{port}")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"robolora: error: --address http://127.0.0.1:{port}: cannot reach the Ray job server")
    for name in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    code, _, err = run_cli("submit", "--", "train", "--data-json", "d.json", "--output-dir", "/shared/run")
    assert code == 2 and "not found in the working directory" in err
    code, _, err = run_cli("submit", "--working-dir", str(REPO), "--", "data", "stats", "data/robot_dataset.json")
    assert code == 2 and "--address: give the Ray dashboard URL" in err


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("http://h:99999", "--address http://h:99999: the port must be a number in 1..65535"),
        ("http://h:abc", "--address http://h:abc: the port must be a number in 1..65535"),
        ("http://h:0", "--address http://h:0: the port must be a number in 1..65535"),
        ("[::1]:70000", "--address [::1]:70000: the port must be a number in 1..65535"),
        ("http://[::1", "--address http://[::1: not a URL (an IPv6 address goes in brackets"),
        ("http://", "--address http://: expected the dashboard URL"),
        ("http://:8265", "--address http://:8265: expected the dashboard URL"),
        ("ftp://h:8265", "--address ftp://h:8265: expected the dashboard URL"),
        ("http://h st:8265", "--address http://h st:8265: expected the dashboard URL"),
        ("   ", "--address: give the Ray dashboard URL"),
    ],
)
def test_malformed_addresses_are_one_clear_error(address, message, monkeypatch):
    for name in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UserError) as e:
        jobs.resolve_address(address)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_an_address_from_the_environment_is_named_as_such(monkeypatch):
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "http://head:99999")
    with pytest.raises(UserError, match=r"^RAY_ADDRESS http://head:99999: the port must be a number in 1\.\.65535"):
        jobs.resolve_address(None)
    assert jobs.resolve_address("http://[::1]:8265/") == "http://[::1]:8265"


def test_cli_malformed_address_and_timeout_are_one_line(run_cli):
    code, _, err = run_cli("jobs", "list", "--address", "http://[::1")
    assert code == 2 and err.count("\n") == 1 and err.startswith("robolora: error: --address http://[::1: not a URL")
    code, _, err = run_cli("jobs", "status", "raysubmit_x", "--timeout", "100000", "--address", "h:1")
    assert code == 2 and "argument --timeout: must be an integer in 1..3600, got 100000" in err
