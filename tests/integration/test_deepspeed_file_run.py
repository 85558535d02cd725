"""An axolotl-style config with a DeepSpeed file of the user's own trains the tiny model: the aliases set
our fields, the file's "auto" values are filled from them, and its ZeRO stage and precision are the run's."""

from __future__ import annotations

import json

import yaml

from robolora.ds_config import find_auto
from robolora.flags import parse_train_args

MY_DEEPSPEED = {
    "zero_optimization": {
        "stage": 3,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
        "stage3_prefetch_bucket_size": "auto",
        "stage3_param_persistence_threshold": "auto",
        "stage3_gather_16bit_weights_on_model_save": True,
    },
    "bf16": {"enabled": False},
    "fp16": {"enabled": "auto"},
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "train_batch_size": "auto",
    "gradient_clipping": "auto",
    "steps_per_print": 999999,
    "wall_clock_breakdown": False,
}
AXOLOTL_STYLE = {
    "base_model": "tiny-llama",
    "micro_batch_size": 2,
    "sequence_len": 128,
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.0,
    "lora_target_linear": True,
    "learning_rate": 0.005,
    "lr_scheduler": "constant",
    "warmup_steps": 0,
    "val_set_size": 0.1,
    "max_steps": 2,
    "logging_steps": 1,
    "eval_steps": 2,
    "save_steps": 2,
    "deepspeed": "my.json",
}


def test_axolotl_config_and_own_deepspeed_file_train(ray_session, small_dataset, tmp_path, monkeypatch):
    from robolora.launcher import run_training

    monkeypatch.chdir(tmp_path)  # the files are named as a user names them: relative to the working directory
    (tmp_path / "my.json").write_text(json.dumps(MY_DEEPSPEED, indent=2))
    (tmp_path / "axolotl.yaml").write_text(yaml.safe_dump(AXOLOTL_STYLE, sort_keys=False))
    flags = ["--data_json", str(small_dataset), "--output-dir", "run", "--no-use-gpu", "--num_workers", "2"]
    cfg = parse_train_args(["--config", "axolotl.yaml", *flags])
    assert (cfg.zero_stage, cfg.bf16, cfg.batch_size, cfg.max_length) == (3, False, 2, 128)

    run_training(cfg)

    out = tmp_path / "run"
    assert json.loads((out / "train_summary.json").read_text())["steps"] == 2
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["model_name"], saved["batch_size"], saved["max_length"], saved["val_ratio"]) == (
        "tiny-llama",
        2,
        128,
        0.1,
    )
    assert saved["lora_target_modules"] != "all-linear" and "down_proj" in saved["lora_target_modules"]
    assert saved["deepspeed"] == str(tmp_path / "my.json")  # absolute: every worker reads the same file
    used = json.loads((out / "ds_config.json").read_text())  # what DeepSpeed ran with
    assert find_auto(used) == []
    assert (used["train_micro_batch_size_per_gpu"], used["gradient_accumulation_steps"], used["train_batch_size"]) == (
        2,
        1,
        4,
    )
    assert (used["zero_optimization"]["stage"], used["bf16"]["enabled"], used["fp16"]["enabled"]) == (3, False, False)
    assert used["steps_per_print"] == 999999 and used["gradient_clipping"] == 1.0
