"""Bad flag values, generated: every numeric training field (as a flag, a config key, a sweep grid value
and a pipeline stage setting), the flags of eval, demo, data stats, data generate and the job commands,
robot check's input, and the job server's address and answers.

Every case must end in exactly one ``robolora: error:`` line that names the flag or key (and, for a value
beyond the range, the bound), exit code 2, no traceback, within seconds, and no file created or changed.
The values come from the bounds themselves (``robolora.config.NUMBER_BOUNDS`` and the CLI's flag types),
so a new field or a changed bound is covered without an edit here. Validation happens before Ray starts,
so no case starts it. Cases that could hang (a job server that never answers) run in a subprocess with a
timeout. The cases are generated from a seed, so a failure replays.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import http.server
import io
import json
import random
import socket
import subprocess
import sys
import threading
import time
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from robolora import cli, commands
from robolora.cli import main
from robolora.config import NUMBER_BOUNDS, Bound, TrainConfig, flag
from robolora.models import TINY_LLAMA
from robolora.prompts import FEW_SHOT_EXAMPLES
from robolora.robot.generator import generate_records
from tests.conftest import without_ray_lines

SEED = 20261206
#: Longest a case may take (the command's own time: a subprocess's start-up is not counted).
CASE_LIMIT_S = 10
TINY = {"model_name": "tiny-llama", "max_steps": 1, "num_workers": 1, "batch_size": 2}
TINY_FLAGS = [x for k, v in TINY.items() for x in (flag(k), str(v))]
DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
HINTS = typing.get_type_hints(TrainConfig)


@dataclass
class Case:
    name: str
    #: Writes the case's files into its folder; returns the arguments after `robolora`.
    setup: Callable[[Path], list[str]]
    #: The error line names one of these (the flag, or the config key).
    names: tuple[str, ...]
    #: ... and holds this (the bound that was crossed) when set.
    mentions: str = ""
    #: Bytes on stdin.
    stdin: bytes | None = None
    #: Gets as far as the model's config: what `train` imports first (Ray Train, torch, transformers) is
    #: imported before the clock starts, since the limit is on the checks, not on a cold import.
    warm: bool = False


def _text(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _is_int(name: str) -> bool:
    hint = HINTS[name]
    return hint is int or int in typing.get_args(hint)


def bad_numbers(bound: Bound, integer: bool) -> dict[str, tuple[object, str]]:
    """label -> (value, what the error must mention: the upper bound for values above it, else "")."""
    hi = bound.high
    values: dict[str, tuple[object, str]] = {}
    if integer:
        values["over"] = (hi + 1, _text(hi))
        values["far-over"] = (max(10**9, hi * 1000), _text(hi))
        values["40-digit"] = (10**39 + 7, _text(hi))
        values["negative"] = (-2 if -1 in bound.also else -1, "")
    else:
        values["over"] = (float(hi) if bound.high_open else hi * 2.0, _text(hi))
        values["far-over"] = (1e300, _text(hi))
        values["40-digit"] = (float(10**39), _text(hi))
        values["negative"] = (-1.0, "")
        for special in ("nan", "inf", "-inf"):
            values[special] = (float(special), "")
    if bound.low > 0 or bound.low_open:
        values["zero"] = (0 if integer else 0.0, "")
    return values


def _as_flag(value: object) -> str:
    return "1" + "0" * 39 if value == float(10**39) else str(value)


@functools.cache
def _dataset_text() -> str:
    return json.dumps(generate_records(40, seed=7))


def _write_data(d: Path) -> Path:
    (d / "data.json").write_text(_dataset_text())
    return d / "data.json"


def _flag_case(name: str, field: str, value: object, mentions: str) -> Case:
    def setup(d: Path) -> list[str]:
        data = _write_data(d)
        return [
            "train",
            "--data-json",
            str(data),
            "--output-dir",
            str(d / "out"),
            *TINY_FLAGS,
            flag(field),
            _as_flag(value),
        ]

    return Case(name, setup, (flag(field),), mentions)


def _config_case(name: str, field: str, value: object, mentions: str) -> Case:
    def setup(d: Path) -> list[str]:
        data = _write_data(d)
        (d / "run.yaml").write_text(yaml.safe_dump({"data_json": str(data), **TINY, field: value}))
        return ["train", "--config", str(d / "run.yaml"), "--output-dir", str(d / "out")]

    return Case(name, setup, (flag(field), field), mentions)


def training_field_cases() -> dict[str, list[Case]]:
    flags, keys = [], []
    for field, bound in NUMBER_BOUNDS.items():
        for label, (value, mentions) in bad_numbers(bound, _is_int(field)).items():
            flags.append(_flag_case(f"flag-{field}-{label}", field, value, mentions))
            keys.append(_config_case(f"key-{field}-{label}", field, value, mentions))
    return {"training flags": flags, "config keys": keys}


def model_cases() -> list[Case]:
    """Values within the static bounds that the model cannot take: tiny-llama's context and width."""
    limits = {"max_length": TINY_LLAMA["max_position_embeddings"], "lora_r": TINY_LLAMA["hidden_size"]}
    cases = []
    for field, limit in limits.items():
        for value in (limit + 1, limit * 4, NUMBER_BOUNDS[field].high):
            cases.append(dataclasses.replace(_flag_case(f"model-{field}-{value}", field, value, str(limit)), warm=True))
    return cases


