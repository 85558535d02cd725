"""Every file in cluster/ parses and holds what its tool requires.

The Ray cluster launcher YAML is checked with Ray's own JSON schema and validation; the KubeRay
manifests against the ray.io/v1 fields KubeRay reads; commands they run are parsed by robolora's own
parser, and the files they name exist in this checkout. GPU node types must cover the training
guide's table and the GPUs each example config is planned for.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
from pathlib import Path

import jsonschema
import pytest
import ray
import ray.autoscaler
import yaml

from robolora.cli import build_parser
from robolora.flags import config_from_namespace

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
#: GPUs per node and GB per GPU of the instance types and GPU products the files use.
AWS_GPUS = {
    "g5.2xlarge": (1, 24),
    "g5.12xlarge": (4, 24),
    "g6e.2xlarge": (1, 48),
    "g6e.48xlarge": (8, 48),
    "p4d.24xlarge": (8, 40),
    "p4de.24xlarge": (8, 80),
}
GPU_PRODUCT_GB = {"NVIDIA-A10G": 24, "NVIDIA-L40S": 48, "NVIDIA-A100-SXM4-40GB": 40, "NVIDIA-A100-SXM4-80GB": 80}
#: The training guide's "GPU Memory Requirements": recommended VRAM per model size.
GUIDE_RECOMMENDED_GB = {"7B": 24, "13B": 40, "34B": 80}
PLANNED_FOR = re.compile(r"^# Planned for: --gpus (\d+)x(\d+)GB", re.MULTILINE)


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def planned_gpus() -> dict[str, tuple[int, int]]:
    """(GPUs per node, GB per GPU) of each example config planned for GPUs."""
    found = {}
    for path in sorted((REPO / "examples").glob("*.yaml")):
        match = PLANNED_FOR.search(path.read_text())
        if match:
            found[path.name] = (int(match[1]), int(match[2]))
    return found


def dockerfile_workdir() -> str:
    (workdir,) = re.findall(r"^WORKDIR (\S+)$", (CLUSTER / "Dockerfile").read_text(), re.MULTILINE)
    return workdir


# ----------------------------------------------------------------------------- cluster launcher


def test_launcher_yaml_passes_rays_schema_and_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load("aws-gpu.yaml")
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    validate_config(prepare_config(copy.deepcopy(config)))  # Ray's checks once its defaults are filled in


def test_launcher_yaml_sizes_gpu_nodes_for_the_guide_and_the_examples():
    config = load("aws-gpu.yaml")
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}, "the head trains nothing"
    assert head["node_config"]["InstanceType"] not in AWS_GPUS
    workers = {name: AWS_GPUS[t["node_config"]["InstanceType"]] for name, t in types.items() if t is not head}
    assert all(t.get("min_workers", 0) == 0 for t in types.values() if t is not head), "GPU nodes only on demand"
    for size, gb in GUIDE_RECOMMENDED_GB.items():
        assert any(per_gpu >= gb for _, per_gpu in workers.values()), f"no node type for the guide's {size} row"
    for example, gpus in planned_gpus().items():
        assert gpus in workers.values(), f"no node type with the GPUs {example} is planned for"
    assert config["docker"]["image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"


def test_launcher_yaml_installs_this_checkout_and_turns_on_token_auth():
    config = load("aws-gpu.yaml")
    (checkout,) = [remote for remote, local in config["file_mounts"].items() if local == "."]
    assert any(cmd.endswith(f"pip install -q -e {checkout}") for cmd in config["setup_commands"])
    assert config["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        (start,) = [cmd for cmd in config[key] if "ray start" in cmd]
        assert "RAY_AUTH_MODE=token ray start" in start, key
    assert ".venv" in config["rsync_exclude"]


# ----------------------------------------------------------------------------- KubeRay


def check_cluster_spec(spec: dict) -> dict[str, tuple[int, int]]:
    """The fields KubeRay needs in a RayCluster spec; returns (GPUs, GB per GPU) per worker group."""
    assert spec["rayVersion"] == ray.__version__
    assert spec["authOptions"]["mode"] == "token"
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0", "the head trains nothing"
    pods = [head["template"]["spec"]]
    groups = {}
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
        assert isinstance(group["rayStartParams"], dict)
        pod = group["template"]["spec"]
        pods.append(pod)
        (container,) = pod["containers"]
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        gpus = int(limits["nvidia.com/gpu"])
        assert gpus >= 1 and requests["nvidia.com/gpu"] == limits["nvidia.com/gpu"], group["groupName"]
        groups[group["groupName"]] = (gpus, GPU_PRODUCT_GB[pod["nodeSelector"]["nvidia.com/gpu.product"]])
    assert "nvidia.com/gpu" not in head["template"]["spec"]["containers"][0]["resources"]["limits"]
    pvc = load("kuberay-pvc.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim" and "ReadWriteMany" in pvc["spec"]["accessModes"]
    for pod in pods:
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["shared"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
        for container in pod["containers"]:
            assert container["image"] == pods[0]["containers"][0]["image"]
            assert {"cpu", "memory"} <= set(container["resources"]["limits"])
            assert {m["name"] for m in container["volumeMounts"]} <= set(volumes)
            assert {"name": "shared", "mountPath": "/mnt/shared"} in container["volumeMounts"]
        for params in (head["rayStartParams"], *(g["rayStartParams"] for g in spec["workerGroupSpecs"])):
            assert all(isinstance(v, str) for v in params.values()), "rayStartParams values are strings"
    return groups


def test_raycluster_manifest():
    doc = load("kuberay-raycluster.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayCluster")
    groups = check_cluster_spec(doc["spec"])
    for size, gb in GUIDE_RECOMMENDED_GB.items():
        assert any(per_gpu >= gb for _, per_gpu in groups.values()), f"no worker group for the guide's {size} row"
    for example, gpus in planned_gpus().items():
        assert gpus in groups.values(), f"no worker group with the GPUs {example} is planned for"


def test_rayjob_manifest_runs_robolora_train_on_files_of_this_checkout():
    doc = load("kuberay-rayjob.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayJob")
    spec = doc["spec"]
    groups = check_cluster_spec(spec["rayClusterSpec"])
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["robolora", "train"]
    # Paths in the image's checkout are this checkout's files.
    workdir = dockerfile_workdir().rstrip("/") + "/"
    local = [str(REPO / a.removeprefix(workdir)) if a.startswith(workdir) else a for a in argv[1:]]
    named = [a for a in argv if a.startswith(workdir)]
    assert any(a.endswith(".yaml") for a in named)
    for path in named:
        assert (REPO / path.removeprefix(workdir)).is_file(), path
    cfg = config_from_namespace(build_parser().parse_args(local))  # robolora's own parser and validation
    assert cfg.output_dir.startswith("/mnt/shared/"), "checkpoints on the volume every pod shares"
    total = sum(groups[g["groupName"]][0] * g["replicas"] for g in spec["rayClusterSpec"]["workerGroupSpecs"])
    assert cfg.num_workers in (None, total), "one worker per GPU of the job's cluster"
    assert spec["shutdownAfterJobFinishes"] is True


def test_dockerfile_builds_on_rays_image_of_the_pinned_version():
    text = (CLUSTER / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray.__version__}-py311-gpu" in text
    assert "pip install --no-cache-dir --no-deps -e ." in text
    ignored = (CLUSTER / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", ".git", "models"} <= set(ignored)


# ----------------------------------------------------------------------------- local helper


def test_local_cluster_script_parses_and_explains_itself():
    script = CLUSTER / "local_cluster.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True, check=False).returncode == 0
    usage = subprocess.run([str(script)], capture_output=True, text=True, check=False)
    assert usage.returncode == 2 and "local_cluster.sh start" in usage.stdout and "stop" in usage.stdout
    # It stops only its own nodes: `ray stop` would end every Ray cluster on the machine.
    assert not re.search(r'^[^#]*(\bray|\$RAY"?) stop', script.read_text(), re.MULTILINE)


def local_cluster_code() -> str:
    """The script without its comments."""
    lines = (CLUSTER / "local_cluster.sh").read_text().splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


def test_local_cluster_binds_loopback_only():
    code = local_cluster_code()
    (flags,) = re.findall(r"^NODE_FLAGS=\(([^)]*)\)", code, re.MULTILINE)
    assert "--node-ip-address=127.0.0.1" in flags.split(), "every node's address is loopback"
    assert "--dashboard-host=127.0.0.1" in code
    assert not re.search(r"0\.0\.0\.0|::/|\[::\]|--dashboard-host=(?!127\.0\.0\.1\b)", code)
    # Ray would turn a loopback node address into the machine's network address: the head keeps it through
    # Ray's one-machine switch, and worker nodes start through a `ray start` that keeps it.
    from ray._private import ray_constants, services

    assert ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR == "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    assert re.search(r"start_node head env RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 \"\$RAY\" start --head", code)
    (launcher,) = re.findall(r"^LOOPBACK_RAY='([^']*)'", code, re.MULTILINE)
    compile(launcher, "LOOPBACK_RAY", "exec")
    assert "services.resolve_ip_for_localhost = lambda host: host" in launcher
    assert callable(services.resolve_ip_for_localhost)
    assert re.search(r'start_node "worker\$i" "\$PYTHON" -c "\$LOOPBACK_RAY" start --address=', code)


def test_local_cluster_leaves_ports_to_ray_and_waits_for_a_job():
    code = local_cluster_code()
    # No port is probed and released for Ray to bind later: Ray binds port 0 itself.
    assert "free_port" not in code and ".bind(" not in code
    (flags,) = re.findall(r"^NODE_FLAGS=\(([^)]*)\)", code, re.MULTILINE)
    for flag in ("--dashboard-agent-listen-port=0", "--min-worker-port=0", "--max-worker-port=0"):
        assert flag in flags.split(), flag
    for flag in ("--port=0", "--dashboard-port=0"):
        assert flag in code, flag
    assert re.search(r"TRIES=\d", code) and "Failed to bind|Address already in use" in code
    # "up" only after the job server ran a no-op job with the cluster's token, within a bounded wait.
    assert re.search(
        r'RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="\$STATE/auth_token" timeout "\$\{READY_S:-\d+\}" \\\s*'
        r'"\$RAY" job submit --address "\$url" --submission-id "\$READY_JOB" -- true',
        code,
    )
    assert code.index('ready_check "$url"') < code.index("Ray cluster up")


@pytest.mark.parametrize("name", sorted(p.name for p in CLUSTER.iterdir() if p.name != "README.md"))
def test_the_readme_explains_every_file(name):
    assert f"`cluster/{name}`" in (CLUSTER / "README.md").read_text()
