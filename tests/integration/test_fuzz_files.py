"""Bad files, fuzzed, across every subcommand that reads one: nesting thousands deep, FIFOs, devices and
folders where a file belongs, YAML alias bombs, damaged adapters and run configs, paths too long, with a
NUL byte or in read-only places, cache variables naming a file, and dataset text that is not text.

Every case runs ``robolora ...`` in a child process (its own session, a memory cap, killed when it
outlives its time, so a hang fails instead of blocking) and must end in one ``robolora: error:`` line
naming the file (and record and field, or key, where one is at fault), exit code 2, within seconds, with
no traceback and no file created or changed. The cases are generated from a seed, so a failure replays;
``pytest -k <class>`` runs one class (deep, special, alias, corrupt, paths, text).
"""

from __future__ import annotations

import functools
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from robolora.robot.generator import generate_records

SEED = 20261126
#: Each case must end within this many seconds on an idle machine (more in proportion on a loaded one)...
LIMIT_S = float(os.environ.get("ROBOLORA_FUZZ_LIMIT_S", "10"))
#: ...and is killed (and fails) after this many.
KILL_S = float(os.environ.get("ROBOLORA_FUZZ_KILL_S", "30"))
MEMORY_CAP = 4 << 30
RUNNER = "import sys; from robolora.cli import main; sys.exit(main(sys.argv[1:]))"


@dataclass
class Run:
    """What a case runs: the arguments after ``robolora``, what its one error line must name, and its
    environment and standard input."""

    args: list[str]
    names: list[str]
    env: dict[str, str] = field(default_factory=dict)
    stdin: str | None = None  # None: /dev/null; "open-pipe": a pipe nobody writes to; else a file path


@dataclass
class Case:
    name: str
    setup: Callable[[Path], Run]


@functools.cache
def _record_text() -> str:
    return json.dumps(generate_records(40, seed=7))


def records() -> list[dict]:
    return json.loads(_record_text())


def good_data(d: Path) -> Path:
    path = d / "good.json"
    if not path.exists():
        path.write_text(_record_text())
    return path


def guard(d: Path) -> list[str]:
    """Flags that stop a run that gets past its checks before it starts Ray (no such model)."""
    return ["--model-name", str(d / "no-model"), "--output-dir", str(d / "out"), "--max-steps", "1"]


def model_guard(d: Path) -> list[str]:
    """Flags for runs that must get past the model checks (a model of config.json only, which passes
    them) and still stop before Ray: the default rank 32 differs from the adapters' 8."""
    model = d / "config-only-model"
    model.mkdir(exist_ok=True)
    config = {"model_type": "llama", "vocab_size": 128, "hidden_size": 64, "num_hidden_layers": 2}
    config |= {"num_attention_heads": 4, "intermediate_size": 128, "tie_word_embeddings": True}
    (model / "config.json").write_text(json.dumps(config))
    return ["--model-name", str(model), "--output-dir", str(d / "out"), "--max-steps", "1"]


ADAPTER_CONFIG = {
    "peft_type": "LORA",
    "r": 8,
    "lora_alpha": 16,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "base_model_name_or_path": "NO-MODEL",
}


def safetensors_bytes(header: dict | None = None) -> bytes:
    raw = json.dumps(header if header is not None else {"__metadata__": {"format": "pt"}}).encode()
    return len(raw).to_bytes(8, "little") + raw


def adapter(d: Path, name: str = "run") -> Path:
    """A run folder with an adapter that passes every check but names a base model that does not exist."""
    run = d / name
    run.mkdir(exist_ok=True)
    config = {**ADAPTER_CONFIG, "base_model_name_or_path": str(d / "no-model")}
    (run / "adapter_config.json").write_text(json.dumps(config))
    (run / "adapter_model.safetensors").write_bytes(safetensors_bytes())
    (run / "config.yaml").write_text(f"model_name: {d / 'no-model'}\nlora_r: 8\n")
    return run


# ----------------------------------------------------------------------------- who reads the file


def dataset_users(d: Path, f: Path) -> dict[str, list[str]]:
    return {
        "data-validate": ["data", "validate", str(f)],
        "data-stats": ["data", "stats", str(f)],
        "train-data-json": ["train", "--data-json", str(f), *guard(d)],
        "train-val-json": ["train", "--train-json", str(good_data(d)), "--val-json", str(f), *guard(d)],
        "eval-data-json": ["eval", "--lora-path", str(adapter(d)), "--data-json", str(f)],
    }


