"""Settings that promise the same training follow one loss curve, tightly enough to show a broken promise.

ZeRO-2, ZeRO-3 and their CPU offloads keep the same fp32 states in different places: their curves agree to
float rounding. One worker and two, or one micro-batch of 8 and two accumulated micro-batches of 4, compute
the same global-batch gradient; with plain SGD (whose step is proportional to the gradient, unlike AdamW's)
a gradient scaled by a constant (summed over workers instead of averaged, or over micro-steps) moves the
curve far beyond the tolerance.

The unbroken runs are shared with ``test_resume.py``: :func:`unbroken` keeps each one in the session's
temporary folder, keyed by its settings, and trains it only once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from robolora.config import from_dict
from robolora.robot.generator import generate_records, write_dataset
from tests.integration.conftest import TINY, series

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
    return load_file(str(out / "adapter_model.safetensors"))


#: ZeRO's stages and offloads: the same states, kept in different places.
LAYOUTS = {
    "zero2": {},
    "zero2-offload-optimizer": {"offload": "optimizer"},
    "zero3": {"zero_stage": 3},
    "zero3-offload-optimizer": {"zero_stage": 3, "offload": "optimizer"},
    "zero3-offload-all": {"zero_stage": 3, "offload": "all"},
}
#: ZeRO-2 all-reduces the gradients, ZeRO-3 reduce-scatters them: the sums may round differently; a wrong
#: gradient or a lost state moves the loss by 1e-3 or more.
LAYOUT_TOL = {"rtol": 2e-5, "atol": 2e-5}


def test_zero_stages_and_offload_follow_one_curve(unbroken):
    runs = {name: unbroken(**settings) for name, settings in LAYOUTS.items()}
    reference = losses(runs["zero2"])
    assert len(reference) == STEPS
    assert reference[-1] < reference[0] - 0.2, "the curve moves: a wrong update would show"
    for name, out in runs.items():
        config = (out / "config.yaml").read_text()
        assert f"zero_stage: {LAYOUTS[name].get('zero_stage', 2)}" in config, name
        assert f"offload: {LAYOUTS[name].get('offload', 'none')}" in config, name
        assert json.loads((out / "train_summary.json").read_text())["steps"] == STEPS, name
        torch.testing.assert_close(losses(out), reference, **LAYOUT_TOL, msg=lambda m, n=name: f"{n}: {m}")
        torch.testing.assert_close(losses(out, "eval_loss"), losses(runs["zero2"], "eval_loss"), **LAYOUT_TOL)
        for key, weight in adapter(runs["zero2"]).items():
            torch.testing.assert_close(adapter(out)[key], weight, rtol=1e-4, atol=1e-5, msg=f"{name}: {key}")


#: Plain SGD (momentum 0.9, as `--optim sgd` builds it) at a rate where the tiny model learns in a few steps;
#: no dropout, whose masks depend on how a batch is cut into micro-batches.
SGD = {"optim": "sgd", "learning_rate": 0.5, "lora_dropout": 0.0, "max_steps": 6, "save_steps": 50}
#: One worker and two sum the same products in a different order: float rounding alone. A gradient halved
#: (averaged once too often over 2 workers) moved the loss by 5.6e-2 by step 3.
SGD_TOL = {"rtol": 1e-5, "atol": 1e-5}


def test_one_and_two_workers_follow_one_curve_with_sgd(unbroken):
    one = losses(unbroken(**SGD, num_workers=1, batch_size=8))
    two = losses(unbroken(**SGD, num_workers=2, batch_size=4))
    assert one[-1] < one[0] - 0.2, "the curve moves: a wrong gradient scale would show"
    torch.testing.assert_close(two, one, **SGD_TOL)


def test_gradient_accumulation_follows_the_curve_of_one_larger_batch(unbroken):
    one = losses(unbroken(**SGD, num_workers=1, batch_size=8))
    accumulated = losses(unbroken(**SGD, num_workers=1, batch_size=4, gradient_accumulation_steps=2))
    torch.testing.assert_close(accumulated, one, **SGD_TOL)
