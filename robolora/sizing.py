"""Memory math for LoRA training under DeepSpeed ZeRO: pure functions on model dimensions.

Per worker (one GPU, or one CPU process) for a decoder with ``F`` frozen parameters, ``T`` trainable
(LoRA) parameters and ``N`` workers, weights held in ``w`` bytes (2 in bf16, 4 in fp32):

* weights ``(F + T) * w``: every worker holds all of them under ZeRO-2, which shards only what the
  optimizer owns; ZeRO-3 divides them by ``N``; parameter offload moves them to the host;
* with ``--quantization`` (QLoRA) the frozen Linear weights take :data:`QUANT_BYTES` a parameter (NF4:
  half a byte plus its double-quantized constants) and every rank holds the whole quantized base, even
  under ZeRO-3 (transformers skips ``zero.Init`` for quantized models); embeddings, norms and the LM head
  stay in the compute dtype, and one layer's weight is dequantized at a time while it runs;
* gradients and optimizer states of the ``T`` trainable parameters, counted as DeepSpeed's own
  estimators count them (``estimate_zero2_model_states_mem_needs``: 18 bytes per trainable parameter
  in bf16 besides its 16-bit weight), divided by ``N`` under both stages and moved to the host by
  optimizer offload;
* under ZeRO-3, the largest module gathered whole while it runs (and its gradient, if it trains);
* activations kept for the backward pass, or only each layer's input with gradient checkpointing;
* logits, at the response positions only (the training loop applies the LM head there alone);
* a fixed margin for the CUDA context, the allocator and DeepSpeed's communication buckets; on the CPU,
  the process itself and the heap's share of freed activation blocks.

:func:`robolora.memplan.plan_memory` then picks the simplest layout that fits a GPU inventory.

Example:
    >>> dims = SIZES["7B"]  # CodeLlama-7B
    >>> round(dims.params() / 1e9, 2), dims.lora_params(32, ["q_proj", "v_proj"])
    (6.74, 16777216)
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from robolora.errors import ConfigError

GIB = 2**30
#: CUDA context, allocator fragmentation, DeepSpeed's reduce and all-gather buckets (bytes).
MARGIN_GPU = int(1.5 * GIB)
#: The Python process with torch, transformers, Ray and DeepSpeed imported (bytes).
MARGIN_CPU = int(1.2 * GIB)
#: On the CPU, glibc's heap keeps the blocks that a step's activations and logits free, and batches of
#: other shapes cannot always reuse them: a worker's resident peak settles above its live bytes. On 2
#: CPU workers training the bundled model on full-length batches it was 25-35% of the activations and
#: logits above them (benchmarks/memory.py), under ZeRO-2 and ZeRO-3 alike.
HEAP_SHARE_CPU = 0.3
#: Share of a batch's positions where the LM head runs. The training loop computes logits only where
#: the next token is a response token (``TargetLogitsLM`` in loss.py), not at every position. In the
#: shipped robot dataset the code is 37% of an example's characters on average and 62% at most, and
#: a batch is padded to its longest example, which lowers the share further; half covers all but a
#: batch of the very longest answers, and the logits are small next to weights and activations.
RESPONSE_SHARE = 0.5
#: Bytes per trainable parameter that ZeRO keeps for the optimizer, whatever the stage: the fp32
#: master weight (4) and Adam's two fp32 moments (8). DeepSpeed makes its own fp32 partition even when
#: the model is fp32. SGD would need less; the planner sizes for the default AdamW.
OPTIMIZER_BYTES = 4 + 8
#: Bytes per element of the head's logits: the output in the compute dtype is added separately; then
#: two fp32 tensors are alive at a time (the fp32 copy and the log-softmax kept for the backward pass,
#: later the log-softmax and its gradient).
LOGIT_FP32_BYTES = 8
#: Bytes per quantized Linear weight. NF4 with double quantization (QLoRA): 4 bits, plus one 8-bit absmax per
#: block of 64 and one fp32 constant per 256 of those blocks, 8/64 + 32/(64*256) = 0.127 bit. LLM.int8:
#: one byte (its per-row fp32 scales are 4 bytes per output feature, a rounding error).
QUANT_BYTES = {"4bit": 0.5 + (8 / 64 + 32 / (64 * 256)) / 8, "8bit": 1.0}


#: The dimension fields of the model configs that :meth:`ModelDims.from_config` reads (Llama-style and
#: GPT-2 names); each must be a positive integer where the config states it.
DIMENSION_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "max_position_embeddings",
    "head_dim",
    "n_embd",
    "n_layer",
    "n_head",
    "n_inner",
    "n_positions",
)


def check_dimensions(config: Any, where: str = "config.json") -> None:
    """Refuse a model config whose dimensions are not positive integers (zero, negative, text, fractions).

    Fields the config does not state, or states as null, are left to the model's defaults.

    >>> import types
    >>> check_dimensions(types.SimpleNamespace(hidden_size=64, num_key_value_heads=None))
    >>> check_dimensions(types.SimpleNamespace(hidden_size=0), "m/config.json")
    Traceback (most recent call last):
    ...
    robolora.errors.ConfigError: m/config.json: hidden_size: must be a positive integer, got 0; fix the model's config
    """
    # The keys the config states (a transformers config also answers to aliases: GPT-2's hidden_size is n_embd)
    stated = config.to_dict() if hasattr(config, "to_dict") else vars(config)
    for name in DIMENSION_FIELDS:
        value = stated.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{where}: {name}: must be a positive integer, got {value!r}; fix the model's config")


@dataclass(frozen=True)
class ModelDims:
    """The dimensions of a decoder that the memory math needs: Llama-style (Llama, Mistral, Qwen2 and
    similar: RMSNorm, SwiGLU, separate q/k/v/o projections) or GPT-2 (LayerNorm, GELU, one fused
    ``c_attn`` projection, ``Conv1D`` layers with biases, learned position embeddings)."""

    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    tied_embeddings: bool = False
    #: "llama" or "gpt2": which layer layout the module shapes and activations follow.
    arch: str = "llama"
    #: Learned position embeddings (GPT-2's ``n_positions``); 0 for rotary models.
    positions: int = 0

    @classmethod
    def from_config(cls, config: Any, where: str = "config.json") -> ModelDims:
        """From a transformers config: GPT-2 (``model_type`` gpt2) or Llama-style (anything else).

        Raises:
            ConfigError: a dimension that is not a positive integer (``where`` names the config file).
            AttributeError: a dimension the architecture needs is missing (not a layout planned here).
        """
        check_dimensions(config, where)
        if getattr(config, "model_type", None) == "gpt2":
            hidden = config.n_embd
            heads = config.n_head
            return cls(
                vocab=config.vocab_size,
                hidden=hidden,
                layers=config.n_layer,
                heads=heads,
                kv_heads=heads,
                intermediate=getattr(config, "n_inner", None) or 4 * hidden,
                tied_embeddings=bool(getattr(config, "tie_word_embeddings", True)),
                arch="gpt2",
                positions=config.n_positions,
            )
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

    def layer_modules(self) -> tuple[tuple[str, int, int], ...]:
        """(name within the layer, in, out features) of each linear module in one layer.

        >>> [name for name, _, _ in SIZES["7B"].layer_modules()][:2]
        ['self_attn.q_proj', 'self_attn.k_proj']
        """
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        if self.arch == "gpt2":
            return (("attn.c_attn", h, 3 * h), ("attn.c_proj", h, h), ("mlp.c_fc", h, i), ("mlp.c_proj", i, h))
        return (
            ("self_attn.q_proj", h, h),
            ("self_attn.k_proj", h, kv),
            ("self_attn.v_proj", h, kv),
            ("self_attn.o_proj", h, h),
            ("mlp.gate_proj", h, i),
            ("mlp.up_proj", h, i),
            ("mlp.down_proj", i, h),
        )

    def linear_names(self) -> list[str]:
        """The short names of a layer's linear modules, each once.

        >>> ModelDims(100, 8, 2, 2, 2, 32, arch="gpt2", positions=64).linear_names()
        ['c_attn', 'c_proj', 'c_fc']
        """
        return list(dict.fromkeys(name.rsplit(".", 1)[-1] for name, _, _ in self.layer_modules()))

    def default_targets(self) -> list[str]:
        """The LoRA targets when none are given: the training guide's q, k, v and o projections on a
        Llama-style model, PEFT's default (the fused ``c_attn``) on GPT-2."""
        return ["c_attn"] if self.arch == "gpt2" else ["q_proj", "k_proj", "v_proj", "o_proj"]

    def targeted(self, targets: Sequence[str]) -> list[tuple[int, int]]:
        """(in, out) features of the layer's modules that ``targets`` adapt, matched as PEFT matches
        names (the module's name ends with the target): ``c_proj`` is both of GPT-2's projections.

        >>> SIZES["7B"].targeted(["q_proj", "mlp.down_proj", "foo"])
        [(4096, 4096), (11008, 4096)]
        """
        return [
            (a, b) for name, a, b in self.layer_modules() if any(name == t or name.endswith("." + t) for t in targets)
        ]

    def params(self) -> int:
        """All parameters: embeddings, the layers' linear weights (and biases) and norms, the LM head."""
        head = 0 if self.tied_embeddings else self.vocab * self.hidden
        if self.arch == "gpt2":  # biases everywhere; two LayerNorms (weight and bias) a layer and one at the end
            per_layer = sum(a * b + b for _, a, b in self.layer_modules()) + 4 * self.hidden
            embeddings = (self.vocab + self.positions) * self.hidden
            return embeddings + self.layers * per_layer + 2 * self.hidden + head
        per_layer = sum(a * b for _, a, b in self.layer_modules()) + 2 * self.hidden
        return self.vocab * self.hidden + self.layers * per_layer + self.hidden + head

    def linear_params(self) -> int:
        """Weights of the layers' linear modules: the ones bitsandbytes quantizes (not the embeddings,
        the norms, the biases or the LM head).

        >>> round(SIZES["34B"].linear_params() / SIZES["34B"].params(), 3)
        0.984
        """
        return self.layers * sum(a * b for _, a, b in self.layer_modules())

    def largest_linear_params(self) -> int:
        """Parameters of the biggest linear module in a layer: what a quantized layer dequantizes at once."""
        return max(a * b for _, a, b in self.layer_modules())

    def largest_module_params(self) -> int:
        """Parameters of the biggest single module: what ZeRO-3 gathers whole at once."""
        return max(self.vocab * self.hidden, *(a * b for _, a, b in self.layer_modules()))

    def lora_params(self, r: int, targets: Sequence[str], layers: Sequence[int] | None = None) -> int:
        """LoRA parameters: ``r * (in + out)`` for each targeted module in each adapted layer."""
        count = len(layers) if layers else self.layers
        return count * sum(r * (a + b) for a, b in self.targeted(targets))


