"""The streaming merge (robolora.merge) writes what PEFT's merge_and_unload computes, tensor by tensor, for
Llama (Linear) and GPT-2 (Conv1D, fan_in_fan_out) layers, float32 and bf16 bases, rsLoRA and chosen layers;
a sharded base keeps its layout and is merged with far less memory than the model; odd adapters are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from robolora.errors import UserError
from robolora.merge import merge_adapter, plan_deltas

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _llama(dest: Path, dtype: torch.dtype = torch.float32, shard: str | None = None, **dims) -> Path:
    """A seeded random Llama saved to ``dest`` in ``dtype`` (sharded at ``shard`` where given)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from robolora.models import TINY_LLAMA

    values = {**TINY_LLAMA, "vocab_size": 512, **dims}
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**values)).to(dtype)
    model.save_pretrained(dest, **({"max_shard_size": shard} if shard else {}))
    return dest


def _gpt2(dest: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=512, n_embd=32, n_layer=2, n_head=2, n_positions=64)).save_pretrained(dest)
    return dest


def _adapter(base: Path, dest: Path, dtype: torch.dtype, **lora) -> Path:
    """A LoRA adapter with random A and B (PEFT starts B at zero: a merge of that would prove nothing)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    peft = get_peft_model(model, LoraConfig(**{"r": 4, "lora_alpha": 8, **lora}))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn_like(param) * 0.05)
    peft.save_pretrained(dest)
    return dest


def _peft_merged(base: Path, adapter: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """PEFT's merge of ``adapter`` into ``base`` loaded in ``dtype``: the reference."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().state_dict()


def _merged(base: Path, adapter: Path, out: Path):
    out.mkdir()
    stats = merge_adapter(base, adapter, out)
    files = sorted(out.glob("*.safetensors"))
    return stats, {k: v for f in files for k, v in load_file(f).items()}


def _assert_as_peft(ours: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], base: dict, changed: int):
    """Every stored tensor as PEFT's merge has it (bf16: at most one rounding step apart), ``changed`` of them
    changed by the merge."""
    assert ours.keys() <= reference.keys()
    for name, tensor in ours.items():
        expected = reference[name]
        assert tensor.dtype == expected.dtype and tensor.shape == expected.shape, name
        if tensor.dtype == torch.float32:
            torch.testing.assert_close(tensor, expected, rtol=1e-6, atol=1e-7, msg=name)
        else:  # one bf16 step: 2**-7 relative
            torch.testing.assert_close(tensor.float(), expected.float(), rtol=2**-7, atol=1e-6, msg=name)
    assert sum(not torch.equal(ours[n], base[n]) for n in ours) == changed


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_llama_merge_matches_peft_merge_and_unload(tmp_path, dtype):
    base = _llama(tmp_path / "base", dtype)
    adapter = _adapter(base, tmp_path / "adapter", dtype, target_modules=LLAMA_TARGETS)
    stats, ours = _merged(base, adapter, tmp_path / "out")
    assert stats.merged == 2 * len(LLAMA_TARGETS) and stats.shards == 1
    _assert_as_peft(ours, _peft_merged(base, adapter, dtype), load_file(base / "model.safetensors"), stats.merged)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
    ]


def test_rslora_and_chosen_layers_merge_as_peft(tmp_path):
    base = _llama(tmp_path / "base")
    lora = {"target_modules": ["q_proj", "down_proj"], "use_rslora": True, "layers_to_transform": [1], "r": 16}
    adapter = _adapter(base, tmp_path / "adapter", torch.float32, **lora)
    stats, ours = _merged(base, adapter, tmp_path / "out")
    assert stats.merged == 2
    _assert_as_peft(ours, _peft_merged(base, adapter, torch.float32), load_file(base / "model.safetensors"), 2)
    assert not torch.equal(
        ours["model.layers.1.self_attn.q_proj.weight"],
        load_file(base / "model.safetensors")["model.layers.1.self_attn.q_proj.weight"],
    )


def test_gpt2_conv1d_merge_matches_peft(tmp_path):
    base = _gpt2(tmp_path / "base")
    with pytest.warns(UserWarning, match="fan_in_fan_out"):
        adapter = _adapter(base, tmp_path / "adapter", torch.float32, target_modules=["c_attn", "c_proj", "c_fc"])
    assert json.loads((adapter / "adapter_config.json").read_text())["fan_in_fan_out"] is True
    stats, ours = _merged(base, adapter, tmp_path / "out")
    assert stats.merged == 8  # c_attn, attn.c_proj, mlp.c_fc and mlp.c_proj of 2 blocks
    _assert_as_peft(ours, _peft_merged(base, adapter, torch.float32), load_file(base / "model.safetensors"), 8)


