"""--report-to tensorboard,wandb,mlflow on a real training run (Ray Train workers, the tiny model): each tracker
holds the run's config, every logged step and the final metrics, read back with the trackers' own readers (W&B
offline, MLflow's client on a local file store, TensorBoard's EventAccumulator). One run, checked several ways."""

from __future__ import annotations

import contextlib
import io
import json
import struct
from pathlib import Path

import pytest
import yaml

from robolora.config import from_dict
from robolora.push import upload_plan
from robolora.trackers import RUNS_FILE, SETTINGS_FILE
from tests.integration.conftest import TINY, metric_rows, scalar_steps, series

STEPS = 3
PROJECT = "robolora-tests"
EXPERIMENT = "robolora-tests"


@pytest.fixture(scope="module")
def tracker_env(tmp_path_factory):
    """The environment of the command: W&B offline into its own folder, MLflow into a local file store."""
    root = tmp_path_factory.mktemp("trackers")
    env = {
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(root / "wandb-files"),
        "WANDB_PROJECT": PROJECT,
        "WANDB_API_KEY": "not-written-anywhere-" + "x" * 19,
        "MLFLOW_TRACKING_URI": (root / "mlruns").as_uri(),
        "MLFLOW_EXPERIMENT_NAME": EXPERIMENT,
        # This test reads the file store back; MLflow 3 opens one only for those who opt in.
        "MLFLOW_ALLOW_FILE_STORE": "true",
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        yield root, env


@pytest.fixture(scope="module")
def tracked(ray_session, small_dataset, tracker_env):
    """The output folder and console output of one run reporting to all three trackers."""
    from robolora.launcher import run_training

    root, _ = tracker_env
    out = root / "tracked-run"
    values = {
        **TINY,
        "data_json": str(small_dataset),
        "output_dir": str(out),
        "max_steps": STEPS,
        "eval_steps": STEPS,
        "save_steps": STEPS,
        "report_to": "tensorboard,wandb,mlflow",
    }
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        run_training(from_dict(values), watch=False)
    return out, console.getvalue()


def wandb_records(path: Path) -> list:
    """The records of an offline W&B run file (``run-<id>.wandb``): LevelDB log blocks of protobuf records."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", "not a W&B run file"
    records, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # padding up to the next block
            pos += block - pos % block
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_run(wandb_dir: str | Path, run_id: str) -> dict:
    """The config, history rows and summary of the offline W&B run ``run_id`` (all its attempts) in ``wandb_dir``."""
    files = sorted(Path(wandb_dir, "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert files, f"no offline run {run_id} in {wandb_dir}"
    run = {"config": {}, "history": [], "summary": {}, "names": set(), "projects": set(), "files": files}
    for path in files:
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run["names"].add(record.run.display_name)
                run["projects"].add(record.run.project)
                run["config"].update(_items(record.run.config.update))
            elif kind == "history":
                run["history"].append(_items(record.history.item))
            elif kind == "summary":
                run["summary"].update(_items(record.summary.update))
    return run


def _items(items) -> dict:
    """A W&B record's items by name (a name with a slash is kept as its parts)."""
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


def test_the_checklist_names_the_trackers_and_the_workers_get_no_credentials(tracked, tracker_env):
    out, console = tracked
    _, env = tracker_env
    line = next(x for x in console.splitlines() if "[ok] trackers:" in x)
    assert "wandb " in line and f"(project {PROJECT}, offline)" in line
    assert f"({env['MLFLOW_TRACKING_URI']}, experiment {EXPERIMENT})" in line
    settings = (out / SETTINGS_FILE).read_text()
    assert json.loads(settings)["wandb_dir"] == env["WANDB_DIR"]
    written = [p.read_bytes() for p in out.rglob("*") if p.is_file()]
    assert written and not any(env["WANDB_API_KEY"].encode() in data for data in written)
    assert set(json.loads((out / RUNS_FILE).read_text())) == {"wandb", "mlflow"}


def test_tensorboard_has_every_step_of_metrics_jsonl(tracked):
    out, _ = tracked
    scalars = scalar_steps(out / "tensorboard")
    train = series(out, "train_loss")
    assert sorted(train) == list(range(1, STEPS + 1))
    assert [s for s, _ in scalars["train_loss"]] == sorted(train)
    assert [v for _, v in scalars["train_loss"]] == pytest.approx([train[s] for s in sorted(train)])
    assert scalars["eval_loss"] == [(STEPS, pytest.approx(series(out, "eval_loss")[STEPS]))]


def test_wandb_offline_run_holds_config_history_and_final_metrics(tracked, tracker_env):
    out, _ = tracked
    _, env = tracker_env
    assert len(list(Path(env["WANDB_DIR"], "wandb").glob("offline-run-*"))) == 1  # rank 0's alone
    run = wandb_run(env["WANDB_DIR"], json.loads((out / RUNS_FILE).read_text())["wandb"])
    assert run["names"] == {out.name} and run["projects"] == {PROJECT}
    config = run["config"]
    assert (config["lora_r"], config["model_name"], config["max_steps"]) == (8, "tiny-llama", STEPS)
    assert config["report_to"] == "tensorboard,wandb,mlflow" and config["output_dir"] == str(out)
    logged = {row["_step"]: row for row in run["history"]}
    train = series(out, "train_loss")
    assert sorted(logged) == sorted(train)  # W&B's step is the optimizer step
    assert [logged[s]["train_loss"] for s in sorted(train)] == pytest.approx([train[s] for s in sorted(train)])
    assert logged[STEPS]["eval_loss"] == pytest.approx(series(out, "eval_loss")[STEPS])
    summary = json.loads((out / "train_summary.json").read_text())
    assert run["summary"]["final/train_loss"] == pytest.approx(summary["train_loss"])
    assert run["summary"]["final/best_eval_loss"] == pytest.approx(summary["best_eval_loss"])
    assert run["summary"]["final/steps"] == STEPS and run["summary"]["final/precision"] == "fp32"


def test_mlflow_run_holds_params_step_metrics_and_final_metrics(tracked, tracker_env):
    from mlflow.tracking import MlflowClient

    out, _ = tracked
    _, env = tracker_env
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(EXPERIMENT)
    (run,) = client.search_runs([experiment.experiment_id])  # rank 0's alone
    assert run.info.run_id == json.loads((out / RUNS_FILE).read_text())["mlflow"]
    assert run.info.run_name == out.name and run.info.status == "FINISHED"
    params = run.data.params
    config = yaml.safe_load((out / "config.yaml").read_text())  # the resolved config the workers trained with
    assert {k: params[k] for k in ("lora_r", "model_name", "report_to", "learning_rate", "resume_from")} == {
        "lora_r": "8",
        "model_name": "tiny-llama",
        "report_to": "tensorboard,wandb,mlflow",
        "learning_rate": str(config["learning_rate"]),
        "resume_from": "None",
    }
    assert params == {k: str(v) for k, v in config.items()}
    history = client.get_metric_history(run.info.run_id, "train_loss")
    train = series(out, "train_loss")
    assert [(m.step, m.value) for m in history] == [(s, pytest.approx(train[s])) for s in sorted(train)]
    summary = json.loads((out / "train_summary.json").read_text())
    metrics = run.data.metrics
    assert metrics["final/train_loss"] == pytest.approx(summary["train_loss"])
    assert metrics["final/eval_loss"] == pytest.approx(summary["eval_loss"])
    assert metrics["final/steps"] == STEPS and metrics["final/train_runtime_s"] == pytest.approx(
        summary["train_runtime_s"]
    )
    assert run.data.tags["final/precision"] == "fp32"
    assert metric_rows(out)[-1]["step"] == STEPS


def test_a_push_of_the_run_sends_no_tracker_or_checkpoint_file(tracked):
    out, _ = tracked
    sent = [u.path_in_repo for u in upload_plan(out, "my-org/robot-lora")]
    assert sent == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "README.md",
    ]
    assert (out / f"checkpoint-{STEPS}").is_dir() and (out / "tensorboard").is_dir()


