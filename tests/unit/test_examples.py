"""Every shipped example config loads, validates and is planned, without downloading a model.

An example for GPUs states them in a ``# Planned for: --gpus NxSIZE --nodes N`` comment line; its ZeRO
stage, offload and batch split must be what the planner picks for those GPUs. CPU examples set their
distributed settings explicitly, and the launcher must keep them as written.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from robolora.config import from_dict, load_config_file
from robolora.memplan import parse_gpus, plan_memory
from robolora.preflight import plan_run, workload
from robolora.sizing import known_model

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
PLANNED_FOR = re.compile(r"^# Planned for: --gpus (\S+)(?: --nodes (\d+))?", re.MULTILINE)


def test_the_guide_sizes_have_examples():
    names = {p.name for p in EXAMPLES}
    assert {"smollm2-135m.yaml", "codellama-7b.yaml", "codellama-13b.yaml", "codellama-34b.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_loads_and_is_planned(path):
    cfg = from_dict(load_config_file(path), source=str(path))
    known = known_model(cfg.model_name)
    assert known, f"{path.name}: {cfg.model_name} has no known dimensions; plan it from the size table"
    dims, _ = known
    match = PLANNED_FOR.search(path.read_text())
    if match is None:  # a CPU example: its settings are explicit and the launcher keeps them
        assert cfg.num_workers and cfg.zero_stage, f"{path.name}: set num_workers and zero_stage, or a Planned for line"
        plan = plan_run(cfg.replace(bf16=False), cluster_cpus=2, cluster_gpus=0).config
        assert (plan.num_workers, plan.zero_stage, plan.batch_size, plan.gradient_accumulation_steps) == (
            cfg.num_workers,
            cfg.zero_stage,
            cfg.batch_size,
            cfg.gradient_accumulation_steps,
        )
        return
    gpus = parse_gpus(match[1], int(match[2] or 1))
    plan = plan_memory(workload(cfg, dims), gpus)  # left open: what the planner would pick by itself
    c = plan.choice
    assert plan.fits, plan.refusal()
    assert (cfg.zero_stage, cfg.offload or "none") == (c.zero_stage, c.offload), plan.reason
    assert (cfg.batch_size, cfg.gradient_accumulation_steps, cfg.gradient_checkpointing) == (
        c.micro_batch,
        c.grad_accum,
        c.gradient_checkpointing,
    )
    assert cfg.num_workers in (None, gpus.count)
    assert f"robolora plan --config examples/{path.name} --gpus {match[1]}" in path.read_text()
