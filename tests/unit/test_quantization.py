"""``--quantization 4bit|8bit`` (QLoRA): the bitsandbytes config, the config refusals, the preflight line,
the planner's rows for a quantized base, and the LoRA kernels on bitsandbytes layers."""

from __future__ import annotations

import pytest
import torch

from robolora.config import TrainConfig
from robolora.errors import ConfigError, UserError
from robolora.flags import parse_train_args
from robolora.memplan import Workload, parse_gpus, plan_memory
from robolora.sizing import GIB, QUANT_BYTES, SIZES, quantized_weight_bytes

bnb = pytest.importorskip("bitsandbytes")


# ----------------------------------------------------------------------------- models.quantization_config


def test_quantization_config_is_qlora_nf4_with_double_quant_and_storage_in_the_compute_dtype():
    from robolora.models import quantization_config

    assert quantization_config(None, torch.bfloat16) is None
    q = quantization_config("4bit", torch.bfloat16)
    assert q.load_in_4bit and not q.load_in_8bit
    assert q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16 and q.bnb_4bit_quant_storage == torch.bfloat16
    assert quantization_config("4bit", None).bnb_4bit_quant_storage == torch.float32
    assert quantization_config("8bit", torch.bfloat16).load_in_8bit


def test_missing_bitsandbytes_is_one_line_naming_the_flag_and_the_fix(monkeypatch):
    import sys

    from robolora import models

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # what find_spec answers for a package not installed
    with pytest.raises(UserError) as e:
        models.quantization_config("4bit", torch.bfloat16)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("--quantization 4bit: bitsandbytes is not installed")
    assert "pip install bitsandbytes" in msg


def test_bitsandbytes_that_cannot_run_here_is_one_line(monkeypatch):
    import builtins

    from robolora import models

    real_import = builtins.__import__

    def broken(name, *args, **kw):
        if name == "bitsandbytes":
            raise RuntimeError("CUDA Setup failed despite GPU being available\nlong native trace")
        return real_import(name, *args, **kw)

    monkeypatch.delitem(__import__("sys").modules, "bitsandbytes")
    monkeypatch.setattr(builtins, "__import__", broken)
    problem = models.bitsandbytes_problem()
    assert problem.startswith("bitsandbytes cannot run on this machine (RuntimeError: CUDA Setup failed")
    assert "\n" not in problem


def test_load_model_quantized_4bit_on_the_cpu():
    from robolora.models import load_model

    model = load_model("tiny-llama", dtype=torch.bfloat16, quantization="4bit")
    layer = model.model.layers[0].self_attn.q_proj
    assert type(layer).__name__ == "Linear4bit" and layer.weight.dtype == torch.bfloat16
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16  # not quantized
    ids = torch.tensor([[1, 520, 2041, 288]])
    assert torch.isfinite(model(input_ids=ids, labels=ids).loss)


# ----------------------------------------------------------------------------- config


def test_quantization_flag_and_config_key():
    assert TrainConfig().quantization is None
    assert parse_train_args(["--quantization", "4bit"]).quantization == "4bit"
    assert parse_train_args(["--quantization", "8bit", "--zero-stage", "2"]).quantization == "8bit"
    with pytest.raises(ConfigError, match="--quantization"):
        parse_train_args(["--quantization", "2bit"])
    with pytest.raises(ConfigError, match=r"--quantization: '3bit' is not one of 4bit, 8bit"):
        TrainConfig(quantization="3bit")


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"quantization": "8bit", "zero_stage": 3}, "loss ~10x off"),
        ({"quantization": "4bit", "zero_stage": 3, "offload": "optimizer"}, "use --offload none"),
        ({"quantization": "4bit", "zero_stage": 3, "offload": "all"}, "more GPU memory"),
    ],
)
def test_quantization_refusals_are_one_line(changes, words):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**changes)
    assert "\n" not in str(e.value) and str(e.value).startswith("--quantization") and words in str(e.value)


@pytest.mark.parametrize(
    "changes",
    [
        {"quantization": "4bit", "zero_stage": 3, "offload": "none"},
        {"quantization": "4bit", "zero_stage": 2, "offload": "optimizer"},
        {"quantization": "8bit", "zero_stage": 2},
        {"quantization": "4bit", "packing": True},
        {"quantization": "4bit", "resume_from": "/runs/stage1"},
    ],
)
def test_quantization_combinations_accepted(changes):
    assert TrainConfig(**changes).quantization == changes["quantization"]


# ----------------------------------------------------------------------------- preflight


def test_preflight_line_says_cpu_workers_run_slowly():
    from robolora.preflight import check_quantization

    assert check_quantization(TrainConfig()) is None
    check = check_quantization(TrainConfig(quantization="4bit", use_gpu=False))
    assert check.ok and "bitsandbytes' CPU backend (slowly)" in check.detail and "NF4" in check.detail
    assert "CPU backend" not in check_quantization(TrainConfig(quantization="4bit", use_gpu=True)).detail


def test_preflight_refuses_quantization_without_bitsandbytes(monkeypatch):
    from robolora import models
    from robolora.preflight import check_quantization

    monkeypatch.setattr(models, "bitsandbytes_problem", lambda: "bitsandbytes is not installed")
    with pytest.raises(UserError, match=r"^--quantization 8bit: bitsandbytes is not installed; install it"):
        check_quantization(TrainConfig(quantization="8bit"))


