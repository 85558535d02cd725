"""What ``robolora eval`` and ``robolora demo`` do: load the adapters (and the base model) the flags name,
generate, and score the programs or show them with their verdict."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from robolora.errors import UserError


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
    if args.constrained:  # a missing engine package is one error before any model loads
        from robolora.robot.engines import check_engine

        check_engine(args.grammar_engine)
    from robolora.infer import Generator

    placed = {"quantization": args.quantization, "max_memory": args.max_memory}
    gens = [] if args.base_only else [Generator.load(p, **placed) for p in loras]
    if args.base_only or getattr(args, "compare_base", False):
        from robolora.infer import base_model_of
        from robolora.models import adapter_dir

        name = args.model_name or (base_model_of(adapter_dir(loras[0])) if loras else None)
        gens.append(Generator.load(model_name=name, few_shot=args.few_shot, **placed))
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
            grammar_engine=args.grammar_engine,
            repair_beams=args.repair_beams,
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
        outs = [
            g.generate(
                [command],
                constrained=args.constrained,
                max_new_tokens=args.max_new_tokens,
                grammar_engine=args.grammar_engine,
                repair_beams=args.repair_beams,
            )
            for g in gens
        ]
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
