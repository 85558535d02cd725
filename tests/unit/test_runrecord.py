"""One rule for reusing or resuming a run's folder (train, sweep, pipeline): same settings, same inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from robolora.config import from_dict
from robolora.errors import UserError
from robolora.pipeline import build_stages, plan_stages
from robolora.report import run_summary
from robolora.runrecord import RUN_MARKER, changes, folder_state, input_digests, read_marker, write_marker
from robolora.sweep import MAX_VARIANTS, build_sweep, plan_variants
from robolora.sweep_report import collect


def _finish(cfg, finished=True):
    """A folder as a run leaves it: its marker, saved config and metrics."""
    from pathlib import Path

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, cfg, cfg, finished=finished)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    rows = [{"step": 1, "train_loss": 2.0, "time": 100.0}, {"step": 2, "train_loss": 1.0, "time": 110.0}]
    rows.append({"step": 2, "eval_loss": 1.25, "time": 111.0})
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"input": "stop", "output": "robot.stop()"}]))
    return path


def test_same_settings_and_inputs_match_and_each_change_is_named(tmp_path, data):
    cfg = from_dict({"data_json": str(data), "output_dir": str(tmp_path / "run")})
    _finish(cfg)
    marker = read_marker(cfg.output_dir)
    assert changes(cfg, marker, input_digests(cfg)) == []
    assert changes(cfg.replace(lora_r=8), marker, input_digests(cfg)) == ["lora_r 32 -> 8"]
    data.write_text(json.dumps([{"input": "go home", "output": "robot.go_home()"}]))
    assert changes(cfg, marker, input_digests(cfg)) == [f"data_json's content ({data})"]
    # where it runs may change: the CPUs a worker gets, the cluster's address
    assert changes(cfg.replace(cpus_per_worker=3, ray_address="auto"), marker) == []


def test_a_relative_path_given_again_from_the_same_folder_is_the_same_setting(tmp_path, data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = from_dict({"data_json": "d.json", "output_dir": "run"})
    _finish(cfg)
    absolute = cfg.replace(data_json=str(data), output_dir=str(tmp_path / "run"))
    assert changes(absolute, read_marker(tmp_path / "run")) == []


def test_the_starting_adapter_is_an_input(tmp_path, data):
    start = tmp_path / "start"
    start.mkdir()
    (start / "adapter_config.json").write_text("{}")
    (start / "adapter_model.safetensors").write_bytes(b"one")
    cfg = from_dict({"data_json": str(data), "output_dir": str(tmp_path / "run"), "resume_from": str(start)})
    _finish(cfg)
    assert changes(cfg, read_marker(cfg.output_dir), input_digests(cfg)) == []
    (start / "adapter_model.safetensors").write_bytes(b"three")
    assert changes(cfg, read_marker(cfg.output_dir), input_digests(cfg)) == [f"resume_from's adapter ({start})"]


def test_folder_states(tmp_path, data):
    cfg = from_dict({"data_json": str(data), "output_dir": str(tmp_path / "run")})
    assert folder_state(cfg) == ("new", [])
    (tmp_path / "run").mkdir()
    assert folder_state(cfg) == ("new", [])
    (tmp_path / "run" / "notes.txt").write_text("mine")
    assert folder_state(cfg) == ("foreign", [])
    _finish(cfg, finished=False)
    assert folder_state(cfg) == ("unfinished", [])
    _finish(cfg)
    assert folder_state(cfg.replace(learning_rate=1e-3)) == ("finished", ["learning_rate 0.0001 -> 0.001"])


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"given": [1]}'])
def test_a_corrupt_marker_is_named_not_a_traceback(tmp_path, data, content):
    cfg = from_dict({"data_json": str(data), "output_dir": str(tmp_path / "run")})
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / RUN_MARKER).write_text(content)
    with pytest.raises(UserError, match=rf"{RUN_MARKER}: .*robolora run marker"):
        folder_state(cfg)


def _sweep(tmp_path, data, variants, evaluate=False):
    spec = {"output_dir": str(tmp_path / "sweep"), "shared": {"data_json": str(data)}, "variants": variants}
    return build_sweep({**spec, "evaluate": evaluate}, "s.yaml")


def test_a_sweep_keeps_a_finished_variant_only_with_the_same_settings(tmp_path, data):
    sweep = _sweep(tmp_path, data, [{"name": "a"}, {"name": "b", "lora_r": 64}])
    _finish(sweep.variants[1].config)
    assert plan_variants(sweep, "s.yaml") == {"a": "train", "b": "reuse"}
    edited = _sweep(tmp_path, data, [{"name": "a"}, {"name": "b", "lora_r": 8}])
    with pytest.raises(UserError, match=r"s.yaml: 1 variant folder holds a run .*: b \(lora_r 64 -> 8\); rename"):
        plan_variants(edited, "s.yaml")


def test_a_sweep_evaluates_a_finished_variant_again_when_its_evaluation_settings_changed(tmp_path, data):
    sweep = _sweep(tmp_path, data, [{"name": "a"}], evaluate={"limit": 5})
    out = _finish(sweep.variants[0].config)
    assert plan_variants(sweep, "s.yaml") == {"a": "evaluate"}
    (out / "eval.json").write_text(json.dumps({"overall": {}, "settings": sweep.evaluate.__dict__}))
    assert plan_variants(sweep, "s.yaml") == {"a": "reuse"}
    other = _sweep(tmp_path, data, [{"name": "a"}], evaluate={"limit": 6})
    assert plan_variants(other, "s.yaml") == {"a": "evaluate"}


def test_labels_and_losses_come_from_the_run_itself(tmp_path, data):
    sweep = _sweep(tmp_path, data, [{"name": "b", "lora_r": 64}])
    _finish(sweep.variants[0].config)
    # a sweep file that no longer says what the run trained with (plan_variants refuses it before this)
    edited = _sweep(tmp_path, data, [{"name": "b", "lora_r": 8}])
    v = edited.variants[0]
    r = collect(v.name, v.changes, Path(v.config.output_dir))
    assert r.changes == {"lora_r": 64}
    assert (r.status, r.train_loss, r.eval_loss) == ("done", 1.0, 1.25)  # no train_summary.json at all


def test_a_grid_of_too_many_variants_is_refused_before_it_is_built():
    grid = {"learning_rate": [1e-3] * 1000, "lora_r": [8] * 1000, "seed": list(range(1000))}
    with pytest.raises(UserError, match=f"more than {MAX_VARIANTS} variants"):
        build_sweep({"output_dir": "o", "shared": {"data_json": "d"}, "grid": grid}, "s.yaml")


def _stages(tmp_path, data, lr=1e-3):
    stages = [{"name": "first", "learning_rate": lr}, {"name": "second"}]
    return build_stages({"output_dir": str(tmp_path / "p"), "shared": {"data_json": str(data)}, "stages": stages}, "p")


def _finish_stage(stage):
    out = _finish(stage.config)
    (out / "adapter_config.json").write_text("{}")
    (out / "adapter_model.safetensors").write_bytes(stage.name.encode())
    return out


def test_a_pipeline_keeps_unchanged_stages_and_refuses_a_changed_one_with_every_stage_after_it(tmp_path, data):
    first, second = _stages(tmp_path, data)
    _finish_stage(first)
    assert plan_stages([first, second], "p.yaml") == {"first": "reuse", "second": "train"}
    _finish_stage(second)
    assert plan_stages([first, second], "p.yaml") == {"first": "reuse", "second": "reuse"}
    with pytest.raises(UserError) as e:
        plan_stages(_stages(tmp_path, data, lr=2e-3), "p.yaml")
    message = str(e.value)
    assert "first (learning_rate 0.001 -> 0.002)" in message
    assert "second (its starting adapter, stage first's, is retrained)" in message
    assert "move first, second out of" in message


def test_a_pipeline_stage_whose_starting_adapter_changed_is_refused(tmp_path, data):
    first, second = _stages(tmp_path, data)
    out = _finish_stage(first)
    _finish_stage(second)
    (out / "adapter_model.safetensors").write_bytes(b"retrained elsewhere")
    with pytest.raises(UserError, match=r"second \(resume_from's adapter"):
        plan_stages([first, second], "p.yaml")


def test_the_summary_of_a_run_reads_every_attempt():
    rows = [{"step": 1, "train_loss": 3.0}, {"step": 2, "eval_loss": 2.0}, {"step": 3, "train_loss": 1.0}]
    summary = run_summary(rows)
    assert (summary["train_loss"], summary["eval_loss"], summary["last_step"]) == (1.0, 2.0, 3)
