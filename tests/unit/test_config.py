"""Config: defaults from the training guide, file + flag precedence, one-line refusals."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from robolora.config import TrainConfig, flag, from_dict, save_config
from robolora.errors import ConfigError
from robolora.flags import parse_train_args

GUIDE_FLAGS = (
    "--data-json --train-json --val-json --output-dir --model-name --max-length --lora-r --lora-alpha "
    "--lora-target-modules --num-epochs --batch-size --learning-rate --warmup-ratio --lr-scheduler-type "
    "--eval-steps --save-steps --logging-steps --gradient-checkpointing --group-by-length "
    "--dataloader-num-workers --dataloader-pin-memory --bf16 --optim --resume-from"
).split()


def test_guide_defaults():
    c = TrainConfig()
    assert c.model_name == "codellama/CodeLlama-7b-Python-hf"
    assert (c.max_length, c.lora_r, c.lora_alpha) == (256, 32, 64)
    assert (c.num_epochs, c.batch_size, c.learning_rate, c.warmup_ratio) == (3, 4, 1e-4, 0.1)
    assert (c.eval_steps, c.save_steps, c.logging_steps) == (100, 500, 50)


def test_every_guide_flag_exists():
    flags = {flag(f.name) for f in dataclasses.fields(TrainConfig)}
    assert set(GUIDE_FLAGS) <= flags
    for extra in (
        "--num-workers",
        "--zero-stage",
        "--offload",
        "--ray-address",
        "--seed",
        "--gradient-accumulation-steps",
        "--lora-dropout",
        "--early-stopping-patience",
    ):
        assert extra in flags


def test_flags_parse_to_typed_values():
    c = parse_train_args(
        [
            "--train-json",
            "t.json",
            "--val-json",
            "v.json",
            "--lora-r",
            "64",
            "--lora-alpha",
            "128",
            "--learning-rate",
            "5e-5",
            "--gradient-checkpointing",
            "--no-bf16",
            "--group-by-length",
            "--lora-target-modules",
            "q_proj,v_proj,k_proj,o_proj,gate_proj,up_proj,down_proj",
            "--lr-scheduler-type",
            "cosine",
            "--optim",
            "adamw_torch_fused",
            "--zero-stage",
            "3",
            "--offload",
            "all",
        ]
    )
    assert (c.lora_r, c.lora_alpha, c.learning_rate) == (64, 128, 5e-5)
    assert c.gradient_checkpointing is True and c.bf16 is False and c.group_by_length is True
    assert c.target_modules() == ["q_proj", "v_proj", "k_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert (c.lr_scheduler_type, c.optim, c.zero_stage, c.offload) == ("cosine", "adamw_torch_fused", 3, "all")
    assert c.global_batch_size(num_workers=2) == 8


def test_file_then_flags(tmp_path):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("data_json: d.json\nlora_r: 16\nlearning_rate: 2.0e-4\nnum_epochs: 2\n")
    c = parse_train_args(["--config", str(cfg_file), "--lora-r", "8"])
    assert (c.data_json, c.lora_r, c.learning_rate, c.num_epochs) == ("d.json", 8, 2e-4, 2.0)


def test_json_config_and_list_of_modules(tmp_path):
    cfg_file = tmp_path / "run.json"
    cfg_file.write_text('{"data_json": "d.json", "lora_target_modules": ["q_proj", "v_proj"]}')
    assert parse_train_args(["--config", str(cfg_file)]).target_modules() == ["q_proj", "v_proj"]


def test_saved_config_round_trips(tmp_path):
    c = parse_train_args(["--data-json", "d.json", "--lora-r", "8", "--bf16"])
    save_config(c, tmp_path / "config.yaml")
    assert parse_train_args(["--config", str(tmp_path / "config.yaml")]) == c


def _error(argv=None, file_text=None, tmp_path=None, name="run.yaml") -> str:
    if file_text is not None:
        (tmp_path / name).write_text(file_text)
        argv = ["--config", str(tmp_path / name), *(argv or [])]
    with pytest.raises(ConfigError) as e:
        parse_train_args(argv)
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lora-r", "0"], "--lora-r: must be a positive integer, got 0"),
        (["--batch-size", "-1"], "--batch-size: must be a positive integer, got -1"),
        (["--learning-rate", "nan"], "--learning-rate: must be a positive number, got nan"),
        (["--warmup-ratio", "1.5"], "--warmup-ratio: must be in [0, 1), got 1.5"),
        (["--val-ratio", "0"], "--val-ratio: must be between 0 and 1 (exclusive), got 0.0"),
        (["--max-length", "8"], "--max-length: must be at least 16 tokens, got 8"),
        (
            ["--lora-target-modules", " , "],
            "--lora-target-modules: must be a comma-separated list of module names, got ' , '",
        ),
        (["--lora-r", "x"], "robolora train: argument --lora-r: invalid int value: 'x' (see `robolora train --help`)"),
        (
            ["--lr-scheduler-type", "step"],
            "robolora train: argument --lr-scheduler-type: invalid choice: 'step' (choose from 'linear', 'cosine', "
            "'constant') (see `robolora train --help`)",
        ),
        (["--lora-rank", "8"], "robolora train: unrecognized arguments: --lora-rank 8 (see `robolora train --help`)"),
        (
            ["--data-json", "a.json", "--train-json", "b.json"],
            "--data-json cannot be combined with --train-json/--val-json: pass one dataset or a train/val pair",
        ),
        (
            ["--lora-layers", "top:0"],
            "--lora-layers: 'top:0' is not a layer selection; use 'top:N', or indices and ranges such as '0-3,8'",
        ),
        (
            ["--lora-layers", "5-2"],
            "--lora-layers: '5-2' is not a layer selection; use 'top:N', or indices and ranges such as '0-3,8'",
        ),
        (
            ["--profile-steps", "12-10"],
            "--profile-steps: '12-10' is not a step range; use START-END, such as 10-12 (steps from 1)",
        ),
        (
            ["--profile-steps", "0"],
            "--profile-steps: '0' is not a step range; use START-END, such as 10-12 (steps from 1)",
        ),
        *(
            (
                ["--category-weights", spec],
                f"--category-weights: {part!r} is not a weight; use CATEGORY=WEIGHT pairs with weights above 0, "
                "each category once, such as 'control_flow=2,navigation=0.5'",
            )
            for spec, part in (
                ("control_flow", "control_flow"),
                ("control_flow=0", "control_flow=0"),
                ("a=2,b=x", "b=x"),
                ("a=nan", "a=nan"),
                ("=2", "=2"),
                ("a=1,a=2", "a=2"),
            )
        ),
        (["--val-json", "v.json"], "--val-json needs --train-json: pass both, or a single --data-json"),
        (
            ["--zero-stage", "2", "--offload", "all"],
            "--offload all needs --zero-stage 3: ZeRO-2 cannot offload parameters (use --offload optimizer)",
        ),
        (
            ["--packing", "--trust-remote-code"],
            "--packing cannot be combined with --trust-remote-code: packed examples are kept apart by "
            "transformers' own attention masking, which a model's remote code may not do; drop one of them",
        ),
    ],
)
def test_bad_flags(argv, message):
    assert _error(argv) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lora_rr: 8\n", "{f}: lora_rr: unknown key (did you mean lora_r?)"),
        ("zzz: 1\n", "{f}: zzz: unknown key; `robolora train --help` lists the keys"),
        ("lora_r: eight\n", "{f}: lora_r: expected an integer, got 'eight'"),
        ("lora_r: 8.5\n", "{f}: lora_r: expected an integer, got 8.5"),
        ("bf16: yes please\n", "{f}: bf16: expected true or false, got 'yes please'"),
        ("learning_rate: '1e-4'\n", "{f}: learning_rate: expected a number, got '1e-4'"),
        ("output_dir:\n", "{f}: output_dir: must not be empty (set a value or remove the key)"),
        ("lora_r: 0\n", "{f}: --lora-r: must be a positive integer, got 0"),
        ("- a\n- b\n", "--config: {f}: expected a mapping of keys to values, got a list"),
        ("a: [1,\n", "--config: {f}: not valid YAML: "),
    ],
)
def test_bad_config_files(tmp_path, text, message):
    got = _error(file_text=text, tmp_path=tmp_path)
    expected = message.format(f=tmp_path / "run.yaml")
    assert got.startswith(expected) if expected.endswith(": ") else got == expected


def test_missing_config_file(tmp_path):
    assert _error(["--config", str(tmp_path / "nope.yaml")]) == f"--config: {tmp_path / 'nope.yaml'}: no such file"


def test_lora_layers_against_the_model():
    cfg = parse_train_args(["--lora-layers", "top:15"])
    assert cfg.lora_layer_indices(30) == list(range(15, 30))
    assert parse_train_args([]).lora_layer_indices(30) is None
    assert parse_train_args(["--lora-layers", "0-1, 4"]).lora_layer_indices(6) == [0, 1, 4]
    with pytest.raises(ConfigError, match="more than the model's 2 layers"):
        cfg.lora_layer_indices(2)
    with pytest.raises(ConfigError, match="layer 4 does not exist; the model has layers 0-1"):
        parse_train_args(["--lora-layers", "0,4"]).lora_layer_indices(2)


def test_replace_validates():
    c = from_dict({"data_json": "d.json"})
    assert c.replace(lora_r=8).lora_r == 8
    with pytest.raises(ConfigError):
        c.replace(lora_r=-1)


def test_yaml_dump_is_plain():
    assert yaml.safe_load(yaml.safe_dump(TrainConfig().to_dict()))["lora_r"] == 32
