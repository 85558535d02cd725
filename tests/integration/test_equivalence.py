"""Settings that promise the same training follow one loss curve, tightly enough to show a broken promise.

ZeRO-2, ZeRO-3 and their CPU offloads keep the same fp32 states in different places: their curves agree to
float rounding. One worker and two, or one micro-batch of 8 and two accumulated micro-batches of 4, compute
the same global-batch gradient; with plain SGD (whose step is proportional to the gradient, unlike AdamW's)
a gradient scaled by a constant (summed over workers instead of averaged, or over micro-steps) moves the
curve far beyond the tolerance.

The runs are the shared unbroken ones of ``conftest.py`` (``test_resume.py`` resumes towards them), each
trained once per test run.
"""

from __future__ import annotations

import json

import torch

from tests.integration.conftest import SGD, SGD_ONE, SGD_TWO, STEPS, adapter, losses

#: ZeRO's stages and offloads: the same states, kept in different places.
LAYOUTS = {
    "zero2": {},
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


#: One worker and two sum the same products in a different order: float rounding alone. A gradient halved
#: (averaged once too often over 2 workers) moved the loss by 5.6e-2 by step 3.
SGD_TOL = {"rtol": 1e-5, "atol": 1e-5}


def test_one_and_two_workers_follow_one_curve_with_sgd(unbroken):
    one = losses(unbroken(**SGD_ONE))
    two = losses(unbroken(**SGD_TWO))
    assert one[-1] < one[0] - 0.2, "the curve moves: a wrong gradient scale would show"
    torch.testing.assert_close(two, one, **SGD_TOL)


def test_gradient_accumulation_follows_the_curve_of_one_larger_batch(unbroken):
    one = losses(unbroken(**SGD_ONE))
    accumulated = losses(unbroken(**SGD, num_workers=1, batch_size=4, gradient_accumulation_steps=2))
    torch.testing.assert_close(accumulated, one, **SGD_TOL)
