"""Start-up: seconds from the `robolora train` command to its first optimizer step, phase by phase.

    python benchmarks/startup.py --json-out benchmarks/results/startup.json

The same one-step run twice on the shipped dataset's training split: the first fills the caches (the
converted bundled model, the tokenized examples, DeepSpeed's compiled CPU ops, Python's bytecode), the
second is measured warm. The phases come from the run's own start-up report (``startup_s`` in
``train_summary.json``): the pre-training checks (imports, dataset validation, model config), starting
Ray, starting the workers, tokenizing, loading the model with LoRA, building the DeepSpeed engine and
the first step.

A third, warm run uses the main job's settings (``examples/smollm2-135m.yaml``: 2 workers, micro-batch
8, length-grouped). Its first step is the global batch holding the longest example (the sampler runs
it first, so that a batch that does not fit fails at once), several times a later step.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml
from common import ROOT, TIMED, train, write_json

MAIN_JOB = ROOT / "examples" / "smollm2-135m.yaml"

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
    main_job = yaml.safe_load(MAIN_JOB.read_text())
    main_job["data_json"] = str(ROOT / main_job["data_json"])
    settings = {"cold": TIMED, "warm": TIMED, "main job": main_job}
    with tempfile.TemporaryDirectory(prefix="robolora-bench-") as tmp:
        # train() evaluates a short validation file at the end: the run's final evaluation is not start-up.
        results = {
            name: train({**values, "max_steps": 1}, Path(tmp) / name.replace(" ", "-"))["summary"]["startup_s"]
            for name, values in settings.items()
        }
    print(f"{'phase':34}{'first run':>10}{'warm':>8}{'main job':>10}  (seconds, the main job's run warm)")
    widths = dict(zip(settings, (10, 8, 10), strict=True))
    for key, label in LABELS.items():
        print(f"{label:34}" + "".join(f"{results[name].get(key, 0):>{w}.1f}" for name, w in widths.items()))
    write_json(args.json_out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