DATASET_USERS = ("data-validate", "data-stats", "train-data-json", "train-val-json", "eval-data-json")


def config_users(d: Path, f: Path) -> dict[str, tuple[list[str], str]]:
    """Each reader of a config-like file: (arguments, the flag its message names)."""
    sweep, pipeline = d / "sweep.yaml", d / "pipeline.yaml"
    sweep.write_text(f"output_dir: {d / 'sweep-out'}\nbase: {f}\nvariants:\n  - {{name: a}}\n")
    pipeline.write_text(f"output_dir: {d / 'pipe-out'}\nbase: {f}\nstages:\n  - {{name: a}}\n")
    return {
        "config": (["config", "--config", str(f)], "--config"),
        "train": (["train", "--config", str(f), *guard(d)], "--config"),
        "plan": (["plan", "--config", str(f)], "--config"),
        "sweep": (["sweep", "--config", str(f), "--dry-run"], ""),
        "pipeline": (["pipeline", "--config", str(f)], ""),
        "sweep-base": (["sweep", "--config", str(sweep), "--dry-run"], "base"),
        "pipeline-base": (["pipeline", "--config", str(pipeline)], "base"),
    }


CONFIG_USERS = ("config", "train", "plan", "sweep", "pipeline", "sweep-base", "pipeline-base")


def adapter_users(d: Path, run: Path) -> dict[str, tuple[list[str], str]]:
    return {
        "eval": (["eval", "--lora-path", str(run), "--data-json", str(good_data(d))], "--lora-path"),
        "demo": (["demo", "--lora-path", str(run), "--command", "stop"], "--lora-path"),
        "export": (["export", "--lora-path", str(run), "--output", str(d / "merged")], "--lora-path"),
        "train-resume": (["train", "--data-json", str(good_data(d)), "--resume-from", str(run), *model_guard(d)], ""),
    }


ADAPTER_USERS = ("eval", "demo", "export", "train-resume")


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- nesting thousands deep


