"""What a run leaves behind stays readable when the run is cut short: files and the adapter never half-written
when the writer is killed, and a real out-of-memory failure that names the remedies and resumes. (TensorBoard's
events after a resume are checked in test_resume.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import ray.cloudpickle
import torch

from tests.integration.conftest import metric_rows, series

# Workers cannot import this test module: ship its loops by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


# ----------------------------------------------------------------------------- writes killed midway

#: Run in a child process before the writer: while ``armed``, the first write to a file whose name holds NAME
#: (through ``open`` or safetensors) writes half of its data, flushes it to disk, touches READY and waits to be
#: killed, as a process killed mid-write would.
BLOCK_MID_WRITE = """
import builtins, io, os, pathlib, time

NAME, READY = {name!r}, {ready!r}
armed = True
_open = io.open


def blocks(file):
    return armed and isinstance(file, (str, bytes, os.PathLike)) and NAME in os.fsdecode(file)


class HalfWritten:
    def __init__(self, f):
        self._f = f

    def write(self, data):
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        os.fsync(self._f.fileno())
        pathlib.Path(READY).touch()
        time.sleep(600)

    def __getattr__(self, attr):
        return getattr(self._f, attr)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


def blocking_open(file, mode="r", *args, **kwargs):
    f = _open(file, mode, *args, **kwargs)
    return HalfWritten(f) if blocks(file) and any(m in mode for m in "wxa+") else f


builtins.open = io.open = blocking_open

import safetensors.torch

whole_save_file = safetensors.torch.save_file


def half_save_file(tensors, filename, metadata=None):
    if not blocks(filename):
        return whole_save_file(tensors, filename, metadata=metadata)
    data = safetensors.torch.save(tensors, metadata=metadata)
    with _open(filename, "wb") as f:
        HalfWritten(f).write(data)

safetensors.torch.save_file = half_save_file
"""


def kill_mid_write(tmp_path: Path, name: str, writer: str) -> None:
    """Run ``writer`` (Python source) in a child process whose first write to ``name`` stops halfway; SIGKILL
    the child there."""
    ready = tmp_path / f"{name}.killed-here"
    script = textwrap.dedent(BLOCK_MID_WRITE.format(name=name, ready=str(ready))) + textwrap.dedent(writer)
    log = tmp_path / f"{name}.log"
    with open(log, "wb") as output:
        child = subprocess.Popen([sys.executable, "-c", script], stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 180
        while not ready.exists() and child.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert ready.exists(), f"the writer never wrote {name}: {log.read_text()[-3000:]}"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_a_config_killed_mid_write_leaves_the_previous_one(tmp_path):
    from robolora.config import TrainConfig, load_config_file, save_config

    out = tmp_path / "out"
    out.mkdir()
    save_config(TrainConfig(lora_r=8, max_steps=100), out / "config.yaml")
    before = (out / "config.yaml").read_bytes()
    kill_mid_write(
        tmp_path,
        "config.yaml",
        f"""
        from robolora.config import TrainConfig, save_config
        save_config(TrainConfig(lora_r=16, max_steps=200), {str(out / "config.yaml")!r})
        """,
    )
    assert (out / "config.yaml").read_bytes() == before
    assert visible(out) == ["config.yaml"]
    saved = load_config_file(out / "config.yaml")
    assert (saved["lora_r"], saved["max_steps"]) == (8, 100)


def test_a_run_summary_killed_mid_write_leaves_the_previous_one(tmp_path):
    """The driver's last step (plots, model card, then train_summary.json) killed while it writes the summary."""
    out = tmp_path / "out"
    out.mkdir()
    rows = [{"step": s, "epoch": s / 4, "train_loss": 2.0 - s / 10} for s in range(1, 9)]
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = json.dumps({"steps": 8, "train_runtime_s": 12.5}, indent=2)
    (out / "train_summary.json").write_text(before)
    kill_mid_write(
        tmp_path,
        "train_summary.json",
        f"""
        from pathlib import Path
        from robolora.config import from_dict
        from robolora.launcher import finish_run
        from robolora.preflight import plan_run
        cfg = from_dict({{"data_json": "d.json", "output_dir": {str(out)!r}, "max_steps": 8}})
        finish_run(plan_run(cfg, cluster_cpus=2, cluster_gpus=0).config, Path(cfg.output_dir), 30.0)
        """,
    )
    assert (out / "train_summary.json").read_text() == before
    assert visible(out) == ["README.md", "loss_curve.png", "metrics.jsonl", "train_summary.json"]


