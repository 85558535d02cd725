"""--report-to: parsing and validation, what MLflow and W&B are given, the driver's settings, the preflight
check, and rank 0's MetricsLog with the default and with no tracker."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from robolora.config import TrainConfig
from robolora.errors import ConfigError, UserError
from robolora.flags import parse_train_args
from robolora.metrics_log import MetricsLog
from robolora.preflight import check_trackers
from robolora.robot.generator import generate_records, write_dataset
from robolora.trackers import (
    KEY_LIMIT,
    PARAM_VALUE_LIMIT,
    RUNS_FILE,
    SETTINGS_FILE,
    TrackerSettings,
    final_metrics,
    flatten,
    load_settings,
    mlflow_params,
    parse_report_to,
    save_settings,
)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("tensorboard", ("tensorboard",)),
        ("tensorboard,wandb,mlflow", ("tensorboard", "wandb", "mlflow")),
        (" MLflow , wandb ", ("mlflow", "wandb")),
        ("wandb,wandb,tensorboard", ("wandb", "tensorboard")),
        ("none", ()),
        ("NONE", ()),
    ],
)
def test_report_to_lists_trackers_in_order_each_once(spec, expected):
    assert parse_report_to(spec) == expected


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("tensorbord", "'tensorbord' is not a tracker"),
        ("wandb;mlflow", "'wandb;mlflow' is not a tracker"),
        ("", "names no tracker"),
        (" , ", "names no tracker"),
        ("none,wandb", "none cannot be combined"),
        ("comet", "'comet' is not a tracker"),
    ],
)
def test_report_to_refuses_what_is_not_a_tracker_list(spec, says):
    with pytest.raises(ConfigError) as e:
        TrainConfig(report_to=spec)
    message = str(e.value)
    assert message.startswith("--report-to: ") and says in message
    assert "tensorboard, wandb, mlflow, or none" in message


def test_report_to_comes_from_flags_and_config_files(tmp_path):
    assert TrainConfig().report_to == "tensorboard"  # what every run wrote before trackers could be chosen
    assert parse_train_args(["--report-to", "wandb,mlflow"]).report_to == "wandb,mlflow"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"report_to": "mlflow", "lora_r": 8}))
    assert parse_train_args(["--config", str(config)]).report_to == "mlflow"
    assert parse_train_args(["--config", str(config), "--report-to", "none"]).report_to == "none"  # flag wins
    config.write_text(yaml.safe_dump({"report_to": "wandb,tensorbored"}))
    with pytest.raises(ConfigError, match=r"--report-to: 'tensorbored' is not a tracker"):
        parse_train_args(["--config", str(config)])
    config.write_text(yaml.safe_dump({"report_to": ["wandb"]}))
    with pytest.raises(ConfigError, match=r"report_to: expected a string"):
        parse_train_args(["--config", str(config)])


def test_params_are_the_flattened_config_as_strings_within_mlflow_limits():
    config = {**TrainConfig(lora_r=8).to_dict(), "nested": {"deep": {"list": [1, {"x": True}]}}}
    config["long_" + "k" * 300] = "v" * (PARAM_VALUE_LIMIT + 50)
    params = mlflow_params(config)
    assert params["lora_r"] == "8" and params["resume_from"] == "None" and params["check_api"] == "True"
    assert params["learning_rate"] == "0.0001" and params["report_to"] == "tensorboard"
    assert params["nested/deep/list/0"] == "1" and params["nested/deep/list/1/x"] == "True"
    assert all(isinstance(v, str) and len(v) <= PARAM_VALUE_LIMIT for v in params.values())
    assert all(len(k) <= KEY_LIMIT for k in params)
    cut = params[("long_" + "k" * 300)[:KEY_LIMIT]]
    assert len(cut) == PARAM_VALUE_LIMIT and cut.endswith("... (cut)") and cut.startswith("v" * 100)
    # Every field of the config is a param, none lost to flattening.
    assert set(TrainConfig().to_dict()) <= set(params)


def test_flatten_keeps_plain_lists_and_joins_nested_keys():
    assert flatten({"a": [1, 2], "b": {"c": {"d": 3}}, "e": [{"f": 4}]}) == {
        "a": [1, 2],
        "b/c/d": 3,
        "e/0/f": 4,
    }


def test_final_metrics_are_the_summary_numbers_and_texts():
    summary = {
        "train_loss": 0.25,
        "eval_loss": None,
        "best_eval_step": 3,
        "steps": 3,
        "precision": "fp32",
        "gradient_checkpointing": False,
        "packed_rows": None,
        "mean_tokens_per_s": float("nan"),
        "startup_s": {"ray": 1.5, "total": 9.0},
        "memory_per_worker": [{"peak_mb": 900.0}, {"peak_mb": 910.0}],
    }
    numbers, texts = final_metrics(summary)
    assert numbers == {
        "final/train_loss": 0.25,
        "final/best_eval_step": 3,
        "final/steps": 3,
        "final/startup_s/ray": 1.5,
        "final/startup_s/total": 9.0,
        "final/memory_per_worker/0/peak_mb": 900.0,
        "final/memory_per_worker/1/peak_mb": 910.0,
    }
    assert texts == {"final/precision": "fp32", "final/gradient_checkpointing": "False"}


def test_settings_follow_the_environment_and_default_into_the_output_dir(tmp_path):
    out = tmp_path / "run"
    default = TrackerSettings.from_env({}, out)
    assert default.wandb_project == "robolora" and default.wandb_mode is None and default.wandb_dir == str(out)
    assert default.mlflow_tracking_uri == (out / "mlruns").as_uri() and default.mlflow_experiment == "robolora"
    env = {
        "WANDB_PROJECT": "robots",
        "WANDB_ENTITY": "lab",
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path / "wb"),
        "MLFLOW_TRACKING_URI": "http://mlflow.internal:5000",
        "MLFLOW_EXPERIMENT_NAME": "lora",
    }
    given = TrackerSettings.from_env(env, out)
    assert (given.wandb_project, given.wandb_entity, given.wandb_mode) == ("robots", "lab", "offline")
    assert (given.wandb_dir, given.mlflow_tracking_uri, given.mlflow_experiment) == (
        str(tmp_path / "wb"),
        "http://mlflow.internal:5000",
        "lora",
    )
    assert given.where("wandb") == "project lab/robots, offline"
    assert given.where("mlflow") == "http://mlflow.internal:5000, experiment lora"


def test_driver_writes_settings_for_the_workers_without_credentials(tmp_path):
    env = {
        "WANDB_PROJECT": "robots",
        "WANDB_MODE": "offline",
        "WANDB_API_KEY": "wandb-secret-key",
        "MLFLOW_TRACKING_URI": "http://mlflow.internal:5000",
        "MLFLOW_TRACKING_TOKEN": "mlflow-secret-token",
    }
    save_settings(tmp_path, "tensorboard,wandb", env)
    text = (tmp_path / SETTINGS_FILE).read_text()
    assert "secret" not in text
    assert load_settings(tmp_path) == TrackerSettings.from_env(env, tmp_path)
    # TensorBoard alone needs no settings: an earlier start's file goes.
    save_settings(tmp_path, "tensorboard", env)
    assert not (tmp_path / SETTINGS_FILE).exists()


def test_preflight_names_each_tracker_and_where_it_logs(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "lora")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.delenv("WANDB_ENTITY", raising=False)
    check = check_trackers(TrainConfig(report_to="tensorboard,wandb,mlflow", output_dir=str(tmp_path / "run")))
    assert check.ok and check.name == "trackers"
    parts = check.detail.split(", ")
    assert parts[0].startswith("tensorboard ") and parts[1].startswith("wandb ")
    assert "(project robolora, offline)" in check.detail
    assert f"({(tmp_path / 'run' / 'mlruns').as_uri()}, experiment lora)" in check.detail
    assert check_trackers(TrainConfig(report_to="none")).detail == "none (metrics.jsonl only)"


def test_a_missing_tracker_package_stops_train_before_ray(tmp_path, run_cli, monkeypatch):
    data = tmp_path / "data.json"
    write_dataset(generate_records(40, seed=1), data)
    monkeypatch.setitem(sys.modules, "wandb", None)  # this interpreter cannot import wandb: as if not installed

    def ray_started(cfg):
        raise AssertionError("Ray was started before the trackers were checked")

    monkeypatch.setattr("robolora.launcher.init_ray", ray_started)
    out = tmp_path / "run"
    code, stdout, err = run_cli(
        "train", "--data-json", data, "--output-dir", out, "--model-name", "tiny-llama", "--report-to", "mlflow,wandb"
    )
    assert (code, stdout) == (2, ""), err
    assert err.strip() == (
        "robolora: error: --report-to wandb: the wandb package is not installed; pip install wandb, or leave it out"
    )
    assert "Traceback" not in err and not out.exists()


def test_a_wandb_mode_wandb_does_not_know_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "ofline")
    with pytest.raises(UserError, match=r"WANDB_MODE=ofline is not a W&B mode; set it to online, offline"):
        check_trackers(TrainConfig(report_to="wandb", output_dir=str(tmp_path)))
    check_trackers(TrainConfig(report_to="mlflow", output_dir=str(tmp_path)))  # W&B's variable is not mlflow's


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _config(out, report_to: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(TrainConfig(report_to=report_to).to_dict()))


def test_report_to_none_writes_metrics_jsonl_alone(tmp_path):
    _config(tmp_path, "none")
    log = MetricsLog(tmp_path)
    log.clear()
    log.write({"step": 1, "epoch": 0.1, "train_loss": 2.0})
    log.close()
    assert [r["train_loss"] for r in _rows(tmp_path)] == [2.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "metrics.jsonl"]


def test_tensorboard_gets_each_scalar_once_per_step(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _config(tmp_path, "tensorboard")
    log = MetricsLog(tmp_path)
    log.clear()
    log.write({"step": 1, "epoch": 0.5, "train_loss": 2.0, "devices": [{"rss_mb": 10.0}], "note": "text"})
    log.write({"step": 2, "epoch": 1.0, "train_loss": 1.5})
    log.write({"step": 2, "epoch": 1.0, "eval_loss": 1.75})  # an evaluation row repeats its step's epoch
    log.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    assert scalars == {
        "epoch": [(1, 0.5), (2, 1.0)],
        "train_loss": [(1, 2.0), (2, 1.5)],
        "eval_loss": [(2, 1.75)],
        "device/rank0/rss_mb": [(1, 10.0)],
    }
    assert not (tmp_path / RUNS_FILE).exists()  # TensorBoard has no run to resume into