def _grid_value(field: str) -> object:
    return DEFAULTS[field] if DEFAULTS[field] is not None else 1


def sweep_and_pipeline_cases() -> list[Case]:
    """One value above each bound, in a sweep's grid, a sweep's listed variant and a pipeline's stage."""
    cases = []
    for field, bound in NUMBER_BOUNDS.items():
        value, mentions = bad_numbers(bound, _is_int(field))["far-over"]

        def files(d: Path, field: str = field, value: object = value) -> dict[str, dict]:
            shared = {"data_json": str(_write_data(d)), **TINY}
            return {
                "grid": {"output_dir": str(d / "out"), "shared": shared, "grid": {field: [_grid_value(field), value]}},
                "variants": {"output_dir": str(d / "out"), "shared": shared, "variants": [{"name": "a", field: value}]},
                "pipeline": {
                    "output_dir": str(d / "out"),
                    "shared": shared,
                    "stages": [{"name": "first"}, {"name": "second", field: value}],
                },
            }

        for kind in ("grid", "variants", "pipeline"):

            def setup(d: Path, kind: str = kind, files: Callable = files) -> list[str]:
                (d / f"{kind}.yaml").write_text(yaml.safe_dump(files(d)[kind]))
                command = "pipeline" if kind == "pipeline" else "sweep"
                return [command, "--config", str(d / f"{kind}.yaml"), "--dry-run"]

            cases.append(Case(f"{kind}-{field}", setup, (flag(field), field), mentions))
    return cases


# ----------------------------------------------------------------------------- the other commands' flags


#: (command before the flag, flag, lowest, highest accepted): the bounded integer flags outside `train`.
COMMAND_FLAGS: list[tuple[list[str], str, int, int]] = [
    *(
        (["eval", "--lora-path", "DIR/no-adapter"], name, lo, hi)
        for name, lo, hi in (
            ("--limit", 0, cli.MAX_EVAL_RECORDS),
            ("--batch-size", 1, cli.MAX_GENERATION_BATCH),
            ("--few-shot", 0, len(FEW_SHOT_EXAMPLES)),
            ("--max-new-tokens", 1, cli.MAX_NEW_TOKENS),
        )
    ),
    (["demo", "--lora-path", "DIR/no-adapter", "--command", "stop"], "--few-shot", 0, len(FEW_SHOT_EXAMPLES)),
    (["demo", "--lora-path", "DIR/no-adapter", "--command", "stop"], "--max-new-tokens", 1, cli.MAX_NEW_TOKENS),
    (["data", "stats", "DATA", "--model-name", "tiny-llama"], "--max-length", cli.MAX_LENGTH.low, cli.MAX_LENGTH.high),
    (["data", "generate", "--output", "DIR/new.json"], "--num-examples", 1, commands.MAX_EXAMPLES),
    (["data", "generate", "--output", "DIR/new.json"], "--seed", 0, cli.SEED_MAX),
    *(
        (["jobs", action, "raysubmit_x"], "--timeout", 1, cli.MAX_JOBS_TIMEOUT_S)
        for action in ("status", "logs", "stop")
    ),
    (["jobs", "list"], "--timeout", 1, cli.MAX_JOBS_TIMEOUT_S),
    (["submit"], "--timeout", 1, cli.MAX_JOBS_TIMEOUT_S),
]