def test_an_adapter_killed_mid_write_leaves_the_previous_one_loadable(tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "out"
    kill_mid_write(
        tmp_path,
        "adapter_model.safetensors",
        f"""
        import torch
        from pathlib import Path
        from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
        from robolora.models import load_model
        from robolora.checkpoints import save_adapter

        out = Path({str(out)!r})
        model = get_peft_model(load_model("tiny-llama"), LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
        state = {{k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(model).items()}}
        torch.save(state, out.parent / "before.pt")
        armed = False
        save_adapter(model, state, out)  # the previous adapter, written whole
        armed = True
        save_adapter(model, {{k: v + 1 for k, v in state.items()}}, out)  # the next one, killed midway
        """,
    )
    before = torch.load(tmp_path / "before.pt")
    loaded = load_file(str(out / "adapter_model.safetensors"))
    assert loaded.keys() == before.keys() and all(torch.equal(loaded[k], before[k]) for k in before)
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 8
    assert visible(out) == ["adapter_config.json", "adapter_model.safetensors"]


# ----------------------------------------------------------------------------- a real out-of-memory failure


def memory_limited_after_the_first_checkpoint_loop(config):
    """The standard worker, except that once its first checkpoint is saved, the worker process may map only a
    little more memory than it holds (its address-space limit): the next training step's activations and
    logits no longer fit, and the allocation really fails."""
    import resource

    from robolora.worker import Trainer, run_worker

    save = Trainer.save_checkpoint

    def save_then_limit(self, metrics):
        save(self, metrics)
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if soft == resource.RLIM_INFINITY:
            status = Path("/proc/self/status").read_text()
            vm = int(next(line for line in status.splitlines() if line.startswith("VmSize:")).split()[1]) * 1024
            resource.setrlimit(resource.RLIMIT_AS, (vm + (16 << 20), hard))

    Trainer.save_checkpoint = save_then_limit
    run_worker(config)


def test_a_worker_that_runs_out_of_memory_names_the_remedies_and_a_rerun_resumes(train_run, tmp_path):
    from robolora.launcher import OOM_SIGNS, TrainingFailed, oom_advice

    out = tmp_path / "oom"
    with pytest.raises(TrainingFailed) as failed:
        train_run("oom", train_loop=memory_limited_after_the_first_checkpoint_loop)
    message = str(failed.value)
    assert failed.value.exit_code == 1
    assert any(sign in message for sign in OOM_SIGNS), message
    advice = oom_advice("out of memory")
    assert advice in message, message  # every remedy, in the one error
    assert message.endswith(
        f"the last complete checkpoint in {out} is kept; run the same command again to resume from it"
    )
    assert (out / "checkpoint-4" / "trainer_state.json").is_file()
    assert not (out / "adapter_model.safetensors").exists()
    kept = [r for r in metric_rows(out) if r["step"] <= 4]

    train_run("oom")  # the same command without the limit: resumes from step 4 and finishes
    assert [r for r in metric_rows(out) if r["step"] <= 4] == kept  # not started again
    assert sorted(series(out, "train_loss")) == list(range(1, 9))
    assert json.loads((out / "train_summary.json").read_text())["steps"] == 8
    assert (out / "adapter_model.safetensors").is_file()
