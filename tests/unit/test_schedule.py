"""Learning-rate schedules against Hugging Face's definitions at hand-computed points."""

from __future__ import annotations

import math

import pytest

from robolora.schedule import lr_factor, warmup_steps_for


def test_warmup_rounds_up():
    assert warmup_steps_for(100, 0.1) == 10
    assert warmup_steps_for(33, 0.1) == 4
    assert warmup_steps_for(50, 0.0) == 0


@pytest.mark.parametrize(
    ("kind", "step", "expected"),
    [
        ("linear", 0, 0.0),
        ("linear", 5, 0.5),
        ("linear", 10, 1.0),
        ("linear", 55, 0.5),
        ("linear", 100, 0.0),
        ("cosine", 10, 1.0),
        ("cosine", 55, 0.5),
        ("cosine", 32.5, 0.5 * (1 + math.cos(math.pi * 0.25))),
        ("cosine", 100, 0.0),
        ("constant", 3, 0.3),
        ("constant", 99, 1.0),
    ],
)
def test_factor(kind, step, expected):
    assert lr_factor(step, total_steps=100, warmup_steps=10, kind=kind) == pytest.approx(expected)


def test_unknown_schedule():
    with pytest.raises(ValueError):
        lr_factor(1, total_steps=10, warmup_steps=0, kind="step")
