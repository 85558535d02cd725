"""robolora push: exactly what a push sends (the commit's operations), the card and adapter config made ready for
the Hub, and the errors it stops on before any request."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import CommitOperationAdd
from safetensors.torch import save_file

from robolora.config import TrainConfig
from robolora.diagnose import diagnose
from robolora.push import commit_operations, upload_plan
from robolora.report import model_card

REPO = "my-org/robot-lora"
#: What a finished run leaves in its output directory besides what a push sends.
KEPT_HERE = {
    "config.yaml": "model_name: smollm2-135m\n",
    "metrics.jsonl": '{"step": 1, "train_loss": 1.0}\n',
    "train_summary.json": "{}",
    "val.jsonl": "",
    "robolora_run.json": "{}",
    "loss_curve.png": "png",
    "eval_predictions.jsonl": "",
    "trackers.json": "{}",
    "tracker_runs.json": "{}",
    "tensorboard/events.out.tfevents.1.host": "events",
    "wandb/offline-run-1/run-1.wandb": "wandb",
    "mlruns/1/meta.yaml": "mlflow",
    ".ray/train/state.json": "ray",
    "checkpoint-3/deepspeed/mp_rank_00_model_states.pt": "states",
    "checkpoint-3/deepspeed/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt": "optimizer",
    "checkpoint-3/trainer_state.json": "{}",
}
TOKENIZER = {"tokenizer.json": "{}", "tokenizer_config.json": "{}", "chat_template.jinja": "{{ messages }}"}


def _adapter(folder: Path, base: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    config = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "base_model_name_or_path": base}
    (folder / "adapter_config.json").write_text(json.dumps({**config, "target_modules": ["q_proj", "v_proj"]}))
    save_file({"base_model.model.q_proj.lora_A.weight": torch.ones(8, 16)}, str(folder / "adapter_model.safetensors"))


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A finished run of the bundled model, as robolora leaves it: adapter, tokenizer, card, scores and the rest."""
    out = tmp_path / "models" / "run"
    _adapter(out, base=str(tmp_path / "cache" / "models" / "smollm2-135m"))
    _adapter(out / "checkpoint-3", base=str(tmp_path / "cache" / "models" / "smollm2-135m"))
    for name, text in {**KEPT_HERE, **TOKENIZER}.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    rows = [{"step": 1, "train_loss": 1.0}, {"step": 2, "train_loss": 0.4}, {"step": 2, "eval_loss": 0.5}]
    config = TrainConfig(model_name="smollm2-135m", output_dir=str(out), data_json="/data/robot.json").to_dict()
    (out / "README.md").write_text(model_card(config, rows, diagnose(rows, config)))
    (out / "eval.json").write_text(json.dumps({"overall": {"run": {"exact": 0.5}}}))
    return out


def test_a_push_sends_the_adapter_tokenizer_card_and_scores_only(run_dir):
    plan = upload_plan(run_dir, REPO)
    assert [u.path_in_repo for u in plan] == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "eval.json",
        "README.md",
    ]
    ops = commit_operations(plan)
    assert all(isinstance(op, CommitOperationAdd) for op in ops)
    sent = {op.path_in_repo: op.upload_info.sha256.hex() for op in ops}
    for name in ("adapter_model.safetensors", "tokenizer.json", "eval.json"):  # sent byte for byte
        assert sent[name] == hashlib.sha256((run_dir / name).read_bytes()).hexdigest(), name
    assert not any(name.startswith(tuple(KEPT_HERE)) or "/" in name for name in sent)


def test_the_card_names_the_hub_base_model_and_loads_from_the_repository(run_dir):
    card = next(u for u in upload_plan(run_dir, REPO) if u.path_in_repo == "README.md").content.decode()
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"  # the bundled alias's hub model
    assert front["library_name"] == "peft" and "robolora" in front["tags"]
    assert f'PeftModel.from_pretrained(base, "{REPO}")' in card
    assert f'robolora demo --lora-path "$(hf download {REPO})"' in card
    assert str(run_dir) not in card
    # The rest of the run's card is as the run wrote it.
    original = (run_dir / "README.md").read_text()
    assert card.split("---", 2)[2].split("## Usage")[0] == original.split("---", 2)[2].split("## Usage")[0]


def test_the_adapter_config_names_the_hub_base_model(run_dir):
    plan = upload_plan(run_dir, REPO)
    config = json.loads(plan[0].content)
    original = json.loads((run_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert {k: v for k, v in config.items() if k != "base_model_name_or_path"} == {
        k: v for k, v in original.items() if k != "base_model_name_or_path"
    }


def test_a_model_only_this_machine_has_is_named_in_no_front_matter(tmp_path):
    out = tmp_path / "run"
    _adapter(out, base="/home/me/models/my-llama")
    config = TrainConfig(model_name="/home/me/models/my-llama", output_dir=str(out)).to_dict()
    rows = [{"step": 1, "train_loss": 1.0}]
    (out / "README.md").write_text(model_card(config, rows, diagnose(rows, config)))
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    plan = upload_plan(out, REPO)
    front = yaml.safe_load(plan[-1].content.decode().split("---")[1])
    assert "base_model" not in front  # the Hub refuses a base_model that names no hub model
    assert plan[0].source == out / "adapter_config.json"  # no hub name to put in: sent as it is


def test_a_checkpoint_sends_its_adapter_and_a_short_card(run_dir):
    plan = upload_plan(run_dir / "checkpoint-3", REPO)
    assert [u.path_in_repo for u in plan] == ["adapter_config.json", "adapter_model.safetensors", "README.md"]
    card = plan[-1].content.decode()
    assert yaml.safe_load(card.split("---")[1])["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "r=8, alpha=16, dropout=0.05" in card and "`q_proj,v_proj`" in card
    assert f'PeftModel.from_pretrained(load_model("smollm2-135m"), "{REPO}")' in card


@pytest.mark.parametrize("repo_id", ["robot-lora", "a/b/c", "org/", "/name", "org/bad name", "org/x..y", "org/-x"])
def test_a_bad_repo_id_is_one_error_before_any_request(run_dir, run_cli, repo_id):
    code, out, err = run_cli("push", "--lora-path", run_dir, "--repo-id", repo_id, "--token", "hf_unused")
    assert code == 2 and out == ""
    assert err.startswith(f"robolora: error: --repo-id {repo_id}: not a repository ID; write ORG/NAME")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("what", ["missing", "empty", "no-weights"])
def test_a_folder_without_an_adapter_is_one_error(tmp_path, run_dir, run_cli, what):
    folder = {"missing": tmp_path / "nothing", "empty": tmp_path, "no-weights": run_dir}[what]
    if what == "no-weights":
        (folder / "adapter_model.safetensors").unlink()
    code, _, err = run_cli("push", "--lora-path", folder, "--repo-id", REPO, "--token", "hf_unused")
    assert code == 2
    assert err.startswith(f"robolora: error: --lora-path: {folder} holds no adapter")
    assert "Traceback" not in err