#: CodeLlama's dimensions by size, as in the models' config.json, so sizes plan without a download.
SIZES: dict[str, ModelDims] = {
    "7B": ModelDims(vocab=32016, hidden=4096, layers=32, heads=32, kv_heads=32, intermediate=11008),
    "13B": ModelDims(vocab=32016, hidden=5120, layers=40, heads=40, kv_heads=40, intermediate=13824),
    "34B": ModelDims(vocab=32000, hidden=8192, layers=48, heads=64, kv_heads=8, intermediate=22016),
}
#: Registry aliases whose dimensions are fixed (the bundled SmolLM2-135M-Instruct).
ALIAS_DIMS: dict[str, ModelDims] = {
    "smollm2-135m": ModelDims(
        vocab=49152, hidden=576, layers=30, heads=9, kv_heads=3, intermediate=1536, tied_embeddings=True
    ),
}
_CODELLAMA = re.compile(r"(?:.*/)?codellama-(\d+)b(?:-(?:python|instruct))?(?:-hf)?", re.IGNORECASE)


_SIZE_LIKE = re.compile(r"[0-9]+(?:\.[0-9]+)?\s*[bm]", re.IGNORECASE)


def looks_like_size(name: str) -> bool:
    """Whether ``name`` reads as a parameter count (70B, 1.5b, 350M) rather than a model's name.

    >>> looks_like_size("70B"), looks_like_size(" 1.5b "), looks_like_size("gpt2"), looks_like_size("org/7B")
    (True, True, False, False)
    """
    return bool(_SIZE_LIKE.fullmatch(name.strip()))


