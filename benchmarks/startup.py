"""Start-up: seconds from the `robolora train` command to its first optimizer step, phase by phase.

    python benchmarks/startup.py --json-out benchmarks/results/startup.json

The same one-step run twice on the shipped dataset's training split: the first fills the caches (the
converted bundled model, the tokenized examples, DeepSpeed's compiled CPU ops, Python's bytecode), the
second is measured warm. The phases come from the run's own start-up report (``startup_s`` in
``train_summary.json``): the pre-training checks (imports, dataset validation, model config), starting
Ray, starting the workers, tokenizing, loading the model with LoRA, building the DeepSpeed engine and
the first step.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import TIMED, train, write_json

LABELS = {
    "checks": "checks (imports, data, config)",
    "ray": "Ray",
    "worker": "workers",
    "data": "tokenizing",
    "model": "model load + LoRA",
    "engine": "DeepSpeed init",
    "first_step": "first step",
    "total": "total",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json-out", default=None, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="robolora-bench-") as tmp:
        # train() evaluates a short validation file at the end: the run's final evaluation is not start-up.
        runs = [train({**TIMED, "max_steps": 1}, Path(tmp) / name)["summary"]["startup_s"] for name in ("cold", "warm")]
    results = {"cold": runs[0], "warm": runs[1]}
    print(f"{'phase':34}{'first run':>10}{'warm':>8}  (seconds)")
    for key, label in LABELS.items():
        print(f"{label:34}{runs[0].get(key, 0):>10.1f}{runs[1].get(key, 0):>8.1f}")
    write_json(args.json_out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
