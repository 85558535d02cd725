"""Fixtures for the real stack: one local Ray cluster per session, tiny datasets, training runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from robolora.config import from_dict
from robolora.models import load_tokenizer
from robolora.robot.constrained import TokenTrieIndex
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


#: The tiny run the CPU tier trains: on CPU workers (gloo) even where the machine has a GPU, so the
#: same tests pass with 2 workers on a 1-GPU machine; tests/integration/test_gpu_train.py trains on GPUs.
TINY = {
    "model_name": "tiny-llama",
    "use_gpu": False,
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


#: The plain tiny run several tests read (test_flags.py's default-settings run, test_train.py's reference for
#: a resume after a failed save, test_infer.py's adapter): trained once per test run by :func:`tiny_reference`.
TINY_REFERENCE = {"save_steps": 3}


@pytest.fixture(scope="session")
def tiny_reference(ray_session, small_dataset, tmp_path_factory) -> Path:
    """The output folder of :data:`TINY` with :data:`TINY_REFERENCE` on the small dataset, 8 steps. Tests
    only read it (an evaluation's files may be added beside the run's)."""
    from robolora.launcher import run_training

    out = tmp_path_factory.getbasetemp() / "tiny-reference"
    if not (out / "train_summary.json").is_file():
        values = {**TINY, **TINY_REFERENCE, "data_json": str(small_dataset), "output_dir": str(out)}
        run_training(from_dict(values))
    return out


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


def scalar_steps(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar TensorBoard shows for the run: (step, value) in the order its reader keeps them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every value
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


# ----------------------------------------------------------------------------- unbroken reference runs
# Runs that several tests compare with (test_equivalence.py, test_resume.py, test_train.py) are trained
# once per test run: :func:`unbroken` keeps each in the session's temporary folder, keyed by its settings.

#: 40 records: 36 to train on (4 held out), 4 steps per epoch at a global batch of 8 (2 workers x 4);
#: 8 steps cross into the second epoch, whose order is reshuffled.
EPOCH_RECORDS = 40
STEPS_PER_EPOCH = 4
STEPS = 8
BASE = {
    **TINY,
    "lora_dropout": 0.1,  # dropout draws random numbers every step: a resume must continue them
    "zero_stage": 2,
    "offload": "none",
    "max_steps": STEPS,
    "save_steps": 3,  # checkpoints at 3 (epoch 0), 6 (epoch 1) and 8
    "eval_steps": 50,  # one evaluation, at the end
}
#: Plain SGD (momentum 0.9, as `--optim sgd` builds it) at a rate where the tiny model learns in a few steps;
#: no dropout, whose masks depend on how a batch is cut into micro-batches.
SGD = {"optim": "sgd", "learning_rate": 0.5, "lora_dropout": 0.0, "max_steps": 6, "save_steps": 50}
#: The same global batch of 8 on one worker and on two; the two-worker run also profiles steps 2-3 (which
#: must leave its curve unchanged).
SGD_ONE = {**SGD, "num_workers": 1, "batch_size": 8}
SGD_TWO = {**SGD, "num_workers": 2, "batch_size": 4, "profile_steps": "2-3"}


@pytest.fixture(scope="session")
def epoch_data(tmp_path_factory) -> Path:
    """A dataset small enough for a run of a few steps to cross an epoch boundary."""
    path = tmp_path_factory.getbasetemp() / "epoch-data" / "robot.json"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_dataset(generate_records(EPOCH_RECORDS, seed=3), path)
    return path


def run_values(data: Path, out: Path, settings: dict) -> dict:
    """The whole configuration of a run: :data:`BASE` with ``settings`` over it."""
    return {**BASE, "data_json": str(data), "output_dir": str(out), **settings}


def settings_key(settings: dict) -> str:
    """A folder name for a run's settings: ``{"zero_stage": 3}`` -> ``zero_stage=3``."""
    return "-".join(f"{k}={settings[k]}" for k in sorted(settings)) or "base"


@pytest.fixture(scope="session")
def unbroken(ray_session, epoch_data, tmp_path_factory):
    """``unbroken(**settings)``: the output folder of an uninterrupted run of :data:`BASE` with ``settings``,
    trained on first use and kept for the session."""
    from robolora.launcher import run_training

    root = tmp_path_factory.getbasetemp() / "unbroken"

    def run(**settings) -> Path:
        out = root / settings_key(settings)
        if not (out / "train_summary.json").is_file():
            run_training(from_dict(run_values(epoch_data, out, settings)))
        return out

    return run


def losses(out: Path, key: str = "train_loss") -> torch.Tensor:
    """The run's losses, one per step in order; every step logged exactly once."""
    values = series(out, key)
    if key == "train_loss":
        assert sorted(values) == list(range(1, len(values) + 1)), sorted(values)
    return torch.tensor([values[s] for s in sorted(values)], dtype=torch.float64)


def adapter(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(out / "adapter_model.safetensors"))


# ------------------------------------------------------------------------------------------- grammar


@pytest.fixture(scope="module")
def one_thread():
    """The tensors of the grammar tests are small: on a busy machine torch's thread pool only adds
    contention. Used by a module with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    """The bundled model's real tokenizer, one per test module (a module may change its padding side)."""
    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="module")
def index(tokenizer):
    """The robot grammar's token index for that tokenizer."""
    return TokenTrieIndex.from_tokenizer(tokenizer)
