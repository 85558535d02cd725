"""QLoRA (``--quantization 4bit|8bit``) on real Ray Train workers with the tiny model on the CPU backend of
bitsandbytes: training runs, the adapter loads in plain PEFT on the unquantized base, and a stopped QLoRA run
resumes from its own checkpoint on the unbroken run's curve."""

from __future__ import annotations

import math
import sys

import pytest
import ray.cloudpickle
import torch
from safetensors.torch import load_file

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
    ("quantization", "stage", "extra"),
    [("4bit", 2, {}), ("4bit", 3, {}), ("4bit", 2, {"packing": True}), ("8bit", 2, {})],
    ids=["4bit-zero2", "4bit-zero3", "4bit-zero2-packing", "8bit-zero2"],
)
def test_qlora_trains_on_two_cpu_workers_and_adapter_loads_unquantized(train_run, quantization, stage, extra):
    """Under ZeRO-3 every rank loads the whole 4-bit model and DeepSpeed partitions it; the evaluation at
    step 4 and the checkpoint after it must leave the 4-bit weights as they were (see engine.py)."""
    name = f"{quantization}-zero{stage}{'-packing' if extra else ''}"
    out = train_run(name, train_loop=quantized_loop, quantization=quantization, zero_stage=stage, max_steps=6, **extra)
    losses = series(out, "train_loss")
    assert sorted(losses) == list(range(1, 7))
    assert all(math.isfinite(v) for v in losses.values())
    assert losses[6] < losses[1]
    layer = {"4bit": "Linear4bit", "8bit": "Linear8bitLt"}[quantization]
    assert layer in (out / "layer_kinds.txt").read_text().split(",")
    _check_adapter_in_plain_peft(out)
    assert any("eval_loss" in r for r in metric_rows(out))


def fails_after_step_4_loop(config):
    """The standard worker, except that every rank fails at its step-6 save: the run stops after step 4's
    evaluation with its step-3 checkpoint as the last complete one."""
    from robolora.worker import Trainer, run_worker

    save = Trainer.save_checkpoint

    def failing_save(self, metrics):
        if self.step == 6:
            raise RuntimeError("node lost")
        return save(self, metrics)

    Trainer.save_checkpoint = failing_save
    run_worker(config)


def resume_records_its_step_loop(config):
    """The standard worker, recording on rank 0 the step its restore continues from (0: a fresh start)."""
    from robolora import dist
    from robolora.worker import RunSpec, Trainer

    trainer = Trainer(RunSpec(**config))
    trainer.setup()
    trainer.restore()
    if dist.is_main():
        (trainer.out / "resumed_at.txt").write_text(str(trainer.step))
    trainer.finish(trainer.train())


def test_a_stopped_qlora_run_resumes_from_its_checkpoint_on_the_unbroken_curve(train_run):
    """The checkpoint of a 4-bit run holds the LoRA weights, optimizer and random states over the quantized base;
    the same command again reloads the base quantized, resumes from step 3 and repeats the unbroken run."""
    from robolora.launcher import TrainingFailed

    settings = {"quantization": "4bit", "zero_stage": 2, "max_steps": 8, "save_steps": 3}
    reference = train_run("qlora-unbroken", **settings)
    with pytest.raises(TrainingFailed, match="node lost"):
        train_run("qlora-stopped", train_loop=fails_after_step_4_loop, **settings)
    out = reference.parent / "qlora-stopped"
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3"]
    assert not (out / "adapter_model.safetensors").exists()
    train_run("qlora-stopped", train_loop=resume_records_its_step_loop, **settings)  # the same command again
    assert (out / "resumed_at.txt").read_text() == "3"
    resumed, expected = series(out, "train_loss"), series(reference, "train_loss")
    assert sorted(resumed) == list(range(1, 9))
    later = range(4, 9)
    torch.testing.assert_close(
        torch.tensor([resumed[s] for s in later]), torch.tensor([expected[s] for s in later]), rtol=1e-5, atol=1e-5
    )
    expected = load_file(reference / "adapter_model.safetensors")
    for key, weight in load_file(out / "adapter_model.safetensors").items():
        torch.testing.assert_close(weight, expected[key], rtol=1e-5, atol=1e-5)
