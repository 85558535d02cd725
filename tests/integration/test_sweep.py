"""A real sweep on Ray Tune: two tiny-model variants train side by side, a third fails alone."""

from __future__ import annotations

import csv
import json

import yaml

from robolora.cli import main
from tests.integration.conftest import TINY, metric_rows


def test_variants_train_concurrently_a_failure_stays_isolated_and_a_rerun_keeps_them(
    ray_session, small_dataset, tmp_path, capsys
):
    shared = {**TINY, "data_json": str(small_dataset), "max_steps": 6, "save_steps": 3, "eval_steps": 3}
    spec = {
        "output_dir": str(tmp_path / "sweep"),
        "shared": shared,
        "variants": [
            {"name": "r8"},
            {"name": "r4", "lora_r": 4, "lora_alpha": 8},
            {"name": "broken", "data_json": str(tmp_path / "missing.json")},
        ],
        "max_concurrent": 2,
        "evaluate": {"limit": 6, "max_new_tokens": 24, "constrained": False},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))

    assert main(["sweep", "--config", str(path)]) == 1  # one variant failed: the sweep says so
    err = capsys.readouterr().err
    assert (
        "1 of 3 variants did not finish" in err and "broken: DataError" in err and "missing.json: no such file" in err
    )

    out = tmp_path / "sweep"
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
    assert (rows["r8"]["status"], rows["r4"]["status"], rows["broken"]["status"]) == ("done", "done", "failed")
    assert "no such file" in rows["broken"]["error"]
    assert rows["r4"]["changes"] == "lora_r=4, lora_alpha=8" and float(rows["r4"]["eval_loss"]) > 0
    assert all(0.0 <= float(rows[n][m]) <= 1.0 for n in ("r8", "r4") for m in ("semantic", "api_valid", "syntax"))
    assert "ensemble (vote)" in rows
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["metric"] == "semantic" and summary["ensemble"]["members"] == 2
    assert (out / "best").resolve() in {(out / "r8").resolve(), (out / "r4").resolve()}
    assert (out / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "ensemble_predictions.jsonl").is_file()

    # Again: the finished variants are kept as they are, only the failed one runs (and fails) again.
    adapter = (out / "r8" / "adapter_model.safetensors").stat().st_mtime_ns
    assert main(["sweep", "--config", str(path)]) == 1
    printed = capsys.readouterr().out
    assert "[r8] finished earlier: kept" in printed and "[r4] finished earlier: kept" in printed
    assert (out / "r8" / "adapter_model.safetensors").stat().st_mtime_ns == adapter
