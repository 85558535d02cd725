"""The ``robolora`` command.

    robolora data generate --num-examples 3000 --seed 0 --output data/robot_dataset.json
    robolora data validate data/robot_dataset.json
    robolora data stats data/robot_dataset.json --model-name smollm2-135m
    robolora model prepare smollm2-135m
    robolora robot check 'robot.move_forward(distance=3.0, speed=1.0)'
    robolora config --config examples/smollm2-135m.yaml --lora-r 64
    robolora train --config examples/smollm2-135m.yaml
    robolora plan --model 13B --gpus 8x40GB
    robolora pipeline --config curriculum.yaml
    robolora sweep --config examples/sweeps/smollm2-ensemble.yaml --max-concurrent 2
    robolora submit --address http://HEAD:8265 -- train --config examples/codellama-7b.yaml --output-dir /mnt/shared/r1
    robolora jobs status raysubmit_XXXX --address http://HEAD:8265

Every error a user can fix is printed as ``robolora: error: ...`` with a non-zero exit, no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from robolora.config import NUMBER_BOUNDS, Parser
from robolora.data import FEW_SHOT_EXAMPLES
from robolora.errors import UserError


def _print_json_or(data: dict, as_json: bool, text: Callable[[dict], str]) -> None:
    print(json.dumps(data, indent=2) if as_json else text(data))


def int_in(low: int, high: int, note: str = "") -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high``; anything else is refused naming the range.

    >>> int_in(1, 4096)("32"), int_in(0, 10, "0: all")("0")
    (32, 0)
    >>> int_in(1, 4096)("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be an integer in 1..4096, got 0
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:  # not a number, or more digits than Python converts
            shown = text if len(text) <= 60 else f"{text[:40]}... ({len(text):,} characters)"
            raise argparse.ArgumentTypeError(f"invalid int value: {shown!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"must be an integer in {low}..{high}{f' ({note})' if note else ''}, got {value}"
            )
        return value

    parse.__name__ = "int"
    return parse


#: Bounds of the flags of data generate, eval, demo and data stats (the training flags' are in NUMBER_BOUNDS).
SEED_MAX = NUMBER_BOUNDS["seed"].high
MAX_LENGTH = NUMBER_BOUNDS["max_length"]
MAX_EXAMPLES = 1_000_000
MAX_EVAL_RECORDS = 10_000_000
MAX_GENERATION_BATCH = 4096
MAX_NEW_TOKENS = 8192
MAX_JOBS_TIMEOUT_S = 3600


# ----------------------------------------------------------------------------- data


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
    from robolora.config import config_from_namespace
    from robolora.launcher import command_start, run_training

    run_training(config_from_namespace(args), started_at=command_start())
    return 0


def _lora_paths(args: argparse.Namespace) -> list[str]:
    """The --lora-path adapters, each checked (and its base model found, without --model-name) before
    any model loads: a damaged adapter is one error in a moment."""
    from robolora.models import adapter_base_model, adapter_dir

    paths = args.lora_path
    paths = [paths] if isinstance(paths, str) else list(paths or [])
    for path in paths:
        if not (getattr(args, "base_only", False) and args.model_name):  # else the adapters are not used
            adapter_base_model(adapter_dir(path))
    return paths


def _generators(args: argparse.Namespace) -> list:
    """The models to run: each --lora-path, and the base model with --base-only or --compare-base."""
    loras = _lora_paths(args)
    from robolora.infer import Generator

    gens = [] if args.base_only else [Generator.load(p) for p in loras]
    if args.base_only or getattr(args, "compare_base", False):
        from robolora.infer import base_model_of
        from robolora.models import adapter_dir

        name = args.model_name or (base_model_of(adapter_dir(loras[0])) if loras else None)
        gens.append(Generator.load(model_name=name, few_shot=args.few_shot))
    if not gens:
        raise UserError("--lora-path: give at least one adapter, or --base-only with --model-name")
    return gens


def _eval_data(args: argparse.Namespace) -> str:
    """--data-json, else the validation split the run saved beside its adapter."""
    if args.data_json:
        return args.data_json
    for lora in _lora_paths(args):
        for candidate in (Path(lora) / "val.jsonl", Path(lora).parent / "val.jsonl"):
            if candidate.is_file():
                return str(candidate)
    raise UserError("--data-json: give the records to evaluate on (a run's val.jsonl is used when present)")


def cmd_eval(args: argparse.Namespace) -> int:
    from robolora.data import load_records
    from robolora.evaluate import compare, compare_dict
    from robolora.fileio import atomic_write_text, check_new_file

    for flag, path in (("--json-out", args.json_out), ("--predictions-out", args.predictions_out)):
        if path:
            check_new_file(path, flag)
    data = _eval_data(args)
    records = load_records(data, check_api=False)[: args.limit or None]
    from robolora.infer import ensemble, score_generations

    loras = _lora_paths(args)
    if args.ensemble and len(loras) < 2:
        raise UserError("--ensemble: give at least two --lora-path adapters to vote")
    reports = {}
    members = []

    def report(name: str, generations: list) -> None:
        if name in reports:  # two adapters with the same folder name
            name = f"{name} #{sum(n.split(' #')[0] == name for n in reports) + 1}"
        out = Path(args.predictions_out) if args.predictions_out else None
        if out and (len(loras) > 1 or args.compare_base):
            out = out.with_name(f"{out.stem}.{len(reports) + 1}{out.suffix}")
        reports[name] = score_generations(records, generations, out)
        print(f"\n{name} on {data} ({len(records)} records{', constrained' if args.constrained else ''})")
        print(reports[name].table())
        if out:
            print(f"predictions: {out}")

    for gen in _generators(args):
        generations = gen.generate(
            [r["input"] for r in records],
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            constrained=args.constrained,
        )
        if gen.adapter:
            members.append(generations)
        report(gen.name, generations)
    if args.ensemble:
        report(f"ensemble of {len(members)} (vote)", ensemble(members))
    if len(reports) > 1:
        print("\n" + compare(reports))
    if args.json_out:
        atomic_write_text(args.json_out, json.dumps(compare_dict(reports), indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from robolora.robot.checker import check

    gens = _generators(args)
    from robolora.infer import ensemble

    if args.base_only:
        gens = gens[-1:]

    def answer(command: str) -> None:
        outs = [g.generate([command], constrained=args.constrained, max_new_tokens=args.max_new_tokens) for g in gens]
        (g,) = ensemble(outs) if len(outs) > 1 else outs[0]
        if len(outs) > 1:
            agree = sum(o[0].code.strip() == g.code.strip() for o in outs)
            print(f"# the vote of {len(outs)} adapters ({agree} wrote this program)")
        print(g.code or "(no code)")
        result = check(g.code)
        if result.api_valid:
            print("# valid robot code")
        else:
            print(f"# {'api error' if result.syntax_ok else 'syntax error'}: {'; '.join(result.errors[:3])}")

    if args.command:
        answer(args.command)
        return 0
    print(f"{', '.join(g.name for g in gens)}: type a robot command (empty line or Ctrl-D to quit)")
    while True:
        try:
            command = input("> ").strip()
        except EOFError:
            return 0
        if not command:
            return 0
        answer(command)


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
    from robolora.config import config_from_namespace

    print(yaml.safe_dump(config_from_namespace(args).to_dict(), sort_keys=False), end="")
    return 0


#: Seconds a hub reachability probe waits for a connection (name lookup included).
HUB_PROBE_TIMEOUT_S = 2.0


def _hub_unreachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """Why the Hugging Face hub cannot be reached from here, or None when a connection opens in time.

    Offline mode (``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``) answers at once; otherwise one TCP
    connection to the hub (``HF_ENDPOINT``), or to the HTTPS proxy the environment names, is tried
    in a thread, so that a slow name lookup cannot hold the command either.
    """
    import socket
    import urllib.parse
    import urllib.request

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE"):
            return f"{name} is set"
    endpoint = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)
    proxy = urllib.request.getproxies().get(endpoint.scheme or "https")
    if proxy and not urllib.request.proxy_bypass(host):
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = parts.hostname or host, parts.port or 8080
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as e:
            outcome.append(e.strerror or str(e) or type(e).__name__)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if outcome and outcome[0] is None:
        return None
    return f"{host}:{port}: {outcome[0] if outcome else f'no answer in {timeout:g} s'}"


def _check_plan_model(name: str) -> str | None:
    """Refuse at once a --model the planner could only size by a download that cannot happen.

    Sizes, CodeLlama names and aliases need nothing; a local path is read as it is. Anything that looks
    like a size but is not one (70B) is refused without the network; a hub name where the hub is
    unreachable and the name's config is not in the local hub cache (``transformers`` would retry the
    hub for half a minute before it failed). Returns the cached snapshot folder to read instead of
    the hub when the hub is unreachable but the cache holds the model's config, else None.
    """
    from robolora.errors import ConfigError
    from robolora.models import ALIASES
    from robolora.sizing import SIZES, known_model, looks_like_size

    if known_model(name) or name in ALIASES:
        return None
    try:
        if Path(name).expanduser().exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
            return None  # a local path: the model check reads it, or says what is missing
    except OSError:
        return None
    known = (
        f"use a size ({', '.join(SIZES)}), an alias ({', '.join(ALIASES)}), a CodeLlama hub name such as "
        "codellama/CodeLlama-7b-Python-hf, a local model directory, or a hub name on a machine that reaches the hub"
    )
    shown = name if len(name) <= 80 else name[:80] + "..."
    if looks_like_size(name):
        raise ConfigError(f"--model: {shown!r} is not a size the planner knows; {known}")
    why = _hub_unreachable()
    if why is None:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
    except Exception:  # not a valid hub name either
        cached = None
    if not isinstance(cached, str):
        raise ConfigError(f"--model: {shown!r} is not in the local hub cache and cannot be fetched ({why}); {known}")
    return str(Path(cached).parent)


def cmd_plan(args: argparse.Namespace) -> int:
    from robolora.config import config_from_namespace
    from robolora.errors import ConfigError
    from robolora.launcher import local_gpus, model_dims, workload
    from robolora.sizing import (
        GpuInventory,
        card_memory,
        check_nodes,
        closest_guide_row,
        guide_table,
        parse_gpus,
        plan_memory,
    )

    check_nodes(args.nodes)
    given_gpus = parse_gpus(args.gpus, args.nodes) if args.gpus is not None else None
    keys = ("model_name", "max_length", "batch_size", "lora_r", "lora_target_modules", "gradient_checkpointing")
    given = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    cfg = config_from_namespace(argparse.Namespace(config=args.config, **given))
    cached = _check_plan_model(cfg.model_name)
    dims, label = model_dims(cfg.replace(model_name=cached) if cached else cfg)
    if cached:
        label = f"{cfg.model_name} (the local hub cache's copy; the hub is out of reach)"
    work = workload(cfg, dims, bf16=cfg.bf16 is not False)
    unknown = [t for t in work.targets if not dims.targeted([t])]
    if unknown:
        style = "GPT-2" if dims.arch == "gpt2" else "Llama-style"
        raise ConfigError(
            f"--lora-target-modules: none of {','.join(unknown)!r} is a linear module of a {style} layer; "
            f"use names from {','.join(dims.linear_names())}"
        )
    gpus = given_gpus or local_gpus(args.nodes)
    if gpus is None:
        row = closest_guide_row(dims)
        memory, note = card_memory(row.recommended_gb)
        gpus = GpuInventory(
            args.nodes,
            memory,
            args.nodes,
            source=f"no GPU visible here, so the training guide's recommended {row.recommended_gb} GB for {row.size}: "
            f"{note}; pass --gpus NxSIZE for yours",
        )
    plan = plan_memory(work, gpus, zero_stage=cfg.zero_stage, offload=cfg.offload)
    print(plan.report(label))
    print()
    print(guide_table(work))
    return 0 if plan.fits else 1


# ----------------------------------------------------------------------------- Ray Jobs


def cmd_submit(args: argparse.Namespace) -> int:
    from robolora.jobs import parse_env, submit

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return submit(
        command,
        build_parser(),
        address=args.address,
        working_dir=args.working_dir,
        env=parse_env(args.env),
        job_id=args.job_id,
        wait=not args.no_wait,
        request_timeout_s=args.timeout,
    )


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


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The full ``robolora`` parser with its subcommands."""
    from robolora.config import add_train_arguments

    parser = Parser(prog="robolora", description="Distributed LoRA fine-tuning for natural-language robot programming.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)

    data = sub.add_parser("data", help="generate, validate and inspect datasets")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True, parser_class=Parser)
    gen = dsub.add_parser("generate", help="write a synthetic dataset in canonical form")
    gen.add_argument("--num-examples", type=int, default=3000, help="records to write (default: 3000)")
    gen.add_argument("--seed", type=int_in(0, SEED_MAX), default=0, help=f"random seed, 0..{SEED_MAX} (default: 0)")
    gen.add_argument("--output", required=True, help="a .json (list) or .jsonl file to create")
    gen.add_argument("--force", action="store_true", help="replace the output file if it exists")
    gen.set_defaults(func=cmd_data_generate)
    val = dsub.add_parser("validate", help="check dataset files; print every problem with file, record and field")
    val.add_argument("files", nargs="+", metavar="FILE")
    stats = dsub.add_parser("stats", help="records per category, lengths in characters and tokens")
    stats.add_argument("file", metavar="FILE")
    stats.add_argument("--model-name", default=None, help="also count tokens with this model's tokenizer and template")
    stats.add_argument(
        "--max-length",
        type=int_in(MAX_LENGTH.low, MAX_LENGTH.high),
        default=256,
        help=f"report truncation at this length, {MAX_LENGTH.low}..{MAX_LENGTH.high} (default: 256)",
    )
    stats.add_argument("--json", action="store_true", help="print JSON")
    for p, func in ((val, cmd_data_validate), (stats, cmd_data_stats)):
        p.add_argument(
            "--check-api",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="require every output to be valid robot API code (default: on)",
        )
        p.set_defaults(func=func)

    model = sub.add_parser("model", help="the model registry")
    msub = model.add_subparsers(dest="model_command", metavar="ACTION", required=True, parser_class=Parser)
    prep = msub.add_parser("prepare", help="resolve a model, converting a bundled one into the cache; print its path")
    prep.add_argument("name", help="an alias (smollm2-135m, tiny-llama), a local path or a hub name")
    prep.set_defaults(func=cmd_model_prepare)
    msub.add_parser("list", help="registered aliases and whether they are cached").set_defaults(func=cmd_model_list)

    robot = sub.add_parser("robot", help="the robot API")
    rsub = robot.add_subparsers(dest="robot_command", metavar="ACTION", required=True, parser_class=Parser)
    chk = rsub.add_parser("check", help="check robot code (an argument, or - for stdin); print its canonical form")
    chk.add_argument("code")
    chk.set_defaults(func=cmd_robot_check)

    train = sub.add_parser(
        "train",
        help="fine-tune with LoRA on Ray Train + DeepSpeed workers (the training guide's train_robot.py)",
        description="Fine-tune a code LLM with LoRA on robot commands: Ray Train workers, DeepSpeed ZeRO, PEFT.",
    )
    add_train_arguments(train)
    train.set_defaults(func=cmd_train)

    def model_args(p: argparse.ArgumentParser, several: bool) -> None:
        p.add_argument(
            "--lora-path",
            action="append" if several else None,
            default=[] if several else None,
            help="a trained adapter: a run's output directory or a checkpoint-<step> folder"
            + (" (repeat to compare several)" if several else ""),
        )
        p.add_argument("--base-only", action="store_true", help="the base model without the adapter")
        p.add_argument(
            "--model-name", default=None, help="the base model (default: the one the adapter was trained on)"
        )
        p.add_argument(
            "--few-shot",
            type=int_in(0, len(FEW_SHOT_EXAMPLES)),
            default=len(FEW_SHOT_EXAMPLES),
            help=f"worked examples in the base model's prompt, 0..{len(FEW_SHOT_EXAMPLES)} "
            f"(default: {len(FEW_SHOT_EXAMPLES)})",
        )
        p.add_argument("--constrained", action="store_true", help="only let the model emit code the robot API accepts")
        p.add_argument(
            "--max-new-tokens",
            type=int_in(1, MAX_NEW_TOKENS),
            default=128,
            help=f"longest program, in tokens, 1..{MAX_NEW_TOKENS} (default: 128)",
        )

    ev = sub.add_parser("eval", help="syntax, api-valid, exact and semantic accuracy per category")
    model_args(ev, several=True)
    ev.add_argument("--compare-base", action="store_true", help="also evaluate the base model (few-shot)")
    ev.add_argument(
        "--ensemble",
        action="store_true",
        help="also score the adapters' vote: per command the program most of them wrote (canonical form), "
        "ties to the surest",
    )
    ev.add_argument("--data-json", default=None, help="records to evaluate on (default: the run's val.jsonl)")
    ev.add_argument("--predictions-out", default=None, help="write {input, prediction, reference} lines here")
    ev.add_argument("--json-out", default=None, help="write the scores as JSON here")
    ev.add_argument(
        "--batch-size",
        type=int_in(1, MAX_GENERATION_BATCH),
        default=32,
        help=f"commands generated together, 1..{MAX_GENERATION_BATCH} (default: 32)",
    )
    ev.add_argument(
        "--limit",
        type=int_in(0, MAX_EVAL_RECORDS, "0: every record"),
        default=0,
        help="evaluate only the first N records (default: 0, every record)",
    )
    ev.set_defaults(func=cmd_eval)

    demo = sub.add_parser(
        "demo",
        help="type commands, see the generated robot code and whether it is valid (several adapters vote)",
    )
    model_args(demo, several=True)
    demo.add_argument("--command", default=None, help="one command, then exit")
    demo.set_defaults(func=cmd_demo, compare_base=False)

    pipe = sub.add_parser(
        "pipeline",
        help="multi-stage training (curricula): stages with their own data and settings, each from the last's adapter",
    )
    pipe.add_argument("--config", required=True, help="the pipeline file: output_dir, shared settings, stages")
    pipe.add_argument(
        "--dry-run", action="store_true", help="check every stage, print what would train and what would be kept, stop"
    )
    pipe.set_defaults(func=cmd_pipeline)

    sw = sub.add_parser(
        "sweep",
        help="train variants of a config concurrently on Ray Tune, compare them, link the best, score their vote",
    )
    sw.add_argument("--config", required=True, help="the sweep file: output_dir, base, shared, variants and/or grid")
    sw.add_argument(
        "--max-concurrent", type=int, default=None, help="variants training at once (default: what the cluster holds)"
    )
    sw.add_argument(
        "--dry-run",
        action="store_true",
        help="check every variant, list their resources and what would train or be kept, then stop (starts no Ray)",
    )
    sw.set_defaults(func=cmd_sweep)

    exp = sub.add_parser("export", help="merge an adapter into its base model and save a plain transformers model")
    exp.add_argument("--lora-path", required=True, help="a run's output directory or a checkpoint-<step> folder")
    exp.add_argument("--output", required=True, help="a new directory for the merged model")
    exp.set_defaults(func=cmd_export)

    cfg = sub.add_parser("config", help="print the resolved training config (defaults < --config file < flags)")
    add_train_arguments(cfg)
    cfg.set_defaults(func=cmd_config)

    plan = sub.add_parser(
        "plan",
        help="per-GPU memory and the ZeRO stage, offload and batch split that fit; the guide's VRAM table beside it",
        description="Plan a run's layout from the model's size, the sequence length, the batch, LoRA and the GPUs: "
        "per-GPU memory of every ZeRO layout, the simplest one that fits and why. Exits 1 when nothing fits.",
    )
    plan.add_argument(
        "--model",
        "--model-name",
        dest="model_name",
        default=None,
        help="a size (7B, 13B, 34B: CodeLlama's dimensions, no download), an alias, a path or a hub name, read "
        "from the hub or, when the hub is out of reach, from the local hub cache (default: the config's model)",
    )
    from robolora.sizing import CARD_MEMORY, MAX_GPU_GB, MAX_GPUS_PER_NODE, MAX_NODES

    cards = ", ".join(f"{gib:.1f} for {gb}" for gb, (gib, _) in CARD_MEMORY.items())
    plan.add_argument(
        "--gpus",
        default=None,
        help=f"the GPUs of one node as COUNTxSIZE, 1-{MAX_GPUS_PER_NODE} GPUs of 1-{MAX_GPU_GB} GB: 8x80GB is 8 "
        f"cards sold as 80 GB, each planned with the GiB such a card shows CUDA ({cards}); 8x79.5GiB is taken "
        "as it stands (default: this machine's)",
    )
    plan.add_argument("--nodes", type=int, default=1, help=f"nodes with those GPUs each, 1-{MAX_NODES:,} (default: 1)")
    plan.add_argument("--max-length", type=int, default=None, help="tokens per example (default: the config's)")
    plan.add_argument("--batch-size", type=int, default=None, help="examples per GPU and micro-step (default: config)")
    plan.add_argument("--lora-r", type=int, default=None, help="LoRA rank (default: the config's)")
    plan.add_argument("--lora-target-modules", default=None, help="comma-separated modules (default: the config's)")
    plan.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="plan with it on (default: off, turned on only where nothing fits without)",
    )
    plan.add_argument("--config", default=None, help="a training config (YAML or JSON); the flags here override it")
    plan.set_defaults(func=cmd_plan)

    address_help = (
        "the Ray dashboard URL of the cluster's head, e.g. http://HEAD_IP:8265 "
        "(default: $RAY_API_SERVER_ADDRESS or $RAY_ADDRESS)"
    )
    timeout_help = (
        f"seconds to wait for each answer of the job server before giving up, 1..{MAX_JOBS_TIMEOUT_S} "
        "(default: 30; following logs waits as long as the job runs)"
    )
    submit = sub.add_parser(
        "submit",
        help="run a robolora command as a Ray Job on a running cluster and follow its logs",
        description="Run `robolora ARGS...` as a Ray Job on a running cluster: the working directory is uploaded, "
        "the cluster's token (RAY_AUTH_TOKEN or ~/.ray/auth_token) authenticates, and the command's exit follows "
        "the job's (0 SUCCEEDED, 1 FAILED or STOPPED). Example: "
        "robolora submit --address http://HEAD:8265 -- train --config examples/codellama-7b.yaml "
        "--output-dir /mnt/shared/robolora/run-1",
    )
    submit.add_argument("--address", default=None, help=address_help)
    submit.add_argument("--timeout", type=int_in(1, MAX_JOBS_TIMEOUT_S), default=30, help=timeout_help)
    submit.add_argument(
        "--working-dir", default=None, help="the directory the job runs in, uploaded (default: the current one)"
    )
    submit.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="an environment variable for the job (repeat)"
    )
    submit.add_argument("--job-id", default=None, help="the job's ID (default: Ray makes one)")
    submit.add_argument("--no-wait", action="store_true", help="print the job's ID and return once it is submitted")
    submit.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="the robolora command to run")
    submit.set_defaults(func=cmd_submit)

    jobs = sub.add_parser("jobs", help="status, logs, stop and list of Ray Jobs on a cluster")
    jsub = jobs.add_subparsers(dest="jobs_command", metavar="ACTION", required=True, parser_class=Parser)
    for name, text in (
        ("status", "the job's status, entrypoint and message"),
        ("logs", "the job's logs so far"),
        ("stop", "stop the job and wait until it has stopped"),
        ("list", "every job submitted to the cluster"),
    ):
        p = jsub.add_parser(name, help=text)
        if name != "list":
            p.add_argument("job_id", metavar="ID", help="the job's ID (raysubmit_...)")
        if name == "logs":
            p.add_argument(
                "--follow", action="store_true", help="keep printing until the job ends; exit with its status"
            )
        p.add_argument("--address", default=None, help=address_help)
        p.add_argument("--timeout", type=int_in(1, MAX_JOBS_TIMEOUT_S), default=30, help=timeout_help)
        p.set_defaults(func=cmd_jobs)
    return parser


