"""Scaling: 1 worker against 2 workers with the same total CPU cores and the same global batch.

    python benchmarks/scaling.py --steps 20 --warmup 5 --json-out benchmarks/results/scaling.json

One worker with every core (micro-batch 8 x accumulation 2) against two workers with half the cores
each (micro-batch 8 each): the same global batch of 16 and the same per-operation batch, so the ratio
of their useful tokens/s is the efficiency of data parallelism over gloo (DeepSpeed ZeRO-2).

Each layout's MFU is counted as in ``throughput.py`` (model FLOPs per useful token over the bf16
matmul peak of all the cores, measured before and after the runs); two workers with one core each is
what `robolora train` plans on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import TIMED, timed_rate, train, write_json
from throughput import Setup, matmul_peak, mean_length, model_flops_per_token


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps per run (default: 20)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (default: 5)")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2, help="total CPU cores (default: all)")
    parser.add_argument("--json-out", default=None, help="also write the results here")
    args = parser.parse_args()
    if args.cores < 2 or args.cores % 2:
        raise SystemExit("--cores: an even number of at least 2, so that two workers get the same share")
    base = {
        **TIMED,
        "batch_size": 8,
        "group_by_length": True,
        "max_steps": args.warmup + args.steps,
        "logging_steps": args.warmup,
    }
    layouts = {
        "1 worker": {"num_workers": 1, "cpus_per_worker": args.cores, "gradient_accumulation_steps": 2},
        "2 workers": {"num_workers": 2, "cpus_per_worker": args.cores // 2, "gradient_accumulation_steps": 1},
    }
    results: dict = {}
    setup = Setup(threads=args.cores)
    before = matmul_peak("bfloat16", setup)
    with tempfile.TemporaryDirectory(prefix="robolora-bench-") as tmp:
        for name, layout in layouts.items():
            run = train({**base, **layout}, Path(tmp) / name.replace(" ", "-"))
            results[name] = {**layout, "useful_tokens_per_s": timed_rate(run["rows"]), "wall_s": run["wall_s"]}
    peak = max(before, matmul_peak("bfloat16", setup))
    flops = model_flops_per_token(setup.model, mean_length(setup))
    for name in layouts:
        results[name]["mfu_bf16"] = results[name]["useful_tokens_per_s"] * flops / peak
    one, two = (results[k]["useful_tokens_per_s"] for k in layouts)
    results["efficiency"] = two / one
    results["peak_flops_bf16"] = peak
    results["model_flops_per_token"] = flops
    results["settings"] = {"steps": args.steps, "warmup": args.warmup, "cores": args.cores, "global_batch": 16}
    print(f"{'layout':12}{'cores each':>12}{'useful tokens/s':>18}{'MFU (bf16 peak)':>17}")
    for name, layout in layouts.items():
        r = results[name]
        print(f"{name:12}{layout['cpus_per_worker']:>12}{r['useful_tokens_per_s']:>18.1f}{r['mfu_bf16']:>17.1%}")
    print(f"scaling efficiency (2 workers / 1 worker, same cores): {results['efficiency']:.1%}")
    print(f"measured matmul peak: bf16 {peak / 1e9:.1f} GFLOP/s")
    write_json(args.json_out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
