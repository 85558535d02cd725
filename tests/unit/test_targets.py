"""LoRA target modules checked against the model before any worker starts, per-architecture defaults,
GPT-2's dimensions in the memory planner, model configs with bad dimensions, and absolute paths."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from robolora.config import TrainConfig, absolute_paths, from_dict
from robolora.errors import ConfigError, UserError
from robolora.models import TINY_LLAMA
from robolora.preflight import check_memory, check_model, check_resume_from, check_targets, plan_run, workload
from robolora.robot.generator import generate_records, write_dataset
from robolora.sizing import SIZES, ModelDims, check_dimensions
from robolora.targets import ModuleTree, default_targets, llama_tree, module_tree, resolve_targets

TINY_GPT2 = {"vocab_size": 512, "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 256}
LLAMA_LINEAR = "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head"
GPT2_LINEAR = "c_attn, c_proj, c_fc, lm_head"


def gpt2_config(**changes):
    from transformers import GPT2Config

    return GPT2Config(**{**TINY_GPT2, **changes})


def llama_json(**changes) -> dict:
    """A tiny Llama's config.json as transformers writes it (every key the planner reads)."""
    return {"model_type": "llama", "vocab_size": 512, "tie_word_embeddings": True, **TINY_LLAMA, **changes}


def model_folder(tmp_path, config: dict, name: str = "model"):
    """A local model folder holding only its config.json (enough for every check before training)."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


# ----------------------------------------------------------------------------- matching and defaults


def test_a_typo_beside_a_real_name_is_refused_with_the_models_linear_modules():
    with pytest.raises(ConfigError) as e:
        resolve_targets(["q_proj", "foo_proj"], llama_tree(2), "tiny-llama")
    assert str(e.value) == (
        f"--lora-target-modules: 'foo_proj' matches no module of tiny-llama (llama); its linear modules are "
        f"{LLAMA_LINEAR} (or pass all-linear, or auto)"
    )


def test_names_match_as_peft_matches_them():
    tree = llama_tree(2)
    assert resolve_targets(["self_attn.q_proj", "v_proj", "v_proj"], tree, "m") == ["self_attn.q_proj", "v_proj"]
    assert resolve_targets(["model.layers.1.mlp.down_proj"], tree, "m") == ["model.layers.1.mlp.down_proj"]
    assert resolve_targets(["embed_tokens"], tree, "m") == ["embed_tokens"]  # PEFT adapts embeddings too
    for partial in ("proj", "q", "self_attn", "layers"):  # a suffix that is not a whole name, or no LoRA layer
        with pytest.raises(ConfigError, match=f"'{partial}' matches no module"):
            resolve_targets([partial], tree, "m")


def test_auto_and_all_linear_stand_alone():
    tree = llama_tree(2)
    assert resolve_targets(["auto"], tree, "m") == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert resolve_targets(["all-linear"], tree, "m") == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    with pytest.raises(ConfigError, match="--lora-target-modules: auto stands alone"):
        resolve_targets(["auto", "q_proj"], tree, "m")


def test_the_llama_tree_is_the_skeleton_transformers_builds():
    from transformers import LlamaConfig

    built = module_tree("tiny-llama", LlamaConfig(vocab_size=512, **TINY_LLAMA))
    assert built == llama_tree(TINY_LLAMA["num_hidden_layers"])


def test_gpt2_skeleton_and_its_defaults():
    tree = module_tree("gpt2", gpt2_config())
    assert tree.model_type == "gpt2" and tree.output == "lm_head"
    assert ", ".join(tree.linear_names()) == GPT2_LINEAR
    assert default_targets(tree) == resolve_targets(["auto"], tree, "gpt2") == ["c_attn"]  # PEFT's default
    assert resolve_targets(["all-linear"], tree, "gpt2") == ["c_attn", "c_proj", "c_fc"]
    with pytest.raises(
        ConfigError, match=f"'q_proj' matches no module of gpt2 \\(gpt2\\); its linear modules are {GPT2_LINEAR}"
    ):
        resolve_targets(["q_proj", "k_proj", "v_proj", "o_proj"], tree, "gpt2")


def test_an_architecture_without_a_default_asks_for_names():
    tree = ModuleTree("mystery", ("blocks.0.wq", "head"), ("blocks.0.wq", "head"), "head")
    with pytest.raises(ConfigError) as e:
        resolve_targets(["auto"], tree, "m")
    assert str(e.value) == (
        "--lora-target-modules: m (mystery) has no default LoRA targets; name them (its linear modules are wq, head), "
        "or pass all-linear"
    )


# ----------------------------------------------------------------------------- preflight, before Ray


def _train_cfg(tmp_path, model, **kw):
    return from_dict({"data_json": "d.json", "output_dir": str(tmp_path / "out"), "model_name": str(model), **kw})


def test_preflight_resolves_and_checks_targets_for_a_local_gpt2(tmp_path):
    folder = model_folder(tmp_path, gpt2_config().to_dict())
    cfg = _train_cfg(tmp_path, folder)
    check, model_config = check_model(cfg)
    assert check.detail == f"{folder} (gpt2, {folder})"
    target_check, targets = check_targets(cfg, model_config)
    assert targets == ["c_attn"] and target_check.detail == "c_attn (from auto): 2 modules of the model"
    with pytest.raises(ConfigError, match=f"its linear modules are {GPT2_LINEAR}"):
        check_targets(_train_cfg(tmp_path, folder, lora_target_modules="q_proj,k_proj,v_proj,o_proj"), model_config)


def test_train_refuses_a_target_typo_before_ray_starts(tmp_path, run_cli):
    data = tmp_path / "d.json"
    write_dataset(generate_records(40, seed=1), data)
    folder = model_folder(tmp_path, llama_json())
    code, out, err = run_cli(
        "train", "--data-json", data, "--model-name", folder, "--output-dir", tmp_path / "out",
        "--lora-target-modules", "q_proj,foo_proj",
    )  # fmt: skip
    assert (code, out) == (2, "")
    assert err == (
        f"robolora: error: --lora-target-modules: 'foo_proj' matches no module of {folder} (llama); its linear "
        f"modules are {LLAMA_LINEAR} (or pass all-linear, or auto)\n"
    )
    assert not (tmp_path / "out").exists()


def test_resume_compares_the_resolved_targets(tmp_path):
    from safetensors.torch import save_file

    src = tmp_path / "stage1"
    src.mkdir()
    save_file({}, str(src / "adapter_model.safetensors"))
    (src / "adapter_config.json").write_text(
        json.dumps({"r": 32, "target_modules": ["v_proj", "q_proj", "k_proj", "o_proj"], "peft_type": "LORA"})
    )
    cfg = from_dict({"resume_from": str(src)})  # lora_target_modules: auto
    assert check_resume_from(cfg, ["q_proj", "k_proj", "v_proj", "o_proj"]).ok
    with pytest.raises(UserError, match="pass the same --lora-r and --lora-target-modules"):
        check_resume_from(cfg, ["c_attn"])


# ----------------------------------------------------------------------------- dimensions


def test_gpt2_dimensions_match_the_model_and_peft():
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2LMHeadModel

    config = gpt2_config()
    dims = ModelDims.from_config(config)
    assert (dims.arch, dims.hidden, dims.layers, dims.heads, dims.intermediate, dims.positions) == (
        "gpt2",
        32,
        2,
        2,
        128,
        256,
    )
    model = GPT2LMHeadModel(config)
    assert dims.params() == sum(p.numel() for p in model.parameters())
    for targets in (["c_attn"], ["c_proj"], ["c_attn", "c_proj", "c_fc"]):
        lora = get_peft_model(GPT2LMHeadModel(config), LoraConfig(r=4, target_modules=targets, fan_in_fan_out=True))
        assert dims.lora_params(4, targets) == lora.get_nb_trainable_parameters()[0], targets


def test_the_planner_sizes_a_gpt2_run():
    config = gpt2_config()
    cfg = TrainConfig(max_length=64, batch_size=2)
    dims = ModelDims.from_config(config)
    assert workload(cfg, dims).targets == ("c_attn",)
    planned = plan_run(cfg, cluster_cpus=2, cluster_gpus=0, model_config=config).config
    detail = check_memory(planned, config).detail
    assert detail.startswith("~") and "GiB needed for 2 workers" in detail


def test_plan_keeps_the_guides_targets_and_figures_for_llama_sizes():
    for size in ("7B", "13B", "34B"):
        assert workload(TrainConfig(), SIZES[size]).targets == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert SIZES["7B"].lora_params(32, ["q_proj", "v_proj"]) == 16777216


def test_plan_refuses_a_target_typo(run_cli):
    code, out, err = run_cli("plan", "--model", "7B", "--gpus", "1x24GB", "--lora-target-modules", "q_proj,foo_proj")
    assert (code, out) == (2, "")
    assert err.startswith("robolora: error: --lora-target-modules: none of 'foo_proj' is a linear module")


@pytest.mark.parametrize(("value", "shown"), [(0, "0"), (-64, "-64"), ("big", "'big'"), (64.5, "64.5"), (True, "True")])
def test_bad_dimensions_are_refused_naming_file_and_field(tmp_path, value, shown):
    folder = model_folder(tmp_path, llama_json(hidden_size=value))
    with pytest.raises(ConfigError) as e:
        check_model(_train_cfg(tmp_path, folder))
    assert str(e.value) == (
        f"{folder}/config.json: hidden_size: must be a positive integer, got {shown}; fix the model's config"
    )
    with pytest.raises(ConfigError, match=r"m/config\.json: n_layer: must be a positive integer, got 0"):
        check_dimensions(types.SimpleNamespace(n_layer=0), "m/config.json")
    with pytest.raises(ConfigError, match="n_embd: must be a positive integer"):
        ModelDims.from_config(types.SimpleNamespace(model_type="gpt2", n_embd=value))


def test_bad_gpt2_dimension_in_a_local_model_is_refused(tmp_path):
    folder = model_folder(tmp_path, {**gpt2_config().to_dict(), "n_head": -2})
    with pytest.raises(UserError, match=f"{folder}/config.json"):
        check_model(_train_cfg(tmp_path, folder))


# ----------------------------------------------------------------------------- absolute paths


def test_every_local_path_is_made_absolute(tmp_path, monkeypatch):
    (tmp_path / "my-model").mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = from_dict(
        {
            "train_json": "data/t.json",
            "val_json": "./v.json",
            "resume_from": "runs/stage1",
            "storage_path": "shared",
            "output_dir": "out",
            "model_name": "my-model",
        }
    )
    done = absolute_paths(cfg)
    for key in ("train_json", "val_json", "resume_from", "storage_path", "output_dir", "model_name"):
        assert getattr(done, key) == str(tmp_path / getattr(cfg, key).removeprefix("./")), key
    assert absolute_paths(done) == done
    assert absolute_paths(from_dict({"data_json": "~/d.json"})).data_json.startswith(str(Path.home()))
    for name in ("tiny-llama", "codellama/CodeLlama-7b-Python-hf", "gpt2"):
        assert absolute_paths(from_dict({"model_name": name})).model_name == name
    assert absolute_paths(from_dict({"model_name": "./missing"})).model_name == str(tmp_path / "missing")
