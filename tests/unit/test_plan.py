"""The planner's choices for several GPU inventories, `robolora plan`, and `robolora train`'s use of the plan."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import types
from dataclasses import replace
from pathlib import Path

import pytest

from robolora.config import TrainConfig, from_dict
from robolora.errors import ConfigError, UserError
from robolora.memplan import (
    CARD_MEMORY,
    GUIDE_VRAM,
    GpuInventory,
    Workload,
    check_guide,
    micro_batches,
    parse_gpus,
    plan_memory,
)
from robolora.preflight import plan_run
from robolora.sizing import GIB, SIZES


def work_for(size: str, **fields) -> Workload:
    """The planner's workload for a guide size, from a training config with ``fields`` set."""
    dims = SIZES[size]
    return Workload.from_config(TrainConfig(**fields), dims, dims.default_targets())


def test_gpu_inventory_from_count_and_size():
    gpus = parse_gpus("8x80GB", nodes=2)
    assert (gpus.count, gpus.memory, gpus.nodes, gpus.per_node) == (16, int(79.1 * GIB), 2, 8)
    assert parse_gpus(" 4 x 24 GiB").memory == 24 * GIB and parse_gpus("1x40.5G").memory == int(40.5 * GIB)


@pytest.mark.parametrize(
    ("text", "gib", "cards"),
    [
        ("8x80GB", 79.1, "H100, A100 80GB"),
        ("8x80", 79.1, "H100, A100 80GB"),
        ("4x24GB", 22.0, "A10G, L4"),
        ("8x40G", 39.4, "A100 40GB"),
        ("8x48gb", 44.3, "A40, L40S"),
        ("1x16GB", 14.7, "T4"),
    ],
)
def test_a_card_sold_as_n_gb_is_planned_with_the_memory_cuda_sees(text, gib, cards):
    gpus = parse_gpus(text)
    nominal = text.split("x")[1].rstrip("GBgb")
    assert gpus.memory == int(gib * GIB) < int(nominal) * GIB
    assert gpus.source.startswith(
        f"{nominal} GB cards planned at {gib:.1f} GiB, what CUDA sees on the smallest ({cards})"
    )
    assert gpus.describe().endswith(f"of {gib:.1f} GiB")
    # what CUDA reports of the larger cards of a size leaves more room: the smallest is the safe figure
    assert CARD_MEMORY[80][0] <= 79.2 and CARD_MEMORY[24][0] <= 22.5 and CARD_MEMORY[48][0] <= 44.4


def test_a_size_in_gib_or_an_unusual_size_is_kept():
    assert parse_gpus("8x79.5GiB").memory == int(79.5 * GIB) and parse_gpus("8x79.5GiB").source == "as given"
    twelve = parse_gpus("2x12GB")
    assert twelve.memory == 12 * GIB and twelve.source.startswith("12 GB, not a usual card size, taken as 12 GiB")


@pytest.mark.parametrize(
    "text", ["", " ", "8", "x80GB", "0x80GB", "000x80GB", "8x0GB", "eightx80GB", "8x80TB", "8x1e3GB"]
)
def test_bad_gpu_inventory_is_one_line_naming_the_flag(text):
    with pytest.raises(ConfigError) as e:
        parse_gpus(text)
    assert str(e.value) == f"--gpus: {text!r} is not COUNTxSIZE; write the GPUs of one node as e.g. 8x80GB or 4x24GB"


@pytest.mark.parametrize(
    "text", [f"{10**30}x80GB", f"8x{10**30}GB", "9" * 5000 + "x80GB", "8x" + "9" * 5000 + "GB", "257x80GB", "8x0.5GB"]
)
def test_an_inventory_out_of_range_is_refused(text):
    with pytest.raises(ConfigError) as e:
        parse_gpus(text)
    message = str(e.value)
    assert message.startswith("--gpus: '") and len(message) < 250
    assert message.endswith(
        "is out of range: COUNT must be 1 to 256 GPUs per node and SIZE 1 to 1024 GB per GPU; "
        "write the GPUs of one node as e.g. 8x80GB or 4x24GB"
    )


@pytest.mark.parametrize("nodes", [0, -1, 10**30, 10_001])
def test_a_node_count_out_of_range_is_refused(nodes):
    with pytest.raises(ConfigError, match=rf"^--nodes: must be a whole number from 1 to 10,000, got {nodes}"):
        parse_gpus("8x80GB", nodes=nodes)
    assert parse_gpus("8x80GB", nodes=10_000).count == 80_000


