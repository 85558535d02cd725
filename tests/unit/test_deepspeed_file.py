"""A user's own DeepSpeed JSON (`--deepspeed FILE`): its "auto" values filled from the flags, its ZeRO stage,
offload and bf16 taken where the flags leave them out, and every contradiction or bad file one line that
names the file, the key and the flag, at parse time (before Ray or DeepSpeed start)."""

from __future__ import annotations

import json

import pytest

from robolora.config import from_dict
from robolora.ds_config import find_auto
from robolora.errors import ConfigError
from robolora.flags import parse_train_args

#: Hugging Face's documented ZeRO-2 file: everything the Trainer knows left "auto", DeepSpeed's own
#: optimizer and schedule named with "auto" parameters.
HF_ZERO2 = {
    "fp16": {"enabled": "auto", "loss_scale": 0, "initial_scale_power": 16},
    "bf16": {"enabled": "auto"},
    "optimizer": {
        "type": "AdamW",
        "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"},
    },
    "scheduler": {
        "type": "WarmupDecayLR",
        "params": {
            "warmup_min_lr": "auto",
            "warmup_max_lr": "auto",
            "warmup_num_steps": "auto",
            "total_num_steps": "auto",
        },
    },
    "zero_optimization": {
        "stage": 2,
        "offload_optimizer": {"device": "cpu", "pin_memory": True},
        "allgather_partitions": True,
        "allgather_bucket_size": 200000000,
        "overlap_comm": True,
        "reduce_scatter": True,
        "reduce_bucket_size": "auto",
        "contiguous_gradients": True,
    },
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "steps_per_print": 2000,
    "train_batch_size": "auto",
    "train_micro_batch_size_per_gpu": "auto",
    "wall_clock_breakdown": False,
}
#: axolotl's ZeRO-3 file offloading everything, in bf16.
AXOLOTL_ZERO3_OFFLOAD = {
    "zero_optimization": {
        "stage": 3,
        "offload_optimizer": {"device": "cpu", "pin_memory": True},
        "offload_param": {"device": "cpu", "pin_memory": True},
        "overlap_comm": True,
        "contiguous_gradients": True,
        "sub_group_size": 0,
        "reduce_bucket_size": "auto",
        "stage3_prefetch_bucket_size": "auto",
        "stage3_param_persistence_threshold": "auto",
        "stage3_gather_16bit_weights_on_model_save": True,
    },
    "bf16": {"enabled": True},
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "train_batch_size": "auto",
    "train_micro_batch_size_per_gpu": "auto",
    "wall_clock_breakdown": False,
}


@pytest.fixture
def ds_file(tmp_path):
    """Write a DeepSpeed file (a dict as JSON, or raw text); returns its path."""

    def write(content, name: str = "ds.json") -> str:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else json.dumps(content, indent=2))
        return str(path)

    return write


def _resolved(argv: list[str], world: int = 2, hidden: int = 64) -> tuple:
    """The config as parsed and as the plan completes it on CPU workers, and the DeepSpeed config a worker uses."""
    from robolora.engine import deepspeed_config

    cfg = parse_train_args(argv)
    planned = cfg.replace(
        use_gpu=False,
        num_workers=world,
        zero_stage=cfg.zero_stage or 2,
        offload=cfg.offload or "none",
        bf16=False if cfg.bf16 is None else cfg.bf16,
    )
    worker_cfg = from_dict(planned.to_dict())  # as a worker rebuilds it: checked against the file again
    assert worker_cfg == planned
    return cfg, deepspeed_config(worker_cfg, world, hidden)


