"""Padding efficiency: the share of trained tokens that are not padding, in random order, grouped by length
and packed.

    python benchmarks/padding.py --steps 20 --warmup 5 --json-out benchmarks/results/padding.json

For the shipped dataset and the bundled tokenizer, the exact padding efficiency of a whole epoch's
micro-batches (8 rows, one worker) comes from the seeded batch plan, for random order, for
``--group-by-length`` (random batches of similar lengths) and for ``--packing`` (rows of several
examples, up to 256 tokens). Each is then trained for a few steps to show what the padding costs in
useful tokens/s, and the MFU of each against the bf16 matmul peak measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import DATA, MODEL, TIMED, timed_rate, train, write_json
from throughput import Setup, matmul_peak, model_flops_per_token

BATCH = 8
#: name -> (--group-by-length, --packing)
SIDES = {"random order": (False, False), "grouped by length": (True, False), "packed": (True, True)}


def epoch_efficiency(lengths: list[int], group_by_length: bool) -> float:
    """Non-padding tokens over padded tokens across one epoch's micro-batches (of examples or packed rows)."""
    from robolora.sampler import padding_efficiency, plan_epoch

    plan = plan_epoch(
        lengths, micro_batch=BATCH, grad_accum=1, world_size=1, seed=42, epoch=0, group_by_length=group_by_length
    )
    return padding_efficiency(lengths, plan)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps per run (default: 20)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (default: 5)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads (default: all)")
    parser.add_argument("--json-out", default=None, help="also write the results here")
    args = parser.parse_args()
    from robolora.data import load_records, pack_examples, split_records, tokenize_records
    from robolora.models import load_tokenizer

    train_records, _ = split_records(load_records(DATA), 0.1, 42)
    examples = tokenize_records(train_records, load_tokenizer(MODEL), TIMED["max_length"])[0]
    lengths = list(examples["length"])
    rows = pack_examples([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples], TIMED["max_length"])
    row_lengths = [len(r["input_ids"]) for r in rows]
    setup = Setup(threads=args.threads)
    peak = matmul_peak("bfloat16", setup)
    flops = model_flops_per_token(MODEL, sum(lengths) / len(lengths))  # attention spans each example alone
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="robolora-bench-") as tmp:
        for name, (grouped, packed) in SIDES.items():
            run = train(
                {
                    **TIMED,
                    "batch_size": BATCH,
                    "group_by_length": grouped,
                    "packing": packed,
                    "num_workers": 1,
                    "cpus_per_worker": args.threads,
                    "max_steps": args.warmup + args.steps,
                    "logging_steps": args.warmup,
                },
                Path(tmp) / name.split()[0],
            )
            rate = timed_rate(run["rows"])
            results[name] = {
                "epoch_padding_efficiency": epoch_efficiency(row_lengths if packed else lengths, grouped),
                "run_padding_efficiency": [r["padding_efficiency"] for r in run["rows"] if "padding_efficiency" in r][
                    -1
                ],
                "useful_tokens_per_s": rate,
                "mfu_bf16": rate * flops / peak,
            }
    results["speedup"] = (
        results["grouped by length"]["useful_tokens_per_s"] / results["random order"]["useful_tokens_per_s"]
    )
    grouped_rate = results["grouped by length"]["useful_tokens_per_s"]
    results["packing_speedup"] = results["packed"]["useful_tokens_per_s"] / grouped_rate
    results["packed_rows"] = {"examples": len(lengths), "rows": len(rows)}
    results["peak_bf16_flops"] = peak
    results["settings"] = {"micro_batch": BATCH, "steps": args.steps, "warmup": args.warmup, "threads": args.threads}
    print(f"bf16 matmul peak {peak / 1e9:.0f} GFLOP/s; {len(lengths)} examples pack into {len(rows)} rows")
    print(f"{'':20}{'padding efficiency (epoch)':>28}{'useful tokens/s':>18}{'MFU (bf16)':>12}")
    for name in SIDES:
        r = results[name]
        print(f"{name:20}{r['epoch_padding_efficiency']:>28.1%}{r['useful_tokens_per_s']:>18.1f}{r['mfu_bf16']:>12.1%}")
    print(f"length grouping: {results['speedup']:.2f}x useful tokens/s; packing {results['packing_speedup']:.2f}x more")
    write_json(args.json_out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
