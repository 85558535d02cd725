"""Constrained decoding engines side by side: xgrammar, llguidance and the recognizer, beside unconstrained decoding.

    python benchmarks/grammar.py --json-out benchmarks/results/grammar.json

The bundled model (the base model with the few-shot prompt `robolora eval --base-only` gives it, or an adapter
with ``--lora-path``) writes code for the shipped dataset's test commands (the validation split of
`data/robot_dataset.json`, as training holds it out), greedily, in batches of 32 left-padded prompts, as
:meth:`robolora.infer.Generator.generate` runs them. Per engine:

* ms per generated token: the wall time of ``generate`` over the tokens the rows generated (up to and with
  their EOS);
* the masking cost alone per generated token: the time spent inside the engine's logits processor;
* the grammar's compile time (first use, per tokenizer; later batches reuse it);
* agreement: the rows whose generated ids equal the recognizer's, token for token (greedy decoding must pick
  the same tokens when the engines allow the same ones), and that every finished row's code is api-valid.

The engines run batch by batch in turn (unconstrained, recognizer, xgrammar, llguidance, then the next batch),
so that a change in the machine's load falls on all of them alike; the load average is recorded beside.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import DATA, MODEL, write_json

#: The sides, in the order they run per batch; None is unconstrained decoding.
SIDES: tuple[str | None, ...] = (None, "recognizer", "xgrammar", "llguidance")


def label(side: str | None) -> str:
    return side or "unconstrained"


class Timed:
    """A logits processor with the time spent in it counted."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.seconds = inner, 0.0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        start = time.perf_counter()
        out = self.inner(input_ids, scores)
        self.seconds += time.perf_counter() - start
        return out


def batch_inputs(gen: Any, commands: list[str]) -> tuple[Any, Any, int]:
    """Left-padded prompt ids and attention mask, as ``Generator._generate_batch`` builds them."""
    import torch

    prompts = [gen.prompt_ids(c) for c in commands]
    width = max(map(len, prompts))
    pad = gen.tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask, width


def run_batch(gen: Any, commands: list[str], side: str | None, max_new_tokens: int) -> dict:
    """One greedy batch on one side: its generated ids per row, wall time, masking time and generated tokens."""
    import torch
    from transformers import LogitsProcessorList

    from robolora.robot.engines import logits_processor

    tok = gen.tokenizer
    ids, mask, width = batch_inputs(gen, commands)
    processors = LogitsProcessorList()
    timed = None
    if side is not None:
        timed = Timed(logits_processor(side, tok, gen.model.config.vocab_size, prompt_lengths=width))
        processors.append(timed)
    start = time.perf_counter()
    with torch.no_grad():
        out = gen.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            logits_processor=processors,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            output_scores=True,
            return_dict_in_generate=True,
        )
    wall = time.perf_counter() - start
    rows = []
    for row in out.sequences[:, width:].tolist():
        rows.append(row[: row.index(tok.eos_token_id) + 1] if tok.eos_token_id in row else row)
    return {"rows": rows, "wall_s": wall, "mask_s": timed.seconds if timed else 0.0, "tokens": sum(map(len, rows))}


def compile_seconds(side: str, gen: Any) -> float:
    """Time to make the engine ready for this tokenizer (compiled grammar, or the recognizer's token index)."""
    from robolora.robot.constrained import TokenTrieIndex
    from robolora.robot.engines import compiled

    start = time.perf_counter()
    if side == "recognizer":
        TokenTrieIndex.from_tokenizer(gen.tokenizer)
    else:
        compiled(side, gen.tokenizer, gen.model.config.vocab_size)
    return time.perf_counter() - start


def summarize(side: str | None, batches: list[dict], reference: list[list[int]], gen: Any, compile_s: float) -> dict:
    from robolora.robot.checker import check

    rows = [r for b in batches for r in b["rows"]]
    tokens = sum(b["tokens"] for b in batches)
    eos = gen.tokenizer.eos_token_id
    finished = [r for r in rows if r and r[-1] == eos]
    valid = sum(check(gen.tokenizer.decode(r[:-1])).api_valid for r in finished)
    return {
        "side": label(side),
        "generated_tokens": tokens,
        "ms_per_token": 1000 * sum(b["wall_s"] for b in batches) / tokens,
        "mask_ms_per_token": 1000 * sum(b["mask_s"] for b in batches) / tokens,
        "wall_s": sum(b["wall_s"] for b in batches),
        "compile_s": compile_s,
        "rows": len(rows),
        "rows_equal_to_recognizer": sum(a == b for a, b in zip(rows, reference, strict=True)),
        "finished_rows": len(finished),
        "finished_api_valid": valid,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=64, help="test commands to generate for (default: 64)")
    parser.add_argument("--batch-size", type=int, default=32, help="commands per batch (default: 32)")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="longest program in tokens (default: 128)")
    parser.add_argument("--lora-path", default=None, help="an adapter to generate with (default: the base model)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads (default: all)")
    parser.add_argument("--json-out", default=None, help="also write the results here")
    args = parser.parse_args()
    import torch

    from robolora.data import load_records, split_records
    from robolora.infer import Generator
    from robolora.prompts import FEW_SHOT_EXAMPLES

    torch.set_num_threads(args.threads)
    _, test = split_records(load_records(DATA), 0.1, 42)
    commands = [r["input"] for r in test[: args.limit]]
    if args.lora_path:
        gen = Generator.load(args.lora_path)
    else:
        gen = Generator.load(model_name=MODEL, few_shot=len(FEW_SHOT_EXAMPLES))
    compile_s = {side: compile_seconds(side, gen) for side in SIDES if side}
    order = sorted(commands, key=len, reverse=True)  # as Generator.generate: similar prompt lengths together
    for side in SIDES:  # untimed: the first generate call of a process pays for warm-up
        run_batch(gen, order[: args.batch_size], side, 4)
    load_before = os.getloadavg()
    batches: dict[str | None, list[dict]] = {side: [] for side in SIDES}
    for i in range(0, len(order), args.batch_size):
        for side in SIDES:
            batches[side].append(run_batch(gen, order[i : i + args.batch_size], side, args.max_new_tokens))
            print(f"batch {i // args.batch_size + 1}, {label(side)}: {batches[side][-1]['wall_s']:.1f} s", flush=True)
    reference = [r for b in batches["recognizer"] for r in b["rows"]]
    sides = [summarize(s, batches[s], reference, gen, compile_s.get(s, 0.0)) for s in SIDES]
    print(f"\n{len(commands)} test commands, batch {args.batch_size}, {gen.name}, {args.threads} threads")
    print(f"{'side':<14}{'ms/token':>10}{'mask ms/token':>15}{'compile s':>11}{'same as recognizer':>20}")
    for s in sides:
        same = f"{s['rows_equal_to_recognizer']}/{s['rows']}"
        print(
            f"{s['side']:<14}{s['ms_per_token']:>10.2f}{s['mask_ms_per_token']:>15.3f}{s['compile_s']:>11.2f}{same:>20}"
        )
    results = {
        "model": gen.name,
        "commands": len(commands),
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "threads": args.threads,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "sides": sides,
    }
    write_json(args.json_out, results)
    constrained = [s for s in sides if s["side"] != "unconstrained"]
    return 0 if all(s["rows_equal_to_recognizer"] == s["rows"] for s in constrained) else 1


if __name__ == "__main__":
    sys.exit(main())
