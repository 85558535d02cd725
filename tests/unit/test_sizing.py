"""Memory math pinned on hand-computed cases, and checked against DeepSpeed's own estimators."""

from __future__ import annotations

import math

import pytest

from robolora.sizing import (
    ALIAS_DIMS,
    HEAP_SHARE_CPU,
    MARGIN_CPU,
    MARGIN_GPU,
    SIZES,
    ModelDims,
    activation_memory,
    estimate_worker_memory,
    known_model,
    layer_activation_bytes,
    model_states,
)

SMOLLM2 = ModelDims(vocab=49152, hidden=576, layers=30, heads=9, kv_heads=3, intermediate=1536, tied_embeddings=True)
LLAMA7B = ModelDims(vocab=32016, hidden=4096, layers=32, heads=32, kv_heads=32, intermediate=11008)
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_parameter_counts_match_the_real_models():
    assert SMOLLM2.params() == 134_515_008  # as counted from the loaded bundled model
    assert LLAMA7B.params() == 6_738_546_688  # CodeLlama-7b-Python-hf
    assert SIZES["13B"].params() == 13_016_028_160  # CodeLlama-13b
    assert SIZES["34B"].params() == 33_743_970_304  # CodeLlama-34b
    assert SIZES["7B"] == LLAMA7B and ALIAS_DIMS["smollm2-135m"] == SMOLLM2


def test_size_names_and_codellama_names_need_no_download():
    assert known_model("7b")[0] is SIZES["7B"]
    for name in ("codellama/CodeLlama-34b-Python-hf", "codellama/CodeLlama-34b-Instruct-hf", "CodeLlama-34b-hf"):
        assert known_model(name)[0] is SIZES["34B"]
    assert known_model("smollm2-135m") == (SMOLLM2, "smollm2-135m")
    assert known_model("codellama/CodeLlama-70b-hf") is None and known_model("tiny-llama") is None


def test_lora_parameters_by_hand():
    # r=32 on q,v of a 4096-wide layer: 32 * (4096 + 4096) * 2 modules * 32 layers
    assert LLAMA7B.lora_params(32, ["q_proj", "v_proj"]) == 32 * 8192 * 2 * 32
    # SmolLM2: k/v project 576 -> 192 (3 of 9 heads), MLP 576 <-> 1536
    per_layer = 32 * ((576 + 576) * 2 + (576 + 192) * 2 + (576 + 1536) * 3)
    assert SMOLLM2.lora_params(32, ALL) == 30 * per_layer == 9_768_960
    # 34B has 8 key/value heads of 128: k and v project 8192 -> 1024
    assert SIZES["34B"].lora_params(16, ["k_proj"]) == 48 * 16 * (8192 + 1024)
    # only the adapted layers count
    assert LLAMA7B.lora_params(32, ["q_proj"], layers=[24, 25, 26]) == 3 * 32 * 8192


def test_largest_module_is_the_embedding():
    assert LLAMA7B.largest_module_params() == 32016 * 4096
    assert SMOLLM2.largest_module_params() == 49152 * 576


def _lora7b_all() -> int:
    # per layer: q, k, v, o 32 * (4096 + 4096) each; gate and up 32 * (4096 + 11008); down 32 * (11008 + 4096)
    per_layer = 4 * 32 * 8192 + 3 * 32 * (4096 + 11008)
    return 32 * per_layer


