"""Memory math for LoRA training under DeepSpeed ZeRO: pure functions on model dimensions.

Per worker, for a decoder-only model with ``P`` frozen parameters and ``L`` LoRA parameters:

* frozen weights: ``P * w`` bytes (``w`` = 2 in bf16, 4 in fp32), divided by the workers under
  ZeRO-3 (ZeRO-2 only shards the trainable states, so every worker holds all frozen weights);
  none on the device with parameter offload;
* LoRA weights ``L * w``, their gradients ``L * w``, fp32 master copy (bf16 only) ``4 L`` and Adam's
  two moments ``8 L``: the last three sharded across workers by ZeRO-2 and ZeRO-3, and moved to the
  host with optimizer offload;
* activations kept for the backward pass, per layer ``tokens * hidden * ACT_FACTOR * w`` (about 34
  hidden-sized values per token per layer for a Llama block with a 2.7x MLP, plus attention scores
  ``heads * seq * tokens * w``), or only the layer inputs with gradient checkpointing;
* logits for the loss in fp32, ``tokens * vocab * 4`` twice (values and gradient);
* a fixed margin for the framework, the allocator and communication buckets.

Example:
    >>> dims = ModelDims(vocab=32016, hidden=4096, layers=32, heads=32, kv_heads=32, intermediate=11008)
    >>> round(dims.params() / 1e9, 2)  # CodeLlama-7B
    6.74
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GIB = 2**30
#: Hidden-sized activation values kept per token per layer without checkpointing (Korthikanti et al.
#: count 34 for a GPT block with a 4x MLP; a Llama MLP at 2.7x with SwiGLU is close to that).
ACT_FACTOR = 34
#: CUDA context, allocator fragmentation, communication buckets (bytes).
MARGIN_GPU = int(1.5 * GIB)
#: The Python process with torch, transformers, Ray and DeepSpeed imported (bytes).
MARGIN_CPU = int(1.2 * GIB)


@dataclass(frozen=True)
class ModelDims:
    """The dimensions of a Llama-style decoder that the memory math needs."""

    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    tied_embeddings: bool = False

    @classmethod
    def from_config(cls, config: Any) -> ModelDims:
        """From a transformers config (Llama, Mistral, Qwen2 and similar)."""
        heads = config.num_attention_heads
        return cls(
            vocab=config.vocab_size,
            hidden=config.hidden_size,
            layers=config.num_hidden_layers,
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            intermediate=config.intermediate_size,
            tied_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        )

    @property
    def kv_dim(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    def module_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear module in one layer, by its CodeLlama name."""
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        return {
            "q_proj": (h, h),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (h, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    def params(self) -> int:
        """All parameters: embeddings, the layers' linear weights and norms, the LM head."""
        per_layer = sum(a * b for a, b in self.module_shapes().values()) + 2 * self.hidden
        head = 0 if self.tied_embeddings else self.vocab * self.hidden
        return self.vocab * self.hidden + self.layers * per_layer + self.hidden + head

    def lora_params(self, r: int, targets: list[str]) -> int:
        """LoRA parameters: ``r * (in + out)`` for each targeted module in each layer."""
        shapes = self.module_shapes()
        return self.layers * sum(r * sum(shapes[t]) for t in targets if t in shapes)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per worker by component."""

    frozen_weights: int
    lora_states: int
    activations: int
    logits: int
    margin: int

    @property
    def total(self) -> int:
        return self.frozen_weights + self.lora_states + self.activations + self.logits + self.margin


def estimate_worker_memory(
    dims: ModelDims,
    *,
    lora_r: int,
    targets: list[str],
    micro_batch: int,
    seq_len: int,
    workers: int,
    zero_stage: int,
    offload: str,
    bf16: bool,
    gradient_checkpointing: bool,
    on_gpu: bool,
) -> MemoryEstimate:
    """Peak memory of one worker's device (the GPU, or the host when training on the CPU)."""
    w = 2 if bf16 else 4
    frozen = dims.params() * w
    if zero_stage == 3:
        frozen //= workers
    if offload == "all" and on_gpu:
        frozen = 0
    lora = dims.lora_params(lora_r, targets)
    sharded = lora * (w + (4 if bf16 else 0) + 8)  # gradients, fp32 master, Adam moments
    sharded //= workers
    if offload != "none" and on_gpu:
        sharded = 0
    lora_states = lora * w + sharded
    tokens = micro_batch * seq_len
    if gradient_checkpointing:
        per_layer = tokens * dims.hidden * w
    else:
        per_layer = tokens * dims.hidden * ACT_FACTOR * w + dims.heads * seq_len * tokens * w
    activations = dims.layers * per_layer
    logits = 2 * tokens * dims.vocab * 4
    return MemoryEstimate(frozen, lora_states, activations, logits, MARGIN_GPU if on_gpu else MARGIN_CPU)