def known_model(name: str) -> tuple[ModelDims, str] | None:
    """Dimensions and a label for a size name (7B, 13B, 34B), a CodeLlama hub name or a fixed alias.

    >>> known_model("codellama/CodeLlama-13b-Python-hf")[1]
    'codellama/CodeLlama-13b-Python-hf (CodeLlama-13B dimensions)'
    >>> known_model("gpt2") is None
    True
    """
    text = name.strip()
    if text.upper() in SIZES:
        return SIZES[text.upper()], f"{text.upper()} (CodeLlama-{text.upper()} dimensions)"
    match = _CODELLAMA.fullmatch(text)
    if match and f"{match[1]}B" in SIZES:
        return SIZES[f"{match[1]}B"], f"{text} (CodeLlama-{match[1]}B dimensions)"
    if text in ALIAS_DIMS:
        return ALIAS_DIMS[text], text
    return None


# ----------------------------------------------------------------------------- per-worker memory


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per worker by component; ``host`` is what offload keeps in host memory instead."""

    frozen_weights: int
    lora_weights: int
    gradients: int
    optimizer_states: int
    gathered: int
    activations: int
    logits: int
    margin: int
    host: int = 0
    #: A quantized layer's weight, dequantized to the compute dtype while its matmul runs.
    dequantized: int = 0

    @property
    def model_states(self) -> int:
        """Weights, gradients, optimizer states and ZeRO-3's gathered module: what DeepSpeed estimates."""
        return (
            self.frozen_weights
            + self.lora_weights
            + self.gradients
            + self.optimizer_states
            + self.gathered
            + self.dequantized
        )

    @property
    def total(self) -> int:
        return self.model_states + self.activations + self.logits + self.margin