def test_micro_batches_keep_the_examples_per_step():
    assert micro_batches(4, 1) == [4, 2, 1]
    assert micro_batches(3, 2) == [3, 2, 1]  # 6 examples per step: 3 x 2, 2 x 3, 1 x 6


def test_7b_fits_24gb_gpus_with_zero2_and_the_asked_batch():
    plan = plan_memory(work_for("7B", batch_size=4), parse_gpus("4x24GB"))
    c = plan.choice
    assert plan.fits and (c.zero_stage, c.offload, c.micro_batch, c.grad_accum, c.gradient_checkpointing) == (
        2,
        "none",
        4,
        1,
        False,
    )
    assert plan.reason.startswith("ZeRO-2 is the simplest layout that fits")
    assert plan.flags() == (
        "--num-workers 4 --zero-stage 2 --offload none --batch-size 4 --gradient-accumulation-steps 1"
    )
    # every layout is reported, in order of preference, each at its best split
    assert [o.label for o in plan.alternatives] == [
        "ZeRO-2",
        "ZeRO-3",
        "ZeRO-2 + optimizer offload",
        "ZeRO-3 + optimizer offload",
        "ZeRO-3 + full offload",
    ]


def test_batch_that_does_not_fit_is_split_and_the_global_batch_kept():
    work = work_for("7B", batch_size=8)
    plan = plan_memory(work, parse_gpus("1x24GB"))
    c = plan.choice
    assert not work.estimate(1, 2, "none", 8, False).total <= plan.gpus.memory  # batch 8 as asked does not fit
    assert (c.zero_stage, c.micro_batch, c.grad_accum, c.gradient_checkpointing) == (2, 4, 2, False)
    assert "micro-batch lowered from 8 to 4 with accumulation 1 -> 2, which keeps the global batch" in plan.reason


def test_checkpointing_is_turned_on_only_when_needed():
    work = work_for("7B", batch_size=4)
    plan = plan_memory(work, parse_gpus("1x16GiB"))
    assert not any(work.estimate(1, 2, "none", m, False).total <= 16 * GIB for m in (4, 2, 1))
    assert (plan.choice.zero_stage, plan.choice.micro_batch, plan.choice.gradient_checkpointing) == (2, 4, True)
    assert plan.reason.endswith("gradient checkpointing turned on to keep only each layer's input")
    # asked for, it stays on even where it is not needed
    asked = plan_memory(replace(work, gradient_checkpointing=True), parse_gpus("1x80GB"))
    assert asked.choice.gradient_checkpointing and "turned on" not in asked.reason


def test_34b_on_48gb_gpus_shards_the_weights_with_zero3():
    plan = plan_memory(work_for("34B", batch_size=2), parse_gpus("8x48GB"))
    weights = SIZES["34B"].params() * 2
    assert weights > 48 * GIB  # ZeRO-2 keeps all bf16 weights on each GPU: it cannot fit
    assert (plan.choice.zero_stage, plan.choice.offload, plan.choice.micro_batch) == (3, "none", 2)
    assert plan.choice.estimate.frozen_weights == weights // 8
    assert "ZeRO-2 needs" in plan.reason


def test_13b_on_one_24gb_gpu_needs_full_offload():
    plan = plan_memory(work_for("13B", batch_size=2), parse_gpus("1x24GB"))
    assert SIZES["13B"].params() * 2 > 24 * GIB  # any layout that keeps the weights on the GPU fails
    assert plan.fits and plan.choice.label == "ZeRO-3 + full offload"
    assert plan.choice.estimate.frozen_weights == 0 and plan.choice.estimate.host > SIZES["13B"].params() * 2


def test_nothing_fits_says_which_max_length_would():
    work = work_for("34B", max_length=16384, batch_size=1)
    plan = plan_memory(work, parse_gpus("1x16GiB"))
    assert not plan.fits and plan.choice.label == "ZeRO-3 + full offload"
    assert plan.choice.micro_batch == 1 and plan.choice.gradient_checkpointing  # the most frugal option
    length = int(next(f for f in plan.fixes if f.startswith("--max-length")).split()[1])
    assert plan_memory(replace(work, max_length=length), parse_gpus("1x16GiB")).fits
    assert not plan_memory(replace(work, max_length=length + 1), parse_gpus("1x16GiB"), suggest=False).fits
    refusal = plan.refusal()
    assert "\n" not in refusal and refusal.startswith("memory: nothing fits 1 GPU of 16.0 GiB: even ZeRO-3 + full")
    assert refusal.endswith("or a smaller --model-name")


