"""Multi-node runs on real Ray clusters made of several nodes on this machine.

One test trains across the two worker nodes of a ``ray.cluster_utils.Cluster`` (each worker on its
own node, their gloo all-reduce between nodes); the other starts a head with the job server and
token authentication (``cluster/local_cluster.sh``) and trains through ``robolora submit``.
Each cluster keeps its sessions, sockets and address file in its own temporary directory and is
stopped by ending only the processes it started, so other Ray clusters on the machine go on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import ray.cloudpickle
import torch
from safetensors.torch import load_file

from robolora.config import from_dict
from tests.integration.conftest import TINY, cli_flags, metric_rows

REPO = Path(__file__).resolve().parents[2]
LOCAL_CLUSTER = REPO / "cluster" / "local_cluster.sh"
ROBOLORA = [sys.executable, "-m", "robolora.cli"]
#: Settings of the caller's own Ray setup that must not leak into the clusters made here.
RAY_ENV = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def short_tmpdir() -> Path:
    """A fresh directory with a short path: Ray's socket paths under it must fit in 107 bytes."""
    return Path(tempfile.mkdtemp(prefix="rl", dir="/tmp"))


def node_recording_loop(config):
    """The standard worker, after writing which node this rank runs on."""
    import ray.train

    from robolora.worker import train_loop_per_worker

    rank = ray.train.get_context().get_world_rank()
    Path(config["output_dir"], f"node-of-rank{rank}.txt").write_text(ray.get_runtime_context().get_node_id())
    train_loop_per_worker(config)


# Workers cannot import this test module: ship the loop by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture
def three_node_cluster(monkeypatch):
    """A head that runs no training (as on a GPU cluster) and two 1-CPU worker nodes."""
    from ray.cluster_utils import Cluster

    ray.shutdown()  # a local cluster an earlier test started; the next run_training starts one again
    tmp = short_tmpdir()
    monkeypatch.setenv("RAY_TMPDIR", str(tmp))  # sessions and the address file stay out of /tmp/ray
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        yield cluster, workers
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def test_two_workers_on_two_nodes_train_and_checkpoint(three_node_cluster, small_dataset, tmp_path):
    from robolora.launcher import run_training

    cluster, workers = three_node_cluster
    out = tmp_path / "spread"
    cfg = {
        **TINY,
        "max_steps": 2,
        "save_steps": 2,
        "eval_steps": 2,
        "placement_strategy": "STRICT_SPREAD",
        "ray_address": cluster.address,
        "data_json": str(small_dataset),
        "output_dir": str(out),
    }
    run_training(from_dict(cfg), train_loop=node_recording_loop)

    nodes = {int(p.stem.removeprefix("node-of-rank")): p.read_text() for p in out.glob("node-of-rank*.txt")}
    assert sorted(nodes) == [0, 1]
    assert nodes[0] != nodes[1], "STRICT_SPREAD puts each worker on its own node"
    assert set(nodes.values()) == {w.node_id for w in workers}, "no training on the head"

    # The checkpoint holds both ranks' shards, written on two nodes, and the rank-0 adapter.
    ckpt = out / "checkpoint-2"
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "trainer_state.json",
        "rng_rank0.safetensors",
        "rng_rank1.safetensors",
        "deepspeed/zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "deepspeed/zero_pp_rank_1_mp_rank_00_optim_states.pt",
    ):
        assert (ckpt / name).is_file(), name
    final, saved = load_file(str(out / "adapter_model.safetensors")), load_file(str(ckpt / "adapter_model.safetensors"))
    assert len(final) == 2 * 7 * 2  # A and B for 7 modules in 2 layers
    assert sorted(final) == sorted(saved)
    for key, tensor in final.items():
        torch.testing.assert_close(tensor, saved[key])
    assert any(k.endswith("lora_B.weight") and t.abs().sum() > 0 for k, t in final.items()), "it trained"
    assert [r["step"] for r in metric_rows(out) if "train_loss" in r] == [1, 2]
    assert (out / "robolora_run.json").read_text().count('"finished": true') == 1


# ----------------------------------------------------------------------------- Ray Jobs