def test_a_resumed_run_logs_into_the_same_tracker_runs(tracker_env, tmp_path):
    """Rank 0's MetricsLog across two attempts: the second (resuming after step 1) goes on in the first's runs."""
    from mlflow.tracking import MlflowClient

    from robolora.config import TrainConfig
    from robolora.metrics_log import MetricsLog
    from robolora.trackers import save_settings

    _, env = tracker_env
    env = {**env, "WANDB_DIR": str(tmp_path / "wandb-files"), "MLFLOW_EXPERIMENT_NAME": "robolora-resume-tests"}
    out = tmp_path / "resumed-run"
    out.mkdir()
    (out / "config.yaml").write_text(yaml.safe_dump(TrainConfig(report_to="wandb,mlflow").to_dict()))
    save_settings(out, "wandb,mlflow", env)
    first = MetricsLog(out)
    first.clear()
    first.write({"step": 1, "train_loss": 2.0})
    first.write({"step": 2, "train_loss": 1.5})  # logged, then lost with the attempt (no checkpoint at 2)
    first.close()
    ids = json.loads((out / RUNS_FILE).read_text())
    second = MetricsLog(out)
    second.truncate(1)
    second.write({"step": 2, "train_loss": 1.5})
    second.write({"step": 3, "train_loss": 1.0})
    (out / "train_summary.json").write_text(json.dumps({"train_loss": 1.0, "steps": 3}))
    second.close()
    assert json.loads((out / RUNS_FILE).read_text()) == ids
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    steps = [(m.step, m.value) for m in client.get_metric_history(ids["mlflow"], "train_loss")]
    assert sorted(set(steps)) == [(1, 2.0), (2, 1.5), (3, 1.0)]
    assert client.get_run(ids["mlflow"]).data.metrics["final/train_loss"] == 1.0
    run = wandb_run(env["WANDB_DIR"], ids["wandb"])
    assert len(run["files"]) == 2  # one offline file per attempt, one run ID
    assert {row["_step"]: row["train_loss"] for row in run["history"]} == {1: 2.0, 2: 1.5, 3: 1.0}
    assert run["summary"]["final/train_loss"] == 1.0
    # A run that starts again from step 0 starts new tracker runs.
    third = MetricsLog(out)
    third.clear()
    third.close()
    assert set(json.loads((out / RUNS_FILE).read_text()).values()).isdisjoint(ids.values())


