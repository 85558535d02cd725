"""Memory math pinned on hand-computed cases."""

from __future__ import annotations

from robolora.sizing import GIB, MARGIN_CPU, MARGIN_GPU, ModelDims, estimate_worker_memory

SMOLLM2 = ModelDims(vocab=49152, hidden=576, layers=30, heads=9, kv_heads=3, intermediate=1536, tied_embeddings=True)
LLAMA7B = ModelDims(vocab=32016, hidden=4096, layers=32, heads=32, kv_heads=32, intermediate=11008)
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_parameter_counts_match_the_real_models():
    assert SMOLLM2.params() == 134_515_008  # as counted from the loaded bundled model
    assert LLAMA7B.params() == 6_738_546_688  # CodeLlama-7b-Python-hf


def test_lora_parameters_by_hand():
    # r=32 on q,v of a 4096-wide layer: 32 * (4096 + 4096) * 2 modules * 32 layers
    assert LLAMA7B.lora_params(32, ["q_proj", "v_proj"]) == 32 * 8192 * 2 * 32
    # SmolLM2: k/v project 576 -> 192 (3 of 9 heads), MLP 576 <-> 1536
    per_layer = 32 * ((576 + 576) * 2 + (576 + 192) * 2 + (576 + 1536) * 3)
    assert SMOLLM2.lora_params(32, ALL) == 30 * per_layer == 9_768_960


def test_zero3_shards_frozen_weights_zero2_does_not():
    kw = dict(
        lora_r=32,
        targets=ALL,
        micro_batch=4,
        seq_len=256,
        bf16=True,
        gradient_checkpointing=True,
        on_gpu=True,
        offload="none",
    )
    z2 = estimate_worker_memory(LLAMA7B, workers=4, zero_stage=2, **kw)
    z3 = estimate_worker_memory(LLAMA7B, workers=4, zero_stage=3, **kw)
    assert z2.frozen_weights == LLAMA7B.params() * 2
    assert z3.frozen_weights == LLAMA7B.params() * 2 // 4
    lora = LLAMA7B.lora_params(32, ALL)
    assert z2.lora_states == z3.lora_states == lora * 2 + lora * (2 + 4 + 8) // 4


def test_activations_and_logits_by_hand():
    est = estimate_worker_memory(
        SMOLLM2,
        lora_r=8,
        targets=["q_proj"],
        micro_batch=2,
        seq_len=100,
        workers=1,
        zero_stage=2,
        offload="none",
        bf16=False,
        gradient_checkpointing=False,
        on_gpu=False,
    )
    tokens = 200
    assert est.activations == 30 * (tokens * 576 * 34 * 4 + 9 * 100 * tokens * 4)
    assert est.logits == 2 * tokens * 49152 * 4
    assert est.margin == MARGIN_CPU
    ckpt = estimate_worker_memory(
        SMOLLM2,
        lora_r=8,
        targets=["q_proj"],
        micro_batch=2,
        seq_len=100,
        workers=1,
        zero_stage=2,
        offload="none",
        bf16=False,
        gradient_checkpointing=True,
        on_gpu=True,
    )
    assert ckpt.activations == 30 * tokens * 576 * 4 and ckpt.margin == MARGIN_GPU


def test_offload_moves_states_off_the_gpu():
    kw = dict(
        lora_r=32,
        targets=ALL,
        micro_batch=1,
        seq_len=256,
        workers=2,
        zero_stage=3,
        bf16=True,
        gradient_checkpointing=True,
        on_gpu=True,
    )
    none = estimate_worker_memory(LLAMA7B, offload="none", **kw)
    opt = estimate_worker_memory(LLAMA7B, offload="optimizer", **kw)
    full = estimate_worker_memory(LLAMA7B, offload="all", **kw)
    assert opt.lora_states < none.lora_states and opt.frozen_weights == none.frozen_weights
    assert full.frozen_weights == 0 and full.total < 2 * GIB
