"""`robolora export` output on its own: plain transformers, the user's words, the training prompt and code."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import stat
from pathlib import Path

import pytest
import torch
import yaml

from robolora.cli import main

#: What each export printed, by its output folder.
PRINTED: dict[Path, str] = {}
#: Commands as the model sees them: already normalized.
WORDS = ("move forward 3 m", "pick up the red ball", "turn left 90 degrees, 2 times", 'say "hello"', "stop")


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _train(folder: Path, dataset: Path, **overrides) -> Path:
    from robolora.config import from_dict
    from robolora.launcher import run_training
    from tests.integration.conftest import TINY

    values = {
        **TINY,
        "data_json": str(dataset),
        "output_dir": str(folder),
        "max_steps": 2,
        "num_workers": 1,
        **overrides,
    }
    run_training(from_dict(values))
    return folder


@pytest.fixture(scope="module")
def run(tiny_reference) -> Path:
    """The shared tiny-llama run (a chat template), with its scores added in eval.json."""
    out = tiny_reference
    args = [
        "eval",
        "--lora-path",
        str(out),
        "--limit",
        "4",
        "--max-new-tokens",
        "8",
        "--json-out",
        str(out / "eval.json"),
    ]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "merged"
    return _export(run, out, 0o022)


def _export(run: Path, out: Path, mask: int) -> Path:
    """``robolora export`` of ``run`` to ``out`` under ``mask``; what it printed goes to :data:`PRINTED`."""
    printed = io.StringIO()
    with umask(mask), contextlib.redirect_stdout(printed):
        assert main(["export", "--lora-path", str(run), "--output", str(out)]) == 0
    PRINTED[out] = printed.getvalue()
    return out


@pytest.fixture(scope="module")
def plain_base(tmp_path_factory) -> Path:
    """tiny-llama without a chat template: prompts are the plain template."""
    from robolora.models import resolve_model

    folder = tmp_path_factory.mktemp("plain") / "tiny-llama-plain"
    shutil.copytree(resolve_model("tiny-llama"), folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def plain_run(ray_session, small_dataset, plain_base) -> tuple[Path, Path]:
    """A run on the template-less model and its export, made under umask 027."""
    run = _train(plain_base.parent / "run", small_dataset, model_name=str(plain_base))
    return run, _export(run, plain_base.parent / "merged", 0o027)


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    """tiny-llama stored in bf16, a random adapter for it (B not zero, as after training) and its export."""
    from peft import LoraConfig, get_peft_model

    from robolora.models import load_model, resolve_model
    from tests.integration.conftest import TINY

    root = tmp_path_factory.mktemp("bf16")
    base = root / "tiny-llama-bf16"
    shutil.copytree(resolve_model("tiny-llama"), base)
    model = load_model("tiny-llama").to(torch.bfloat16)
    model.save_pretrained(base)
    targets = TINY["lora_target_modules"].split(",")
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn_like(param) * 0.02)
    run = root / "run"
    peft.save_pretrained(run)
    (run / "config.yaml").write_text(yaml.safe_dump({"model_name": str(base), "lora_r": 8, "lora_alpha": 16}))
    return base, run, _export(run, root / "merged", 0o022)


def _user_prompt(tokenizer, words: str) -> str:
    messages = [{"role": "user", "content": words}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def _plain_greedy(model, tokenizer, words: str, max_new_tokens: int) -> str:
    """Greedy generation as a plain transformers user writes it, cut at EOS as the Generator cuts."""
    inputs = tokenizer(_user_prompt(tokenizer, words), add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new = output[0, inputs["input_ids"].shape[1] :].tolist()
    new = new[: new.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in new else new
    return tokenizer.decode(new, skip_special_tokens=False)


def _assert_stands_alone(run: Path, exported: Path, base: str) -> None:
    """From the words alone, the export's own files give the project's prompt (text and ids) and the
    project's generation for the same adapter."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from robolora.infer import Generator
    from robolora.models import load_tokenizer
    from robolora.prompts import render_prompt
    from robolora.robot.normalize import normalize_command

    tokenizer = AutoTokenizer.from_pretrained(exported)
    model = AutoModelForCausalLM.from_pretrained(exported)
    project = Generator.load(run, dtype=torch.float32)
    base_tokenizer = load_tokenizer(base)
    for words in WORDS:
        assert normalize_command(words) == words
        text = _user_prompt(tokenizer, words)
        assert text == render_prompt(base_tokenizer, words)[0], words
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == project.prompt_ids(words), words
        expected = project.generate([words], max_new_tokens=24, constrained=False)[0].raw  # one at a time: no padding
        assert _plain_greedy(model, tokenizer, words, max_new_tokens=24) == expected, words


def test_the_export_makes_the_training_prompt_and_code_from_the_words_alone(run, exported):
    _assert_stands_alone(run, exported, "tiny-llama")


