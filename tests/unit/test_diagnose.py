"""Verdicts, thresholds and remedies of the loss-curve diagnosis, on synthetic curves."""

from __future__ import annotations

import pytest

from robolora.config import TrainConfig
from robolora.diagnose import diagnose

CONFIG = TrainConfig(data_json="robot.json").to_dict()


def falling(end: float, n: int = 15, start: float = 2.5) -> list[float]:
    """A smooth geometric decrease from ``start`` to ``end``."""
    return [start * (end / start) ** (i / (n - 1)) for i in range(n)]


def rows(train: list[float], final_eval: float | None = None, evals: list[float] | None = None) -> list[dict]:
    """Train rows every 10 steps; eval rows spread over the run, or one ``final_eval`` at the end."""
    out = [{"step": 10 * (i + 1), "train_loss": v, "learning_rate": 1e-4} for i, v in enumerate(train)]
    if final_eval is not None:
        out[-1]["eval_loss"] = final_eval
    for i, v in enumerate(evals or []):
        out[(i + 1) * len(train) // len(evals) - 1]["eval_loss"] = v
    return out


@pytest.mark.parametrize(
    ("curve", "verdict"),
    [
        (rows(falling(0.15), 0.18), "excellent"),
        (rows(falling(0.4), 0.42), "good"),
        (rows(falling(0.05), 0.9), "overfitting"),
        (rows([1.8] * 12), "underfitting"),
        (rows(falling(0.9)), "underfitting"),
        (rows([0.5, 1.5, 0.4, 1.6]), "instability"),
        (rows([1.2, float("nan"), 0.9]), "instability"),
        (rows([1.2, 1.0, float("inf")]), "instability"),
        (rows([1.0, 0.9, 0.8], float("nan")), "instability"),
        (rows([1.0, 0.8]), "too short"),
        (rows([]), "too short"),
    ],
)
def test_verdicts(curve, verdict):
    d = diagnose(curve, CONFIG)
    assert d.verdict == verdict, d.text()
    assert d.findings


def test_numbers_of_a_good_run():
    d = diagnose(rows([1.0, 0.6, 0.4], evals=[0.5, 0.45, 0.47]))
    assert (d.final_train_loss, d.final_eval_loss, d.best_eval_loss, d.best_eval_step) == (0.4, 0.47, 0.45, 20)
    assert d.gap == pytest.approx(0.07)
    assert d.verdict == "good" and d.remedies == []


def test_without_eval_the_train_loss_decides_and_the_gap_is_unknown():
    d = diagnose(rows(falling(0.1)))
    assert d.verdict == "excellent"
    assert d.final_eval_loss is d.best_eval_loss is d.best_eval_step is d.gap is None
    assert any("No eval loss" in f for f in d.findings)


@pytest.mark.parametrize(("final_eval", "verdict"), [(0.2, "good"), (0.19, "excellent"), (0.5, "underfitting")])
def test_loss_thresholds_are_strict(final_eval, verdict):
    assert diagnose(rows(falling(0.25), final_eval)).verdict == verdict


@pytest.mark.parametrize(("train", "final_eval", "verdict"), [(0.1, 0.4, "good"), (0.1, 0.41, "overfitting")])
def test_a_gap_of_exactly_0_3_is_not_overfitting(train, final_eval, verdict):
    # 0.4 - 0.1 is 0.30000000000000004 in floating point: the logged decimals are what count.
    assert diagnose(rows([*falling(0.2, n=10), train], final_eval)).verdict == verdict


def test_eval_rising_while_train_falls_is_overfitting():
    d = diagnose(rows(falling(0.1, n=12), evals=[0.6, 0.3, 0.34]))
    assert d.verdict == "overfitting"
    assert (d.best_eval_loss, d.best_eval_step) == (0.3, 80)
    assert "rose 13% from its best 0.3 at step 80" in d.findings[0]


def test_eval_rising_by_less_than_10_percent_is_noise():
    assert diagnose(rows(falling(0.1, n=12), evals=[0.6, 0.3, 0.32])).verdict == "good"


def test_one_spike_or_tiny_jumps_near_zero_are_not_instability():
    assert diagnose(rows([*falling(0.3, n=8), 0.6, 0.25, 0.2])).verdict == "good"
    assert diagnose(rows([0.3, 0.1, 0.02, 0.05, 0.02, 0.05])).verdict == "excellent"


def test_rare_spikes_in_a_long_run_are_noise():
    train = falling(0.1, n=100)
    for i in (30, 60):
        train[i] = train[i - 1] * 2
    assert diagnose(rows(train)).verdict == "excellent"


def test_instability_outranks_overfitting_and_underfitting():
    d = diagnose(rows([2.0, 0.5, 1.5, 0.4, 1.6, 1.6], 3.0), CONFIG)
    assert d.verdict == "instability"
    assert "2 times (0.5 -> 1.5 at step 30, 0.4 -> 1.6 at step 50)" in d.findings[0]


def test_overfitting_outranks_underfitting():
    assert diagnose(rows([0.2] * 6, 0.9)).verdict == "overfitting"


def test_remedies_name_the_flags_with_current_values():
    config = {**CONFIG, "learning_rate": 2e-4, "lora_r": 16, "lora_alpha": 32}
    flat = "\n".join(diagnose(rows([1.8] * 12), config).remedies)
    assert "--learning-rate 0.0004 (now 0.0002)" in flat
    assert "--lora-r 32 (now 16) --lora-alpha 64 (now 32)" in flat
    assert "--gradient-checkpointing" in flat and "--batch-size (now 4)" in flat

    still_falling = "\n".join(diagnose(rows(falling(0.9)), {**config, "max_steps": 150}).remedies)
    assert "--num-epochs 6 (now 3)" in still_falling and "--max-steps (now 150)" in still_falling

    overfit = "\n".join(diagnose(rows(falling(0.05), 0.9), config).remedies)
    assert "--early-stopping-patience 3 (now 0)" in overfit
    assert "--learning-rate 0.0001 (now 0.0002)" in overfit
    assert "--lora-dropout 0.1 (now 0.05)" in overfit

    unstable = "\n".join(diagnose(rows([0.5, 1.5, 0.4, 1.6]), {**config, "max_grad_norm": 0.0}).remedies)
    assert "--learning-rate 0.0001 (now 0.0002)" in unstable
    assert "--warmup-ratio 0.2 (now 0.1)" in unstable
    assert "--max-grad-norm 1 (now 0)" in unstable

    short = diagnose(rows([1.0]), config).remedies
    assert short == ["log more often: lower --logging-steps (now 50), or train longer: raise --num-epochs (now 3)"]


def test_remedies_without_a_config_name_the_flags_only():
    remedies = diagnose(rows([1.8] * 12)).remedies
    assert remedies[0] == "raise the learning rate: --learning-rate"


def test_text_summarises_verdict_numbers_findings_and_remedies():
    text = diagnose(rows(falling(0.05), 0.9), CONFIG).text()
    lines = text.splitlines()
    assert lines[0] == (
        "Diagnosis: overfitting (final train loss 0.05, final eval loss 0.9, best eval loss 0.9 at step 150, gap 0.85)"
    )
    assert lines[1].startswith("  - The final eval loss 0.9 is 0.85 above the final train loss 0.05")
    assert "Remedies:" in lines
    assert diagnose([]).text() == (
        "Diagnosis: too short (final train loss n/a)\n"
        "  - Only 0 train loss values were logged; at least 3 are needed to see a trend.\n"
        "Remedies:\n"
        "  - log more often: lower --logging-steps, or train longer: raise --num-epochs"
    )