def _fill(args: list[str], d: Path) -> list[str]:
    return [str(_write_data(d)) if a == "DATA" else a.replace("DIR", str(d)) for a in args]


def command_flag_cases() -> list[Case]:
    cases = []
    for command, name, lo, hi in COMMAND_FLAGS:
        values = {
            "below": (lo - 1, ""),
            "negative": (-1, ""),
            "over": (hi + 1, str(hi)),
            "far-over": (max(10**9, hi * 1000), str(hi)),
            "40-digit": (10**39 + 7, str(hi)),
            "5000-digit": ("9" * 5000, ""),
            "nan": ("nan", ""),
            "float": ("2.5", ""),
            "exponent": ("1e3", ""),
            "empty": ("", ""),
        }
        if lo > 0:
            values["zero"] = (0, "")
        tail = ["--address", "127.0.0.1:1"] if command[0] in ("jobs", "submit") else []
        after = ["--", "data", "validate", "x.json"] if command[0] == "submit" else []
        for label, (value, mentions) in values.items():

            def setup(
                d: Path, command: list = command, name: str = name, value: object = value, tail=tail, after=after
            ):
                return [*_fill(command, d), *tail, f"{name}={value}", *after]

            cases.append(Case(f"{' '.join(command[:2])}-{name}-{label}", setup, (name,), mentions))
    return cases


# ----------------------------------------------------------------------------- robot check