COMPONENTS = (
    ("frozen_weights", "frozen weights"),
    ("lora_weights", "LoRA weights"),
    ("gradients", "LoRA gradients"),
    ("optimizer_states", "optimizer states"),
    ("gathered", "ZeRO-3 gathered module"),
    ("dequantized", "dequantized layer"),
    ("activations", "activations"),
    ("logits", "logits"),
    ("margin", "margin"),
)


def model_states(
    frozen_params: int,
    trainable_params: int,
    largest_module: int,
    largest_trainable: int,
    *,
    workers: int,
    zero_stage: int,
    offload: str,
    bf16: bool = True,
    on_gpu: bool = True,
    frozen_bytes: int | None = None,
) -> MemoryEstimate:
    """Weights, gradients, optimizer states and ZeRO-3's gathered module of one worker.

    With every parameter trainable this is DeepSpeed's own estimate: ``2P + 18P/N`` under ZeRO-2,
    ``18P/N + 4L`` under ZeRO-3 (``L`` the largest module), ``2P/N + 4L`` with optimizer offload and
    ``4L`` with parameter offload.

    ``frozen_bytes`` is a quantized base (:func:`quantized_weight_bytes`): every worker holds all of it
    whatever the stage (transformers loads a quantized model whole on every rank, without ``zero.Init``),
    so nothing of it is sharded, gathered or offloaded.

    Example (ZeRO-2, 4 workers, all of 1000 parameters trainable: 2 * 1000 + 18 * 1000 / 4):
        >>> model_states(0, 1000, 100, 100, workers=4, zero_stage=2, offload="none").model_states
        6500
    """
    w = 2 if bf16 else 4
    n = workers
    sharded = zero_stage == 3  # ZeRO-3 partitions the weights too, frozen or not
    frozen = math.ceil(frozen_params * w / n) if sharded else frozen_params * w
    if frozen_bytes is not None:
        frozen, largest_module = frozen_bytes, 0
    lora = math.ceil(trainable_params * w / n) if sharded else trainable_params * w
    # ZeRO-2 keeps its gradient partition in the model's dtype and makes an fp32 copy for the step;
    # ZeRO-3 reduces straight into an fp32 partition (DeepSpeed's gradient_accumulation_dtype).
    grad_bytes = w + 4 if zero_stage == 2 and bf16 else 4
    gradients = math.ceil(trainable_params * grad_bytes / n)
    optimizer = math.ceil(trainable_params * OPTIMIZER_BYTES / n)
    # ZeRO-3 all-gathers a module's weights before it runs and frees them after; the biggest one sets
    # the peak (DeepSpeed counts 4 bytes per parameter: the 16-bit weight and its 16-bit gradient).
    gathered = (largest_module + largest_trainable) * w if zero_stage == 3 else 0
    host = 0
    if on_gpu and offload != "none":  # on the CPU there is nowhere else to move them
        # The host receives the gradients straight into its fp32 partition and runs the optimizer there.
        host += math.ceil(trainable_params * 4 / n) + optimizer
        gradients = optimizer = 0
        if offload == "all":
            host += lora + (frozen if frozen_bytes is None else 0)
            lora = 0
            frozen = frozen if frozen_bytes is not None else 0
    return MemoryEstimate(frozen, lora, gradients, optimizer, gathered, 0, 0, 0, host)