def test_a_model_without_a_chat_template_gets_one_that_renders_the_plain_prompt(plain_run, plain_base):
    from robolora.prompts import PLAIN_TEMPLATE

    run, exported = plain_run
    assert not (run / "chat_template.jinja").exists()  # the run prompted with the plain template
    assert (exported / "chat_template.jinja").is_file()
    _assert_stands_alone(run, exported, str(plain_base))
    from transformers import AutoTokenizer

    text = _user_prompt(AutoTokenizer.from_pretrained(exported), "stop")
    assert text == PLAIN_TEMPLATE.format(system="Write robot API code.", command="stop")


def test_the_export_has_the_permissions_the_umask_gives(exported, plain_run):
    for folder, dirs, files in ((exported, 0o755, 0o644), (plain_run[1], 0o750, 0o640)):
        assert stat.S_IMODE(folder.stat().st_mode) == dirs
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*")}
        assert "model.safetensors" in modes and "README.md" in modes
        assert modes == dict.fromkeys(modes, files), modes


def test_the_model_card_describes_the_run_and_its_usage_runs(run, exported):
    from robolora.export import NORMALIZE_EXAMPLE
    from robolora.robot.normalize import normalize_command

    card = (exported / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["base_model"] == "tiny-llama" and front["library_name"] == "transformers"
    assert front["lora"] == {
        "r": 8,
        "alpha": 16,
        "dropout": 0.0,
        "target_modules": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
    }
    overall = next(iter(json.loads((run / "eval.json").read_text())["overall"].values()))
    assert front["eval"] == {
        "syntax": overall["syntax_rate"],
        "api-valid": overall["api_valid_rate"],
        "exact": overall["exact_rate"],
        "semantic": overall["semantic_rate"],
    }
    assert "normalize_command" in card and normalize_command(NORMALIZE_EXAMPLE) in card
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    assert "robolora" not in snippet and "system" not in snippet.replace("no system turn", "")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(snippet, {})  # the card's usage, as a user would paste it
    assert printed.getvalue().endswith("\n")


def _assert_peft_merge(base: str, run: Path, exported: Path, dtype: torch.dtype) -> None:
    """The export's weights are PEFT's ``merge_and_unload`` of ``run`` on ``base`` loaded in ``dtype`` (the same
    float32 arithmetic; bf16: at most one rounding step apart), every adapted weight changed."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from robolora.models import adapter_dir, load_model, resolve_model

    reference = PeftModel.from_pretrained(load_model(base, dtype=dtype), str(adapter_dir(run)))
    expected = reference.merge_and_unload().state_dict()
    ours = load_file(exported / "model.safetensors")
    original = load_file(Path(resolve_model(base)) / "model.safetensors")
    assert ours.keys() == original.keys() and ours.keys() <= expected.keys()
    tolerance = {"rtol": 1e-6, "atol": 1e-7} if dtype == torch.float32 else {"rtol": 2**-7, "atol": 1e-6}
    for name, tensor in ours.items():
        assert tensor.dtype == dtype, name
        torch.testing.assert_close(tensor.float(), expected[name].float(), **tolerance, msg=name)
    changed = [n for n in ours if not torch.equal(ours[n], original[n])]
    assert len(changed) == 2 * 7, changed  # 7 target modules in each of tiny-llama's 2 layers


def test_the_exported_weights_are_peft_merge_and_unload(run, exported):
    _assert_peft_merge("tiny-llama", run, exported, torch.float32)
    line = PRINTED[exported].strip().splitlines()[-1]
    assert re.search(r"\(14 weights in 1 shard, peak host memory of the merge \+\d+ MiB\)", line), line


def test_a_bf16_base_is_merged_and_checked_in_bf16(bf16_run):
    """The export checked the bf16 merged model against base + adapter in bf16, token for token."""
    base, run, exported = bf16_run
    _assert_peft_merge(str(base), run, exported, torch.bfloat16)
    assert json.loads((exported / "config.json").read_text()) == json.loads((base / "config.json").read_text())
    assert re.search(r"predicts base \+ adapter's next token at all \d+ positions", PRINTED[exported])


def test_a_merge_that_changes_the_model_is_refused(run):
    """The check the export runs: base + adapter agrees with itself, and a model whose weights changed (as a
    wrong merge would change them) is refused with one clear error."""
    from robolora.export import PROBES, ExportCheckFailed, _agreement, _reference, near_tie
    from robolora.infer import Generator
    from robolora.models import adapter_dir

    generator = Generator.load(adapter_dir(run), merge=False, dtype=torch.float32)
    references = _reference(generator, [generator.prompt_ids(p) for p in PROBES])
    assert all(len(r.predicted) == len(r.tokens) - r.start > 0 for r in references)
    assert _agreement(generator.model, references, near_tie(torch.float32)).startswith("at all ")
    torch.manual_seed(0)
    with torch.no_grad():
        for weight in generator.model.parameters():
            weight.add_(torch.randn_like(weight))
    with pytest.raises(ExportCheckFailed, match=r"the merge changed the model, so nothing was written to --output"):
        _agreement(generator.model, references, near_tie(torch.float32))
