"""Verdicts, thresholds and remedies of the loss-curve diagnosis, on synthetic curves."""

from __future__ import annotations

import random

import pytest

from robolora.config import TrainConfig
from robolora.diagnose import diagnose, loss_trend

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

    still_falling = "\n".join(diagnose(rows(falling(0.9)), config).remedies)
    assert "train for more epochs: --num-epochs 6 (now 3)" in still_falling
    capped = "\n".join(diagnose(rows(falling(0.9)), {**config, "max_steps": 150}).remedies)
    assert "train longer: --max-steps 300 (now 150), which overrides --num-epochs" in capped

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


# ----------------------------------------------------------------------------- trends of noisy curves


def noisy(values: list[float], share: float = 0.06, seed: int = 0) -> list[float]:
    """``values`` with seeded multiplicative noise of up to ``share`` either way."""
    rng = random.Random(seed)
    return [v * (1 + rng.uniform(-share, share)) for v in values]


def ramp(start: float, end: float, n: int = 30) -> list[float]:
    return [start + (end - start) * i / (n - 1) for i in range(n)]


@pytest.mark.parametrize("seed", range(5))
def test_a_noisy_rising_loss_is_never_a_plateau(seed):
    curve = noisy([*falling(1.3, n=15), *ramp(1.3, 1.6, n=15)], seed=seed)
    d = diagnose(rows(curve), CONFIG)
    assert d.verdict == "instability", d.text()
    assert d.findings[0].startswith(
        "The train loss is rising: over the last 10 logged values (steps 210-300) its trend"
    )
    assert "plateau" not in d.text() and "better" not in d.text()
    assert not any("raise the learning rate" in r for r in d.remedies)
    assert d.remedies[0].startswith("lower the learning rate")


@pytest.mark.parametrize("seed", range(5))
def test_a_noisy_falling_loss_still_needs_training(seed):
    d = diagnose(rows(noisy(falling(0.8, n=30), seed=seed)), CONFIG)
    assert d.verdict == "underfitting", d.text()
    assert (
        "the train loss is still falling: over the last 10 logged values (steps 210-300) its trend went"
        in d.findings[0]
    )
    assert d.remedies[0] == "train for more epochs: --num-epochs 6 (now 3)"


@pytest.mark.parametrize("seed", range(5))
def test_a_noisy_flat_loss_plateaus_whatever_its_two_end_points_say(seed):
    curve = noisy([*falling(1.45, n=15), *[1.45] * 15], seed=seed)
    d = diagnose(rows(curve), CONFIG)
    assert d.verdict == "underfitting", d.text()
    assert (
        "the train loss has plateaued: over the last 10 logged values (steps 210-300) its trend went" in d.findings[0]
    )
    assert d.findings[0].endswith("(within 5%).")
    assert d.remedies[0] == "raise the learning rate: --learning-rate 0.0002 (now 0.0001)"


def test_the_reported_rise_from_1_38_to_1_51_is_judged_on_a_robust_line():
    # A noisy flat end: the last third's raw end points 1.38 -> 1.51 were once called "-9.4% better".
    curve = [2.4, 2.0, 1.8, 1.65, 1.55, 1.5, 1.47, 1.52, 1.45, 1.49, 1.38, 1.46, 1.5, 1.47, 1.51]
    d = diagnose(rows(curve), CONFIG)
    assert "better" not in d.text()
    assert d.verdict == "underfitting", d.text()
    assert "and the train loss has plateaued: over the last 6 logged values (steps 100-150) its trend" in d.findings[0]
    rising = [*curve[:9], 1.55, 1.6, 1.62, 1.66, 1.7, 1.74]
    d = diagnose(rows(rising), CONFIG)
    assert d.verdict == "instability" and "The train loss is rising" in d.findings[0], d.text()


