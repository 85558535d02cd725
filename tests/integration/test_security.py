"""Nothing runs that should not: no repository code without --trust-remote-code, no pickled adapter,
no secret in saved files, dashboards on localhost. (Generated code is covered in test_robot_checker.py
and test_evaluate.py; token authentication for jobs in test_multinode.py.)"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from robolora.cli import main
from robolora.models import ensure_alias


class _Marker:
    """Unpickling this creates a file: what an attacker's pickle would do."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "pwned"


def test_repository_code_is_not_run_without_trust_remote_code(tmp_path, marker, small_dataset, capsys):
    model = tmp_path / "remote-model"
    model.mkdir()
    config = json.loads((ensure_alias("tiny-llama") / "config.json").read_text())
    # a model type only the repository's own code defines: loading it needs that code
    config["model_type"] = "evil-llama"
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (model / "config.json").write_text(json.dumps(config))
    (model / "evil.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    code = main(["train", "--data-json", str(small_dataset), "--output-dir", str(tmp_path / "out"),
                 "--model-name", str(model), "--max-steps", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("robolora: error: --model-name:") and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "out").exists()


def _pickled_adapter(folder: Path, marker: Path) -> Path:
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"r": 8, "target_modules": ["q_proj"], "peft_type": "LORA"}))
    (folder / "adapter_model.bin").write_bytes(pickle.dumps(_Marker(str(marker))))
    return folder


def test_an_adapter_is_only_read_from_safetensors(tmp_path, marker, small_dataset, capsys):
    adapter = _pickled_adapter(tmp_path / "adapter", marker)
    for argv in (
        ["eval", "--lora-path", str(adapter), "--data-json", str(small_dataset)],
        ["demo", "--lora-path", str(adapter), "--command", "stop"],
        ["export", "--lora-path", str(adapter), "--output", str(tmp_path / "merged")],
        ["train", "--data-json", str(small_dataset), "--output-dir", str(tmp_path / "out"), "--model-name",
         "tiny-llama", "--resume-from", str(adapter), "--lora-r", "8", "--lora-target-modules", "q_proj"],
    ):  # fmt: skip
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and "holds no adapter (adapter_config.json and adapter_model.safetensors)" in err, argv
    assert not marker.exists()


#: Secrets a user's shell commonly holds; each gets a value found nowhere else.
SECRET_NAMES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "WANDB_API_KEY", "RAY_AUTH_TOKEN")


def test_saved_files_hold_no_secret_from_the_environment(small_dataset, tmp_path):
    """`robolora train` started with secrets in its environment, so that its Ray cluster, every worker and every
    library they load hold them: none is written into the run's files (config, metrics, logs, TensorBoard events,
    checkpoints, Ray Train's state) or into the Ray session's own logs."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile
    import uuid

    from tests.integration.conftest import TINY, cli_flags

    secrets = {name: f"{name.lower()}-{uuid.uuid4().hex}" for name in SECRET_NAMES}
    # Ray's session folder (logs, sockets) under a fresh, short path: sockets' paths are limited to 107 bytes.
    ray_tmp = Path(tempfile.mkdtemp(prefix="rl-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", *SECRET_NAMES)}
    env.update(secrets, RAY_TMPDIR=str(ray_tmp))
    out = tmp_path / "secrets"
    settings = {**TINY, "max_steps": 2, "save_steps": 2, "eval_steps": 2, "data_json": small_dataset}
    try:
        run = subprocess.run(
            [sys.executable, "-m", "robolora.cli", "train", *cli_flags({**settings, "output_dir": out})],
            env=env,
            capture_output=True,
            timeout=600,
            check=False,
        )
        assert run.returncode == 0, run.stderr.decode()[-3000:]
        files = [p for root in (out, ray_tmp) for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
        names = {p.name for p in files}
        assert {"config.yaml", "metrics.jsonl", "train_summary.json", "adapter_model.safetensors"} <= names
        assert any(p.name.startswith("events.out.tfevents") for p in files)
        assert any(p.name == "trainer_state.json" for p in files)  # checkpoints
        assert any(p.suffix in (".log", ".out", ".err") for p in files if ray_tmp in p.parents)  # Ray's logs
        for secret in secrets.values():
            assert secret.encode() not in run.stdout + run.stderr
            for p in files:
                assert secret.encode() not in p.read_bytes(), f"{p} holds {secret}"
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_the_local_dashboard_listens_on_localhost_only(ray_session):
    import ray

    url = ray.get_runtime_context().dashboard_url if hasattr(ray.get_runtime_context(), "dashboard_url") else None
    url = url or ray._private.worker.global_worker.node.address_info.get("webui_url")
    assert url and url.split(":")[0] in ("127.0.0.1", "localhost"), url
