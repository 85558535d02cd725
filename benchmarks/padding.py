"""Padding efficiency: the share of trained tokens that are not padding, with and without length grouping.

    python benchmarks/padding.py --steps 20 --warmup 5 --json-out benchmarks/results/padding.json

For the shipped dataset and the bundled tokenizer, the exact padding efficiency of a whole epoch's
micro-batches (8 examples, one worker) comes from the seeded batch plan, for random order and for
``--group-by-length`` (random batches of similar lengths). Both are then trained for a few steps to
show what the padding costs in useful tokens/s.
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

BATCH = 8


def epoch_efficiency(lengths: list[int], group_by_length: bool) -> float:
    """Non-padding tokens over padded tokens across one epoch's micro-batches."""
    from robolora.sampler import plan_epoch

    plan = plan_epoch(
        lengths, micro_batch=BATCH, grad_accum=1, world_size=1, seed=42, epoch=0, group_by_length=group_by_length
    )
    micros = [micro for step in plan for micro in step[0]]
    useful = sum(lengths[i] for m in micros for i in m)
    padded = sum(max(lengths[i] for i in m) * len(m) for m in micros)
    return useful / padded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps per run (default: 20)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (default: 5)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads (default: all)")
    parser.add_argument("--json-out", default=None, help="also write the results here")
    args = parser.parse_args()
    from robolora.data import load_records, split_records, tokenize_records
    from robolora.models import load_tokenizer

    train_records, _ = split_records(load_records(DATA), 0.1, 42)
    lengths = list(tokenize_records(train_records, load_tokenizer(MODEL), TIMED["max_length"])[0]["length"])
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="robolora-bench-") as tmp:
        for grouped in (False, True):
            name = "grouped by length" if grouped else "random order"
            run = train(
                {
                    **TIMED,
                    "batch_size": BATCH,
                    "group_by_length": grouped,
                    "num_workers": 1,
                    "cpus_per_worker": args.threads,
                    "max_steps": args.warmup + args.steps,
                    "logging_steps": args.warmup,
                },
                Path(tmp) / ("grouped" if grouped else "random"),
            )
            results[name] = {
                "epoch_padding_efficiency": epoch_efficiency(lengths, grouped),
                "run_padding_efficiency": [r["padding_efficiency"] for r in run["rows"] if "padding_efficiency" in r][
                    -1
                ],
                "useful_tokens_per_s": timed_rate(run["rows"]),
            }
    results["speedup"] = (
        results["grouped by length"]["useful_tokens_per_s"] / results["random order"]["useful_tokens_per_s"]
    )
    results["settings"] = {"micro_batch": BATCH, "steps": args.steps, "warmup": args.warmup, "threads": args.threads}
    print(f"{'':20}{'padding efficiency (epoch)':>28}{'useful tokens/s':>18}")
    for name in ("random order", "grouped by length"):
        r = results[name]
        print(f"{name:20}{r['epoch_padding_efficiency']:>28.1%}{r['useful_tokens_per_s']:>18.1f}")
    print(f"length grouping: {results['speedup']:.2f}x useful tokens/s")
    write_json(args.json_out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
