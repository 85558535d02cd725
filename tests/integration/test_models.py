"""The model registry: the bundled GGUF converted once to a plain, trainable model; tiny test model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from robolora.errors import ModelNotFoundError
from robolora.models import cache_dir, load_model, load_tokenizer, resolve_model


def test_bundled_model_is_plain_safetensors_and_trainable():
    path = resolve_model("smollm2-135m")
    assert path == str(cache_dir() / "models" / "smollm2-135m")
    config = json.loads((cache_dir() / "models" / "smollm2-135m" / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert (cache_dir() / "models" / "smollm2-135m" / "model.safetensors").is_file()
    model = load_model("smollm2-135m")
    assert getattr(model, "hf_quantizer", None) is None
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    names = {n.split(".")[-1] for n, _ in model.named_modules()}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= names
    tok = load_tokenizer("smollm2-135m")
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    # It is a real language model: the next token after a common prefix is predictable.
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        nxt = model(**ids).logits[0, -1].argmax().item()
    assert tok.decode([nxt]).strip() == "Paris"


def test_second_resolve_uses_cache(monkeypatch):
    resolve_model("smollm2-135m")
    import robolora.models as m

    monkeypatch.setitem(m.ALIASES, "smollm2-135m", m.Alias("x", lambda dest: pytest.fail("rebuilt")))
    assert resolve_model("smollm2-135m").endswith("smollm2-135m")


def test_tiny_llama_is_seeded_and_small():
    a = load_model("tiny-llama")
    assert sum(p.numel() for p in a.parameters()) < 5_000_000
    assert a.config.num_hidden_layers == 2


def test_missing_local_model_names_aliases(tmp_path):
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model(str(tmp_path / "nothing"))
    assert str(e.value) == (
        f"--model-name: model '{tmp_path / 'nothing'}' not found: {tmp_path / 'nothing'} does not exist; "
        "use an alias (smollm2-135m, tiny-llama), a local model directory, or a hub name such as "
        "codellama/CodeLlama-7b-Python-hf on a machine with network access"
    )


def test_directory_without_config_is_refused(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"exists but holds no config\.json"):
        resolve_model(str(tmp_path))


def test_hub_names_pass_through():
    assert resolve_model("codellama/CodeLlama-7b-Python-hf") == "codellama/CodeLlama-7b-Python-hf"


def test_target_logits_loss_matches_the_plain_forward():
    """The head-only-at-targets loss equals transformers' own loss, and so do the LoRA gradients."""
    from peft import LoraConfig, get_peft_model

    from robolora.data import IGNORE_INDEX
    from robolora.loss import TargetLogitsLM, with_targets

    torch.manual_seed(0)
    model = get_peft_model(
        load_model("tiny-llama"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    ids = torch.randint(5, 200, (3, 12))
    labels = ids.clone()
    labels[:, :7] = IGNORE_INDEX
    labels[2, :] = IGNORE_INDEX  # a row without targets adds nothing
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    lora = [p for p in model.parameters() if p.requires_grad]

    def loss_and_grads(fn):
        model.zero_grad()
        loss = fn()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in lora]

    n = int((labels[:, 1:] != IGNORE_INDEX).sum())
    plain = loss_and_grads(lambda: model(input_ids=ids, attention_mask=mask, labels=labels, num_items_in_batch=n).loss)
    wrapped = TargetLogitsLM(model)
    assert wrapped._parts is not None  # the fast path, not the fallback
    found = with_targets({"labels": labels})
    assert len(found["target_ids"]) == n
    for ours in (
        loss_and_grads(lambda: wrapped(ids, mask, labels, num_items_in_batch=n).loss),
        # the targets located on the host, as the training loop passes them
        loss_and_grads(
            lambda: (
                wrapped(ids, mask, labels, n, target_index=found["target_index"], target_ids=found["target_ids"]).loss
            )
        ),
    ):
        torch.testing.assert_close(ours[0], plain[0])
        for a, b in zip(ours[1], plain[1], strict=True):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("fast", [True, False])
def test_structure_weight_counts_the_emphasised_targets_that_many_times(fast):
    """With an emphasis, the loss is each target's cross-entropy times its weight, summed and divided, on the
    head-only path and on the plain forward's fallback alike; weight 1 gives the plain loss."""
    from robolora.data import IGNORE_INDEX
    from robolora.loss import Emphasis, TargetLogitsLM, with_targets

    torch.manual_seed(0)
    model = load_model("tiny-llama")
    ids = torch.randint(5, 200, (2, 10))
    ids[0, 8] = ids[1, 6] = 3  # the emphasised token, twice among the targets
    labels = ids.clone()
    labels[:, :5] = IGNORE_INDEX
    wrapped = TargetLogitsLM(model)
    if not fast:
        wrapped._parts = None
    logits = model(input_ids=ids).logits[:, :-1].reshape(-1, model.config.vocab_size)
    each = torch.nn.functional.cross_entropy(logits, labels[:, 1:].reshape(-1), reduction="none")
    weights = torch.where(labels[:, 1:].reshape(-1) == 3, 5.0, 1.0)
    found = with_targets({"labels": labels}, Emphasis(frozenset({3}), 5.0))
    assert sorted(found["target_weights"].tolist()) == [1.0] * (len(found["target_ids"]) - 2) + [5.0, 5.0]
    loss = wrapped(ids, None, labels, 7.0, found["target_index"], found["target_ids"], None, found["target_weights"])
    torch.testing.assert_close(loss.loss, (each * weights).sum() / 7.0, rtol=1e-4, atol=1e-5)
    plain = with_targets({"labels": labels}, Emphasis(frozenset({3}), 1.0))
    loss = wrapped(ids, None, labels, 7.0, plain["target_index"], plain["target_ids"], None, plain["target_weights"])
    torch.testing.assert_close(loss.loss, each.sum() / 7.0, rtol=1e-4, atol=1e-5)


def test_the_structure_of_a_program_is_its_line_breaks_and_its_end():
    """In the bundled tokenizer, every token holding a line break (with or without the indent after it) and
    the end of the turn are emphasised, the code's other tokens are not."""
    from robolora.loss import Emphasis

    tok = load_tokenizer("smollm2-135m")
    assert Emphasis.structure(tok, 1.0) is None
    emphasis = Emphasis.structure(tok, 4.0)
    code = 'for _ in range(2):\n    robot.stop()\nrobot.say(text="hi")<|im_end|>'
    pieces = [(tok.decode([i]), i in emphasis.ids) for i in tok(code)["input_ids"]]
    assert {text for text, hit in pieces if hit} == {"\n   ", "\n", "<|im_end|>"}, pieces
    assert emphasis.count([-100, *tok(code)["input_ids"]]) == len(pieces) + 3 * 3


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_right_padded_batches_train_the_same_without_their_padding_mask(attention):
    """The loop drops the mask of right-padded batches: a causal model's loss and LoRA gradients on
    the real tokens are those it computes with the mask."""
    from peft import LoraConfig, get_peft_model

    from robolora.data import IGNORE_INDEX, collate
    from robolora.loss import TargetLogitsLM, _to_tensors, with_targets, without_padding_mask

    torch.manual_seed(0)
    model = get_peft_model(
        load_model("tiny-llama", attention=attention),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    rows = []
    for length in (12, 9, 5):
        ids = torch.randint(5, 200, (length,)).tolist()
        rows.append({"input_ids": ids, "labels": [IGNORE_INDEX] * 3 + ids[3:]})
    full = with_targets(_to_tensors(collate(rows, pad_id=0), torch.device("cpu")))
    lean = without_padding_mask(full)
    assert "attention_mask" in full and "attention_mask" not in lean
    wrapped, lora = TargetLogitsLM(model), [p for p in model.parameters() if p.requires_grad]

    def loss_and_grads(batch):
        model.zero_grad()
        loss = wrapped(**batch, num_items_in_batch=len(batch["target_ids"])).loss
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in lora]

    want, got = loss_and_grads(full), loss_and_grads(lean)
    torch.testing.assert_close(got[0], want[0])
    for a, b in zip(got[1], want[1], strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", ["smollm2-135m", "tiny-llama"])
def test_config_read_without_transformers_has_the_planners_dimensions(name):
    from transformers import AutoConfig

    from robolora.models import load_config
    from robolora.sizing import ModelDims

    light = load_config(name)
    assert not hasattr(light, "to_dict")  # read from config.json, not through AutoConfig
    assert ModelDims.from_config(light) == ModelDims.from_config(AutoConfig.from_pretrained(resolve_model(name)))


def test_config_missing_a_dimension_or_asking_for_remote_code_goes_through_autoconfig(tmp_path):
    from robolora.models import load_config

    config = json.loads((Path(resolve_model("tiny-llama")) / "config.json").read_text())
    for change in ({"tie_word_embeddings": None}, {"auto_map": {"AutoConfig": "x.Y"}}):
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        folder.mkdir()
        data = {k: v for k, v in {**config, **change}.items() if v is not None}
        (folder / "config.json").write_text(json.dumps(data))
        loaded = load_config(str(folder))
        assert hasattr(loaded, "to_dict") and loaded.hidden_size == config["hidden_size"]
