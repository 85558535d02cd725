"""Sweep files, variant expansion, sharing the cluster, and the comparison: pure, no Ray."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from robolora.config import TrainConfig
from robolora.errors import ConfigError
from robolora.evaluate import EVAL_DEFAULTS, compare_dict, score
from robolora.sweep import build_sweep, load_sweep, share_cluster
from robolora.sweep_report import (
    VariantResult,
    collect,
    comparison_csv,
    comparison_table,
    pick_best,
    plot_curves,
    vote_predictions,
)

ROOT = Path(__file__).resolve().parents[2]
SWEEPS = sorted((ROOT / "examples" / "sweeps").glob("*.yaml"))


def sweep(**data):
    return build_sweep({"output_dir": "out", "shared": {"data_json": "d.json"}, **data}, source="s.yaml")


def test_a_listed_variant_sets_its_fields_on_top_of_base_and_shared():
    s = build_sweep(
        {
            "output_dir": "out",
            "base": {"data_json": "d.json", "lora_r": 16, "learning_rate": 1e-3, "output_dir": "ignored"},
            "shared": {"learning_rate": 2e-3},
            "variants": [{"name": "base"}, {"name": "wide", "lora_r": 64, "lora_alpha": 128}],
        },
        source="s.yaml",
    )
    assert [(v.name, v.config.lora_r, v.config.lora_alpha, v.config.learning_rate) for v in s.variants] == [
        ("base", 16, 64, 2e-3),
        ("wide", 64, 128, 2e-3),
    ]
    assert [v.config.output_dir for v in s.variants] == ["out/base", "out/wide"]
    assert s.variants[1].changes == {"lora_r": 64, "lora_alpha": 128}
    assert (s.metric, s.evaluate.constrained) == ("semantic", True)


def test_a_grid_makes_every_combination_with_readable_names():
    s = sweep(grid={"lora_r": [8, 16], "lora_target_modules": ["q_proj,v_proj", "q_proj"]})
    assert [v.name for v in s.variants] == [
        "lora_r-8_lora_target_modules-q_proj-v_proj",
        "lora_r-8_lora_target_modules-q_proj",
        "lora_r-16_lora_target_modules-q_proj-v_proj",
        "lora_r-16_lora_target_modules-q_proj",
    ]
    assert s.variants[1].config.target_modules() == ["q_proj"]


def test_without_evaluation_the_sweep_ranks_by_eval_loss():
    s = sweep(variants=[{"name": "a"}], evaluate=False)
    assert (s.metric, s.evaluate) == ("eval_loss", None)


def test_a_base_file_is_read_like_a_training_config(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("data_json: d.json\nlora_r: 8\noutput_dir: models/x\n")
    s = build_sweep({"output_dir": "o", "base": str(base), "variants": [{"name": "a"}]}, source="s.yaml")
    assert (s.variants[0].config.lora_r, s.variants[0].config.output_dir) == (8, "o/a")
    base.write_text("lora_rank: 8\n")
    with pytest.raises(ConfigError, match=r"lora_rank: unknown"):
        build_sweep({"output_dir": "o", "base": str(base), "variants": [{"name": "a"}]}, source="s.yaml")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"variants": [{"name": "a"}], "seeds": 3}, r"s.yaml: seeds: unknown key"),
        ({}, r"give variants \(a list\) or a grid"),
        ({"variants": [{"lora_r": 8}]}, r"variants\[0\]: name: give each variant a folder-safe name"),
        ({"variants": [{"name": "../x"}]}, r"folder-safe name, got '../x'"),
        ({"variants": [{"name": "a"}, {"name": "a"}]}, r"variants\[1\]: name: 'a' is taken"),
        ({"variants": [{"name": "best"}]}, r"'best' is reserved"),
        ({"variants": [{"name": "a", "output_dir": "x"}]}, r"variants\[0\]: output_dir: set by the sweep"),
        ({"variants": [{"name": "a", "ray_address": "auto"}]}, r"ray_address: set by the sweep"),
        ({"variants": [{"name": "a", "lora_r": 0}]}, r"variants\[0\] \(a\).*lora-r"),
        ({"grid": {"lora_r": 8}}, r"grid: lora_r: expected a non-empty list"),
        ({"grid": {"lora_rank": [8]}}, r"lora_rank"),
        ({"variants": [{"name": "a"}], "metric": "bleu"}, r"metric: 'bleu' is not one of semantic"),
        ({"variants": [{"name": "a"}], "evaluate": False, "metric": "exact"}, r"metric: exact needs the evaluation"),
        ({"variants": [{"name": "a"}], "evaluate": {"temperature": 1}}, r"evaluate: temperature: unknown"),
        ({"variants": [{"name": "a"}], "evaluate": {"limit": -1}}, r"evaluate: limit: -1 is not a valid int"),
        ({"variants": [{"name": "a"}], "max_concurrent": 0}, r"max_concurrent: expected a whole number"),
        ({"variants": [{"name": "a"}], "evaluate": {"quantization": "3bit"}}, r"quantization: '3bit' is not one of 4b"),
        ({"variants": [{"name": "a"}], "evaluate": {"max_memory": "lots"}}, r"max_memory: 'lots' is not a valid cap"),
        ({"variants": [{"name": "a"}], "evaluate": {"grammar_engine": "regex"}}, r"grammar_engine: 'regex' is not one"),
        ({"variants": [{"name": "a"}], "evaluate": {"constrained": "yes"}}, r"constrained: 'yes' is not a valid bool"),
    ],
)
def test_mistakes_name_the_file_and_field(data, message):
    with pytest.raises(ConfigError, match=message):
        sweep(**data)


def test_a_big_models_evaluation_takes_the_eval_commands_text_settings():
    """The settings `robolora eval` has for big models (4-bit, caps over GPUs, the grammar engine) in a sweep."""
    evaluate = {"quantization": "4bit", "max_memory": "0:20GiB,1:20GiB,cpu:64GiB", "grammar_engine": "recognizer"}
    s = sweep(variants=[{"name": "a"}], evaluate={**evaluate, "limit": 50})
    assert s.evaluate.__dict__ == {**EVAL_DEFAULTS.__dict__, **evaluate, "limit": 50}


def test_output_dir_cannot_be_shared():
    with pytest.raises(ConfigError, match=r"output_dir: set by the sweep"):
        build_sweep({"output_dir": "o", "shared": {"output_dir": "x"}, "variants": [{"name": "a"}]}, source="s")


def test_file_errors(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("variants: [\n")
    with pytest.raises(ConfigError, match=r"s.yaml: not valid YAML"):
        load_sweep(path)
    path.write_text("- a\n")
    with pytest.raises(ConfigError, match=r"expected a mapping"):
        load_sweep(path)


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_shipped_sweeps_load(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # their base configs are named from the project's root, as a user runs them
    s = load_sweep(path)
    assert len(s.variants) >= 2 and all(v.config.data_json or v.config.train_json for v in s.variants)


def test_cpu_variants_share_the_cores_and_keep_what_was_given():
    n, cfgs = share_cluster(
        [TrainConfig(), TrainConfig(num_workers=2), TrainConfig()], cpus=8, gpus=0, max_concurrent=2
    )
    assert n == 2
    assert [(c.num_workers, c.cpus_per_worker, c.use_gpu) for c in cfgs] == [
        (1, 4, False),
        (2, 2, False),
        (1, 4, False),
    ]
    n, cfgs = share_cluster([TrainConfig(num_workers=2)] * 3, cpus=2, gpus=0, max_concurrent=None)
    assert (n, cfgs[0].cpus_per_worker) == (1, 1)  # two workers fill the machine: one variant at a time
    n, cfgs = share_cluster([TrainConfig(cpus_per_worker=3)] * 2, cpus=2, gpus=0, max_concurrent=None)
    assert cfgs[0].cpus_per_worker == 3


def test_gpu_variants_split_the_gpus():
    n, cfgs = share_cluster([TrainConfig()] * 3, cpus=32, gpus=4, max_concurrent=None)
    assert (n, [c.num_workers for c in cfgs]) == (3, [1, 1, 1])
    n, cfgs = share_cluster([TrainConfig()] * 3, cpus=32, gpus=4, max_concurrent=2)
    assert (n, [c.num_workers for c in cfgs]) == (2, [2, 2, 2])


def result(name, status="done", **kw):
    return VariantResult(name, status, {}, **kw)


def test_the_best_is_the_highest_accuracy_or_the_lowest_loss_among_finished_variants():
    results = [
        result("a", eval_loss=0.3, scores={"semantic": 0.8}),
        result("b", eval_loss=0.2, scores={"semantic": 0.7}),
        result("c", "failed", eval_loss=0.1, scores={"semantic": 0.9}),
        result("d", eval_loss=0.4, scores={"semantic": 0.8}),
    ]
    assert pick_best(results, "semantic").name == "a"  # ties: the earlier one
    assert pick_best(results, "eval_loss").name == "b"
    assert pick_best([result("x", "failed")], "semantic") is None


def test_comparison_as_text_and_csv():
    results = [
        result("a", eval_loss=0.25, scores={"semantic": 0.9, "exact": 0.85}, tokens_per_s=300.0, adapter_mb=18.9),
        result("b", "failed", error="DataError: d.json: no such file"),
    ]
    ensemble = {"members": 2, "scores": {"semantic": 0.95}}
    text = comparison_table(results, best="a", ensemble=ensemble)
    lines = text.splitlines()
    assert lines[0].split()[:6] == ["variant", "status", "changes", "eval_loss", "train_loss", "semantic"]
    assert lines[2].split()[:4] == ["a", "*", "done", "-"] and "90.0%" in lines[2] and "18.90" in lines[2]
    assert lines[3].split()[:2] == ["b", "failed"]
    assert lines[4].startswith("ensemble (vote)") and "95.0%" in lines[4]
    rows = list(csv.DictReader(io.StringIO(comparison_csv(results, ensemble))))
    assert [r["variant"] for r in rows] == ["a", "b", "ensemble (vote)"]
    assert (rows[0]["semantic"], rows[0]["eval_loss"], rows[1]["error"]) == (
        "0.9",
        "0.25",
        "DataError: d.json: no such file",
    )
    assert rows[2]["semantic"] == "0.95"


def test_collect_reads_a_variants_folder(tmp_path):
    out = tmp_path / "a"
    out.mkdir()
    assert collect("a", {}, out).status == "not run"
    (out / "robolora_run.json").write_text(json.dumps({"finished": True}))
    (out / "train_summary.json").write_text(json.dumps({"eval_loss": 0.1, "mean_tokens_per_s": 250.0}))
    records = [{"input": "stop", "output": "robot.stop()"}] * 4
    report = score(records, ["robot.stop()"] * 3 + ["robot.go_home()"])
    (out / "eval.json").write_text(json.dumps(compare_dict({"a": report})))  # as the sweep and `eval` write it
    (out / "adapter_model.safetensors").write_bytes(b"\0" * 2**20)
    r = collect("a", {}, out)
    assert (r.status, r.eval_loss, r.tokens_per_s, r.adapter_mb) == ("done", 0.1, 250.0, 1.0)
    assert r.scores == {"semantic": 0.75, "exact": 0.75, "api_valid": 1.0, "syntax": 1.0}
    assert collect("a", {}, out, error="boom").status == "failed"


def rows(*codes, inputs=("x",)):
    return [
        {"input": i, "reference": "robot.stop()", "category": "c", "prediction": c, "mean_logprob": lp}
        for i, (c, lp) in zip(inputs, codes, strict=True)
    ]


def test_the_vote_over_saved_predictions():
    picks, records = vote_predictions(
        {
            "a": rows(("robot.turn_left(angle=90)", -0.5)),
            "b": rows(("robot.turn_left(angle=90.0)", -0.4)),
            "c": rows(("robot.stop()", -0.01)),
        }
    )
    assert picks == ["robot.turn_left(angle=90.0)"]  # the majority, its surest writer's spelling
    assert records == [{"input": "x", "output": "robot.stop()", "category": "c"}]
    with pytest.raises(ValueError, match="b was evaluated on other records"):
        vote_predictions({"a": rows(("robot.stop()", 0.0)), "b": rows(("robot.stop()", 0.0), inputs=("y",))})


def test_loss_curves_side_by_side(tmp_path):
    runs = {name: [{"step": s, "train_loss": 1 / s, "eval_loss": 1.1 / s} for s in (1, 2, 3)] for name in "abcde"}
    path = plot_curves(runs, tmp_path / "curves.png", best="b")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_command_refuses_a_bad_file_or_flag_in_one_line(run_cli, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("output_dir: o\nvariants: [{name: a, lora_r: -1}]\n")
    code, _, err = run_cli("sweep", "--config", str(path))
    assert code == 2 and err.count("\n") == 1 and "variants[0] (a): --lora-r: must be a positive integer" in err
    code, _, err = run_cli("sweep", "--config", str(path), "--max-concurrent", "0")
    assert code == 2 and "--max-concurrent: must be at least 1" in err