# ----------------------------------------------------------------------------- planner


def _work(quantization, size="34B", **cfg):
    dims = SIZES[size]
    return Workload.from_config(TrainConfig(quantization=quantization, **cfg), dims, dims.default_targets())


def test_4bit_weights_are_about_half_a_byte_per_parameter():
    dims = SIZES["34B"]
    est = _work("4bit").estimate(1, 2, "none", 4, False)
    per_param = est.frozen_weights / dims.params()
    assert 0.5 < per_param < 0.55  # 0.516 on the linear weights; embeddings and LM head in bf16
    assert QUANT_BYTES["4bit"] == pytest.approx(0.5 + 0.127 / 8, abs=1e-3)
    assert est.frozen_weights == quantized_weight_bytes(dims, "4bit", 2)
    assert 16 * GIB < est.frozen_weights < 18 * GIB  # CodeLlama-34B NF4: ~17-19 GB per rank at load
    eight = _work("8bit").estimate(1, 2, "none", 4, False).frozen_weights / dims.params()
    assert 1.0 <= eight < 1.05
    assert est.dequantized == dims.largest_linear_params() * 2


def test_zero3_does_not_shard_a_quantized_base():
    work = _work("4bit")
    one, eight = work.estimate(1, 3, "none", 1, True), work.estimate(8, 3, "none", 1, True)
    assert one.frozen_weights == eight.frozen_weights and eight.gathered == 0
    plain = _work(None).estimate(8, 3, "none", 1, True)
    assert plain.frozen_weights < eight.frozen_weights  # the bf16 base split 8 ways is smaller


def test_34b_qlora_fits_one_48gb_gpu_without_offload():
    plan = plan_memory(_work("4bit"), parse_gpus("1x48GB"))
    assert plan.fits and (plan.choice.zero_stage, plan.choice.offload) == (2, "none")
    assert plan.choice.estimate.total < 44 * GIB
    assert "--quantization 4bit" in plan.flags()
    assert plan_memory(_work(None), parse_gpus("1x48GB")).choice.offload != "none"  # plain LoRA needs offload


@pytest.mark.parametrize(("quantization", "gpus"), [("4bit", "1x24GB"), ("4bit", "1x16GB"), ("8bit", "2x24GB")])
def test_the_planner_never_picks_offload_or_8bit_zero3(quantization, gpus):
    plan = plan_memory(_work(quantization, batch_size=1), parse_gpus(gpus))
    assert all(o.offload == "none" for o in plan.alternatives)
    if quantization == "8bit":
        assert all(o.zero_stage == 2 for o in plan.alternatives)


def test_plan_command_quantization_flag(run_cli):
    code, out, _ = run_cli("plan", "--quantization", "4bit", "--model", "34B", "--gpus", "1x48GB")
    assert code == 0, out
    assert "Quantization: 4bit (NF4 + double quantization)" in out and "dequantized layer" in out
    assert "Flags: --num-workers 1 --zero-stage 2 --offload none" in out and "--quantization 4bit" in out
    code, out, _ = run_cli("plan", "--model", "34B", "--gpus", "1x48GB")
    assert "Quantization" not in out


# ----------------------------------------------------------------------------- LoRA on bitsandbytes layers


def _qlora_model(dropout: float):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from robolora.models import load_model

    torch.manual_seed(0)
    model = prepare_model_for_kbit_training(load_model("tiny-llama", quantization="4bit"), False)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=["q_proj", "v_proj"])
    return get_peft_model(model, config, adapter_name="default")


def test_kernels_leave_4bit_layers_to_peft_and_train_the_same():
    from robolora.kernels import use_fast_dropout, use_fused_lora

    ids = torch.tensor([[1, 520, 2041, 288, 3702, 17]])
    plain, patched = _qlora_model(0.0), _qlora_model(0.0)
    for m in (plain, patched):
        for n, p in m.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.1, generator=torch.Generator().manual_seed(1))
    assert use_fused_lora(patched) == 0  # the fused branch is for plain torch Linear bases only
    out_plain = plain(input_ids=ids, labels=ids)
    out_patched = patched(input_ids=ids, labels=ids)
    torch.testing.assert_close(out_patched.loss, out_plain.loss)
    out_patched.loss.backward()
    grads = [p.grad for n, p in patched.named_parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    with_dropout = _qlora_model(0.1)
    assert use_fast_dropout(with_dropout) == 2 * 2  # q and v in 2 layers
    loss = with_dropout(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)


def test_a_plain_adapter_resumes_into_a_4bit_model(tmp_path):
    """--resume-from: an adapter's weights load into the LoRA layers over a 4-bit base (same keys)."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from safetensors.torch import save_file

    from robolora.checkpoints import load_adapter_weights
    from robolora.models import load_model

    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    torch.manual_seed(0)
    source = get_peft_model(load_model("tiny-llama"), config)
    state = get_peft_model_state_dict(source)
    save_file(state, str(tmp_path / "adapter_model.safetensors"))
    target = _qlora_model(0.0)
    load_adapter_weights(target, str(tmp_path))
    loaded = get_peft_model_state_dict(target)
    for key, value in state.items():
        torch.testing.assert_close(loaded[key], value)