def test_a_tracker_that_fails_to_log_is_dropped_and_the_run_goes_on(tmp_path, capsys):
    """The MLflow store vanishes mid-run (a server gone, a disk unmounted): one warning, the other trackers and
    metrics.jsonl keep every row."""
    import shutil

    from robolora.config import TrainConfig
    from robolora.metrics_log import MetricsLog
    from robolora.trackers import save_settings

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text(yaml.safe_dump(TrainConfig(report_to="tensorboard,mlflow").to_dict()))
    save_settings(out, "tensorboard,mlflow", {"MLFLOW_TRACKING_URI": (tmp_path / "store").as_uri()})
    log = MetricsLog(out)
    log.clear()
    log.write({"step": 1, "train_loss": 2.0})
    shutil.rmtree(tmp_path / "store")
    log.write({"step": 2, "train_loss": 1.0})
    log.write({"step": 3, "train_loss": 0.5})
    log.close()
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("--report-to")]
    assert len(warnings) == 1 and warnings[0].startswith("--report-to mlflow: logging failed (")
    assert warnings[0].endswith(f"its run stops here, the metrics go on into {out / 'metrics.jsonl'}")
    assert [r["train_loss"] for r in metric_rows(out)] == [2.0, 1.0, 0.5]
    assert scalar_steps(out / "tensorboard")["train_loss"] == [(1, 2.0), (2, 1.0), (3, 0.5)]