def test_more_gpus_is_suggested_with_the_fewest_that_fit():
    work = work_for("34B", batch_size=1)
    plan = plan_memory(work, parse_gpus("1x24GB"), offload="none")
    assert not plan.fits
    count = int(next(f for f in plan.fixes if "GPUs of 22.0 GiB" in f).split()[0])
    fits = [plan_memory(work, GpuInventory(n, plan.gpus.memory), offload="none").fits for n in (count - 1, count)]
    assert fits == [False, True]


def test_a_given_stage_is_kept_and_the_open_choice_suggested():
    work = work_for("34B", batch_size=2)
    plan = plan_memory(work, parse_gpus("8x48GB"), zero_stage=2)
    assert not plan.fits and {o.zero_stage for o in plan.alternatives} == {2}
    assert plan.fixes[0] == "--zero-stage 3 --offload none (or leave both out for the planner)"
    kept = plan_memory(work, parse_gpus("8x80GB"), zero_stage=3)
    assert kept.choice.zero_stage == 3 and kept.reason.endswith("--zero-stage as given")
    with pytest.raises(ConfigError, match=r"^--offload all needs --zero-stage 3"):
        plan_memory(work, parse_gpus("8x80GB"), zero_stage=2, offload="all")


def test_guide_rows_compared_at_their_own_batch_sizes():
    work = work_for("7B")
    for row in GUIDE_VRAM:
        c = check_guide(row, work)
        dims = SIZES[row.size]
        low = replace(work, dims=dims, batch_size=row.batch[0]).estimate(1, 2, "none", row.batch[0], True)
        high = replace(work, dims=dims, batch_size=row.batch[1]).estimate(1, 2, "none", row.batch[1], False)
        assert (c.low, c.high) == (low, high)
        assert ("minimum optimistic" in c.verdict) == (low.total > row.minimum_gb * GIB)
        assert ("recommended optimistic" in c.verdict) == (high.total > row.recommended_gb * GIB)
    # the bf16 weights alone exceed the guide's minimum for 13B and 34B
    assert SIZES["13B"].params() * 2 > 24 * GIB and SIZES["34B"].params() * 2 > 48 * GIB
    assert "minimum optimistic" in check_guide(GUIDE_VRAM[1], work).verdict
    assert "minimum optimistic" in check_guide(GUIDE_VRAM[2], work).verdict


# ----------------------------------------------------------------------------- robolora plan


@pytest.mark.parametrize(("size", "gpus"), [("7B", "1x24GB"), ("13B", "8x40GB"), ("34B", "8x48GB")])
def test_plan_command_for_each_guide_size(run_cli, size, gpus):
    code, out, err = run_cli("plan", "--model", size, "--gpus", gpus)
    plan = plan_memory(work_for(size), parse_gpus(gpus))
    assert (code, err) == (0, "")
    assert out.startswith(f"Model: {size} (CodeLlama-{size} dimensions): {SIZES[size].params() / 1e9:.2f}B parameters")
    assert f": {plan.choice.describe()}\nWhy: {plan.reason}\nFlags: {plan.flags()}\n" in out
    table = out.split("\n\n")[1]
    header = table.splitlines()[0].split()[3:]
    assert [h.rstrip("*") for h in header] == ["ZeRO-2", "ZeRO-3", "ZeRO-2+opt", "ZeRO-3+opt", "ZeRO-3+all"]
    chosen = [h.endswith("*") for h in header]
    assert chosen.count(True) == 1
    est = plan.choice.estimate
    for label, value in (("frozen weights", est.frozen_weights), ("total", est.total)):
        cells = next(line for line in table.splitlines() if line.startswith(label)).split()[-5:]
        assert cells[chosen.index(True)] == f"{value / GIB:.2f}"
    for row in GUIDE_VRAM:  # the guide's table beside the planner's figures, with a verdict per row
        c = check_guide(row, work_for(size))
        assert re.search(rf"^{row.size} +{row.minimum_gb} GB +{c.low.total / GIB:.1f} GiB", out, re.MULTILINE)
        assert f"  {row.size}: {c.verdict}\n" in out