def test_too_few_values_for_a_trend_are_said_so():
    d = diagnose(rows([1.9, 1.7, 1.8, 1.75]), CONFIG)
    assert d.verdict == "underfitting"
    assert "only 4 train loss values were logged, too few to tell a plateau from a slow fall" in d.findings[0]
    assert "at least 6 are needed" in d.findings[0]
    assert not any("learning rate" in r for r in d.remedies)
    assert d.remedies[0] == "log more often to see the trend: lower --logging-steps (now 50)"
    assert loss_trend([(s, 1.0) for s in range(5)]) is None


def test_no_higher_learning_rate_for_a_run_that_max_steps_cut_short():
    flat = rows([*falling(1.45, n=8), *[1.45] * 10])
    for i, row in enumerate(flat):
        row["epoch"] = round((i + 1) * 10 / 120, 4)  # 120 steps per epoch: 1.5 epochs in all
    d = diagnose(flat, {**CONFIG, "max_steps": 180})
    assert d.verdict == "underfitting"
    assert not any("raise the learning rate" in r for r in d.remedies), d.remedies
    assert "--max-steps 180 ended the run after 1.5 epochs of the 3 that --num-epochs asks for" in d.findings[1]
    assert d.remedies[0].startswith("first train longer: --max-steps 360 (now 180), which overrides --num-epochs")
    # without epochs in the rows the run counts as cut short as well
    assert not any(
        "raise the learning rate" in r for r in diagnose(rows([1.45] * 12), {**CONFIG, "max_steps": 120}).remedies
    )
    # --max-steps beyond the epochs: the run was not cut short
    for row in flat:
        row["epoch"] *= 4
    assert diagnose(flat, {**CONFIG, "max_steps": 720}).remedies[0].startswith("raise the learning rate")


def test_loss_trend_fits_a_line_that_one_outlier_does_not_move():
    line = [1.0, 0.98, 0.96, 0.94, 0.92, 0.90]  # the last third: steps 70-120
    values = [3.0, 2.0, 1.5, 1.2, 1.1, 1.05, *line]
    values[9] = 2.0  # one hard batch at step 100
    t = loss_trend([(10 * (i + 1), v) for i, v in enumerate(values)])
    assert (t.kind, t.points, t.steps) == ("falling", 6, (70, 120))
    assert (t.start, t.end, t.change) == (pytest.approx(1.0), pytest.approx(0.9), pytest.approx(-0.1))
    assert t.describe() == "over the last 6 logged values (steps 70-120) its trend went from 1 to 0.9, -10.0%"
    # near zero, a rise of 0.02 or less is noise
    assert loss_trend([(s, v) for s, v in enumerate([0.02, 0.02, 0.02, 0.035, 0.035, 0.035])]).kind == "flat"
    # a rise within the values' scatter is not called rising
    scattered = [1.0, 1.5, 0.9, 1.6, 1.0, 1.55, 1.05, 1.6]
    t = loss_trend(list(enumerate(scattered)))
    assert t.change > 0.05 and t.kind == "flat" and t.end - t.start < t.noise


def test_long_runs_are_smoothed_before_the_line_is_fitted():
    train = [(s, 2.0 - s / 3000) for s in range(1, 3001)]  # logged every step for 3000 steps
    t = loss_trend(train)
    assert t.points == 1000 and t.kind == "falling"
    assert t.start == pytest.approx(2.0 - 2001 / 3000, abs=1e-3) and t.end == pytest.approx(1.0, abs=1e-3)


def test_a_run_that_logs_every_step_is_not_told_to_log_more_often():
    rows = [{"step": s, "train_loss": 1.8 + 0.01 * (s % 2)} for s in (1, 2, 3)] + [{"step": 3, "eval_loss": 1.1}]
    every = diagnose(rows, {"logging_steps": 1, "max_steps": 3, "num_epochs": 1.0})
    assert not any("log more often" in r for r in every.remedies)
    sparse = diagnose(rows, {"logging_steps": 50, "max_steps": 3, "num_epochs": 1.0})
    assert any("log more often" in r for r in sparse.remedies)
