"""What the benchmark scripts share: the bundled model and shipped data, and `robolora train` runs in a
fresh process each, read back from their output directories."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "robot_dataset.json"
MODEL = "smollm2-135m"
#: The LoRA of the throughput comparison: r=32 on the 7 linear modules of the upper 15 layers.
LORA = {
    "lora_r": 32,
    "lora_alpha": 64,
    "lora_dropout": 0.05,
    "lora_target_modules": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
    "lora_layers": "top:15",
}
#: A run that only trains: constant learning rate, no evaluation or checkpoint before the end.
TIMED = {
    "model_name": MODEL,
    "data_json": str(DATA),
    "max_length": 256,
    "learning_rate": 2e-3,
    "lr_scheduler_type": "constant",
    "warmup_ratio": 0.0,
    "eval_steps": 10**6,
    "save_steps": 10**6,
    **LORA,
}


#: Validation records a timed run evaluates at its end: that evaluation is not what is measured.
SHORT_VALIDATION = 16


def with_short_validation(values: dict, folder: Path) -> dict:
    """``values`` with ``data_json`` replaced by the same training split (`--data-json`'s, by the run's seed)
    and the first :data:`SHORT_VALIDATION` records of its validation split."""
    if "data_json" not in values:
        return values
    from robolora.data import load_records, split_records

    records = load_records(values["data_json"], check_api=False)
    train_records, val = split_records(records, values.get("val_ratio", 0.1), values.get("seed", 42))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.json").write_text(json.dumps(train_records))
    (folder / "val.json").write_text(json.dumps(val[:SHORT_VALIDATION]))
    rest = {k: v for k, v in values.items() if k != "data_json"}
    return {**rest, "train_json": str(folder / "train.json"), "val_json": str(folder / "val.json")}


def train(values: dict, out: Path, quiet: bool = True) -> dict:
    """`robolora train --config` with ``values`` in a new process; its metrics rows, summary and wall time."""
    out.parent.mkdir(parents=True, exist_ok=True)
    values = with_short_validation(values, out.parent / f"{out.name}-data")
    config = out.parent / f"{out.name}.yaml"
    config.write_text(yaml.safe_dump({**values, "output_dir": str(out)}))
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "robolora.cli", "train", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE if quiet else None,
        stderr=subprocess.STDOUT if quiet else None,
        text=True,
    )
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"robolora train ({config}) failed:\n{(proc.stdout or '')[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((out / "train_summary.json").read_text())
    return {"rows": rows, "summary": summary, "wall_s": wall}


def timed_rate(rows: list[dict]) -> float:
    """Mean useful tokens/s of the logged intervals after the first (the warm-up)."""
    rates = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r][1:]
    if not rates:
        raise SystemExit("no timed interval: raise the steps so that more than one logging interval runs")
    return sum(rates) / len(rates)


def write_json(path: str | None, results: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(results, indent=2, default=str))


def long_records(dest: Path, per_record: int, count: int = 1200, seed: int = 0) -> Path:
    """Multi-step records: ``per_record`` shipped commands joined, their programs one after another."""
    records = json.loads(DATA.read_text())
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        parts = rng.sample(records, per_record)
        out.append(
            {
                "input": ", then ".join(p["input"].rstrip(".") for p in parts),
                "output": "\n".join(p["output"] for p in parts),
                "category": "sequence",
            }
        )
    dest.write_text(json.dumps(out))
    return dest


def planner_estimate(
    model: str, lora: dict, *, batch: int, max_length: int, workers: int, stage: int, offload: str, on_gpu: bool
) -> Any:
    """The memory planner's per-worker estimate (``sizing.MemoryEstimate``, bytes) for a bf16 run of
    ``model`` with ``lora`` and no gradient checkpointing: what `robolora plan` computes."""
    from transformers import AutoConfig

    from robolora.config import from_dict
    from robolora.models import resolve_model
    from robolora.preflight import workload
    from robolora.sizing import ModelDims

    cfg = from_dict({**lora, "batch_size": batch, "max_length": max_length, "bf16": True})
    dims = ModelDims.from_config(AutoConfig.from_pretrained(resolve_model(model)))
    return workload(cfg, dims).estimate(workers, stage, offload, batch, False, on_gpu=on_gpu)