def test_a_sharded_base_keeps_its_layout_and_merges_in_a_fraction_of_its_size(tmp_path):
    dims = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4, "num_key_value_heads": 4}
    base = _llama(tmp_path / "base", shard="600KB", **dims)
    shards = sorted(p.name for p in base.glob("*.safetensors"))
    assert len(shards) >= 5
    adapter = _adapter(base, tmp_path / "adapter", torch.float32, target_modules=LLAMA_TARGETS)
    stats, ours = _merged(base, adapter, tmp_path / "out")
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("*.safetensors")) == shards and stats.shards == len(shards)
    assert (out / "model.safetensors.index.json").read_text() == (base / "model.safetensors.index.json").read_text()
    for shard in shards:  # each shard holds the same tensors as the base's
        assert load_file(out / shard).keys() == load_file(base / shard).keys()
    whole = sum(p.stat().st_size for p in base.glob("*.safetensors"))
    assert stats.total_bytes <= whole and stats.total_bytes > 0.99 * whole
    # tensor bytes held at once: the adapter and one weight's temporaries, not the model
    assert stats.peak_held_bytes < 0.6 * stats.total_bytes, (stats.peak_held_bytes, stats.total_bytes)
    base_tensors = {k: v for s in shards for k, v in load_file(base / s).items()}
    _assert_as_peft(ours, _peft_merged(base, adapter, torch.float32), base_tensors, stats.merged)

    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(out)  # a plain transformers model
    ids = torch.tensor([[1, 2, 3, 4]])
    from peft import PeftModel

    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, reference(ids).logits, rtol=1e-4, atol=1e-5)


def test_the_merge_grows_resident_memory_by_far_less_than_the_model(tmp_path):
    dims = {"hidden_size": 512, "intermediate_size": 1024, "num_hidden_layers": 4, "num_key_value_heads": 4}
    base = _llama(tmp_path / "base", shard="12MB", **dims)  # about 42 MB in 4 shards
    adapter = _adapter(base, tmp_path / "adapter", torch.float32, target_modules=LLAMA_TARGETS)
    (tmp_path / "out").mkdir()
    merge_adapter(base, adapter, tmp_path / "out")  # once first: imports and allocator warm-up are not the merge's
    shutil.rmtree(tmp_path / "out")
    (tmp_path / "out").mkdir()
    stats = merge_adapter(base, adapter, tmp_path / "out")
    assert stats.shards >= 4 and stats.total_bytes > 40e6
    assert 0 < stats.peak_rss_growth < 0.3 * stats.total_bytes, (stats.peak_rss_growth, stats.total_bytes)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"use_dora": True}, "DoRA"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
    ],
)
def test_adapters_that_are_not_plain_lora_are_refused(tmp_path, change, message):
    base = _llama(tmp_path / "base")
    adapter = _adapter(base, tmp_path / "adapter", torch.float32, target_modules=["q_proj"])
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps(config | change))
    (tmp_path / "out").mkdir()
    with pytest.raises(UserError, match=f"adapter cannot be merged: .*{message}"):
        merge_adapter(base, adapter, tmp_path / "out", label="adapter")


def test_an_adapter_of_another_model_is_refused_naming_the_module(tmp_path):
    base = _llama(tmp_path / "base")
    other = _gpt2(tmp_path / "gpt2")
    adapter = _adapter(other, tmp_path / "adapter", torch.float32, target_modules=["c_attn"], fan_in_fan_out=True)
    (tmp_path / "out").mkdir()
    with pytest.raises(UserError, match=r"run-7 cannot be merged: its module transformer.h.0.attn.c_attn matches no"):
        merge_adapter(base, adapter, tmp_path / "out", label="run-7")


def test_plan_maps_adapter_keys_to_base_names_through_prefixes():
    keys = [f"base_model.model.transformer.h.0.attn.c_attn.lora_{x}.weight" for x in "AB"]
    deltas = plan_deltas({"r": 4, "lora_alpha": 16, "fan_in_fan_out": True}, keys, {"h.0.attn.c_attn.weight"}, "a")
    (delta,) = deltas.values()
    assert delta.weight == "h.0.attn.c_attn.weight" and delta.scaling == 4.0 and delta.transpose
    with pytest.raises(UserError, match="lacks its A or B matrix"):
        plan_deltas({"r": 4}, keys[:1], {"h.0.attn.c_attn.weight"}, "a")
    with pytest.raises(UserError, match="not a LoRA A or B matrix"):
        plan_deltas({"r": 4}, [*keys, "base_model.model.h.0.attn.c_attn.lora_magnitude_vector"], set(), "a")


def test_a_base_without_safetensors_is_refused(tmp_path):
    base = _llama(tmp_path / "base")
    adapter = _adapter(base, tmp_path / "adapter", torch.float32, target_modules=["q_proj"])
    shutil.move(base / "model.safetensors", tmp_path / "elsewhere.safetensors")
    (tmp_path / "out").mkdir()
    with pytest.raises(UserError, match="has no safetensors weights"):
        merge_adapter(base, adapter, tmp_path / "out")