def quantized_weight_bytes(dims: ModelDims, quantization: str, w: int) -> int:
    """Bytes of a base model loaded with ``--quantization``: the layers' linear weights at
    :data:`QUANT_BYTES`, everything else (embeddings, norms, the LM head) at ``w`` bytes.

    >>> dims = SIZES["34B"]
    >>> round(quantized_weight_bytes(dims, "4bit", 2) / dims.params(), 3)  # bytes a parameter, 34B
    0.539
    """
    linear = dims.linear_params()
    return math.ceil(linear * QUANT_BYTES[quantization]) + (dims.params() - linear) * w


def layer_activation_bytes(
    dims: ModelDims, *, w: int, lora_r: int, targets: Sequence[str], lora_dropout: bool, fused_norms: bool = False
) -> int:
    """Bytes one decoder layer keeps per token for its backward pass (without checkpointing).

    Counted from what autograd saves in a Llama block run by transformers with SDPA attention:

    * each RMSNorm keeps its input upcast to fp32 (4 bytes; as it came, ``w`` bytes, where it runs as
      one fused kernel: on GPUs, ``robolora.kernels.use_fused_norms``) and hands a ``w``-byte result to
      the projections, which keep it: ``2 * (4 + w) * h`` (fused: ``4 * w * h``);
    * SDPA keeps q, k and v (k and v repeated to every head under a padding mask, so ``h`` wide each)
      and its output, and o_proj keeps its own contiguous copy: ``5 * w * h``;
    * the MLP keeps the gate and up outputs, SiLU(gate) and the product entering down_proj: ``4 * w * i``;
    * each LoRA module keeps its dropped-out input and the mask (``(w + 1) * in``, none without dropout)
      and the rank-``r`` intermediate.

    Korthikanti et al. count 34 bytes per hidden unit for a GPT block with a 4x MLP; a CodeLlama-7B
    block comes to 43.5 (39.5 with fused norms), and 55.6 with LoRA on q, k, v and o.

    A GPT-2 block keeps each LayerNorm's input and output (``4 * w * h``), the same ``5 * w * h`` in
    attention, the two residual dropouts' masks (``2 * h``), and in the MLP the ``c_fc`` output, the
    three tensors its tanh-approximated GELU (``gelu_new``, plain operations) saves and the GELU's
    output entering ``c_proj``: ``5 * w * i``.

    >>> layer_activation_bytes(SIZES["7B"], w=2, lora_r=32, targets=[], lora_dropout=True)
    178176
    >>> layer_activation_bytes(SIZES["7B"], w=2, lora_r=32, targets=[], lora_dropout=True, fused_norms=True)
    161792
    """
    h, i = dims.hidden, dims.intermediate
    if dims.arch == "gpt2":
        base = 4 * w * h + 5 * w * h + 2 * h + 5 * w * i
    else:
        norm_input = w if fused_norms else 4
        base = 2 * (norm_input + w) * h + 5 * w * h + 4 * w * i
    lora = sum((w + 1) * a * lora_dropout + lora_r * w for a, _ in dims.targeted(targets))
    return base + lora


