"""Every flag group of the training guide changes what it says it changes.

One run with every group set away from its default is compared with the default-ish tiny run, and
small runs cover early stopping and starting a new stage with --resume-from.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from robolora.schedule import lr_factor
from tests.integration.conftest import metric_rows, series

CUSTOM = {
    # Data
    "category_weights": "control_flow=2,navigation=0.5",
    # Model and LoRA
    "lora_r": 4,
    "lora_alpha": 32,
    "lora_dropout": 0.1,
    "lora_target_modules": "q_proj,v_proj",
    "lora_layers": "top:1",
    # Training
    "batch_size": 2,
    "gradient_accumulation_steps": 2,
    "learning_rate": 1e-2,
    "warmup_ratio": 0.25,
    "lr_scheduler_type": "cosine",
    "optim": "sgd",
    "seed": 7,
    "structure_weight": 3.0,
    "max_steps": 8,
    # Monitoring
    "logging_steps": 2,
    "eval_steps": 3,
    "save_steps": 2,
    "save_total_limit": 2,
    # Performance
    "gradient_checkpointing": True,
    "group_by_length": True,
    "dataloader_num_workers": 1,
    "max_length": 64,
    "bf16": True,
    # Distributed
    "zero_stage": 3,
    "offload": "optimizer",
}


@pytest.fixture(scope="module")
def runs(tiny_reference, small_dataset, tmp_path_factory):
    """The custom run, and the shared tiny run (the defaults but for its checkpoint interval) to compare."""
    from robolora.config import from_dict
    from robolora.launcher import run_training
    from tests.integration.conftest import TINY

    custom = tmp_path_factory.mktemp("flags") / "custom"
    run_training(from_dict({**TINY, "data_json": str(small_dataset), "output_dir": str(custom), **CUSTOM}))
    return {"default": tiny_reference, "custom": custom}


def test_lora_flags_shape_the_adapter(runs):
    for name, r, alpha, dropout, modules, layers in (
        ("default", 8, 16, 0.0, {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}, {0, 1}),
        ("custom", 4, 32, 0.1, {"q_proj", "v_proj"}, {1}),  # top:1 of the tiny model's 2 layers
    ):
        cfg = json.loads((runs[name] / "adapter_config.json").read_text())
        assert (cfg["r"], cfg["lora_alpha"], cfg["lora_dropout"], set(cfg["target_modules"])) == (
            r,
            alpha,
            dropout,
            modules,
        )
        weights = load_file(str(runs[name] / "adapter_model.safetensors"))
        assert {k.split(".")[-3] for k in weights} == modules
        assert {int(k.split("layers.")[1].split(".")[0]) for k in weights} == layers
        assert all(r in t.shape for t in weights.values())


def test_schedule_flags_set_the_learning_rate(runs):
    lrs = series(runs["custom"], "learning_rate")
    # 8 steps, 2 of warmup (ceil of 0.25 * 8), then cosine to 0; logged after each step's update
    for step, lr in lrs.items():
        assert lr == pytest.approx(1e-2 * lr_factor(step, total_steps=8, warmup_steps=2, kind="cosine"))
    assert set(series(runs["default"], "learning_rate").values()) == {5e-3}  # constant, no warmup


def test_monitoring_flags_set_logs_evals_and_checkpoints(runs):
    custom = runs["custom"]
    assert sorted(series(custom, "train_loss")) == [2, 4, 6, 8]
    assert sorted(series(custom, "eval_loss")) == [3, 6, 8]  # every 3 steps, and at the end
    # save every 2 steps, keep the newest 2
    assert sorted(p.name for p in custom.glob("checkpoint-*")) == ["checkpoint-6", "checkpoint-8"]
    assert sorted(series(runs["default"], "train_loss")) == list(range(1, 9))


def test_batch_flags_set_the_global_batch_and_steps(runs):
    summary = json.loads((runs["custom"] / "train_summary.json").read_text())
    assert summary["global_batch"] == 2 * 2 * 2 and summary["steps"] == 8
    saved = yaml.safe_load((runs["custom"] / "config.yaml").read_text())
    assert {k: saved[k] for k in CUSTOM} == CUSTOM  # the resolved config keeps every flag
    assert saved["num_workers"] == 2


def test_performance_flags(runs):
    custom = metric_rows(runs["custom"])
    default = metric_rows(runs["default"])
    grouped = [r["padding_efficiency"] for r in custom if "padding_efficiency" in r]
    plain = [r["padding_efficiency"] for r in default if "padding_efficiency" in r]
    assert sum(grouped) / len(grouped) > sum(plain) / len(plain)
    summary = json.loads((runs["custom"] / "train_summary.json").read_text())
    assert summary["gradient_checkpointing"] is True and summary["optimizer"] == "SGD"
    assert summary["max_tokens"] <= 64
    default_summary = json.loads((runs["default"] / "train_summary.json").read_text())
    assert default_summary["optimizer"] == "AdamW" and default_summary["gradient_checkpointing"] is False
    assert (summary["precision"], default_summary["precision"]) == ("bf16", "fp32")
    custom_weights = load_file(str(runs["custom"] / "adapter_model.safetensors"))
    assert {t.dtype for t in custom_weights.values()} == {torch.bfloat16}


def test_seed_and_optimizer_change_the_run(runs):
    assert series(runs["custom"], "train_loss") != {
        k: v for k, v in series(runs["default"], "train_loss").items() if k % 2 == 0
    }


def test_early_stopping_stops_when_eval_stalls(train_run):
    out = train_run("early", learning_rate=1e-9, eval_steps=1, early_stopping_patience=2, max_steps=20, save_steps=50)
    assert sorted(series(out, "eval_loss")) == [1, 2, 3]
    assert json.loads((out / "train_summary.json").read_text())["steps"] == 3
    assert (out / "adapter_model.safetensors").is_file() and (out / "checkpoint-3").is_dir()


def test_resume_from_starts_a_new_stage_from_an_adapter(train_run, runs):
    stage1 = runs["default"]
    fresh = series(stage1, "train_loss")
    stage2 = train_run("stage2", resume_from=str(stage1), max_steps=2, learning_rate=1e-3)
    first = series(stage2, "train_loss")[1]
    assert first < fresh[1] - 0.1  # starts where stage 1 ended, not from the base model
    assert first == pytest.approx(fresh[8], abs=0.15)
