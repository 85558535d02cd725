"""Memory per worker for ZeRO-2, ZeRO-3 and ZeRO-3 with offload on 2 workers, beside the planner's prediction.

    python benchmarks/memory.py --json-out benchmarks/results/memory.json

Each layout trains the bundled model for a few steps on 2 CPU workers (micro-batch 8, bf16) on
multi-step records made from the shipped dataset, 8 commands each, so that every sequence fills the
256-token maximum the planner sizes for. Every worker reports the parameter memory it holds (whole
tensors, or under ZeRO-3 its shard of each), the memory the model costs it once the DeepSpeed engine
holds it, counted two ways (the tensors it holds, and its resident memory: both after the engine is
built minus before the model was loaded), and its peak resident memory over the run; on GPUs the
figures are device memory, where the two ways are one. The planner's prediction
for the same layout (``robolora plan``'s arithmetic) stands beside each.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import LORA, MODEL, TIMED, long_records, planner_estimate, train, write_json

LAYOUTS = {"ZeRO-2": (2, "none"), "ZeRO-3": (3, "none"), "ZeRO-3 + offload": (3, "all")}
WORKERS, BATCH = 2, 8


def prediction(stage: int, offload: str) -> dict:
    """The planner's per-worker figures for this layout on CPU workers, in MiB."""
    est = planner_estimate(
        MODEL,
        LORA,
        batch=BATCH,
        max_length=TIMED["max_length"],
        workers=WORKERS,
        stage=stage,
        offload=offload,
        on_gpu=False,
    )
    return {
        "weights_mb": (est.frozen_weights + est.lora_weights) / 2**20,
        "model_states_mb": est.model_states / 2**20,
        "total_mb": est.total / 2**20,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per layout (default: 3)")
    parser.add_argument("--json-out", default=None, help="also write the results here")
    args = parser.parse_args()
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="robolora-bench-") as tmp:
        data = long_records(Path(tmp) / "records.json", per_record=8, count=400)
        for name, (stage, offload) in LAYOUTS.items():
            run = train(
                {
                    **TIMED,
                    "data_json": str(data),
                    "batch_size": BATCH,
                    "num_workers": WORKERS,
                    "cpus_per_worker": 1,
                    "zero_stage": stage,
                    "offload": offload,
                    "bf16": True,
                    "max_steps": args.steps,
                    "logging_steps": 1,
                },
                Path(tmp) / f"zero{stage}-{offload}",
            )
            workers = run["summary"]["memory_per_worker"]
            results[name] = {
                "workers": workers,
                "weights_mb": max(w["weights_mb"] for w in workers),
                "model_tensors_mb": max(w["model_tensors_mb"] for w in workers),
                "model_mb": max(w["model_mb"] for w in workers),
                "peak_mb": max(w["peak_mb"] for w in workers),
                "planner": prediction(stage, offload),
            }
    for key in ("weights_mb", "model_tensors_mb", "model_mb"):
        results[f"zero3_over_zero2_{key[:-3]}"] = results["ZeRO-3"][key] / results["ZeRO-2"][key]
    head = ("weights", "planner", "tensors", "resident", "planner", "peak", "planner")
    print(f"{'':18}{'':18}{'model memory':^27}")
    print(f"{'per worker, MiB':18}" + "".join(f"{h:>9}" for h in head))
    for name in LAYOUTS:
        r, p = results[name], results[name]["planner"]
        cells = (r["weights_mb"], p["weights_mb"], r["model_tensors_mb"], r["model_mb"], p["model_states_mb"])
        cells += (r["peak_mb"], p["total_mb"])
        print(f"{name:18}" + "".join(f"{c:>9.0f}" for c in cells))
    print(
        f"ZeRO-3 per worker against ZeRO-2: weights held {results['zero3_over_zero2_weights']:.0%}, model memory "
        f"{results['zero3_over_zero2_model_tensors']:.0%} in tensors, {results['zero3_over_zero2_model']:.0%} resident"
    )
    write_json(args.json_out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
