"""Config names from axolotl, Hugging Face and LLaMA-Factory: each alias, in a config file and as a flag,
gives the same TrainConfig as our own name; conflicts and unknown names are one clear line."""

from __future__ import annotations

import dataclasses
import re

import pytest
import yaml

from robolora.aliases import ALIASES
from robolora.config import TrainConfig, field_type, flag
from robolora.errors import ConfigError
from robolora.flags import build_train_parser, parse_train_args

#: Every alias with a value as the other tool writes it, and the field and value it means in ours.
CASES = [
    ("base_model", "smollm2-135m", "model_name", "smollm2-135m"),
    ("model_name_or_path", "smollm2-135m", "model_name", "smollm2-135m"),
    ("micro_batch_size", 8, "batch_size", 8),
    ("per_device_train_batch_size", 8, "batch_size", 8),
    ("sequence_len", 512, "max_length", 512),
    ("cutoff_len", 512, "max_length", 512),
    ("max_seq_length", 512, "max_length", 512),
    ("num_train_epochs", 2, "num_epochs", 2.0),
    ("lora_target_linear", True, "lora_target_modules", "all-linear"),
    ("lora_target", "all", "lora_target_modules", "all-linear"),
    ("resume_from_checkpoint", "runs/a/checkpoint-4", "resume_from", "runs/a/checkpoint-4"),
    ("lora_model_dir", "runs/a", "resume_from", "runs/a"),
    ("val_set_size", 0.05, "val_ratio", 0.05),
    ("val_size", 0.2, "val_ratio", 0.2),
    ("warmup_steps", 0.03, "warmup_ratio", 0.03),
    ("lr_scheduler", "cosine", "lr_scheduler_type", "cosine"),
    ("optimizer", "sgd", "optim", "sgd"),
    ("load_in_4bit", True, "quantization", "4bit"),
    ("load_in_8bit", True, "quantization", "8bit"),
    ("sample_packing", True, "packing", True),
]
#: Names users bring that are ours too: they need no alias, and must stay field names.
SAME_NAMES = (
    "gradient_accumulation_steps learning_rate num_epochs lora_r lora_alpha lora_dropout lora_target_modules "
    "output_dir weight_decay warmup_ratio bf16 gradient_checkpointing seed logging_steps save_steps eval_steps "
    "max_steps deepspeed max_grad_norm lr_scheduler_type optim save_total_limit early_stopping_patience"
).split()


