"""Reading metrics.jsonl, the loss-curve PNG and the model card."""

from __future__ import annotations

import json

import pytest
import yaml
from PIL import Image

from robolora.config import TrainConfig
from robolora.diagnose import diagnose
from robolora.errors import UserError
from robolora.report import PLOT_PIXELS, model_card, plot_loss_curve, read_metrics

ROWS = [
    {"step": 10, "epoch": 0.12, "train_loss": 1.83, "learning_rate": 5e-4, "tokens_per_s": 260.0, "memory_mb": 2100.0,
     "elapsed_s": 40.2},
    {"step": 20, "epoch": 0.24, "train_loss": 0.91, "learning_rate": 4e-4, "tokens_per_s": 280.0, "memory_mb": 2300.0,
     "elapsed_s": 80.0},
    {"step": 30, "epoch": 0.36, "train_loss": 0.41, "learning_rate": 3e-4, "tokens_per_s": 270.0, "memory_mb": 2200.0,
     "elapsed_s": 120.0, "eval_loss": 0.45},
    {"step": 40, "epoch": 0.48, "train_loss": 0.32, "learning_rate": 2e-4, "tokens_per_s": 250.0, "memory_mb": 2200.0,
     "elapsed_s": 3725.0},
    {"step": 40, "epoch": 0.48, "eval_loss": 0.47, "elapsed_s": 3730.0},
]  # fmt: skip
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_jsonl(path, rows, tail: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail, encoding="utf-8")


def test_read_metrics_round_trips(tmp_path):
    write_jsonl(tmp_path / "metrics.jsonl", ROWS, tail="\n")
    assert read_metrics(tmp_path / "metrics.jsonl") == ROWS


@pytest.mark.parametrize("tail", ['{"step": 50, "train_lo', '{"step": 50, "note": "caf\xc3', "7"])
def test_read_metrics_skips_a_truncated_last_line(tmp_path, tail):
    path = tmp_path / "metrics.jsonl"
    write_jsonl(path, ROWS)
    with path.open("ab") as f:
        f.write(tail.encode("latin-1"))  # raw bytes: the cut may fall inside a UTF-8 character
    assert read_metrics(path) == ROWS


def test_read_metrics_warns_about_a_damaged_line_inside(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + '{"step": 1{"step": 2}\n' + json.dumps(ROWS[1]) + "\n")
    with pytest.warns(UserWarning, match="line 2: skipped, not a JSON object"):
        assert read_metrics(path) == ROWS[:2]


def test_read_metrics_names_a_missing_file(tmp_path):
    with pytest.raises(UserError, match=r"metrics\.jsonl: no such file"):
        read_metrics(tmp_path / "metrics.jsonl")


def test_plot_is_a_png_of_the_stated_size(tmp_path):
    path = plot_loss_curve(ROWS, tmp_path / "plots" / "loss.png", title="run 1")
    assert path == tmp_path / "plots" / "loss.png"
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(path) as image:
        assert image.size == PLOT_PIXELS
    assert [p.name for p in path.parent.iterdir()] == ["loss.png"]  # no temporary file left behind


def test_plot_survives_no_rows_and_non_finite_losses(tmp_path):
    plot_loss_curve([], tmp_path / "empty.png")
    plot_loss_curve(
        [{"step": 1, "train_loss": float("nan")}, {"step": 2, "train_loss": float("inf")}], tmp_path / "x.png"
    )
    assert (tmp_path / "empty.png").read_bytes().startswith(PNG_SIGNATURE)
    assert (tmp_path / "x.png").read_bytes().startswith(PNG_SIGNATURE)


def test_plot_replaces_an_existing_file(tmp_path):
    path = tmp_path / "loss.png"
    path.write_bytes(b"old")
    plot_loss_curve(ROWS, path)
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def card(**changes) -> str:
    config = TrainConfig(data_json="robot.json", model_name="smollm2-135m", output_dir="out/run1", **changes).to_dict()
    extra = {"workers": 2, "zero_stage": 3, "offload": "none", "global_batch": 8}
    return model_card(config, ROWS, diagnose(ROWS, config), extra)


def test_model_card_front_matter():
    text = card()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front == {
        "library_name": "peft",
        "base_model": "smollm2-135m",
        "pipeline_tag": "text-generation",
        "tags": ["lora", "robotics", "robolora"],
    }


def test_model_card_holds_the_key_numbers():
    text = card(
        lora_r=16,
        lora_alpha=32,
        learning_rate=5e-4,
        lr_scheduler_type="cosine",
        lora_target_modules="q_proj,k_proj,v_proj,o_proj",
    )
    for expected in [
        "r=16, alpha=32, dropout=0.05",
        "`q_proj,k_proj,v_proj,o_proj`",
        "`robot.json`, 10% of each category held out",
        "| batch | 4 per worker x 1 accumulation steps = 8 per optimizer step |",
        "| learning rate | 0.0005, cosine schedule, 10% warmup |",
        "| DeepSpeed ZeRO stage | 3 |",
        "| workers | 2 |",
        "| optimizer steps | 40 |",
        "| final train loss | 0.32 |",
        "| final eval loss | 0.47 |",
        "| best eval loss | 0.45 at step 30 |",
        "| tokens/s (mean) | 265.0 |",
        "| peak memory | 2300 MB |",
        "| wall time | 1h 02m 10s |",
        "## Diagnosis: good",
        'model = PeftModel.from_pretrained(base, "out/run1")',
        "robolora demo --lora-path out/run1",
    ]:
        assert expected in text, expected


def test_model_card_of_a_split_dataset_without_metrics():
    config = TrainConfig(train_json="t.jsonl", val_json="v.jsonl").to_dict()
    text = model_card(config, [], diagnose([], config))
    assert "- training: `t.jsonl`\n- validation: `v.jsonl`" in text
    assert "| workers | planned |" in text and "| wall time | n/a |" in text and "| best eval loss | n/a |" in text
    assert "## Diagnosis: too short" in text and "Remedies:" in text


def test_model_card_prefers_the_drivers_wall_time():
    config = TrainConfig(data_json="robot.json").to_dict()
    text = model_card(config, ROWS, diagnose(ROWS, config), {"wall_time_s": 90.4})
    assert "| wall time | 1m 30s |" in text and "| workers | planned |" in text
