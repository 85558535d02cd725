"""A GPT-2-class model (Conv1D layers, c_attn/c_proj/c_fc names) trains with no target flag, from a
relative local path, on the real stack; the fused LoRA branch and the loss wrapper keep PEFT's results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from tests.integration.conftest import TINY, cli_flags, series

TINY_GPT2 = {"n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 256}


def build_tiny_gpt2(dest: Path) -> Path:
    """A seeded random 2-layer GPT-2 with the bundled tokenizer, saved as a local model folder."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from robolora.models import _bundled_tokenizer

    tokenizer = _bundled_tokenizer()
    config = GPT2Config(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **TINY_GPT2
    )
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory) -> Path:
    return build_tiny_gpt2(tmp_path_factory.mktemp("models") / "my-gpt2")


def test_gpt2_trains_from_a_relative_path_with_its_default_targets(
    ray_session, small_dataset, gpt2_folder, tmp_path, monkeypatch, run_cli
):
    work = tmp_path / "work"
    work.mkdir()
    (work / "my-gpt2").symlink_to(gpt2_folder, target_is_directory=True)
    (work / "robot.json").write_text(small_dataset.read_text())
    monkeypatch.chdir(work)  # every path below is relative to here, not to a Ray worker's folder
    values = {k: v for k, v in TINY.items() if k not in ("model_name", "lora_target_modules")}
    values.update(max_steps=2, eval_steps=2, save_steps=2)
    code, out, err = run_cli(
        "train", "--model-name", "./my-gpt2", "--data-json", "robot.json", "--output-dir", "out", *cli_flags(values)
    )
    assert code == 0, err[-2000:]
    assert "[ok] LoRA targets: c_attn (from auto): 2 modules of the model" in out
    memory = next(line for line in out.splitlines() if "[ok] memory:" in line)
    assert "GiB needed" in memory, memory  # sized, not "not estimated"

    run = work / "out"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["lora_target_modules"] == "c_attn"
    for key, name in (("model_name", "my-gpt2"), ("data_json", "robot.json"), ("output_dir", "out")):
        assert saved[key] == str(work / name), key
    adapter = json.loads((run / "adapter_config.json").read_text())
    assert adapter["target_modules"] == ["c_attn"] and adapter["fan_in_fan_out"] is True
    losses = list(series(run, "train_loss").values()) + list(series(run, "eval_loss").values())
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses), losses


def test_fused_lora_and_loss_wrapper_keep_peft_results_on_gpt2(gpt2_folder):
    from peft import LoraConfig, get_peft_model

    from robolora.engine import conv1d_targets
    from robolora.kernels import use_fused_lora
    from robolora.loss import TargetLogitsLM, with_targets
    from robolora.models import load_model

    def build():
        torch.manual_seed(1)
        model = load_model(str(gpt2_folder), attention="eager")
        config = LoraConfig(
            r=4, target_modules=["c_attn", "c_fc"], fan_in_fan_out=conv1d_targets(model, ["c_attn", "c_fc"])
        )
        model = get_peft_model(model, config)
        for name, p in model.named_parameters():  # LoRA B starts at zero: make the branch count
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.1)
        return model

    plain, fused = build(), build()
    assert use_fused_lora(fused) == 4  # each checks at every call whether it may fuse: not on Conv1D
    ids = torch.randint(0, 100, (2, 12))
    labels = ids.clone()
    labels[:, :6] = -100
    plain.eval()  # GPT-2's own dropouts off: the two models must see the same computation
    fused.eval()
    want = plain(input_ids=ids, labels=labels, use_cache=False).loss
    batch = with_targets({"input_ids": ids, "labels": labels})
    wrapper = TargetLogitsLM(fused)
    assert wrapper._parts is not None  # the decoder (transformer) and the head, not the plain forward
    got = wrapper(**batch, num_items_in_batch=int((labels[:, 1:] != -100).sum())).loss
    torch.testing.assert_close(got, want)
    want.backward()
    got.backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), fused.named_parameters(), strict=True):
        if a.requires_grad:
            torch.testing.assert_close(b.grad, a.grad, msg=name)