def robot_check_cases(rng: random.Random) -> list[Case]:
    valid = 'robot.move_forward(distance=1.0)\nrobot.turn_left(angle=90)\nrobot.say(text="done")\n'
    long_line = 'robot.say(text="' + "a" * 200 + '")\n'
    big = {
        "just-over-64KiB": long_line * (commands.MAX_CODE_BYTES // len(long_line) + 1),
        "one-10MB-line": "robot.stop()" + " " * 10_000_000,
        "multibyte-over-64KiB": 'robot.say(text="' + "é" * 40_000 + '")',
    }
    lines = {
        "1001-lines": "robot.stop()\n" * (commands.MAX_CODE_LINES + 1),
        "5000-blank-lines": "\n" * 5000,
        "1001-lines-of-errors": "robot.fly()\n" * (commands.MAX_CODE_LINES + 1),
    }
    cases = []
    for label, text in big.items():
        cases.append(Case(f"robot-arg-{label}", lambda d, t=text: ["robot", "check", t], ("CODE",), "65,536"))
        cases.append(
            Case(f"robot-stdin-{label}", lambda d: ["robot", "check", "-"], ("stdin",), "65,536", text.encode())
        )
    for label, text in lines.items():
        cases.append(Case(f"robot-arg-{label}", lambda d, t=text: ["robot", "check", t], ("CODE",), "1,000 lines"))
        cases.append(
            Case(f"robot-stdin-{label}", lambda d: ["robot", "check", "-"], ("stdin",), "1,000", text.encode())
        )
    for at in sorted(rng.sample(range(len(valid) + 1), 8)):
        lone = chr(rng.choice([0xDC80, 0xDCFF, 0xD800, 0xDFFF, 0xDCC3]))
        text = valid[:at] + lone + valid[at:]  # what Python makes of undecodable bytes in argv
        cases.append(Case(f"robot-arg-surrogate-at-{at}", lambda d, t=text: ["robot", "check", t], ("CODE",), "UTF-8"))
    raw = valid.encode()
    for at in sorted(rng.sample(range(len(raw) + 1), 8)):
        bad = rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xe2\x82", b"\x80", b"\xf8\x88\x80\x80\x80"])
        data = raw[:at] + bad + raw[at:]
        cases.append(
            Case(f"robot-stdin-invalid-utf8-at-{at}", lambda d: ["robot", "check", "-"], ("stdin",), "UTF-8", data)
        )
    return cases


# ----------------------------------------------------------------------------- job server addresses


def address_cases(rng: random.Random) -> list[Case]:
    addresses = [
        f"http://{host}:{port}" for host in ("h", "10.0.0.1", "[::1]") for port in ("99999", "65536", "0", "abc")
    ]
    addresses += [f"http://head:{port}" for port in ("-1", "80a", "1e3", "9" * 40, " 8265")]
    addresses += ["http://[::1", "http://[::1:8265", "[::1", "http://[zz::", "https://[::1/x"]
    addresses += ["http://", "https://", "http://:8265", ":8265", "http:///jobs", "://", "   "]
    addresses += ["ftp://head:8265", "file:///etc/passwd", "ws://head:8265", "http://he ad:8265"]
    commands = [["jobs", "list"], *(["jobs", a, "raysubmit_x"] for a in ("status", "logs", "stop")), ["submit"]]
    cases = []
    for i, address in enumerate(addresses):
        command = commands[i % len(commands)] if i >= len(commands) else commands[i]
        command = rng.choice(commands) if i >= 2 * len(commands) else command

        def setup(d: Path, command: list = command, address: str = address) -> list[str]:
            after = ["--", "data", "validate", "x.json"] if command == ["submit"] else []
            return [*command, f"--address={address}", *after]

        cases.append(Case(f"address-{' '.join(command[:2])}-{address!r}", setup, ("--address",), ""))
    return cases


def all_cases() -> dict[str, list[Case]]:
    rng = random.Random(SEED)
    return {
        **training_field_cases(),
        "model limits": model_cases(),
        "sweep and pipeline": sweep_and_pipeline_cases(),
        "command flags": command_flag_cases(),
        "robot check": robot_check_cases(rng),
        "job addresses": address_cases(rng),
    }


CLASSES = all_cases()
CASES = [c for cases in CLASSES.values() for c in cases]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under root with its size and mtime."""
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")}


def check_error(case: Case, code: int, err: str, out: str, elapsed: float) -> None:
    lines = without_ray_lines(err).splitlines()
    assert code == 2, f"{case.name}: exit {code}; {err[-2000:]}"
    assert len(lines) == 1 and lines[0].startswith("robolora: error: "), f"{case.name}: {err[-2000:]}"
    assert len(lines[0]) < 1100, "the error line echoes a huge value"
    assert any(name in lines[0] for name in case.names), f"{case.name}: {lines[0]} names none of {case.names}"
    assert case.mentions in lines[0], f"{case.name}: {lines[0]} does not say {case.mentions!r}"
    assert "Traceback" not in err + out
    assert elapsed < CASE_LIMIT_S, f"{case.name}: took {elapsed:.1f} s"


def test_there_are_enough_cases():
    counts = {name: len(cases) for name, cases in CLASSES.items()}
    assert all(n >= 6 for n in counts.values()), counts
    assert len(CASES) >= 500 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_flag_gets_one_clear_error_and_changes_nothing(case, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # a relative path a command might write to lands here, and is seen
    args = case.setup(tmp_path)
    before = snapshot(tmp_path)
    if case.stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(case.stdin)))
    if case.warm:
        import ray.train.torch  # noqa: F401

        import robolora.worker  # noqa: F401
        from robolora.models import load_config

        load_config("tiny-llama")
    capsys.readouterr()
    start = time.monotonic()
    code = main(args)
    elapsed = time.monotonic() - start
    captured = capsys.readouterr()
    check_error(case, code, captured.err, captured.out, elapsed)
    assert snapshot(tmp_path) == before, f"{case.name}: files changed"


def test_robot_check_caps_what_it_prints(run_cli):
    code, out, err = run_cli("robot", "check", "robot.fly()\n" * 900)
    lines = err.splitlines()
    assert code == 1 and len(lines) == commands.MAX_CODE_ERRORS + 1
    assert lines[-1] == f"api error: ... and {900 - commands.MAX_CODE_ERRORS} more"
    code, _, err = run_cli("robot", "check", 'robot.say(text="' + "x" * 30_000 + '", volume=9)')
    assert code == 1 and all(len(line) <= commands.MAX_OUTPUT_LINE for line in err.splitlines())
    code, out, _ = run_cli("robot", "check", "robot.stop()\n" * commands.MAX_CODE_LINES)  # the limit itself is fine
    assert code == 0 and out.count("robot.stop()") == commands.MAX_CODE_LINES


def test_robot_check_reads_real_stdin_bytes(tmp_path):
    for data, expect in ((b"robot.stop()\xff\n", "stdin: not UTF-8 text"), (b"robot.stop()\n", None)):
        done = subprocess.run(
            [sys.executable, "-m", "robolora.cli", "robot", "check", "-"], input=data, capture_output=True, timeout=60
        )
        if expect:
            assert done.returncode == 2 and done.stderr.decode().startswith(f"robolora: error: {expect}")
        else:
            assert done.returncode == 0 and done.stdout.decode().endswith("robot.stop()\n")


# ----------------------------------------------------------------------------- job servers that misbehave

#: The job commands, each as arguments before --address (submit gets its command after it).
JOB_COMMANDS = [["jobs", "list"], *(["jobs", a, "raysubmit_x"] for a in ("status", "logs", "stop")), ["submit"]]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A server on 127.0.0.1 that accepts connections and never answers; it stops by itself."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()
    held = []

    def serve() -> None:
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(OSError):  # no connection within the poll interval
                held.append(server.accept()[0])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    server.close()


#: Runs each `robolora ARGS` given (a JSON list of argument lists) in one process, Ray's client imported
#: before the clocks start, and writes a JSON line per command as it ends: exit code, stdout, stderr, seconds.
TIMED = """
import contextlib, io, json, sys, time
import ray.job_submission
from robolora.cli import main
with open(sys.argv[1], "w") as results:
    for args in json.loads(sys.argv[2]):
        out, err = io.StringIO(), io.StringIO()
        start = time.monotonic()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(args)
        done = {"code": code, "out": out.getvalue(), "err": err.getvalue(), "s": time.monotonic() - start}
        results.write(json.dumps(done) + "\\n")
        results.flush()
"""


def test_a_silent_job_server_times_out(silent_server, tmp_path):
    """Every job command against a server that accepts and never answers: one subprocess, bounded."""
    runs = [
        [*command, "--address", f"http://127.0.0.1:{silent_server}", "--timeout", "2"]
        + (["--", "data", "validate", "x.json"] if command == ["submit"] else [])
        for command in JOB_COMMANDS
    ]
    results = tmp_path / "results.jsonl"
    subprocess.run(
        [sys.executable, "-c", TIMED, str(results), json.dumps(runs)], capture_output=True, timeout=180, cwd=tmp_path
    )
    done = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(done) == len(runs), f"only {len(done)} of {len(runs)} commands ended"
    for args, result in zip(runs, done, strict=True):
        case = Case(f"silent-{args[:2]}", lambda d, args=args: args, ("--address",), "did not answer within 2 s")
        check_error(case, result["code"], result["err"], result["out"], result["s"])


class _Handler(http.server.BaseHTTPRequestHandler):
    """The job server's version check passes; every other request gets ``reply`` (status, body)."""

    reply: tuple[int, bytes] = (500, b"")

    def _answer(self) -> None:
        if self.path.startswith("/api/version"):
            import ray

            status, body = 200, json.dumps({"ray_version": ray.__version__, "version": "4"}).encode()
        else:
            status, body = self.reply
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


REPLIES = {
    "500-html": (500, b"<html><body>Internal Server Error</body></html>"),
    "500-empty": (500, b""),
    "200-not-json": (200, b"<html>a proxy's login page</html>"),
    "200-wrong-json": (200, b'{"unexpected": [1, 2, 3]}'),
    "200-json-list": (200, b"[1, 2, 3]"),
}


@pytest.mark.parametrize("reply", REPLIES, ids=str)
@pytest.mark.parametrize("command", JOB_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_job_server_that_fails_is_one_error(command, reply, tmp_path, capsys, monkeypatch):
    handler = type("Handler", (_Handler,), {"reply": REPLIES[reply]})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "x.json").write_text("[]")
    after = (
        ["--working-dir", str(tmp_path / "work"), "--", "data", "validate", "x.json"] if command == ["submit"] else []
    )
    try:
        capsys.readouterr()
        start = time.monotonic()
        code = main([*command, "--address", f"http://127.0.0.1:{server.server_address[1]}", "--timeout", "5", *after])
        elapsed = time.monotonic() - start
    finally:
        server.shutdown()
        server.server_close()
    captured = capsys.readouterr()
    case = Case(f"{reply}-{command}", lambda d: [], ("job server",), "")
    check_error(case, code, captured.err, captured.out, elapsed)
