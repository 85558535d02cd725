"""An interrupted run resumes on the curve of an unbroken one, whatever stops it and however it is laid out.

Every run here has LoRA dropout (whose random numbers a resume must continue, not restart) and crosses an
epoch boundary (whose reshuffled order a resume must keep): :data:`~tests.integration.conftest.BASE`,
4 steps per epoch, checkpoints at steps 3 and 6 of 8. Stopped after its step-3 checkpoint, a run resumes
from step 3 (epoch 0) and goes on into epoch 1; stopped later, from step 6 (epoch 1). Each layout of the
states resumes from its own checkpoint files: ZeRO-2, and ZeRO-3 in bf16 with everything (the optimizer's
states among it) offloaded to the CPU. TensorBoard shows each step once: the resumed attempt's event file
purges the steps the stopped one logged after its checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from tests.integration.conftest import (
    STEPS,
    STEPS_PER_EPOCH,
    adapter,
    cli_flags,
    losses,
    run_values,
    scalar_steps,
    series,
)

#: The same operations on the same states: a resumed run repeats the unbroken one's numbers; dropout's random
#: numbers restarted instead of restored moved a loss by 1.5e-3, an epoch replayed in the old order by 3.9e-2.
TOL = {"rtol": 1e-6, "atol": 1e-6}


def assert_on_the_unbroken_curve(out: Path, reference: Path, tol: dict) -> None:
    """Every step's loss, the final evaluation and the adapter are those of the unbroken run."""
    rows = series(out, "epoch")
    assert rows[1] == pytest.approx(1 / STEPS_PER_EPOCH) and rows[STEPS] == pytest.approx(STEPS / STEPS_PER_EPOCH)
    torch.testing.assert_close(losses(out), losses(reference), **tol)
    torch.testing.assert_close(losses(out, "eval_loss"), losses(reference, "eval_loss"), **tol)
    expected = adapter(reference)
    for key, weight in adapter(out).items():
        torch.testing.assert_close(weight, expected[key], **tol, msg=lambda m, k=key: f"{k}: {m}")
    # TensorBoard: one event file per attempt, each step once, the values those of metrics.jsonl
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 2
    scalars = scalar_steps(out / "tensorboard")
    assert {"train_loss", "eval_loss", "learning_rate", "memory_mb"} <= set(scalars)
    for tag, values in scalars.items():
        steps = [s for s, _ in values]
        assert steps == sorted(set(steps)), f"{tag}: steps {steps}"  # strictly increasing: no step twice
    for tag in ("train_loss", "eval_loss"):
        assert [s for s, _ in scalars[tag]] == sorted(series(out, tag)), tag
        assert [v for _, v in scalars[tag]] == pytest.approx(list(series(out, tag).values()), rel=1e-6)


def resumed_at(text: str) -> int:
    found = re.findall(r"resumed from \S+ at step (\d+)", text)
    assert found, text[-3000:]
    return int(found[-1])


#: bf16 rounds the same operations in the same order: the resumed run still repeats the unbroken one.
STOPS = [
    pytest.param("SIGINT", {}, TOL, id="SIGINT-zero2"),
    pytest.param(
        "SIGTERM", {"zero_stage": 3, "bf16": True, "offload": "all"}, TOL, id="SIGTERM-zero3-bf16-offload-all"
    ),
]


def as_from_a_terminal() -> None:
    """The run gets Ctrl-C as a command typed in a terminal does, even where the tests were started as a
    background job (whose shell has them ignore SIGINT, and Python then leaves KeyboardInterrupt off)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stopped_after_checkpoint(out: Path, deadline: float) -> None:
    """Wait until the step-3 checkpoint is complete and training has gone on past it."""
    while time.time() < deadline and not (out / "checkpoint-3" / "trainer_state.json").is_file():
        time.sleep(0.02)
    while time.time() < deadline and max(series(out, "train_loss"), default=0) < 4:
        time.sleep(0.02)
    assert time.time() < deadline, "the run did not reach step 4 in time"


@pytest.mark.parametrize(("how", "settings", "tol"), STOPS)
def test_a_stopped_run_resumes_on_the_unbroken_curve(unbroken, epoch_data, tmp_path, how, settings, tol):
    reference = unbroken(**settings)
    out = tmp_path / "stopped"
    cmd = [sys.executable, "-m", "robolora.cli", "train", *cli_flags(run_values(epoch_data, out, settings))]
    first = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
        preexec_fn=as_from_a_terminal,
    )
    stopped_after_checkpoint(out, time.time() + 240)
    first.send_signal(getattr(signal, how))
    _, err = first.communicate(timeout=120)
    ours = "\n".join(line for line in err.splitlines() if line.startswith("robolora:"))
    assert first.returncode == 130, f"{ours}\n...\n{err[-2000:]}"
    assert "run the same command again to resume" in err
    assert not (out / "adapter_model.safetensors").exists()

    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert second.returncode == 0, second.stderr[-3000:]
    assert resumed_at(second.stdout + second.stderr) in (3, 6)
    assert_on_the_unbroken_curve(out, reference, tol)


def live_worker_pids() -> list[int]:
    """The pids of this test session's live Ray Train workers (its cluster's, even with others on the machine)."""
    import ray
    from ray.util.state import list_actors

    actors = list_actors(
        address=ray.get_runtime_context().gcs_address,
        filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")],
        raise_on_missing_output=False,
    )
    return [a.pid for a in actors if a.pid]


def test_a_killed_worker_is_replaced_and_the_run_resumes_on_the_unbroken_curve(unbroken, epoch_data, tmp_path, capfd):
    """One worker process killed (as the kernel's OOM killer or a lost node would): Ray Train starts a new
    worker group (``max_failures: 1``) that resumes from the last checkpoint, within the same run."""
    from robolora.config import from_dict
    from robolora.launcher import run_training

    reference = unbroken()
    out = tmp_path / "killed"
    killed: list[int] = []

    def kill_one_worker() -> None:
        stopped_after_checkpoint(out, time.time() + 240)
        pids = live_worker_pids()
        if pids:
            os.kill(pids[-1], signal.SIGKILL)
            killed.append(max(series(out, "train_loss")))  # the last step logged before the kill

    killer = threading.Thread(target=kill_one_worker, daemon=True)
    killer.start()
    run_training(from_dict(run_values(epoch_data, out, {"max_failures": 1})))
    killer.join(timeout=10)
    assert killed and killed[0] < STEPS, f"no worker was killed mid-run: {killed}"
    assert json.loads((out / "train_summary.json").read_text())["steps"] == STEPS
    time.sleep(1)  # the workers' last lines reach the driver
    captured = capfd.readouterr()
    assert resumed_at(captured.out + captured.err) in (3, 6)
    assert_on_the_unbroken_curve(out, reference, TOL)
