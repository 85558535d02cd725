"""A real sweep on Ray Tune: two tiny-model variants train side by side, a third fails alone; started again,
the sweep keeps what still matches, refuses to relabel what does not, and resumes an interrupted variant
without losing its results."""

from __future__ import annotations

import csv
import json
import re

import yaml

from robolora.cli import main
from tests.integration.conftest import TINY, metric_rows


def _write(path, spec):
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_variants_train_concurrently_a_failure_stays_isolated_and_a_rerun_keeps_them(
    ray_session, small_dataset, tmp_path, capfd
):
    shared = {**TINY, "data_json": str(small_dataset), "max_steps": 6, "save_steps": 3, "eval_steps": 3}
    spec = {
        "output_dir": str(tmp_path / "sweep"),
        "shared": shared,
        "variants": [
            {"name": "r8"},
            {"name": "r4", "lora_r": 4, "lora_alpha": 8},
            # fails only once it runs: the cluster has 2 CPUs
            {"name": "wide", "num_workers": 3},
        ],
        "max_concurrent": 2,
        "evaluate": {"limit": 6, "max_new_tokens": 24, "constrained": False},
    }
    out = tmp_path / "sweep"

    # A variant whose data is missing stops the sweep before anything trains, naming the variant.
    broken = {**spec, "variants": [*spec["variants"], {"name": "broken", "data_json": str(tmp_path / "no.json")}]}
    assert main(["sweep", "--config", str(_write(tmp_path / "broken.yaml", broken))]) == 2
    err = capfd.readouterr().err
    assert re.search(r"robolora: error: variant broken: .*no\.json: no such file", err), err
    assert not out.exists()

    # --dry-run: what would run, nothing started or written
    path = _write(tmp_path / "sweep.yaml", spec)
    assert main(["sweep", "--config", str(path), "--dry-run"]) == 0
    printed = capfd.readouterr().out
    assert "r8: (base settings)" in printed and printed.count("-> train") == 3
    assert not out.exists()

    assert main(["sweep", "--config", str(path)]) == 1  # one variant failed: the sweep says so
    captured = capfd.readouterr()
    assert "1 of 3 variants did not finish" in captured.err and "wide:" in captured.err
    assert "the Ray cluster has only 2 CPUs" in captured.err
    # every line a variant's workers print carries its name; the TensorBoard hint points at the variants
    assert re.search(r"\[r8\] model: ", captured.out) and re.search(r"\[r4\] model: ", captured.out)
    assert f"tensorboard --logdir {out}" in captured.out and "To visualize your results" not in captured.out

    spans = {}
    for name in ("r8", "r4"):
        folder = out / name
        assert (folder / "adapter_model.safetensors").is_file()
        assert json.loads((folder / "robolora_run.json").read_text())["finished"] is True
        assert json.loads((folder / "eval.json").read_text())["overall"][name]["n"] == 6
        assert [row["step"] for row in metric_rows(folder) if "train_loss" in row] == [1, 2, 3, 4, 5, 6]
        # a trial's span: its run's config is written as its Train run starts; eval.json ends the trial
        spans[name] = ((folder / "config.yaml").stat().st_mtime, (folder / "eval.json").stat().st_mtime)
    # the two trials ran at the same time: each started before the other had ended
    (a0, a1), (b0, b1) = spans["r8"], spans["r4"]
    assert max(a0, b0) < min(a1, b1), spans

    rows = {r["variant"]: r for r in csv.DictReader((out / "comparison.csv").open())}
    assert (rows["r8"]["status"], rows["r4"]["status"], rows["wide"]["status"]) == ("done", "done", "failed")
    assert "only 2 CPUs" in rows["wide"]["error"]
    assert rows["r4"]["changes"] == "lora_r=4, lora_alpha=8" and float(rows["r4"]["eval_loss"]) > 0
    # how many trained side by side while each one's tokens/s were measured (at most the 2 trials at a time)
    assert rows["r8"]["at_once"] == rows["r4"]["at_once"] and rows["r8"]["at_once"] in ("1", "2")
    assert all(0.0 <= float(rows[n][m]) <= 1.0 for n in ("r8", "r4") for m in ("semantic", "api_valid", "syntax"))
    assert "ensemble (vote)" in rows
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["metric"] == "semantic" and summary["ensemble"]["members"] == 2
    assert (out / "best").resolve() in {(out / "r8").resolve(), (out / "r4").resolve()}
    assert (out / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "ensemble_predictions.jsonl").is_file()

    # Edited: r4 now asks for another rank. Its finished run is neither relabelled nor overwritten.
    adapter = (out / "r4" / "adapter_model.safetensors").read_bytes()
    table = (out / "comparison.txt").read_text()
    edited = {**spec, "variants": [{"name": "r8"}, {"name": "r4", "lora_r": 8, "lora_alpha": 8}]}
    assert main(["sweep", "--config", str(_write(tmp_path / "edited.yaml", edited))]) == 2
    err = capfd.readouterr().err
    assert re.search(r"robolora: error: .*r4 \(lora_r 4 -> 8\); rename the changed variants", err), err
    assert (out / "r4" / "adapter_model.safetensors").read_bytes() == adapter
    assert (out / "comparison.txt").read_text() == table

    # Interrupted after its last step (the run's marker not yet finished, no summary, no evaluation): the
    # same sweep resumes r8 at its end and loses none of its results.
    marker = out / "r8" / "robolora_run.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "finished": False}))
    for name in ("train_summary.json", "eval.json"):
        (out / "r8" / name).unlink()
    rerun = {**spec, "variants": spec["variants"][:2]}
    assert main(["sweep", "--config", str(_write(tmp_path / "rerun.yaml", rerun))]) == 0
    printed = capfd.readouterr().out
    assert "[r4] finished earlier: kept" in printed and "r8: (base settings)" in printed
    assert "-> resume from its last checkpoint" in printed
    assert (out / "r4" / "adapter_model.safetensors").read_bytes() == adapter
    rows = {r["variant"]: r for r in csv.DictReader((out / "comparison.csv").open())}
    assert rows["r8"]["status"] == "done" and float(rows["r8"]["eval_loss"]) > 0 and float(rows["r8"]["train_loss"]) > 0
    r8 = json.loads((out / "r8" / "train_summary.json").read_text())
    assert r8["steps"] == 6 and r8["train_loss"] > 0 and r8["eval_loss"] > 0
    assert r8["train_runtime_s"] > 0.5  # the first attempt's training counts
    assert json.loads((out / "sweep.json").read_text())["best"] in ("r8", "r4")
