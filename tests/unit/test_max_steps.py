"""--max-steps sets a run's length whatever --num-epochs says, as Hugging Face's Trainer does: the step
arithmetic, the preflight line and the model card agree on it."""

from __future__ import annotations

import pytest

from robolora.config import TrainConfig, from_dict
from robolora.diagnose import diagnose
from robolora.preflight import check_batches, plan_run
from robolora.report import model_card
from robolora.sampler import plan_epoch, total_steps


@pytest.mark.parametrize(
    ("per_epoch", "epochs", "max_steps", "steps"),
    [
        (16, 3.0, -1, 48),  # the epochs decide
        (16, 0.5, -1, 8),
        (10, 0.25, -1, 3),  # a fractional epoch rounds up to a whole step
        (16, 3.0, 20, 20),  # fewer steps than the epochs give
        (16, 1.0, 20, 20),  # more steps than the epochs give: on into the next epoch
        (16, 3.0, 100, 100),
        (1, 1.0, 7, 7),
    ],
)
def test_max_steps_overrides_the_epochs(per_epoch, epochs, max_steps, steps):
    assert total_steps(per_epoch, epochs, max_steps) == steps


def test_the_steps_beyond_an_epoch_come_from_the_next_epochs_of_the_seeded_plan():
    # What the training loop runs for 20 steps at 16 per epoch: all of epoch 0, then the start of epoch 1.
    lengths = list(range(5, 69))  # 64 examples, global batch 4: 16 steps per epoch
    plans = [plan_epoch(lengths, micro_batch=2, grad_accum=1, world_size=2, seed=0, epoch=e) for e in (0, 1)]
    steps = total_steps(len(plans[0]), 1.0, max_steps=20)
    run = (plans[0] + plans[1])[:steps]
    assert len(plans[0]) == 16 and len(run) == 20
    assert run[16:] == plans[1][:4] and plans[1][:4] != plans[0][:4]  # reshuffled, not epoch 0 again


def test_preflight_states_the_steps_max_steps_runs():
    def detail(**values) -> str:
        cfg = from_dict({"batch_size": 4, "gradient_accumulation_steps": 2, **values})
        return check_batches(plan_run(cfg, cluster_cpus=2, cluster_gpus=0).config, 40).detail

    assert detail() == "global batch 16, 2 optimizer steps per epoch"
    assert detail(max_steps=5) == (
        "global batch 16, 2 optimizer steps per epoch; "
        "--max-steps 5 overrides --num-epochs: 5 steps in all (2.5 epochs)"
    )
    assert detail(max_steps=1, num_epochs=10).endswith("1 step in all (0.5 epochs)")
    assert detail(max_steps=3, packing=True).endswith(
        "printed when training starts; --max-steps 3 overrides --num-epochs"
    )


def test_the_model_card_names_max_steps_as_the_run_length():
    rows = [{"step": s, "epoch": s / 16, "train_loss": 1.0 / s} for s in range(1, 21)]

    def training_table(config: dict) -> str:
        card = model_card(config, rows, diagnose(rows, config))
        return card.split("## Training")[1].split("## Results")[0]

    capped = training_table(TrainConfig(data_json="robot.json", max_steps=20, num_epochs=1).to_dict())
    assert "| length | 20 optimizer steps (--max-steps, which overrides --num-epochs) |" in capped
    assert "| epochs |" not in capped
    plain = training_table(TrainConfig(data_json="robot.json", num_epochs=2).to_dict())
    assert "| epochs | 2 |" in plain and "max-steps" not in plain