def test_hugging_face_file_fills_its_auto_values_from_the_flags(ds_file):
    path = ds_file(HF_ZERO2)
    cfg, ds = _resolved(["--deepspeed", path, "--batch-size", "2", "--gradient-accumulation-steps", "3", "--bf16"])
    assert (cfg.zero_stage, cfg.offload) == (2, "optimizer")  # from the file, the flags left them out
    assert find_auto(ds) == []
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["train_batch_size"]) == (
        2,
        3,
        12,
    )
    assert (ds["gradient_clipping"], ds["bf16"], ds["fp16"]["enabled"]) == (
        1.0,
        {"enabled": True, "check_grad_overflow": False},  # the template's setting kept under the file's
        False,
    )
    zero = ds["zero_optimization"]
    assert (zero["reduce_bucket_size"], zero["allgather_bucket_size"]) == (64 * 64, 200000000)
    assert zero["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert ds["steps_per_print"] == 2000  # the file's own settings win over the template's
    # robolora's AdamW and schedule train: the file's equivalent blocks are not handed to DeepSpeed
    assert "optimizer" not in ds and "scheduler" not in ds
    assert ds["zero_force_ds_cpu_optimizer"] is False


def test_axolotl_offload_file_gives_stage_offload_and_bf16(ds_file):
    cfg, ds = _resolved(["--deepspeed", ds_file(AXOLOTL_ZERO3_OFFLOAD), "--batch-size", "4"], world=1, hidden=100)
    assert (cfg.zero_stage, cfg.offload, cfg.bf16) == (3, "all", True)
    zero = ds["zero_optimization"]
    assert (zero["stage3_prefetch_bucket_size"], zero["stage3_param_persistence_threshold"]) == (9000, 1000)
    assert (ds["train_batch_size"], zero["sub_group_size"], zero["overlap_comm"]) == (4, 0, False)
    assert find_auto(ds) == []


def test_the_config_file_may_name_it(ds_file, tmp_path, run_cli, monkeypatch):
    ds_file(HF_ZERO2, "ds.json")
    (tmp_path / "run.yaml").write_text("deepspeed: ds.json\nmicro_batch_size: 2\n")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("config", "--config", "run.yaml")
    assert (code, err) == (0, "")
    assert "deepspeed: ds.json\n" in out and "zero_stage: 2\n" in out and "offload: optimizer\n" in out


def test_stage_auto_leaves_it_to_the_plan(ds_file):
    cfg, ds = _resolved(["--deepspeed", ds_file({"zero_optimization": {"stage": "auto"}}), "--zero-stage", "3"])
    assert cfg.zero_stage == 3 and ds["zero_optimization"]["stage"] == 3
    assert parse_train_args(["--deepspeed", ds_file({"zero_optimization": {"stage": "auto"}})]).zero_stage is None


def test_a_fixed_global_batch_gives_the_workers(ds_file):
    path = ds_file({"train_batch_size": 16, "train_micro_batch_size_per_gpu": 4})
    assert parse_train_args(["--deepspeed", path, "--gradient-accumulation-steps", "2"]).num_workers == 2
    assert parse_train_args(["--deepspeed", path, "--gradient-accumulation-steps", "2", "--num-workers", "2"])


F = "--deepspeed {f}: "
CONTRADICTIONS = [
    (
        {"train_micro_batch_size_per_gpu": 4},
        ["--batch-size", "8"],
        F + 'train_micro_batch_size_per_gpu is 4 but --batch-size is 8; make them agree, or write "auto" to take '
        "--batch-size",
    ),
    (
        {"train_micro_batch_size_per_gpu": 16},
        [],
        F + "train_micro_batch_size_per_gpu is 16 but --batch-size is 4 (its default); make them agree, or write "
        '"auto" to take --batch-size',
    ),
    (
        {"gradient_accumulation_steps": 2, "gradient_clipping": 0.5},
        ["--gradient-accumulation-steps", "2"],
        F + 'gradient_clipping is 0.5 but --max-grad-norm is 1.0 (its default); make them agree, or write "auto" '
        "to take --max-grad-norm",
    ),
    (
        {"zero_optimization": {"stage": 3}},
        ["--zero-stage", "2"],
        F + "zero_optimization.stage is 3 but --zero-stage is 2; make them agree, or leave --zero-stage out to take "
        "the file's",
    ),
    (
        {"bf16": {"enabled": True}},
        ["--no-bf16"],
        F + "bf16.enabled is True but --bf16 is False; make them agree, or leave --bf16 out to take the file's",
    ),
    (
        {"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}},
        ["--offload", "none"],
        F + "zero_optimization offloads as --offload optimizer does, but --offload is none; make them agree",
    ),
    (
        {"zero_optimization": {"stage": 1}},
        [],
        F + "zero_optimization.stage: 1: robolora runs ZeRO stage 2 or 3; write 2 or 3",
    ),
    (
        {"zero_optimization": {"stage": 3, "offload_param": {"device": "nvme"}}},
        [],
        F + "zero_optimization.offload_param: device 'nvme': robolora offloads to the CPU (\"cpu\") or not at all "
        '("none")',
    ),
    (
        {"fp16": {"enabled": True}},
        [],
        F + 'fp16.enabled is True: robolora trains in bf16 (--bf16) or fp32, never fp16; write false or "auto"',
    ),
    (
        {"optimizer": {"type": "AdamW", "params": {"lr": 3e-4}}},
        ["--learning-rate", "1e-4"],
        F
        + 'optimizer.params.lr is 0.0003 but --learning-rate is 0.0001 (its default); make them agree, or write "auto"'
        " to take --learning-rate",
    ),
    (
        {"optimizer": {"type": "Lamb", "params": {}}},
        [],
        F + "optimizer.type 'Lamb': robolora trains with --optim (AdamW or SGD); remove the optimizer block, or "
        "write Adam or AdamW",
    ),
    (
        {"optimizer": {"type": "AdamW"}},
        ["--optim", "sgd"],
        F + "optimizer.type is 'AdamW' but --optim is 'sgd'; remove the optimizer block, or pass --optim "
        "adamw_torch_fused",
    ),
    (
        {"optimizer": {"type": "AdamW", "params": {"betas": [0.9, 0.95]}}},
        [],
        F + "optimizer.params.betas is [0.9, 0.95]: robolora's AdamW uses betas 0.9, 0.999; "
        'write [0.9, 0.999] or "auto"',
    ),
    (
        {"optimizer": {"type": "AdamW", "params": {"amsgrad": True}}},
        [],
        F + "optimizer.params.amsgrad: robolora builds the optimizer from its flags, which have no such setting; "
        "remove it (or the optimizer block)",
    ),
    (
        {"scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": "auto"}}},
        [],
        F + "scheduler.type WarmupLR is --lr-scheduler-type constant, but --lr-scheduler-type is linear; make them "
        "agree, or remove the scheduler block",
    ),
    (
        {"scheduler": {"type": "WarmupDecayLR", "params": {"warmup_num_steps": 100}}},
        [],
        F + 'scheduler.params.warmup_num_steps is 100: robolora counts it from --warmup-ratio; write "auto"',
    ),
    (
        {"scheduler": {"type": "OneCycle"}},
        [],
        F + "scheduler.type 'OneCycle': robolora schedules with --lr-scheduler-type; remove the scheduler block, "
        "or write WarmupDecayLR, WarmupCosineLR or WarmupLR",
    ),
    (
        {"zero_optimization": {"stage": 3, "sub_group_size": "auto"}},
        [],
        F + 'zero_optimization.sub_group_size: "auto" is not a value robolora fills; write a value or remove the key',
    ),
    (
        {"train_batch_size": 24},
        ["--num-workers", "2"],
        F + "train_batch_size is 24 but --batch-size 4 x --gradient-accumulation-steps 1 x --num-workers 2 is 8; "
        'make them agree, or write "auto" in the file',
    ),
    (
        {"train_batch_size": 10},
        [],
        F + "train_batch_size is 10 but --batch-size 4 x --gradient-accumulation-steps 1 = 4 does not divide it; "
        'make them agree, or write "auto" in the file',
    ),
    (
        {"train_micro_batch_size_per_gpu": "4"},
        [],
        F + "train_micro_batch_size_per_gpu: expected an integer, got '4'",
    ),
    (
        {"bf16": True},
        [],
        F + "bf16: expected a JSON object, got True",
    ),
]


