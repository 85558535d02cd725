"""QLoRA (``--quantization 4bit``) on real Ray Train workers with the tiny model on the CPU backend of
bitsandbytes: training runs, and the adapter loads in plain PEFT on the unquantized base."""

from __future__ import annotations

import math
import sys

import pytest
import ray.cloudpickle
import torch

from tests.integration.conftest import metric_rows, series

pytest.importorskip("bitsandbytes")

PROBE = [[1, 520, 2041, 288, 3702, 17, 1120, 446, 30, 2]]


def quantized_loop(config):
    """The standard worker, then a check on rank 0 that the trained model's Linear layers are 4-bit."""
    from robolora import dist
    from robolora.worker import run_worker

    trainer = run_worker(config)
    if dist.is_main():
        kinds = {type(m).__name__ for m in trainer.model.modules()}
        (trainer.out / "layer_kinds.txt").write_text(",".join(sorted(kinds)))


ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _check_adapter_in_plain_peft(out):
    from peft import PeftModel

    from robolora.models import load_model

    model = PeftModel.from_pretrained(load_model("tiny-llama"), str(out))
    assert not any("4bit" in type(m).__name__ for m in model.modules())
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(PROBE)).logits
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    ("stage", "extra"),
    [(2, {}), (3, {}), (2, {"packing": True})],
    ids=["zero2", "zero3", "zero2-packing"],
)
def test_qlora_trains_on_two_cpu_workers_and_adapter_loads_unquantized(train_run, stage, extra):
    """Under ZeRO-3 every rank loads the whole 4-bit model and DeepSpeed partitions it; the evaluation at
    step 4 and the checkpoint after it must leave the 4-bit weights as they were (see engine.py)."""
    name = f"qlora-zero{stage}{'-packing' if extra else ''}"
    out = train_run(name, train_loop=quantized_loop, quantization="4bit", zero_stage=stage, max_steps=6, **extra)
    losses = series(out, "train_loss")
    assert sorted(losses) == list(range(1, 7))
    assert all(math.isfinite(v) for v in losses.values())
    assert losses[6] < losses[1]
    assert "Linear4bit" in (out / "layer_kinds.txt").read_text()
    _check_adapter_in_plain_peft(out)
    assert any("eval_loss" in r for r in metric_rows(out))