#: Longest error line printed.
MAX_ERROR_LINE = 1000


#: Exit status when the reader of the output went away (``robolora plan | head``): 128 + SIGPIPE, what a
#: shell reports for a Unix tool that the closed pipe ended.
EXIT_CLOSED_PIPE = 141


def _discard_stdout() -> None:
    """The reader of stdout is gone: send later writes, and the flush at exit, to the null device."""
    with contextlib.suppress(OSError, ValueError, AttributeError):  # not a real file (captured output)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _quiet_closed_pipe_in_threads() -> None:
    """A closed pipe met by a helper thread (the training progress bar) ends its output, not the command."""
    default = threading.excepthook
    if getattr(default, "quiet_closed_pipe", False):  # installed by an earlier call
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if issubclass(args.exc_type, BrokenPipeError):
            _discard_stdout()
        else:
            default(args)

    hook.quiet_closed_pipe = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; user errors become ``robolora: error:`` lines and exit code 2; a closed output
    pipe ends it quietly with :data:`EXIT_CLOSED_PIPE`."""
    try:
        _quiet_closed_pipe_in_threads()
        args = build_parser().parse_args(argv)
        code = args.func(args)
        sys.stdout.flush()  # output still buffered meets a closed pipe here, not at interpreter exit
        return code
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_CLOSED_PIPE
    except UserError as e:
        for line in str(e).splitlines():
            if len(line) > MAX_ERROR_LINE:  # a huge value echoed back would bury the message
                line = f"{line[: MAX_ERROR_LINE - 40]}... ({len(line):,} characters in all)"
            print(f"robolora: error: {line}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("robolora: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