def test_model_states_under_zero2_and_zero3_by_hand():
    p, t = LLAMA7B.params(), _lora7b_all()
    assert LLAMA7B.lora_params(32, ALL) == t == 79_953_920
    kw = dict(
        lora_r=32,
        targets=ALL,
        lora_dropout=True,
        micro_batch=4,
        seq_len=256,
        bf16=True,
        gradient_checkpointing=True,
        on_gpu=True,
    )
    z2 = estimate_worker_memory(LLAMA7B, workers=4, zero_stage=2, offload="none", **kw)
    # ZeRO-2: every worker holds all bf16 weights; a quarter of the bf16 + fp32 gradients (2 + 4 bytes)
    # and of the fp32 master copy and Adam moments (4 + 8 bytes)
    assert (z2.frozen_weights, z2.lora_weights) == (p * 2, t * 2)
    assert (z2.gradients, z2.optimizer_states, z2.gathered) == (t * 6 // 4, t * 12 // 4, 0)
    z3 = estimate_worker_memory(LLAMA7B, workers=4, zero_stage=3, offload="none", **kw)
    # ZeRO-3: weights sharded too; gradients reduced straight into fp32 (4 bytes); the embedding gathered in bf16
    assert (z3.frozen_weights, z3.lora_weights) == (p * 2 // 4, t * 2 // 4)
    assert (z3.gradients, z3.optimizer_states, z3.gathered) == (t * 4 // 4, t * 12 // 4, 32016 * 4096 * 2)
    opt = estimate_worker_memory(LLAMA7B, workers=4, zero_stage=3, offload="optimizer", **kw)
    assert (opt.gradients, opt.optimizer_states, opt.frozen_weights) == (0, 0, z3.frozen_weights)
    assert opt.host == t * (4 + 12) // 4
    full = estimate_worker_memory(LLAMA7B, workers=4, zero_stage=3, offload="all", **kw)
    assert (full.frozen_weights, full.lora_weights, full.gathered) == (0, 0, z3.gathered)
    assert full.host == opt.host + p * 2 // 4 + t * 2 // 4
    assert full.total == full.gathered + full.activations + full.logits + MARGIN_GPU


def test_fp32_states_by_hand():
    states = model_states(1000, 100, 40, 0, workers=2, zero_stage=2, offload="none", bf16=False)
    # fp32 weights (4 bytes), fp32 gradient partition (4), DeepSpeed's own fp32 copy (4) and Adam (8)
    assert (states.frozen_weights, states.lora_weights, states.gradients, states.optimizer_states) == (
        4000,
        400,
        100 * 4 // 2,
        100 * 12 // 2,
    )


def test_activations_and_logits_by_hand():
    est = estimate_worker_memory(
        SMOLLM2,
        lora_r=8,
        targets=["q_proj"],
        lora_dropout=True,
        micro_batch=2,
        seq_len=100,
        workers=1,
        zero_stage=2,
        offload="none",
        bf16=False,
        gradient_checkpointing=False,
        on_gpu=False,
    )
    tokens = 2 * 100
    # per token and layer in fp32: two RMSNorms (fp32 input + result: 2 * (4 + 4) * 576), q, k, v, the SDPA
    # output and o_proj's copy (5 * 4 * 576), the MLP's gate, up, SiLU and product (4 * 4 * 1536)
    block = 2 * 8 * 576 + 5 * 4 * 576 + 4 * 4 * 1536
    lora_q = (4 + 1) * 576 + 8 * 4  # dropout copy of the input and its mask, the rank-8 intermediate
    # the CPU's eager attention keeps the probabilities (heads x seq per token) as the fp32 softmax output
    # and as their copy in the compute dtype (here fp32 too)
    scores = 9 * 100 * (4 + 4)
    assert est.activations == tokens * 30 * (block + lora_q + scores)
    # logits at half the positions (the response share), vocab wide: fp32 output + fp32 copy + log-softmax
    assert est.logits == 100 * 49152 * (4 + 8)
    # the process, and the heap's share of freed activation and logit blocks
    assert est.margin == MARGIN_CPU + math.ceil(HEAP_SHARE_CPU * (est.activations + est.logits))
    ckpt = estimate_worker_memory(
        SMOLLM2,
        lora_r=8,
        targets=["q_proj"],
        lora_dropout=True,
        micro_batch=2,
        seq_len=100,
        workers=1,
        zero_stage=2,
        offload="none",
        bf16=False,
        gradient_checkpointing=True,
        on_gpu=True,
    )
    # each layer's fp32 input, plus one layer recomputed (on the GPU SDPA keeps no probabilities)
    assert ckpt.activations == tokens * (30 * 576 * 4 + block + lora_q) and ckpt.margin == MARGIN_GPU


def test_codellama_block_keeps_43_5_bytes_per_hidden_unit():
    # 2 * (4 + 2) * 4096 + 5 * 2 * 4096 + 4 * 2 * 11008 = 49152 + 40960 + 88064
    assert layer_activation_bytes(LLAMA7B, w=2, lora_r=32, targets=[], lora_dropout=False) == 178_176
    assert 178_176 / 4096 == 43.5
    with_lora = layer_activation_bytes(LLAMA7B, w=2, lora_r=32, targets=["q_proj", "v_proj"], lora_dropout=True)
    assert with_lora == 178_176 + 2 * (3 * 4096 + 32 * 2)
    without_dropout = layer_activation_bytes(LLAMA7B, w=2, lora_r=32, targets=["q_proj"], lora_dropout=False)
    assert without_dropout == 178_176 + 32 * 2
    # a fused RMSNorm (GPUs) keeps its bf16 input, not a float32 copy: 2 bytes less per unit, twice
    fused = layer_activation_bytes(LLAMA7B, w=2, lora_r=32, targets=[], lora_dropout=False, fused_norms=True)
    assert fused == 178_176 - 2 * 2 * 4096
    fp32 = dict(w=4, lora_r=32, targets=[], lora_dropout=False)
    assert layer_activation_bytes(LLAMA7B, **fp32, fused_norms=True) == layer_activation_bytes(LLAMA7B, **fp32)


def test_lora_on_top_layers_keeps_activations_only_from_there_up():
    kw = dict(tokens=1024, seq_len=256, w=2, lora_r=32, targets=["q_proj"], lora_dropout=True, on_gpu=True)
    plain = layer_activation_bytes(LLAMA7B, w=2, lora_r=32, targets=[], lora_dropout=True, fused_norms=True)
    adapted = layer_activation_bytes(LLAMA7B, w=2, lora_r=32, targets=["q_proj"], lora_dropout=True, fused_norms=True)
    top8 = activation_memory(LLAMA7B, lora_layers=list(range(24, 32)), gradient_checkpointing=False, **kw)
    assert top8 == 1024 * 8 * adapted  # layers 0-23 are not in the autograd graph
    mixed = activation_memory(LLAMA7B, lora_layers=[0, 1, 2, 3, 8], gradient_checkpointing=False, **kw)
    assert mixed == 1024 * (5 * adapted + 27 * plain)
    # with checkpointing every layer keeps its input (the embeddings require grad) and one is recomputed
    ckpt = activation_memory(LLAMA7B, lora_layers=list(range(24, 32)), gradient_checkpointing=True, **kw)
    assert ckpt == 1024 * (32 * 4096 * 2 + adapted)


def test_response_share_scales_the_logits():
    kw = dict(
        lora_r=8,
        targets=["q_proj"],
        lora_dropout=True,
        micro_batch=4,
        seq_len=256,
        workers=1,
        zero_stage=2,
        offload="none",
        bf16=True,
        gradient_checkpointing=True,
        on_gpu=True,
    )
    every = estimate_worker_memory(LLAMA7B, response_share=1.0, **kw)
    assert every.logits == 1024 * 32016 * (2 + 8)
    assert estimate_worker_memory(LLAMA7B, **kw).logits == every.logits // 2


# ----------------------------------------------------------------------------- DeepSpeed's own estimators

LAYOUTS = [(1, 1), (8, 1), (8, 2), (4, 4), (16, 8)]  # (GPUs per node, nodes)


@pytest.mark.parametrize("size", ["7B", "13B", "34B"])
@pytest.mark.parametrize(("per_node", "nodes"), LAYOUTS)
def test_full_training_states_agree_with_deepspeed_zero2(size, per_node, nodes):
    stage_1_and_2 = pytest.importorskip("deepspeed.runtime.zero.stage_1_and_2")
    dims = SIZES[size]
    p, largest, n = dims.params(), dims.largest_module_params(), per_node * nodes
    for offload, cpu_offload in (("none", False), ("optimizer", True)):
        ours = model_states(0, p, largest, largest, workers=n, zero_stage=2, offload=offload)
        _, gpu = stage_1_and_2.estimate_zero2_model_states_mem_needs(
            total_params=p, num_gpus_per_node=per_node, num_nodes=nodes, cpu_offload=cpu_offload
        )
        assert ours.model_states == pytest.approx(gpu, rel=1e-6)


@pytest.mark.parametrize("size", ["7B", "13B", "34B"])
@pytest.mark.parametrize(("per_node", "nodes"), LAYOUTS)
def test_full_training_states_agree_with_deepspeed_zero3(size, per_node, nodes):
    stage3 = pytest.importorskip("deepspeed.runtime.zero.stage3")
    dims = SIZES[size]
    p, largest, n = dims.params(), dims.largest_module_params(), per_node * nodes
    modes = (("none", False, False), ("optimizer", True, False), ("all", True, True))
    for offload, cpu_offload, offload_params in modes:
        ours = model_states(0, p, largest, largest, workers=n, zero_stage=3, offload=offload)
        cpu, gpu, _ = stage3.estimate_zero3_model_states_mem_needs(
            total_params=p,
            largest_layer_params=largest,
            num_gpus_per_node=per_node,
            num_nodes=nodes,
            cpu_offload=cpu_offload,
            cpu_offload_params=offload_params,
            zero_init=True,
        )
        assert ours.model_states == pytest.approx(gpu, rel=1e-6)
        if cpu_offload:
            # DeepSpeed sizes a node's host memory with a 1.5x buffer factor over the offloaded states
            assert ours.host * per_node * 1.5 == pytest.approx(cpu, rel=1e-6)


def test_lora_states_are_a_small_share_of_full_training():
    p, t = LLAMA7B.params(), _lora7b_all()
    full = model_states(0, p, 1, 1, workers=8, zero_stage=2, offload="none")
    lora = model_states(p, t, 1, 0, workers=8, zero_stage=2, offload="none")
    # the same bf16 base weights (plus the adapters), but gradients and optimizer states for 1.2% of
    # the parameters only
    assert lora.frozen_weights == full.lora_weights == 2 * p and lora.lora_weights == 2 * t
    assert round(t / p, 3) == 0.012
    assert lora.gradients + lora.optimizer_states == math.ceil(t * 6 / 8) + math.ceil(t * 12 / 8)
    assert full.gradients + full.optimizer_states == math.ceil(p * 6 / 8) + math.ceil(p * 12 / 8)