def test_plan_command_without_gpus_or_nvml_uses_the_guide_recommendation(run_cli, monkeypatch):
    monkeypatch.setattr("robolora.gpu.local_gpus", lambda nodes=1: None)
    code, out, _ = run_cli("plan", "--model", "34B")
    assert code == 0
    assert (
        "GPUs: 1 GPU of 79.1 GiB (no GPU visible here, so the training guide's recommended 80 GB for 34B: 80 GB "
        "cards planned at 79.1 GiB, what CUDA sees on the smallest (H100, A100 80GB); pass --gpus NxSIZE for yours)"
    ) in out


def test_plan_command_reads_a_config_and_keeps_its_stage(run_cli, tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model_name: codellama/CodeLlama-34b-Python-hf\nzero_stage: 3\nbatch_size: 2\nmax_length: 512\n")
    code, out, _ = run_cli("plan", "--config", f, "--gpus", "8x80GB", "--lora-r", "16")
    assert code == 0 and "LoRA: r=16 on q_proj,k_proj,v_proj,o_proj in 48 of 48 layers" in out
    assert "Batch: max length 512, 2 per GPU x accumulation 1 x 8 GPUs = global batch 16, bf16" in out
    assert "Plan: 8 workers on 1 node: ZeRO-3," in out and "--zero-stage as given" in out


def test_plan_command_exits_1_when_nothing_fits(run_cli):
    code, out, _ = run_cli("plan", "--model", "34B", "--gpus", "1x16GB", "--max-length", "16384", "--batch-size", "1")
    assert code == 1 and "\nPlan: memory: nothing fits 1 GPU of 14.7 GiB: even " in out and "--max-length " in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpus", "8"], "--gpus: '8' is not COUNTxSIZE; write the GPUs of one node as e.g. 8x80GB or 4x24GB"),
        (["--gpus", "1x24GB", "--nodes", "0"], "--nodes: must be a whole number from 1 to 10,000, got 0"),
        (["--nodes", "-3"], "--nodes: must be a whole number from 1 to 10,000, got -3"),
        (["--nodes", str(10**30)], f"--nodes: must be a whole number from 1 to 10,000, got {10**30}"),
        (["--gpus", ""], "--gpus: '' is not COUNTxSIZE; write the GPUs of one node as e.g. 8x80GB or 4x24GB"),
        (
            ["--gpus", "0x80GB"],
            "--gpus: '0x80GB' is not COUNTxSIZE; write the GPUs of one node as e.g. 8x80GB or 4x24GB",
        ),
        (
            ["--gpus", f"{10**30}x80GB"],
            f"--gpus: '{10**30}x80GB' is out of range: COUNT must be 1 to 256 GPUs per node and SIZE 1 to 1024 GB "
            "per GPU; write the GPUs of one node as e.g. 8x80GB or 4x24GB",
        ),
        (
            ["--gpus", f"8x{10**30}GB"],
            f"--gpus: '8x{10**30}GB' is out of range: COUNT must be 1 to 256 GPUs per node and SIZE 1 to 1024 GB "
            "per GPU; write the GPUs of one node as e.g. 8x80GB or 4x24GB",
        ),
        (["--gpus", "1x24GB", "--lora-r", "0"], "--lora-r: must be a positive integer, got 0"),
        (["--gpus", "1x24GB", "--max-length", "8"], "--max-length: must be at least 16 tokens, got 8"),
        (
            ["--gpus", "1x24GB", "--lora-target-modules", "c_attn"],
            "--lora-target-modules: none of 'c_attn' is a linear module of a Llama-style layer; "
            "use names from q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
        ),
    ],
)
def test_plan_command_bad_input_is_one_line(run_cli, args, message):
    code, out, err = run_cli("plan", "--model", "7B", *args)
    assert (code, out, err) == (2, "", f"robolora: error: {message}\n")


# ----------------------------------------------------------------------------- robolora train


def _llama_config(size: str) -> types.SimpleNamespace:
    """A transformers-like config with a size's dimensions (what check_model hands the plan)."""
    d = SIZES[size]
    return types.SimpleNamespace(
        vocab_size=d.vocab,
        hidden_size=d.hidden,
        num_hidden_layers=d.layers,
        num_attention_heads=d.heads,
        num_key_value_heads=d.kv_heads,
        intermediate_size=d.intermediate,
        tie_word_embeddings=False,
    )


