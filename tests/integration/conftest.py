"""Fixtures for the real stack: one local Ray cluster per session, tiny datasets, training runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from robolora.config import from_dict
from robolora.robot.generator import generate_records, write_dataset


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray cluster with the same settings `robolora train` uses."""
    import ray

    from robolora.launcher import init_ray

    init_ray(from_dict({}))
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """120 generated records, as a user would write them."""
    path = tmp_path_factory.mktemp("data") / "robot.json"
    write_dataset(generate_records(120, seed=3), path)
    return path


TINY = {
    "model_name": "tiny-llama",
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.0,
    "lora_target_modules": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
    "learning_rate": 5e-3,
    "batch_size": 4,
    "num_workers": 2,
    "bf16": False,
    "max_length": 128,
    "logging_steps": 1,
    "eval_steps": 4,
    "save_steps": 4,
    "max_steps": 8,
    "warmup_ratio": 0.0,
    "lr_scheduler_type": "constant",
}


@pytest.fixture
def train_run(ray_session, small_dataset, tmp_path):
    """Run `robolora train` in-process on the tiny model; returns the output directory."""
    from robolora.launcher import run_training

    def run(name: str = "run", train_loop=None, callbacks=(), **overrides) -> Path:
        values = {**TINY, "data_json": str(small_dataset), "output_dir": str(tmp_path / name), **overrides}
        run_training(from_dict(values), train_loop=train_loop, callbacks=callbacks)
        return tmp_path / name

    return run


def metric_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def series(out: Path, key: str) -> dict[int, float]:
    return {r["step"]: r[key] for r in metric_rows(out) if key in r}


def cli_flags(values: dict) -> list[str]:
    """Command-line flags for config values: ``{"lora_r": 4, "bf16": False}`` -> ``--lora-r 4 --no-bf16``."""
    flags = []
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, str(value)]
    return flags