def deep_json(depth: int, shape: str) -> str:
    if shape == "lists":
        return "[" * depth + "]" * depth
    if shape == "objects":
        return '{"a": ' * depth + "1" + "}" * depth
    return '[{"a": ' * (depth // 2) + "1" + "}]" * (depth // 2)


def deep_yaml(depth: int, shape: str) -> str:
    if shape == "flow":
        return "a: " + "[" * depth + "]" * depth + "\n"
    if shape == "block":
        return "a:\n  " + "- " * depth + "x\n"
    return "a: " + "{b: " * depth + "1" + "}" * depth + "\n"


DEPTHS = (65, 100, 999, 1500, 5000, 50_000, 200_000)


def deep_cases(rng: random.Random) -> list[Case]:
    cases = []
    for user in DATASET_USERS:
        for where in ("whole", "in-record", "jsonl-line"):
            depth, shape = rng.choice(DEPTHS), rng.choice(("lists", "objects", "mixed"))

            def setup(d: Path, user=user, where=where, depth=depth, shape=shape) -> Run:
                rs = records()
                if where == "whole":
                    f = write(d / "deep.json", deep_json(depth, shape))
                elif where == "in-record":
                    rs[5]["input"] = "@@"
                    f = write(d / "deep.json", json.dumps(rs).replace('"@@"', deep_json(depth, shape)))
                else:
                    lines = [json.dumps(r) for r in rs]
                    lines[7] = deep_json(depth, shape)
                    f = write(d / "deep.jsonl", "\n".join(lines))
                return Run(dataset_users(d, f)[user], [f.name, "deep"])

            cases.append(Case(f"deep-{user}-{where}-{shape}-{depth}", setup))
    for user in CONFIG_USERS:
        for suffix in (".json", ".yaml"):
            depth = rng.choice(DEPTHS[:-1])  # the file stays under the 1 MiB a config may have
            shape = rng.choice(("lists", "objects", "mixed") if suffix == ".json" else ("flow", "block", "mapping"))

            def setup(d: Path, user=user, suffix=suffix, depth=depth, shape=shape) -> Run:
                text = '{"lora_r": ' + deep_json(depth, shape) + "}" if suffix == ".json" else deep_yaml(depth, shape)
                f = write(d / f"deep{suffix}", text)
                args, flag = config_users(d, f)[user]
                return Run(args, [f.name, "deep", flag])

            cases.append(Case(f"deep-{user}-{suffix[1:]}-{shape}-{depth}", setup))
    for user in ADAPTER_USERS:
        for target in ("adapter_config.json", "config.yaml"):
            if target == "config.yaml" and user == "train-resume":
                continue
            depth = rng.choice(DEPTHS)

            def setup(d: Path, user=user, target=target, depth=depth) -> Run:
                run = adapter(d)
                if target == "config.yaml":
                    write(run / target, deep_yaml(depth, "flow"))
                else:
                    write(run / target, '{"r": 8, "x": ' + deep_json(depth, "lists") + "}")
                args, flag = adapter_users(d, run)[user]
                return Run(args, [target, "deep", flag])

            cases.append(Case(f"deep-{user}-{target}-{depth}", setup))
    return cases


# ----------------------------------------------------------------------------- FIFOs, devices, folders


def special_file(d: Path, kind: str, name: str) -> tuple[Path, str | None, str]:
    """(the path to give, the case's stdin, what the message must say about it)."""
    if kind == "fifo":
        path = d / name
        os.mkfifo(path)
        return path, None, "pipe"
    if kind == "symlink-to-fifo":
        os.mkfifo(d / "a-fifo")
        (d / name).symlink_to(d / "a-fifo")
        return d / name, None, "pipe"
    if kind == "directory":
        (d / name).mkdir()
        return d / name, None, "directory"
    if kind == "dev-stdin":
        return Path("/dev/stdin"), "open-pipe", "pipe"
    if kind == "symlink-to-dev-zero":
        (d / name).symlink_to("/dev/zero")
        return d / name, None, "device"
    return Path(f"/dev/{kind.removeprefix('dev-')}"), None, "device"


SPECIAL_KINDS = ("fifo", "symlink-to-fifo", "directory", "dev-stdin", "dev-zero", "dev-urandom", "symlink-to-dev-zero")


@functools.cache
def listening_port() -> int:
    """A local port that accepts connections (and never answers): the job server's address in token cases."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    listening_port.server = server  # kept open for the session
    return server.getsockname()[1]


def special_cases(rng: random.Random) -> list[Case]:
    cases = []
    for user in DATASET_USERS:
        for kind in rng.sample(SPECIAL_KINDS, 3):

            def setup(d: Path, user=user, kind=kind) -> Run:
                f, stdin, says = special_file(d, kind, "data.json")
                return Run(dataset_users(d, f)[user], [f.name, says], stdin=stdin)

            cases.append(Case(f"special-{user}-{kind}", setup))
    for user in CONFIG_USERS:
        for kind in rng.sample(SPECIAL_KINDS, 2):

            def setup(d: Path, user=user, kind=kind) -> Run:
                f, stdin, says = special_file(d, kind, "cfg.yaml")
                args, flag = config_users(d, f)[user]
                return Run(args, [f.name, says, flag], stdin=stdin)

            cases.append(Case(f"special-{user}-{kind}", setup))
    for user in ADAPTER_USERS:
        for target in ("adapter_config.json", "adapter_model.safetensors", "config.yaml"):
            if target == "config.yaml" and user == "train-resume":
                continue
            kind = rng.choice(("fifo", "symlink-to-fifo", "directory", "symlink-to-dev-zero"))

            def setup(d: Path, user=user, target=target, kind=kind) -> Run:
                run = adapter(d)
                (run / target).unlink()
                special_file(run, kind, target)
                args, flag = adapter_users(d, run)[user]
                return Run(args, [target, flag])

            cases.append(Case(f"special-{user}-{target}-{kind}", setup))
    for command in (["jobs", "list"], ["jobs", "status", "raysubmit_1"]):
        for kind in rng.sample(SPECIAL_KINDS, 3):

            def setup(d: Path, command=command, kind=kind) -> Run:
                f, stdin, says = special_file(d, kind, "token")
                args = [*command, "--address", f"http://127.0.0.1:{listening_port()}"]
                return Run(
                    args, ["RAY_AUTH_TOKEN_PATH", f.name, says], env={"RAY_AUTH_TOKEN_PATH": str(f)}, stdin=stdin
                )

            cases.append(Case(f"special-{command[1]}-token-{kind}", setup))

    def huge_dataset(d: Path) -> Run:
        f = d / "huge.json"
        with open(f, "wb") as fh:
            fh.truncate((1 << 30) + 1)  # sparse: no disk used
        return Run(["data", "validate", str(f)], [f.name, "limit"])

    def huge_config(d: Path) -> Run:
        f = write(d / "huge.yaml", "lora_r: 8\n" + "#" * (1 << 20) + "\n")
        return Run(["config", "--config", str(f)], [f.name, "limit", "--config"])

    def robot_stdin(kind: str) -> Callable[[Path], Run]:
        return lambda d: Run(["robot", "check", "-"], ["stdin"], stdin=special_file(d, kind, "code")[1] or "/dev/zero")

    cases += [Case("special-huge-dataset", huge_dataset), Case("special-huge-config", huge_config)]
    cases += [Case("special-robot-check-dev-zero", robot_stdin("dev-zero"))]
    return cases


# ----------------------------------------------------------------------------- YAML alias bombs


def alias_bomb(levels: int, fan: int, key: str) -> str:
    lines = ["l0: &l0 [" + ", ".join(["lol"] * fan) + "]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * fan) + "]")
    return "\n".join(lines) + f"\n{key}: *l{levels - 1}\n"


def alias_cases(rng: random.Random) -> list[Case]:
    cases = []
    kinds = ["bomb", "bomb", "bomb", "self", "self-deep"]
    for user in CONFIG_USERS:
        for kind in rng.sample(kinds, 3):
            levels, fan = rng.randint(7, 10), rng.randint(7, 10)
            key = rng.choice(("lora_r", "learning_rate", "model_name", "lora_target_modules", "data_json"))

            def setup(d: Path, user=user, kind=kind, levels=levels, fan=fan, key=key) -> Run:
                if kind == "bomb":
                    text = alias_bomb(levels, fan, key)
                elif kind == "self":
                    text = f"{key}: &a [1, *a]\n"
                else:
                    text = f"{key}: &a {{b: [{{c: *a}}]}}\n"
                f = write(d / "bomb.yaml", text)
                args, flag = config_users(d, f)[user]
                return Run(args, [f.name, "alias", flag])

            cases.append(Case(f"alias-{user}-{kind}-{key}-{fan}^{levels}", setup))
    for user in ("eval", "demo", "export"):
        for kind in ("bomb", "self"):

            def setup(d: Path, user=user, kind=kind) -> Run:
                run = adapter(d)
                text = alias_bomb(9, 9, "model_name") if kind == "bomb" else "model_name: &a [*a]\n"
                write(run / "config.yaml", text)
                args, flag = adapter_users(d, run)[user]
                return Run(args, ["config.yaml", "alias", flag])

            cases.append(Case(f"alias-{user}-run-config-{kind}", setup))
    return cases


# ----------------------------------------------------------------------------- damaged adapters and run configs

CORRUPT_ADAPTER_CONFIGS = {
    "not-json": "{r: 8, target_modules",
    "binary": b"\x00\xff\xfe\x01PK\x03\x04",
    "list": "[8, 16]",
    "number": "8",
    "string": '"LORA"',
    "null": "null",
    "empty": "",
    "missing-r": {k: v for k, v in ADAPTER_CONFIG.items() if k != "r"},
    "r-is-text": {**ADAPTER_CONFIG, "r": "8"},
    "r-is-zero": {**ADAPTER_CONFIG, "r": 0},
    "r-is-bool": {**ADAPTER_CONFIG, "r": True},
    "missing-target-modules": {k: v for k, v in ADAPTER_CONFIG.items() if k != "target_modules"},
    "target-modules-number": {**ADAPTER_CONFIG, "target_modules": 5},
    "target-modules-empty": {**ADAPTER_CONFIG, "target_modules": []},
    "peft-type-prefix": {**ADAPTER_CONFIG, "peft_type": "PREFIX_TUNING"},
    "base-model-number": {**ADAPTER_CONFIG, "base_model_name_or_path": 5},
}
#: The key a damaged adapter_config.json's message must name.
CORRUPT_KEYS = {
    "missing-r": "r",
    "r-is-text": "r",
    "r-is-zero": "r",
    "r-is-bool": "r",
    "missing-target-modules": "target_modules",
    "target-modules-number": "target_modules",
    "target-modules-empty": "target_modules",
    "peft-type-prefix": "peft_type",
    "base-model-number": "base_model_name_or_path",
}
CORRUPT_RUN_CONFIGS = {
    "not-yaml": "model_name: [tiny\nlora_r: 8\n",
    "list": "- model_name: tiny-llama\n",
    "number": "42\n",
    "missing-model-name": "lora_r: 8\n",
    "model-name-number": "model_name: 123\n",
    "model-name-empty": "model_name: ''\n",
    "model-name-list": "model_name: [a, b]\n",
    "tab-indent": "model_name: x\n\tlora_r: 8\n",
}
CORRUPT_WEIGHTS = {
    "empty": b"",
    "garbage": b"not a safetensors file at all",
    "header-too-long": (1 << 40).to_bytes(8, "little") + b"{}",
    "header-not-json": (10).to_bytes(8, "little") + b"0123456789",
}


def corrupt_cases(rng: random.Random) -> list[Case]:
    cases = []
    for variant, content in CORRUPT_ADAPTER_CONFIGS.items():
        for user in rng.sample(ADAPTER_USERS, 2):

            def setup(d: Path, user=user, content=content, variant=variant) -> Run:
                run = adapter(d)
                (run / "config.yaml").unlink()  # the base model comes from adapter_config.json
                value = content if isinstance(content, (str, bytes)) else json.dumps(content)
                write(run / "adapter_config.json", value)
                args, flag = adapter_users(d, run)[user]
                return Run(
                    args, ["adapter_config.json", flag, *([CORRUPT_KEYS[variant]] if variant in CORRUPT_KEYS else [])]
                )

            cases.append(Case(f"corrupt-adapter-config-{variant}-{user}", setup))
    for variant, content in CORRUPT_RUN_CONFIGS.items():
        for user in rng.sample(("eval", "demo", "export"), 2):

            def setup(d: Path, user=user, content=content, variant=variant) -> Run:
                run = adapter(d)
                write(run / "config.yaml", content)
                args, flag = adapter_users(d, run)[user]
                return Run(args, ["config.yaml", flag, *(["model_name"] if "model-name" in variant else [])])

            cases.append(Case(f"corrupt-run-config-{variant}-{user}", setup))
    for variant, content in CORRUPT_WEIGHTS.items():
        user = rng.choice(ADAPTER_USERS)

        def setup(d: Path, user=user, content=content) -> Run:
            run = adapter(d)
            write(run / "adapter_model.safetensors", content)
            args, flag = adapter_users(d, run)[user]
            return Run(args, ["adapter_model.safetensors", flag])

        cases.append(Case(f"corrupt-weights-{variant}-{user}", setup))

    def checkpoint_of_damaged_run(d: Path) -> Run:
        run = adapter(d)
        ckpt = adapter(run, "checkpoint-5")
        (ckpt / "config.yaml").unlink()
        write(run / "config.yaml", "- not a mapping\n")
        return Run(["eval", "--lora-path", str(ckpt), "--data-json", str(good_data(d))], ["config.yaml", "--lora-path"])

    cases.append(Case("corrupt-checkpoint-of-a-damaged-run", checkpoint_of_damaged_run))
    return cases


# ----------------------------------------------------------------------------- paths


def path_cases(rng: random.Random) -> list[Case]:
    cases = []
    long_part = "n" * rng.randint(256, 400)
    long_path = "/".join(["deep"] * 1100)  # over PATH_MAX, every part short

    def long_input(kind: str) -> Callable[[Path], Path]:
        return lambda d: d / long_part / "f.json" if kind == "long-name" else d / long_path / "f.json"

    for kind in ("long-name", "long-path"):
        for user in rng.sample(DATASET_USERS, 3):

            def setup(d: Path, user=user, kind=kind) -> Run:
                return Run(dataset_users(d, long_input(kind)(d))[user], ["too long"])

            cases.append(Case(f"path-{kind}-dataset-{user}", setup))
        for user in rng.sample(CONFIG_USERS[:5], 3):

            def setup(d: Path, user=user, kind=kind) -> Run:
                args, flag = config_users(d, long_input(kind)(d))[user]
                return Run(args, ["too long", flag])

            cases.append(Case(f"path-{kind}-config-{user}", setup))
        for user in rng.sample(ADAPTER_USERS, 2):

            def setup(d: Path, user=user, kind=kind) -> Run:
                args, flag = adapter_users(d, long_input(kind)(d).parent)[user]
                return Run(args, ["too long" if kind == "long-path" else "adapter", flag])

            cases.append(Case(f"path-{kind}-adapter-{user}", setup))

        def token(d: Path, kind=kind) -> Run:
            f = long_input(kind)(d)
            args = ["jobs", "list", "--address", f"http://127.0.0.1:{listening_port()}"]
            return Run(args, ["RAY_AUTH_TOKEN_PATH", "too long"], env={"RAY_AUTH_TOKEN_PATH": str(f)})

        cases.append(Case(f"path-{kind}-token", token))
    # A NUL byte reaches a path only from a file: config keys, sweep and pipeline settings.
    for key in ("data_json", "train_json", "output_dir", "resume_from", "model_name", "storage_path"):
        for user in rng.sample(CONFIG_USERS, 2):

            def setup(d: Path, user=user, key=key) -> Run:
                doc = {"data_json": str(good_data(d)), "model_name": str(d / "no-model"), key: str(d / "a\0b.json")}
                f = write(d / "nul.json", json.dumps(doc))
                args, flag = config_users(d, f)[user]
                return Run(args, ["nul.json", key, "U+0000", flag])

            cases.append(Case(f"path-nul-{key}-{user}", setup))
    for flag in ("--json-out", "--predictions-out"):
        for where in ("in-proc", "in-sys", "a-directory", "under-a-file", "long-name"):

            def setup(d: Path, flag=flag, where=where) -> Run:
                (d / "taken.txt").write_text("keep me")
                target = {
                    "in-proc": "/proc/robolora-fuzz/scores.json",
                    "in-sys": "/sys/robolora-fuzz.json",
                    "a-directory": str(d),
                    "under-a-file": str(d / "taken.txt" / "scores.json"),
                    "long-name": str(d / (long_part + ".json")),
                }[where]
                args = ["eval", "--lora-path", str(adapter(d)), "--data-json", str(good_data(d)), flag, target]
                return Run(args, [flag])

            cases.append(Case(f"path-eval{flag[1:]}-{where}", setup))
    for variable in ("ROBOLORA_CACHE", "HF_HOME"):
        for problem in ("a-file", "unwritable") if variable == "ROBOLORA_CACHE" else ("a-file",):
            for command in ("model-prepare", "train"):

                def setup(d: Path, variable=variable, problem=problem, command=command) -> Run:
                    (d / "cache-file").write_text("not a folder")
                    value = str(d / "cache-file") if problem == "a-file" else "/proc/robolora-fuzz-cache"
                    env = {variable: value}
                    if variable != "ROBOLORA_CACHE":
                        env["ROBOLORA_CACHE"] = str(d / "unused-cache")
                    args = ["model", "prepare", "tiny-llama"]
                    if command == "train":
                        args = ["train", "--data-json", str(good_data(d)), *guard(d)[2:], "--model-name", "tiny-llama"]
                    return Run(args, [variable], env=env)

                cases.append(Case(f"path-{variable}-{problem}-{command}", setup))
    return cases


# ----------------------------------------------------------------------------- text that is not text

NOT_TEXT = {
    "nul": "\u0000",
    "controls": "\u0001\u0002\u0003",
    "escape": "\u001b[2J",
    "delete": "\u007f\u007f",
    "c1": "\u0085\u0090",
    "zero-width": "\u200b\u200b",
    "bom-only": "\ufeff",
    "lone-high": "\ud800",
    "lone-low": "go \udfff",
    "reversed-pair": "\udc00\ud800",
}


def text_cases(rng: random.Random) -> list[Case]:
    cases = []
    for variant, value in NOT_TEXT.items():
        for field_name in ("input", "output", "category"):
            user = rng.choice(("data-validate", "data-validate", "data-stats", "train-data-json", "eval-data-json"))
            index = rng.randrange(40)
            jsonl = rng.random() < 0.3

            def setup(
                d: Path, field_name=field_name, value=value, user=user, index=index, jsonl=jsonl, variant=variant
            ) -> Run:
                rs = records()
                rs[index][field_name] = value if field_name == "category" else rs[index][field_name] + value
                if variant in ("zero-width", "bom-only"):
                    rs[index][field_name] = value
                text = "\n".join(json.dumps(r) for r in rs) if jsonl else json.dumps(rs)  # \u escapes
                f = write(d / ("data.jsonl" if jsonl else "data.json"), text)
                return Run(dataset_users(d, f)[user], [f.name, f"record {index}", f"field '{field_name}'"])

            cases.append(Case(f"text-{variant}-{field_name}-{user}{'-jsonl' if jsonl else ''}", setup))
    return cases


#: ``robolora train`` cases kept per class: each pays about 5 s of importing Ray Train and torch before
#: its checks, so a seeded few stand for the rest (the same files reach the same readers).
TRAIN_CASES_PER_CLASS = 2


def all_cases() -> list[Case]:
    rng, pick = random.Random(SEED), random.Random(SEED + 1)
    cases = []
    for make in (deep_cases, special_cases, alias_cases, corrupt_cases, path_cases, text_cases):
        made = make(rng)
        train = [c for c in made if "train" in c.name]
        kept = {c.name for c in pick.sample(train, min(TRAIN_CASES_PER_CLASS, len(train)))}
        cases += [c for c in made if "train" not in c.name or c.name in kept]
    return cases


CASES = all_cases()


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every file and folder under root with its kind, size and modification time."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def _limits() -> None:
    os.setsid()  # its own process group: killed whole when it hangs
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def run_robolora(run: Run, cwd: Path) -> tuple[int | None, str, float]:
    """(exit code, or None when it had to be killed; stderr; seconds)."""
    env = {**os.environ, "ROBOLORA_CACHE": str(cwd.parent / f"{cwd.name}-cache"), **run.env}
    env.pop("RAY_ADDRESS", None)
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE"):
        if name not in run.env:
            env.pop(name, None)
    pipe_w = None
    if run.stdin == "open-pipe":
        stdin, pipe_w = os.pipe()
    else:
        stdin = os.open(run.stdin or os.devnull, os.O_RDONLY)
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", RUNNER, *run.args],
        cwd=cwd,
        env=env,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_limits,
    )
    os.close(stdin)
    try:
        _, err = proc.communicate(timeout=KILL_S)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        code = None
    finally:
        if pipe_w is not None:
            os.close(pipe_w)
    return code, err.decode("utf-8", "replace"), time.monotonic() - start


def test_cases_cover_every_class():
    assert len({c.name for c in CASES}) == len(CASES)
    counts = {k: sum(c.name.startswith(k + "-") for c in CASES) for k in ("deep", "special", "alias", "corrupt")}
    counts |= {k: sum(c.name.startswith(k + "-") for c in CASES) for k in ("path", "text")}
    assert all(n >= 10 for n in counts.values()), counts
    assert len(CASES) >= 200


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_file_gets_one_clear_error_and_changes_nothing(case, tmp_path):
    work = tmp_path / "case"
    work.mkdir()
    run = case.setup(work)
    before = snapshot(work)
    busy = max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))  # other work slows every start-up
    code, err, elapsed = run_robolora(run, work)
    assert code is not None, f"{case.name}: still running after {KILL_S:.0f} s; killed"
    lines = err.splitlines()
    assert "Traceback" not in err, err[-1500:]
    assert code == 2, f"{case.name}: exit {code}: {err[-800:]}"
    assert len(lines) == 1 and lines[0].startswith("robolora: error: "), err[-1500:]
    assert len(lines[0]) < 1100, "an error line echoes a huge value"
    missing = [name for name in run.names if name and name.lower() not in lines[0].lower()]
    assert not missing, f"{case.name}: the message does not name {missing}: {lines[0][:600]}"
    busy = max(busy, os.getloadavg()[0] / (os.cpu_count() or 1))
    # `robolora train` imports Ray Train and torch (about 3 s on an idle machine) before its checks.
    limit = LIMIT_S * (2 if run.args[0] == "train" else 1) * busy
    assert elapsed < limit, f"{case.name}: took {elapsed:.1f} s (load {busy:.1f} per core)"
    assert snapshot(work) == before, f"{case.name}: files were created or changed"
    for outside in (Path("/proc/robolora-fuzz"), Path("/sys/robolora-fuzz.json"), Path("/proc/robolora-fuzz-cache")):
        assert not outside.exists()