def test_train_plans_what_was_left_out_on_gpus():
    plan = plan_run(
        from_dict({"batch_size": 2, "gradient_accumulation_steps": 2, "bf16": True}),
        cluster_cpus=64,
        cluster_gpus=8,
        model_config=_llama_config("34B"),
        gpu_memory=48 * GIB,
    )
    c = plan.config
    assert (c.num_workers, c.zero_stage, c.offload, c.batch_size, c.gradient_accumulation_steps) == (
        8,
        3,
        "none",
        2,
        2,
    )
    assert plan.memory.startswith("ZeRO-3 is the simplest layout that fits")


def test_train_lowers_the_micro_batch_and_keeps_the_global_batch():
    cfg = from_dict({"batch_size": 8, "bf16": True})
    plan = plan_run(cfg, cluster_cpus=8, cluster_gpus=1, model_config=_llama_config("7B"), gpu_memory=24 * GIB).config
    assert (plan.zero_stage, plan.batch_size, plan.gradient_accumulation_steps) == (2, 4, 2)
    assert plan.batch_size * plan.gradient_accumulation_steps * plan.num_workers == cfg.global_batch_size(1)


def test_train_refuses_a_plan_that_cannot_fit_before_anything_starts():
    with pytest.raises(UserError) as e:
        plan_run(
            from_dict({"zero_stage": 2, "bf16": True}),
            cluster_cpus=64,
            cluster_gpus=8,
            model_config=_llama_config("34B"),
            gpu_memory=48 * GIB,
        )
    text = str(e.value)
    assert "\n" not in text and text.startswith("memory: nothing fits 8 GPUs of 48.0 GiB: even ZeRO-2")
    assert "try --zero-stage 3 --offload none (or leave both out for the planner)" in text


def test_train_without_known_gpu_memory_or_on_cpu_keeps_the_defaults():
    cfg = from_dict({"bf16": True, "batch_size": 8})
    unknown = plan_run(cfg, cluster_cpus=64, cluster_gpus=8, model_config=_llama_config("34B"), gpu_memory=None)
    c = unknown.config
    assert (c.zero_stage, c.offload, c.batch_size, unknown.memory) == (2, "none", 8, "")
    cpu = plan_run(cfg, cluster_cpus=2, cluster_gpus=0, model_config=_llama_config("7B"), gpu_memory=80 * GIB).config
    assert (cpu.use_gpu, cpu.zero_stage, cpu.batch_size, cpu.gradient_checkpointing) == (False, 2, 8, False)
    full = plan_run(from_dict({"offload": "all", "bf16": False}), cluster_cpus=2, cluster_gpus=0).config
    assert (full.zero_stage, full.offload) == (3, "all")  # offloading parameters needs ZeRO-3


def test_gpu_workers_get_half_their_nodes_cpus_per_gpu_up_to_eight():
    cfg = from_dict({"bf16": True})
    llama = _llama_config("7B")

    def cpus(per_gpu: int, given: int | None = None) -> int:
        c = cfg.replace(cpus_per_worker=given) if given else cfg
        return plan_run(c, 16, 1, llama, 80 * GIB, cpus_per_gpu=per_gpu).config.cpus_per_worker

    assert (cpus(16), cpus(12), cpus(64), cpus(1), cpus(3)) == (8, 6, 8, 1, 1)
    assert cpus(16, given=2) == 2  # as given
    # CPU workers still share the cluster's CPUs
    assert plan_run(from_dict({"num_workers": 2}), cluster_cpus=8, cluster_gpus=0).config.cpus_per_worker == 4


def test_cpu_clusters_get_at_most_two_workers_sharing_every_cpu_and_say_so():
    big = plan_run(from_dict({}), cluster_cpus=16, cluster_gpus=0)
    assert (big.config.num_workers, big.config.cpus_per_worker) == (2, 8)
    assert big.reason == "the default on CPUs: at most 2, sharing the cluster's 16 CPUs"
    one = plan_run(from_dict({}), cluster_cpus=1, cluster_gpus=0)
    assert (one.config.num_workers, one.config.cpus_per_worker) == (1, 1) and one.reason.endswith("the cluster's 1 CPU")
    assert plan_run(from_dict({"num_workers": 1}), cluster_cpus=16, cluster_gpus=0).reason == "as given"


# ----------------------------------------------------------------------------- models the planner cannot reach