def _config_file(tmp_path, values: dict, name: str = "run.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return str(path)


def _field_flags(field: str, value) -> list[str]:
    if isinstance(value, bool):
        return [flag(field) if value else "--no-" + flag(field)[2:]]
    return [flag(field), str(value)]


def _error(argv: list[str]) -> str:
    with pytest.raises(ConfigError) as e:
        parse_train_args(argv)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_every_alias_is_tested_and_every_shared_name_is_a_field():
    assert sorted(c[0] for c in CASES) == sorted(ALIASES)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(SAME_NAMES) <= fields
    assert not set(ALIASES) & fields  # an alias never shadows a field
    assert all(a.field in fields for a in ALIASES.values())


@pytest.mark.parametrize(("alias", "value", "field", "ours"), CASES, ids=[c[0] for c in CASES])
def test_an_alias_in_a_config_file_is_its_field(tmp_path, alias, value, field, ours):
    theirs = parse_train_args(["--config", _config_file(tmp_path, {alias: value}, "theirs.yaml")])
    mine = parse_train_args(["--config", _config_file(tmp_path, {field: ours}, "ours.yaml")])
    assert theirs == mine
    assert getattr(theirs, field) == ours != getattr(TrainConfig(), field)


@pytest.mark.parametrize(("alias", "value", "field", "ours"), CASES, ids=[c[0] for c in CASES])
def test_an_alias_flag_is_its_field_in_both_spellings(alias, value, field, ours):
    mine = parse_train_args(_field_flags(field, ours))
    spellings = [f"--{alias}", flag(alias)]
    for name in spellings:
        given = [[name], [name, "true"], [name, "True"]] if isinstance(value, bool) else [[name, str(value)]]
        for argv in given:
            assert parse_train_args(argv) == mine, argv


def test_every_flag_is_also_read_with_underscores():
    parser = build_train_parser()
    for f in dataclasses.fields(TrainConfig):
        if "_" not in f.name:
            continue
        base, _ = field_type(f)
        choices = f.metadata["choices"]
        value = [] if base is bool else [str(choices[0] if choices else {int: 3, float: 0.5, str: "x"}[base])]
        ours = vars(parser.parse_args([flag(f.name), *value]))
        theirs = vars(parser.parse_args([f"--{f.name}", *value]))
        assert ours == theirs == {"config": None, f.name: ours[f.name]}, f.name


def test_switches_take_true_or_false_as_hugging_face_writes_them():
    assert parse_train_args(["--gradient_checkpointing", "True", "--group_by_length"]).gradient_checkpointing is True
    cfg = parse_train_args(["--gradient_checkpointing", "false", "--no_bf16", "--no_check_api"])
    assert (cfg.gradient_checkpointing, cfg.bf16, cfg.check_api) == (False, False, False)
    assert parse_train_args(["--group_by_length", "--lora_r", "8"]).group_by_length is True
    assert _error(["--gradient_checkpointing", "maybe"]) == (
        "robolora train: argument --gradient_checkpointing: expected true or false, got 'maybe' "
        "(see `robolora train --help`)"
    )


def test_help_lists_the_other_names_in_one_line():
    text = build_train_parser().format_help()
    assert "--batch-size SIZE" in text and "--micro-batch-size" not in text
    epilog = text[text.index("Also read:") :]
    assert "--batch_size" not in text.replace(epilog, "")  # the underscore spellings are hidden
    for alias in ALIASES:
        assert len(re.findall(rf"--{alias}\b", text)) == len(re.findall(rf"--{alias}\b", epilog)) == 1


def test_the_printed_config_speaks_our_names(run_cli, tmp_path):
    axolotl = {"base_model": "tiny-llama", "micro_batch_size": 2, "sequence_len": 128, "lora_target_linear": True}
    code, out, err = run_cli("config", "--config", _config_file(tmp_path, axolotl), "--per_device_train_batch_size", 4)
    printed = yaml.safe_load(out)
    assert (code, err) == (0, "")
    assert set(printed) == {f.name for f in dataclasses.fields(TrainConfig)}  # our names only
    assert (printed["model_name"], printed["batch_size"], printed["max_length"]) == ("tiny-llama", 4, 128)
    assert printed["lora_target_modules"] == "all-linear"


def test_a_sweep_variant_may_use_an_alias():
    from robolora.sweep import build_sweep

    s = build_sweep(
        {"output_dir": "out", "shared": {"data_json": "d.json"}, "variants": [{"name": "a", "micro_batch_size": 2}]},
        source="s.yaml",
    )
    assert s.variants[0].config.batch_size == 2


def test_switches_that_are_off_set_nothing(tmp_path):
    off = {"lora_target_linear": False, "load_in_4bit": False, "resume_from_checkpoint": True}
    assert parse_train_args(["--config", _config_file(tmp_path, off)]) == TrainConfig()
    # resume_from_checkpoint: true is what a run started again does anyway: continue from its last checkpoint
    assert parse_train_args(["--resume_from_checkpoint", "runs/a"]).resume_from == "runs/a"


def test_bf16_auto_leaves_precision_to_the_plan(tmp_path):
    assert parse_train_args(["--config", _config_file(tmp_path, {"bf16": "auto"})]).bf16 is None
    assert parse_train_args(["--config", _config_file(tmp_path, {"bf16": True})]).bf16 is True


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"micro_batch_size": 4, "batch_size": 8},
            "{f}: micro_batch_size (4) and batch_size (8) both set batch_size; give one of them",
        ),
        (
            {"micro_batch_size": 4, "per_device_train_batch_size": 8},
            "{f}: micro_batch_size (4) and per_device_train_batch_size (8) both set batch_size; give one of them",
        ),
        (
            {"lora_target_linear": True, "lora_target_modules": "q_proj"},
            "{f}: lora_target_linear (True) and lora_target_modules ('q_proj') both set lora_target_modules; "
            "give one of them",
        ),
        ({"micro_batch_sise": 4}, "{f}: micro_batch_sise: unknown key (did you mean micro_batch_size?)"),
        ({"lora_rr": 8}, "{f}: lora_rr: unknown key (did you mean lora_r?)"),
        ({"zzz": 1}, "{f}: zzz: unknown key; `robolora train --help` lists the keys"),
        ({"micro_batch_size": "four"}, "{f}: micro_batch_size: expected an integer, got 'four'"),
        ({"lora_target_linear": "yes"}, "{f}: lora_target_linear: expected true or false, got 'yes'"),
        ({"bf16": "maybe"}, "{f}: bf16: expected true or false, got 'maybe'"),
        (
            {"val_set_size": 0},
            "{f}: val_set_size: 0 (no validation) is not supported: robolora always evaluates; give a share such "
            "as 0.05, or --train-json and --val-json",
        ),
        (
            {"val_set_size": 200},
            "{f}: val_set_size: 200 records: only a share in (0, 1) maps to val_ratio, such as 0.05",
        ),
        (
            {"warmup_steps": 100},
            "{f}: warmup_steps: 100 steps: robolora warms up for a share of the run's steps; give warmup_ratio "
            "(a number in [0, 1), such as 0.1)",
        ),
        ({"micro_batch_size": 0}, "{f}: --batch-size: must be a positive integer, got 0"),
    ],
)
def test_conflicts_and_unknown_keys_in_a_file(tmp_path, values, message):
    path = _config_file(tmp_path, values)
    assert _error(["--config", path]) == message.format(f=path)


