"""Pipeline files: stages chained through their adapters; every mistake refused before training."""

from __future__ import annotations

from pathlib import Path

import pytest

from robolora.config import load_config_file
from robolora.errors import ConfigError
from robolora.pipeline import build_stages, load_pipeline

STAGES = [{"name": "simple", "data_json": "a.json", "num_epochs": 2}, {"name": "hard", "data_json": "b.json"}]


def test_stages_share_settings_and_chain():
    stages = build_stages(
        {"output_dir": "out", "shared": {"lora_r": 8, "learning_rate": 1e-3}, "stages": STAGES}, source="p"
    )
    a, b = (s.config for s in stages)
    assert (a.lora_r, b.lora_r, a.num_epochs, b.num_epochs) == (8, 8, 2.0, 3.0)
    assert (a.output_dir, a.resume_from, b.output_dir, b.resume_from) == ("out/simple", None, "out/hard", "out/simple")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1], "p: expected a mapping with output_dir, base, shared, stages"),
        (
            {"output_dir": "o", "stages": STAGES, "x": 1},
            "p: x: unknown key; a pipeline has output_dir, base, shared, stages",
        ),
        ({"stages": STAGES}, "p: output_dir: give the folder the stages' folders go in"),
        ({"output_dir": "o", "stages": []}, "p: stages: give a list of stages, each with a name and its own settings"),
        ({"output_dir": "o", "stages": [STAGES[0], STAGES[0]]}, "p: stages[1]: name: give each stage a different"),
        ({"output_dir": "o", "stages": [{"data_json": "a"}]}, "p: stages[0]: name: give each stage a different"),
        (
            {"output_dir": "o", "stages": [{**STAGES[0], "resume_from": "x"}]},
            "p: stages[0]: resume_from: set by the pipeline",
        ),
        ({"output_dir": "o", "stages": [{**STAGES[0], "lora_rr": 4}]}, "p: stages[0]: lora_rr: unknown key"),
        ({"output_dir": "o", "stages": [{**STAGES[0], "lora_r": 0}]}, "--lora-r: must be a positive integer, got 0"),
    ],
)
def test_refusals(data, message):
    with pytest.raises(ConfigError) as e:
        build_stages(data, source="p")
    assert str(e.value).startswith(message)


def test_file_errors(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("stages: [\n")
    with pytest.raises(ConfigError, match=r"p.yaml: not valid YAML"):
        load_pipeline(bad)
    with pytest.raises(ConfigError, match=r"missing.yaml: no such file"):
        load_pipeline(tmp_path / "missing.yaml")


ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "examples" / "pipelines").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_pipelines_load(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # their base configs are named from the project's root, as a user runs them
    stages = load_pipeline(path)
    assert len(stages) >= 2 and all(s.config.data_json for s in stages)
    assert stages[1].config.resume_from == stages[0].config.output_dir
    base = load_config_file(ROOT / "examples" / "smollm2-135m.yaml")
    assert stages[0].config.lora_r == base["lora_r"] and stages[0].config.num_epochs == 0.5


def test_a_base_file_gives_every_stage_its_settings(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("data_json: d.json\nlora_r: 8\noutput_dir: elsewhere\n")
    stages = build_stages(
        {"output_dir": "out", "base": str(base), "stages": [{"name": "a"}, {"name": "b", "lora_r": 8}]}, "p.yaml"
    )
    assert [(s.config.lora_r, s.config.output_dir) for s in stages] == [(8, "out/a"), (8, "out/b")]
