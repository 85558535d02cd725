"""A two-stage pipeline on the tiny model: the second stage starts from the first one's adapter."""

from __future__ import annotations

import json

import torch
import yaml
from safetensors.torch import load_file

from robolora.cli import main
from tests.integration.conftest import TINY, series


def test_two_stages_chain_and_a_rerun_skips_them(ray_session, small_dataset, tmp_path, capsys):
    shared = {**TINY, "data_json": str(small_dataset), "max_steps": 2, "save_steps": 2, "eval_steps": 2}
    spec = {
        "output_dir": str(tmp_path / "curriculum"),
        "shared": shared,
        "stages": [{"name": "first", "learning_rate": 1e-2}, {"name": "second", "learning_rate": 1e-3}],
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["pipeline", "--config", str(path)]) == 0
    first, second = tmp_path / "curriculum" / "first", tmp_path / "curriculum" / "second"
    for out in (first, second):
        assert json.loads((out / "robolora_run.json").read_text())["finished"] is True
    saved = yaml.safe_load((second / "config.yaml").read_text())
    assert saved["resume_from"] == str(first) and saved["learning_rate"] == 1e-3
    # the second stage continued from the first one's weights: its first loss is the first stage's last level,
    # not the untrained start
    assert series(second, "train_loss")[1] < series(first, "train_loss")[1] - 0.1
    a, b = load_file(str(first / "adapter_model.safetensors")), load_file(str(second / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)
    capsys.readouterr()
    assert main(["pipeline", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "stage 1/2 first: finished earlier" in out and "stage 2/2 second: finished earlier" in out

    # --dry-run says what a start would do, and does nothing
    assert main(["pipeline", "--config", str(path), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("-> finished earlier: kept") == 2
    # Stage one's learning rate edited: it and the stage after it would have to be retrained. Nothing is
    # overwritten; one line names both stages, what changed, and the fix.
    adapters = [(out / "adapter_model.safetensors").read_bytes() for out in (first, second)]
    spec["stages"][0]["learning_rate"] = 2e-2
    path.write_text(yaml.safe_dump(spec))
    assert main(["pipeline", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "first (learning_rate 0.01 -> 0.02)" in err, err
    assert "second (its starting adapter, stage first's, is retrained)" in err and "move first, second out of" in err
    assert [(out / "adapter_model.safetensors").read_bytes() for out in (first, second)] == adapters
    # moved away as the message says, both stages would train again (a start trains them as the first one did)
    first.rename(tmp_path / "first-old")
    second.rename(tmp_path / "second-old")
    assert main(["pipeline", "--config", str(path), "--dry-run"]) == 0
    planned = capsys.readouterr().out
    assert planned.count("-> train") == 2 and "finished earlier" not in planned, planned
    assert not first.exists() and not second.exists()
