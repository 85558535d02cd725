"""The ``robolora`` command.

    robolora data generate --num-examples 3000 --seed 0 --output data/robot_dataset.json
    robolora data validate data/robot_dataset.json
    robolora data stats data/robot_dataset.json --model-name smollm2-135m
    robolora model prepare smollm2-135m
    robolora robot check 'robot.move_forward(distance=3.0, speed=1.0)'
    robolora config --config examples/smollm2-135m.yaml --lora-r 64
    robolora train --config examples/smollm2-135m.yaml

Every error a user can fix is printed as ``robolora: error: ...`` with a non-zero exit, no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from robolora.config import Parser
from robolora.errors import UserError


def _print_json_or(data: dict, as_json: bool, text: Callable[[dict], str]) -> None:
    print(json.dumps(data, indent=2) if as_json else text(data))


# ----------------------------------------------------------------------------- data


def cmd_data_generate(args: argparse.Namespace) -> int:
    from robolora.robot.generator import generate_records, write_dataset

    out = Path(args.output)
    if out.exists() and not args.force:
        raise UserError(f"--output: {out} already exists; choose another path or pass --force to replace it")
    if args.num_examples < 1:
        raise UserError(f"--num-examples: must be a positive integer, got {args.num_examples}")
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


def cmd_robot_check(args: argparse.Namespace) -> int:
    from robolora.robot.checker import canonicalize, check

    code = sys.stdin.read() if args.code == "-" else args.code
    result = check(code)
    if result.api_valid:
        print("valid robot code; canonical form:")
        print(canonicalize(code))
        return 0
    level = "api error" if result.syntax_ok else "syntax error"
    for err in result.errors:
        print(f"{level}: {err}", file=sys.stderr)
    return 1


def cmd_train(args: argparse.Namespace) -> int:
    from robolora.config import config_from_namespace
    from robolora.launcher import run_training

    run_training(config_from_namespace(args))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from robolora.config import config_from_namespace

    print(yaml.safe_dump(config_from_namespace(args).to_dict(), sort_keys=False), end="")
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
    gen.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    gen.add_argument("--output", required=True, help="a .json (list) or .jsonl file to create")
    gen.add_argument("--force", action="store_true", help="replace the output file if it exists")
    gen.set_defaults(func=cmd_data_generate)
    val = dsub.add_parser("validate", help="check dataset files; print every problem with file, record and field")
    val.add_argument("files", nargs="+", metavar="FILE")
    stats = dsub.add_parser("stats", help="records per category, lengths in characters and tokens")
    stats.add_argument("file", metavar="FILE")
    stats.add_argument("--model-name", default=None, help="also count tokens with this model's tokenizer and template")
    stats.add_argument("--max-length", type=int, default=256, help="report truncation at this length (default: 256)")
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

    cfg = sub.add_parser("config", help="print the resolved training config (defaults < --config file < flags)")
    add_train_arguments(cfg)
    cfg.set_defaults(func=cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; user errors become ``robolora: error:`` lines and exit code 2."""
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except UserError as e:
        for line in str(e).splitlines():
            print(f"robolora: error: {line}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("robolora: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
