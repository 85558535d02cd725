"""Generation, evaluation, the demo and export with a trained tiny adapter (real PEFT, real tokenizer)."""

from __future__ import annotations

import json

import pytest
import torch

from robolora.cli import main


@pytest.fixture(scope="module")
def adapter(tiny_reference):
    """A barely trained tiny adapter: the shared tiny run's (8 steps)."""
    return tiny_reference


def test_run_keeps_its_validation_split(adapter, small_dataset):
    from robolora.data import load_records, split_records

    _, val = split_records(load_records(small_dataset), 0.1, seed=42)
    assert [json.loads(x) for x in (adapter / "val.jsonl").read_text().splitlines()] == val


def test_demo_one_shot(adapter, capsys):
    assert (
        main(["demo", "--lora-path", str(adapter), "--command", "move forward 3 meters", "--max-new-tokens", "12"]) == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[1].startswith("# ")  # the code (or "(no code)"), then its verdict


def test_loading_an_adapter_shows_no_checkpointing_deprecation_warning(adapter):
    import warnings

    from robolora.infer import Generator

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Generator.load(adapter, merge=False)
    assert not [str(w.message) for w in caught if "checkpointing" in str(w.message)]


def test_constrained_decoding_keeps_even_a_random_model_in_the_grammar(adapter):
    from robolora.infer import Generator
    from robolora.robot.checker import check
    from robolora.robot.grammar import is_valid_prefix

    gen = Generator.load(adapter)
    commands = ["stop", "go home", "move forward 3 meters", "say hello", "turn left", "take a photo"]
    free = gen.generate(commands, max_new_tokens=30, constrained=False)
    constrained = gen.generate(commands, max_new_tokens=30, constrained=True)
    assert not all(is_valid_prefix(g.raw) for g in free)  # the barely trained model writes anything
    cut_short = gen.generate(commands, max_new_tokens=4, constrained=True)  # no statement can finish in 4 tokens
    assert not any(g.finished for g in cut_short)
    for g in constrained + cut_short:
        assert is_valid_prefix(g.raw), g.raw
        # valid by construction: the program it ended, the whole lines it wrote before the budget ran
        # out, or its unfinished first statement completed by the grammar
        assert check(g.code).api_valid, (g.raw, g.code)
    assert all(g.code.startswith(g.raw) for g in cut_short)


def test_eval_writes_table_json_and_predictions(adapter, tmp_path, capsys):
    preds, scores = tmp_path / "preds.jsonl", tmp_path / "scores.json"
    args = [
        "eval",
        "--lora-path",
        str(adapter),
        "--limit",
        "6",
        "--max-new-tokens",
        "24",
        "--predictions-out",
        str(preds),
        "--json-out",
        str(scores),
        "--constrained",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "category" in out and "overall" in out and "api-valid" in out
    rows = [json.loads(x) for x in preds.read_text().splitlines()]
    assert len(rows) == 6 and {"input", "prediction", "reference"} <= rows[0].keys()
    overall = next(iter(json.loads(scores.read_text())["overall"].values()))
    assert overall["n"] == 6 and set(overall) >= {"syntax_rate", "api_valid_rate", "exact_rate", "semantic_rate"}


def test_ensemble_of_identical_members_scores_as_each_member(adapter, tmp_path, capsys):
    scores = tmp_path / "scores.json"
    lora = ["--lora-path", str(adapter)] * 3
    args = ["eval", *lora, "--ensemble", "--limit", "6", "--max-new-tokens", "24", "--json-out", str(scores)]
    assert main(args) == 0
    assert "ensemble of 3 (vote)" in capsys.readouterr().out
    overall = json.loads(scores.read_text())["overall"]
    name = adapter.name  # each member is named by its folder
    assert list(overall) == [name, f"{name} #2", f"{name} #3", "ensemble of 3 (vote)"]
    member, *others = overall.values()
    assert all(o == member for o in others)  # a unanimous vote is each member's answer
    assert main(["eval", "--lora-path", str(adapter), "--ensemble"]) == 2


def test_demo_votes_with_several_adapters(adapter, capsys):
    args = ["demo", "--lora-path", str(adapter), "--lora-path", str(adapter), "--command", "stop"]
    assert main([*args, "--max-new-tokens", "12", "--constrained"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "# the vote of 2 adapters (2 wrote this program)" and out[-1].startswith("# ")


def test_export_merges_into_a_plain_model(adapter, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from robolora.models import load_model

    out = tmp_path / "merged"
    assert main(["export", "--lora-path", str(adapter), "--output", str(out)]) == 0
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out)
    peft = PeftModel.from_pretrained(load_model("tiny-llama"), str(adapter))
    ids = torch.tensor([[1, 520, 2041, 288, 3702]])
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, peft(input_ids=ids).logits, rtol=1e-4, atol=1e-4)
    assert main(["export", "--lora-path", str(adapter), "--output", str(out)]) == 2  # never overwritten


def test_eval_loads_a_big_model_quantized_and_within_memory_caps(adapter, tmp_path, capsys):
    """--quantization 4bit (bitsandbytes' NF4, its CPU backend here) with the adapter beside the quantized
    weights (never merged into them), and --max-memory caps through accelerate's device map; caps that cannot
    hold the weights, or name a GPU that is not there, are one line before anything loads."""
    from robolora.infer import Generator

    scores = tmp_path / "scores.json"
    args = ["eval", "--lora-path", str(adapter), "--limit", "4", "--max-new-tokens", "16", "--json-out", str(scores)]
    assert main([*args, "--quantization", "4bit", "--max-memory", "cpu:2GiB"]) == 0
    overall = next(iter(json.loads(scores.read_text())["overall"].values()))
    assert overall["n"] == 4 and overall["api_valid_rate"] == 1.0  # constrained decoding, as always
    gen = Generator.load(adapter, quantization="4bit")
    assert type(gen.model.base_model.model.model.layers[0].self_attn.q_proj.base_layer).__name__ == "Linear4bit"
    capsys.readouterr()
    assert main([*args, "--max-memory", "cpu:1MiB"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("robolora: error: --max-memory: the weights need about ") and "GiB in all;" in err
    assert main([*args, "--max-memory", "0:20GiB"]) == 2
    assert "--max-memory: GPU 0 is not visible (no GPU); name a visible GPU or cpu" in capsys.readouterr().err


def test_beam_repair_keeps_what_fits_its_command_and_replaces_only_with_a_beam_that_does(adapter):
    from robolora.infer import Generator
    from robolora.robot.checker import check
    from robolora.robot.coverage import mismatch

    gen = Generator.load(adapter)
    commands = ["take 3 photos", "stop", 'say "hello there"', "wait 7 seconds", "go home", "turn left 30 degrees"]
    greedy = gen.generate(commands, max_new_tokens=24, repair_beams=0)
    repaired = gen.generate(commands, max_new_tokens=24, repair_beams=3)
    beams = gen._generate_batch(commands, 24, "llguidance", 0.0, beams=3)
    assert [len(b) for b in beams] == [3] * len(commands)  # each command's own beams, in the commands' order
    assert all(check(g.code).api_valid for b in beams for g in b if g.finished)
    for command, before, after, candidates in zip(commands, greedy, repaired, beams, strict=True):
        if not mismatch(command, before.code) or after.code == before.code:
            assert after.code == before.code
        else:  # replaced: by one of this command's beams, which fits the command
            assert not mismatch(command, after.code)
            assert after.code in [g.code for g in candidates]