def activation_memory(
    dims: ModelDims,
    *,
    tokens: int,
    seq_len: int,
    w: int,
    lora_r: int,
    targets: Sequence[str],
    lora_layers: Sequence[int] | None,
    lora_dropout: bool,
    gradient_checkpointing: bool,
    on_gpu: bool,
) -> int:
    """Activation bytes of one micro-batch of ``tokens`` positions (micro-batch x sequence length)."""
    lora_count = len(lora_layers) if lora_layers else dims.layers
    kw = dict(w=w, lora_r=lora_r, lora_dropout=lora_dropout, fused_norms=on_gpu)
    plain = layer_activation_bytes(dims, targets=[], **kw)
    adapted = layer_activation_bytes(dims, targets=targets, **kw)
    if not on_gpu:
        # SDPA's fused kernels on the GPU keep only the output and the log-sum-exp; CPU workers train
        # with the eager attention (robolora.kernels), which keeps the attention probabilities twice:
        # the float32 softmax output and its copy in the compute dtype that multiplies the values.
        plain += dims.heads * seq_len * (4 + w)
        adapted += dims.heads * seq_len * (4 + w)
    if gradient_checkpointing:
        # Each layer keeps only its input (the worker makes the embeddings require grad, so every layer
        # is in the graph), and one layer's activations exist again while it is recomputed.
        return tokens * (dims.layers * dims.hidden * w + adapted)
    # Without checkpointing only the layers from the lowest adapted one up are in the autograd graph:
    # nothing below them needs a gradient.
    lowest = min(lora_layers) if lora_layers else 0
    in_graph = dims.layers - lowest
    return tokens * (lora_count * adapted + (in_graph - lora_count) * plain)


def estimate_worker_memory(
    dims: ModelDims,
    *,
    lora_r: int,
    targets: Sequence[str],
    lora_dropout: bool,
    micro_batch: int,
    seq_len: int,
    workers: int,
    zero_stage: int,
    offload: str,
    bf16: bool,
    gradient_checkpointing: bool,
    on_gpu: bool,
    lora_layers: Sequence[int] | None = None,
    response_share: float = RESPONSE_SHARE,
    quantization: str | None = None,
) -> MemoryEstimate:
    """Peak memory of one worker's device (the GPU, or the host when training on the CPU); ``quantization``
    ("4bit", "8bit") for a base loaded quantized by bitsandbytes (QLoRA)."""
    w = 2 if bf16 else 4
    frozen_bytes = quantized_weight_bytes(dims, quantization, w) if quantization else None
    lora = dims.lora_params(lora_r, targets, lora_layers)
    # The largest module is a frozen one (LoRA's A and B are smaller than what they adapt), so ZeRO-3
    # gathers no gradient with it.
    states = model_states(
        dims.params(),
        lora,
        dims.largest_module_params(),
        0,
        workers=workers,
        zero_stage=zero_stage,
        offload=offload,
        bf16=bf16,
        on_gpu=on_gpu,
        frozen_bytes=frozen_bytes,
    )
    dequantized = dims.largest_linear_params() * w if quantization else 0
    tokens = micro_batch * seq_len
    activations = activation_memory(
        dims,
        tokens=tokens,
        seq_len=seq_len,
        w=w,
        lora_r=lora_r,
        targets=targets,
        lora_layers=lora_layers,
        lora_dropout=lora_dropout,
        gradient_checkpointing=gradient_checkpointing,
        on_gpu=on_gpu,
    )
    logits = math.ceil(tokens * response_share) * dims.vocab * (w + LOGIT_FP32_BYTES)
    margin = MARGIN_GPU if on_gpu else MARGIN_CPU + math.ceil(HEAP_SHARE_CPU * (activations + logits))
    return replace(states, activations=activations, logits=logits, margin=margin, dequantized=dequantized)
