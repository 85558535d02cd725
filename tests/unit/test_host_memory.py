"""Offload moves states and weights into each node's host memory: the planner counts it against what the node
has (``--host-memory`` for `robolora plan`, Ray's memory of the GPU nodes for a run) and leaves out layouts
that would not fit there, saying so."""

from __future__ import annotations

import pytest

from robolora.config import TrainConfig, from_dict
from robolora.errors import UserError
from robolora.memplan import GpuInventory, Workload, plan_memory
from robolora.preflight import plan_run
from robolora.sizing import GIB, SIZES
from tests.unit.test_plan import _llama_config


def _work(size: str, **values) -> Workload:
    dims = SIZES[size]
    return Workload.from_config(TrainConfig(bf16=True, **values), dims, dims.default_targets())


def test_full_offload_is_left_out_where_the_node_cannot_hold_the_weights():
    work = _work("34B")
    roomy = plan_memory(work, GpuInventory(2, 22 * GIB, host_memory=256 * GIB))
    assert roomy.fits and (roomy.choice.zero_stage, roomy.choice.offload) == (3, "all")
    assert 60 * GIB < roomy.choice.host_needed < 256 * GIB
    short = plan_memory(work, GpuInventory(2, 22 * GIB, host_memory=48 * GIB))
    assert not short.fits
    text = short.refusal()
    assert "48.0 GiB of host memory per node" in text
    assert "needs 64.2 GiB of host memory per node for what it offloads" in text
    assert "--quantization 4bit (QLoRA)" in text and "nodes with more host memory" in text
    table = short.table()
    assert "host fits 48.0" in table and table.splitlines()[-1].split()[-1] == "no"
    # unknown host memory: unchecked, as before
    assert "host fits" not in plan_memory(work, GpuInventory(2, 22 * GIB)).table()


def test_a_run_plans_with_its_gpu_nodes_host_memory():
    cfg = from_dict({"bf16": True})
    args = (cfg, 32, 2, _llama_config("34B"), 22 * GIB, 1, 16)
    assert plan_run(*args, host_memory=256 * GIB).config.offload == "all"
    with pytest.raises(UserError, match="GiB of host memory per node for what it offloads"):
        plan_run(*args, host_memory=32 * GIB)


def test_plan_takes_the_host_memory_of_each_node(run_cli):
    code, out, _ = run_cli("plan", "--model", "34B", "--gpus", "2x24GB", "--host-memory", "48GiB")
    assert code == 1 and "48.0 GiB of host memory per node" in out and "host fits 48.0" in out
    code, out, err = run_cli("plan", "--model", "34B", "--gpus", "2x24GB", "--host-memory", "lots")
    assert code == 2 and "--host-memory: 'lots' is not a size" in err
