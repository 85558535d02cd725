"""Training on a real GPU: a step through Ray Train and DeepSpeed with NCCL, in bf16, and the memory planner's
estimate against the memory the worker really used. Skipped on machines without CUDA (CI's included).

The run is ``robolora train`` as a user starts it, in a subprocess with its own Ray cluster, on the machine's
first GPU.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

#: The bundled 135M model, long enough sequences and a batch large enough that activations count.
SETTINGS = {
    "model_name": "smollm2-135m",
    "num_workers": 1,
    "use_gpu": True,
    "bf16": True,
    "batch_size": 8,
    "max_length": 256,
    "max_steps": 3,
    "save_steps": 3,
    "eval_steps": 3,
    "logging_steps": 1,
}


def planned_gib(text: str) -> float:
    """The checklist's memory estimate per GPU: ``memory ... ~1.2 GiB needed per GPU``."""
    found = re.findall(r"~([0-9.]+) GiB needed per GPU", text)
    assert found, text[-3000:]
    return float(found[-1])


def test_a_gpu_run_trains_with_nccl_in_bf16_within_the_planned_memory(small_dataset, tmp_path: Path):
    from tests.integration.conftest import cli_flags

    out = tmp_path / "gpu-run"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]}
    cmd = [sys.executable, "-m", "robolora.cli", "train", *cli_flags(SETTINGS)]
    cmd += ["--data-json", str(small_dataset), "--output-dir", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, check=False)
    text = done.stdout + done.stderr
    assert done.returncode == 0, text[-4000:]
    assert "Plan: 1 GPU worker" in text, text[-3000:]

    summary = json.loads((out / "train_summary.json").read_text())
    assert (summary["device"], summary["backend"], summary["precision"]) == ("cuda", "nccl", "bf16")
    assert summary["steps"] == SETTINGS["max_steps"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in rows if "train_loss" in r]
    assert len(losses) == SETTINGS["max_steps"] and all(0 < v < 20 for v in losses), losses

    # The planner's figure is a worst case: the measured peak stays under it, and not by orders of magnitude
    # (a planner that forgot a term, or counted one twice over, shows here).
    peak_gib = max(w["peak_mb"] for w in summary["memory_per_worker"]) / 1024
    planned = planned_gib(text)
    print(f"GPU peak {peak_gib:.2f} GiB, planned {planned:.2f} GiB")
    assert peak_gib <= planned, (peak_gib, planned)
    assert planned <= 4 * peak_gib + 1.0, (peak_gib, planned)
