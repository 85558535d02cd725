"""What the data, model, robot, train, config, pipeline, sweep, export and jobs sub-commands do, once
``robolora.cli`` has parsed their flags: each checks what the parser cannot, calls the library and prints.

The handlers import what they use inside themselves, so that ``robolora --help`` loads no model library.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from robolora.errors import UserError


def _print_json_or(data: dict, as_json: bool, text: Callable[[dict], str]) -> None:
    print(json.dumps(data, indent=2) if as_json else text(data))


# ----------------------------------------------------------------------------- data

#: The most records `robolora data generate` writes.
MAX_EXAMPLES = 1_000_000


def cmd_data_generate(args: argparse.Namespace) -> int:
    from robolora.robot.generator import generate_records, write_dataset

    out = Path(args.output)
    if out.exists() and not args.force:
        raise UserError(f"--output: {out} already exists; choose another path or pass --force to replace it")
    if args.num_examples < 1:
        raise UserError(f"--num-examples: must be a positive integer, got {args.num_examples}")
    if args.num_examples > MAX_EXAMPLES:
        raise UserError(
            f"--num-examples: must be at most {MAX_EXAMPLES} (an integer in 1..{MAX_EXAMPLES}), got {args.num_examples}"
        )
    if out.suffix not in (".json", ".jsonl"):
        raise UserError(f"--output: {out} must end in .json (a JSON list) or .jsonl (one record per line)")
    if not out.parent.is_dir():
        raise UserError(f"--output: directory {out.parent} does not exist; create it first")
    records = generate_records(args.num_examples, seed=args.seed)
    write_dataset(records, out)
    print(f"wrote {len(records)} records to {out} (seed {args.seed})")
    return 0


def _stats_text(stats: dict) -> str:
    lines = [f"{stats['file']}: {stats['records']} records"]
    width = max(len(c) for c in stats["categories"])
    lines += [f"  {cat:<{width}}  {n:>6}  {n / stats['records']:6.1%}" for cat, n in stats["categories"].items()]
    for key in ("input_chars", "output_chars", "output_lines", "tokens"):
        if key in stats:
            v = stats[key]
            lines.append(f"  {key:<13} min {v['min']:>5}  mean {v['mean']:>7}  max {v['max']:>5}")
    if "truncated" in stats:
        lines.append(
            f"  at max_length {stats['max_length']}: {stats['truncated']} prompts would be truncated, "
            f"{stats['dropped']} records dropped"
        )
    return "\n".join(lines)


def cmd_data_validate(args: argparse.Namespace) -> int:
    from robolora.data import dataset_stats, load_records

    for path in args.files:
        records = load_records(path, check_api=args.check_api)
        cats = ", ".join(f"{c} {n}" for c, n in dataset_stats(records)["categories"].items())
        print(f"{path}: OK, {len(records)} records ({cats})")
    return 0


def cmd_data_stats(args: argparse.Namespace) -> int:
    from robolora.data import dataset_stats, lengths_of, load_records, tokenize_records

    records = load_records(args.file, check_api=args.check_api)
    stats = {"file": args.file, **dataset_stats(records)}
    if args.model_name:
        from robolora.models import load_tokenizer

        tokenizer = load_tokenizer(args.model_name)
        dataset, report = tokenize_records(records, tokenizer, args.max_length)
        stats.update(
            tokens=lengths_of(dataset["length"]),
            max_length=args.max_length,
            truncated=report.truncated,
            dropped=report.dropped,
        )
    _print_json_or(stats, args.json, _stats_text)
    return 0


# ----------------------------------------------------------------------------- model, robot, config


def cmd_model_prepare(args: argparse.Namespace) -> int:
    from robolora.models import resolve_model

    print(resolve_model(args.name))
    return 0


def cmd_model_list(args: argparse.Namespace) -> int:
    from robolora.models import ALIASES, cache_dir

    for name, alias in ALIASES.items():
        ready = (cache_dir() / "models" / name / "config.json").is_file()
        print(f"{name:<14} {'cached ' if ready else 'not yet'}  {alias.description}")
    return 0


#: The most robot code `robolora robot check` reads: bytes (UTF-8) and lines.
MAX_CODE_BYTES = 64 * 1024
MAX_CODE_LINES = 1000
#: The most problems it prints, and the longest problem line.
MAX_CODE_ERRORS = 20
MAX_OUTPUT_LINE = 500


def robot_code(text: str | bytes, source: str) -> str:
    """The robot code to check, from an argument (``str``) or stdin (``bytes``), within the size limits.

    >>> robot_code(b"robot.stop()", "stdin")
    'robot.stop()'
    >>> robot_code("robot.stop()\\udcff", "CODE")
    Traceback (most recent call last):
    ...
    robolora.errors.UserError: CODE: not UTF-8 text (an undecodable byte at character 13); give robot code as UTF-8
    """
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_CODE_BYTES:
        raise UserError(
            f"{source}: more than {MAX_CODE_BYTES:,} bytes (64 KiB) of robot code, the most that is checked; "
            "check a shorter program"
        )
    try:
        code = text.decode("utf-8") if isinstance(text, bytes) else text
        code.encode("utf-8")  # a lone surrogate: bytes the argument's decoding could not map
    except UnicodeError as e:
        where = f"byte offset {e.start}" if isinstance(text, bytes) else f"character {e.start + 1}"
        raise UserError(
            f"{source}: not UTF-8 text (an undecodable byte at {where}); give robot code as UTF-8"
        ) from None
    lines = len(code.splitlines())
    if lines > MAX_CODE_LINES:
        raise UserError(
            f"{source}: {lines:,} lines of robot code; at most {MAX_CODE_LINES:,} lines are checked, "
            "check a shorter program"
        )
    return code


def _clipped(line: str) -> str:
    return line if len(line) <= MAX_OUTPUT_LINE else f"{line[: MAX_OUTPUT_LINE - 30]}... ({len(line):,} characters)"


def cmd_robot_check(args: argparse.Namespace) -> int:
    from robolora.robot.checker import canonicalize, check

    if args.code == "-":
        stream = getattr(sys.stdin, "buffer", sys.stdin)  # bytes, decoded here: one error for invalid UTF-8
        code = robot_code(stream.read(MAX_CODE_BYTES + 1), "stdin")
    else:
        code = robot_code(args.code, "CODE")
    result = check(code)
    if result.api_valid:
        print("valid robot code; canonical form:")
        print(canonicalize(code))  # as long as the code, which is limited above
        return 0
    level = "api error" if result.syntax_ok else "syntax error"
    for err in result.errors[:MAX_CODE_ERRORS]:
        print(_clipped(f"{level}: {err}"), file=sys.stderr)
    if len(result.errors) > MAX_CODE_ERRORS:
        print(f"{level}: ... and {len(result.errors) - MAX_CODE_ERRORS} more", file=sys.stderr)
    return 1


def cmd_train(args: argparse.Namespace) -> int:
    from robolora.flags import config_from_namespace
    from robolora.launcher import command_start, run_training

    run_training(config_from_namespace(args), started_at=command_start())
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from robolora.pipeline import run_pipeline

    run_pipeline(args.config, dry_run=args.dry_run)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from robolora.sweep import run_sweep

    run_sweep(args.config, max_concurrent=args.max_concurrent, dry_run=args.dry_run)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from robolora.export import export_merged

    export_merged(args.lora_path, args.output)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from robolora.flags import config_from_namespace

    print(yaml.safe_dump(config_from_namespace(args).to_dict(), sort_keys=False), end="")
    return 0


# ----------------------------------------------------------------------------- Ray Jobs


def cmd_jobs(args: argparse.Namespace) -> int:
    from robolora import jobs

    if args.jobs_command == "list":
        rows = jobs.list_jobs(args.address, request_timeout_s=args.timeout)
        for r in rows:
            print(f"{r['job_id']:<28} {r['status']:<10} {r['run_time']:>8}  {r['entrypoint']}")
        if not rows:
            print("no jobs submitted to this cluster yet")
        return 0
    if args.jobs_command == "status":
        info = jobs.job_status(args.job_id, args.address, request_timeout_s=args.timeout)
        print(f"{info['job_id']}: {info['status']}" + (f" after {info['run_time']}" if info["run_time"] else ""))
        print(f"  entrypoint: {info['entrypoint']}")
        if info["message"]:
            print(f"  message: {info['message']}")
        return 0
    if args.jobs_command == "logs":
        return jobs.job_logs(args.job_id, args.address, follow_logs=args.follow, request_timeout_s=args.timeout)
    status = jobs.stop_job(args.job_id, args.address, request_timeout_s=args.timeout)
    print(f"{args.job_id}: {status}")
    return 0
