"""``cluster/local_cluster.sh`` on the real Ray: a head and a worker node that listen on loopback only.

``start`` must report the cluster up only once its job server has run a no-op job through token
authentication, and otherwise stop what it started and exit 1. Each cluster lives in its own
temporary state directory and ``stop`` ends only its processes, so other Ray clusters on the
machine go on.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
LOCAL_CLUSTER = REPO / "cluster" / "local_cluster.sh"
ROBOLORA = [sys.executable, "-m", "robolora.cli"]
#: Settings of the caller's own Ray setup that must not leak into the cluster made here.
RAY_ENV = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


@pytest.fixture
def local_cluster():
    """Runs the script's commands against a fresh state directory; stops whatever it started."""
    # A short path: Ray's socket paths under it must fit in 107 bytes.
    state = Path(tempfile.mkdtemp(prefix="rl", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if k not in RAY_ENV}
    env.update(RAY=str(Path(sys.executable).with_name("ray")), ROBOLORA_LOCAL_CLUSTER=str(state))

    def run(*args: str, **settings: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(LOCAL_CLUSTER), *args],
            env={**env, **settings},
            capture_output=True,
            text=True,
            timeout=400,
            check=False,
        )

    try:
        yield state, run
    finally:
        run("stop")
        shutil.rmtree(state, ignore_errors=True)


def node_processes(state: Path) -> list[psutil.Process]:
    """Every process of the cluster's nodes: each node's ``ray start`` leads its own session."""
    leaders = {int(p.read_text()) for p in state.glob("*.pid")}
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) in leaders:
                found.append(proc)
        except (ProcessLookupError, PermissionError):
            continue
    return found


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)  # an IPv6 socket bound to ::ffff:127.0.0.1
    return (mapped or address).is_loopback


def test_start_listens_on_loopback_only_and_is_up_once_a_job_ran(local_cluster):
    state, run = local_cluster
    started = run("start", "1", "1")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "Ray cluster up" in started.stdout

    procs = node_processes(state)
    pids = {p.pid for p in procs}
    listening = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in pids]
    exposed = [
        (c.laddr.ip, c.laddr.port, psutil.Process(c.pid).name()) for c in listening if not is_loopback(c.laddr.ip)
    ]
    assert exposed == [], "Ray processes of the local cluster listen beyond loopback"
    # The check saw the cluster: its GCS, its job server, and both nodes' raylets.
    ports = {c.laddr.port for c in listening}
    url = (state / "dashboard_url").read_text().strip()
    gcs = (state / "gcs_address").read_text().strip()
    assert url.startswith("http://127.0.0.1:") and gcs.startswith("127.0.0.1:")
    assert {int(url.rsplit(":", 1)[1]), int(gcs.rsplit(":", 1)[1])} <= ports
    raylets = {c.pid for c in listening if psutil.Process(c.pid).name() == "raylet"}
    assert len(raylets) == 2, "a head and a worker node, each its own raylet"

    # The job server ran the no-op job, with the cluster's token.
    env = {k: v for k, v in os.environ.items() if k not in RAY_ENV}
    env["RAY_AUTH_TOKEN_PATH"] = str(state / "auth_token")
    status = subprocess.run(
        [*ROBOLORA, "jobs", "status", "local-cluster-ready", "--address", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("local-cluster-ready: SUCCEEDED")

    stopped = run("stop")
    assert stopped.returncode == 0, stopped.stderr
    _, alive = psutil.wait_procs(procs, timeout=30)
    assert alive == [], "stop ends every process of the cluster"


def test_start_that_cannot_run_the_job_in_time_fails_and_stops_its_nodes(local_cluster):
    state, run = local_cluster
    started = run("start", "0", READY_S="1")  # the no-op job cannot finish within 1 s
    assert started.returncode == 1, started.stdout + started.stderr
    assert "Ray cluster up" not in started.stdout
    assert "did not run the no-op job local-cluster-ready to the end within 1 s" in started.stderr
    assert "the cluster did not start; its processes are stopped" in started.stderr
    assert list(state.glob("*.pid")) == [] and (state / "head.log").is_file()
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(state) in " ".join(p.info["cmdline"] or [])], (
        "no process of the failed cluster is left"
    )