def test_the_same_value_under_two_names_is_no_conflict(tmp_path):
    path = _config_file(tmp_path, {"micro_batch_size": 8, "batch_size": 8, "lora_target": ["q_proj", "v_proj"]})
    cfg = parse_train_args(["--config", path, "--lora_target_modules", "q_proj"])
    assert (cfg.batch_size, cfg.lora_target_modules) == (8, "q_proj")  # a flag overrides the file, as ever


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--micro_batch_size", "4", "--batch-size", "8"],
            "--batch-size (8) and --micro_batch_size (4) both set batch_size; give one of them",
        ),
        (
            ["--base-model", "a", "--model_name_or_path", "b"],
            "--base_model ('a') and --model_name_or_path ('b') both set model_name; give one of them",
        ),
        (
            ["--val_set_size", "0"],
            "--val_set_size: 0 (no validation) is not supported: robolora always evaluates; give a share such as "
            "0.05, or --train-json and --val-json",
        ),
        (
            ["--micro_batch_sise", "4"],
            "robolora train: unrecognized arguments: --micro_batch_sise 4 (see `robolora train --help`)",
        ),
        (
            ["--lr_scheduler", "step"],
            "robolora train: argument --lr_scheduler/--lr-scheduler: invalid choice: 'step' (choose from "
            "'linear', 'cosine', 'constant') (see `robolora train --help`)",
        ),
    ],
)
def test_conflicts_and_unknown_names_as_flags(argv, message):
    assert _error(argv) == message


def test_a_flag_alias_overrides_the_file_field(tmp_path):
    path = _config_file(tmp_path, {"batch_size": 4, "sequence_len": 128})
    cfg = parse_train_args(["--config", path, "--micro_batch_size", "16", "--max-length", "64"])
    assert (cfg.batch_size, cfg.max_length) == (16, 64)