@pytest.mark.parametrize(("content", "argv", "message"), CONTRADICTIONS)
def test_a_contradiction_names_the_file_the_key_and_the_flag(ds_file, content, argv, message):
    path = ds_file(content)
    with pytest.raises(ConfigError) as e:
        parse_train_args(["--deepspeed", path, *argv])
    assert str(e.value) == message.format(f=path)


def test_a_stage_from_the_file_is_checked_with_the_other_flags(ds_file):
    path = ds_file({"zero_optimization": {"stage": 3}})
    with pytest.raises(ConfigError) as e:
        parse_train_args(["--deepspeed", path, "--quantization", "8bit"])
    assert str(e.value).startswith(
        f"--deepspeed {path} gives --zero-stage 3: --quantization 8bit cannot be combined with --zero-stage 3: "
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{\n  "zero_optimization": {"stage": 2},\n  "bf16": {"enabled": true,}\n}\n', "not valid JSON ("),
        ('{"zero_optimization": {"stage": 2}}\n{"bf16": {}}\n', "not valid JSON (Extra data at line 2 column 1)"),
        ("[1, 2]", "expected a JSON object of DeepSpeed settings, got [1, 2]"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_file_and_line(ds_file, text, problem):
    path = ds_file(text)
    with pytest.raises(ConfigError) as e:
        parse_train_args(["--deepspeed", path])
    message = str(e.value)
    assert "\n" not in message and problem in message and path in message
    if text.startswith('{\n  "zero'):
        assert message.startswith(f"--deepspeed: {path}: not valid JSON (") and "at line 3 column" in message


def test_a_missing_file_and_an_inline_mapping(tmp_path):
    with pytest.raises(ConfigError, match=rf"^--deepspeed: {tmp_path}/nope.json: no such file$"):
        parse_train_args(["--deepspeed", str(tmp_path / "nope.json")])
    (tmp_path / "run.yaml").write_text("deepspeed:\n  zero_optimization: {stage: 2}\n")
    with pytest.raises(ConfigError) as e:
        parse_train_args(["--config", str(tmp_path / "run.yaml")])
    assert str(e.value) == (
        f"{tmp_path}/run.yaml: deepspeed: give the path of a DeepSpeed JSON file (settings inline are not read)"
    )


def test_train_refuses_a_contradiction_in_one_line_before_anything_starts(ds_file, run_cli, tmp_path):
    path = ds_file({"zero_optimization": {"stage": 3}})
    code, out, err = run_cli(
        "train",
        "--data-json",
        tmp_path / "d.json",
        "--deepspeed",
        path,
        "--zero-stage",
        "2",
        "--output-dir",
        tmp_path / "o",
    )
    assert (code, out) == (2, "")
    assert err == (
        f"robolora: error: --deepspeed {path}: zero_optimization.stage is 3 but --zero-stage is 2; make them agree, "
        "or leave --zero-stage out to take the file's\n"
    )
    assert not (tmp_path / "o").exists()


def test_an_edited_file_is_a_changed_input_of_an_unfinished_run(ds_file, tmp_path):
    from robolora.runrecord import changes, fingerprint, input_digests

    path = ds_file(HF_ZERO2)
    cfg = parse_train_args(["--deepspeed", path, "--output-dir", str(tmp_path / "run")])
    marker = {"given": fingerprint(cfg), "resolved": fingerprint(cfg), "inputs": input_digests(cfg)}
    assert changes(cfg, marker, input_digests(cfg)) == []
    ds_file({**HF_ZERO2, "steps_per_print": 10})
    assert changes(cfg, marker, input_digests(cfg)) == [f"deepspeed's content ({path})"]