@pytest.fixture
def unreachable_hub(monkeypatch):
    """The hub's address is a local port nobody listens on: the connection is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    return port


KNOWN = (
    "use a size (7B, 13B, 34B), an alias (smollm2-135m, tiny-llama), a CodeLlama hub name such as "
    "codellama/CodeLlama-7b-Python-hf, a local model directory, or a hub name on a machine that reaches the hub"
)


@pytest.mark.parametrize("name", ["70B", "1.5b", "350M"])
def test_an_unknown_size_is_refused_at_once_without_the_network(run_cli, name):
    start = time.monotonic()
    code, out, err = run_cli("plan", "--model", name, "--gpus", "8x80GB")
    assert (code, out, err) == (2, "", f"robolora: error: --model: {name!r} is not a size the planner knows; {KNOWN}\n")
    assert time.monotonic() - start < 2


def test_a_hub_name_is_refused_within_seconds_when_the_hub_is_out_of_reach(run_cli, unreachable_hub):
    start = time.monotonic()
    code, out, err = run_cli("plan", "--model", "someorg/not-a-cached-model", "--gpus", "8x80GB")
    assert time.monotonic() - start < 5
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert err.startswith(
        "robolora: error: --model: 'someorg/not-a-cached-model' is not in the local hub cache and cannot be fetched "
        f"(127.0.0.1:{unreachable_hub}: Connection refused); "
    )
    assert err.endswith(f"{KNOWN}\n")


def test_offline_mode_is_honoured_without_a_probe(run_cli, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://192.0.2.1:9")  # TEST-NET: a probe would hang, not refuse
    start = time.monotonic()
    code, _, err = run_cli("plan", "--model", "someorg/not-a-cached-model", "--gpus", "8x80GB")
    assert code == 2 and "(HF_HUB_OFFLINE is set)" in err and time.monotonic() - start < 2


def test_the_hub_probe_answers_none_when_a_connection_opens(monkeypatch, unreachable_hub):
    from robolora.plan_command import _hub_unreachable

    assert _hub_unreachable() == f"127.0.0.1:{unreachable_hub}: Connection refused"
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert _hub_unreachable() is None


# ----------------------------------------------------------------------------- a closed output pipe

ROOT = Path(__file__).resolve().parents[2]


def closed_pipe_run(*args: str) -> tuple[int, str]:
    """Run a command whose stdout is a pipe nobody reads any more (``robolora ... | head`` after head quit)."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run(args, stdout=write, stderr=subprocess.PIPE, cwd=ROOT, timeout=120, check=False)
    finally:
        os.close(write)
    return proc.returncode, proc.stderr.decode()


@pytest.mark.parametrize(
    "args",
    [
        ["-m", "robolora.cli", "plan", "--model", "7B", "--gpus", "4x24GB"],
        ["-m", "robolora.cli", "data", "stats", "DATA"],
        ["launch/validate_dataset.py", "DATA"],
    ],
    ids=["plan", "data-stats", "launch-script"],
)
def test_a_closed_pipe_ends_the_command_quietly(args, tmp_path):
    from robolora.robot.generator import generate_records, write_dataset

    data = tmp_path / "robot.json"
    write_dataset(generate_records(20, seed=0), data)
    code, err = closed_pipe_run(sys.executable, *[str(data) if a == "DATA" else a for a in args])
    assert (code, err) == (141, "")


def test_more_workers_than_gpus_is_refused_and_cpu_workers_are_named_as_the_way_out():
    """A machine with one GPU: GPU workers by default, so 2 workers are refused, naming --no-use-gpu; with it,
    2 CPU workers share the CPUs (what the CPU test tier asks for on such a machine)."""
    with pytest.raises(UserError) as refused:
        plan_run(from_dict({"num_workers": 2}), cluster_cpus=8, cluster_gpus=1)
    assert str(refused.value) == (
        "--num-workers 2: the Ray cluster has only 1 GPU; use at most 1, or add --no-use-gpu to train on CPU workers"
    )
    cpu = plan_run(from_dict({"num_workers": 2, "use_gpu": False}), cluster_cpus=8, cluster_gpus=1).config
    assert (cpu.use_gpu, cpu.num_workers, cpu.cpus_per_worker) == (False, 2, 4)
    with pytest.raises(UserError, match=r"only 1 GPU; use at most 1$"):  # asked for GPUs: no CPU hint
        plan_run(from_dict({"num_workers": 2, "use_gpu": True}), cluster_cpus=8, cluster_gpus=1)
