"""Every shipped DeepSpeed template resolves fully and is accepted by DeepSpeed's own config parser."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from robolora.ds_config import TEMPLATES, find_auto, load_template, resolve


def test_every_shipped_file_has_a_template_entry():
    shipped = {p.name for p in resources.files("robolora.ds_configs").iterdir() if p.name.endswith(".json")}
    assert shipped == set(TEMPLATES.values())


@pytest.mark.parametrize(("stage", "offload"), list(TEMPLATES))
def test_template_resolves_and_deepspeed_accepts_it(stage, offload):
    from deepspeed.runtime.config import DeepSpeedConfig

    template = load_template(stage, offload)
    assert find_auto(template), "templates leave the run-dependent fields as auto"
    cfg = resolve(
        template, micro_batch=4, grad_accum=2, world_size=1, bf16=True, grad_clip=1.0, hidden_size=576, pin_memory=False
    )
    assert find_auto(cfg) == []
    parsed = DeepSpeedConfig(json.loads(json.dumps(cfg)))
    assert parsed.zero_optimization_stage == stage
    assert (parsed.train_micro_batch_size_per_gpu, parsed.gradient_accumulation_steps) == (4, 2)
    assert parsed.train_batch_size == 8
    assert parsed.bfloat16_config.enabled is True
    assert parsed.bfloat16_config.check_grad_overflow is False  # no per-step device wait in bf16
    assert parsed.gradient_clipping == 1.0
    zero = parsed.zero_config
    assert (zero.offload_optimizer is not None) == (offload != "none")
    assert (zero.offload_param is not None) == (offload == "all")
    if stage == 3:
        assert zero.param_persistence_threshold == 5760
        assert zero.prefetch_bucket_size == int(0.9 * 576 * 576)


def test_without_hidden_size_auto_buckets_fall_back_to_deepspeed_defaults():
    cfg = resolve(
        load_template(3, "none"),
        micro_batch=1,
        grad_accum=1,
        world_size=2,
        bf16=False,
        grad_clip=0.0,
        hidden_size=None,
        pin_memory=True,
    )
    assert find_auto(cfg) == [] and "reduce_bucket_size" not in cfg["zero_optimization"]
    assert cfg["train_batch_size"] == 2 and cfg["bf16"]["enabled"] is False


@pytest.mark.parametrize("stage", [2, 3])
def test_one_worker_does_not_overlap_communication_it_does_not_have(stage):
    def overlap(world_size):
        cfg = resolve(
            load_template(stage, "none"),
            micro_batch=1,
            grad_accum=1,
            world_size=world_size,
            bf16=True,
            grad_clip=1.0,
            hidden_size=64,
            pin_memory=False,
        )
        return cfg["zero_optimization"]["overlap_comm"]

    assert overlap(2) is True and overlap(1) is False


def test_templates_load_from_a_source_checkout_that_is_not_installed(monkeypatch):
    """Run from a plain checkout (a Ray Jobs working directory, PYTHONPATH), ``robolora.ds_configs`` is no
    package: the templates come from the top-level ds_configs/ folder beside the code."""
    import json
    from pathlib import Path

    from robolora import ds_config

    def not_installed(name):
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(ds_config.resources, "files", not_installed)
    root = Path(ds_config.__file__).resolve().parents[1]
    for (stage, offload), name in TEMPLATES.items():
        assert load_template(stage, offload) == json.loads((root / "ds_configs" / name).read_text())