@pytest.fixture
def job_cluster():
    """``cluster/local_cluster.sh``: a head with the job server and token auth, and one 2-CPU worker node."""
    state = short_tmpdir()
    env = {k: v for k, v in os.environ.items() if k not in RAY_ENV}
    env.update(RAY=str(Path(sys.executable).with_name("ray")), ROBOLORA_LOCAL_CLUSTER=str(state))
    try:
        started = subprocess.run(
            [str(LOCAL_CLUSTER), "start", "1", "2"], env=env, capture_output=True, text=True, timeout=300, check=False
        )
        assert started.returncode == 0, started.stdout + started.stderr
        yield (state / "dashboard_url").read_text().strip(), state / "auth_token"
    finally:
        subprocess.run([str(LOCAL_CLUSTER), "stop"], env=env, capture_output=True, timeout=180, check=False)
        shutil.rmtree(state, ignore_errors=True)


def test_submit_trains_as_a_ray_job_with_token_auth(job_cluster, small_dataset, tmp_path, run_cli, monkeypatch):
    url, token_file = job_cluster
    token = token_file.read_text().strip()
    env = {k: v for k, v in os.environ.items() if k not in RAY_ENV}
    env["RAY_AUTH_TOKEN_PATH"] = str(token_file)
    out = tmp_path / "job-run"
    train = {
        **TINY,
        "num_workers": 1,
        "batch_size": 8,
        "max_steps": 2,
        "save_steps": 2,
        "eval_steps": 2,
        "data_json": small_dataset,
        "output_dir": out,
    }
    cmd = [*ROBOLORA, "submit", "--address", url, "--working-dir", str(REPO), "--job-id", "robolora-test"]
    done = subprocess.run(
        [*cmd, "--", "train", *cli_flags(train)], env=env, capture_output=True, text=True, timeout=400, check=False
    )
    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed[-4000:]
    assert "submitted job robolora-test" in done.stdout
    assert "Pre-training checklist" in done.stdout, "the job's logs are streamed"
    worker_lines = [line for line in done.stdout.splitlines() if "model: " in line and " trainable; ZeRO-" in line]
    assert len(worker_lines) == 1, "the worker node's prints reach the job's log once"
    assert "job robolora-test SUCCEEDED" in done.stdout
    assert token not in printed
    for name in ("adapter_config.json", "adapter_model.safetensors", "train_summary.json", "checkpoint-2"):
        assert (out / name).exists(), name

    status = subprocess.run(
        [*ROBOLORA, "jobs", "status", "robolora-test", "--address", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("robolora-test: SUCCEEDED")

    # Refusals are one line each, exit code 2, and never show a token.
    for name in RAY_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token
    code, _, err = run_cli("jobs", "status", "robolora-test", "--address", url)
    assert code == 2 and err.count("\n") == 1 and "requires token authentication and no token was found" in err
    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-token")
    code, _, err = run_cli("jobs", "status", "robolora-test", "--address", url)
    assert code == 2 and "refused the token" in err and "not-the-token" not in err
    monkeypatch.setenv("RAY_AUTH_TOKEN", token)
    code, _, err = run_cli("jobs", "logs", "raysubmit_nosuchjob", "--address", url)
    assert code == 2 and "job raysubmit_nosuchjob: no such job" in err
    code, out_text, _ = run_cli("jobs", "logs", "robolora-test", "--address", url)
    assert code == 0 and "Done in" in out_text and token not in out_text


# ----------------------------------------------------------------------------- hub weights on every node


@pytest.fixture
def node_hub_cache(monkeypatch, tmp_path):
    """A hub cache holding ``org/tiny`` (the tiny model's files under the hub client's layout), offline: set
    before the cluster starts, so its nodes' processes read it."""
    from robolora.models import resolve_model

    tiny = Path(resolve_model("tiny-llama"))
    repo = tmp_path / "hub" / "models--org--tiny"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    shutil.copytree(tiny, snapshot)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return snapshot


def test_hub_weights_are_fetched_on_every_worker_node_before_training(node_hub_cache, three_node_cluster):
    """One task per node that can host workers (not the head, which has no CPUs for them): each finds the
    weights in its node's cache; a model no node can fetch fails with the preflight's message."""
    from robolora.download import fetch_on_nodes
    from robolora.errors import ModelNotFoundError

    cluster, workers = three_node_cluster
    ray.init(address=cluster.address)
    lines = fetch_on_nodes("org/tiny", every_s=0.5)
    assert len(lines) == len(workers) == 2
    assert all(line.startswith("org/tiny: weights in the hub cache (") for line in lines)
    with pytest.raises(ModelNotFoundError, match=r"--model-name: model 'org/missing' not found: its weights could"):
        fetch_on_nodes("org/missing", every_s=0.5)
