"""The model a worker trains and the DeepSpeed engine around it.

The base model is loaded frozen (under ZeRO-3 each worker loads only its shard of every weight),
LoRA adapters are added with the same initialisation on every rank, and DeepSpeed wraps the
response-only loss (:class:`robolora.loss.TargetLogitsLM`) with the client optimizer and schedule
(:mod:`robolora.optim`), built from the ZeRO stage's ``ds_configs`` template.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from robolora.ds_config import load_template, merge_user_config, read_user_config, resolve
from robolora.kernels import training_attention, use_fast_dropout, use_fused_lora, use_fused_norms
from robolora.loss import TargetLogitsLM
from robolora.optim import build_optimizer, lr_schedule, param_groups

if TYPE_CHECKING:
    from robolora.config import TrainConfig


def deepspeed_config(cfg: TrainConfig, world: int, hidden_size: int | None) -> dict[str, Any]:
    """The DeepSpeed config of a resolved run from its ZeRO stage's template, with the user's
    ``--deepspeed`` file merged over it (checked against the run's settings when the config was built:
    :func:`robolora.config.with_deepspeed_file`)."""
    template = load_template(cfg.zero_stage, cfg.offload)
    if cfg.deepspeed:
        template = merge_user_config(template, read_user_config(cfg.deepspeed))
    # In bf16 mode DeepSpeed casts the module to bf16 and keeps fp32 master copies of the LoRA
    # weights in the (sharded) optimizer, so updates do not lose precision.
    ds_config = resolve(
        template,
        micro_batch=cfg.batch_size,
        grad_accum=cfg.gradient_accumulation_steps,
        world_size=world,
        bf16=cfg.bf16,
        grad_clip=cfg.max_grad_norm,
        hidden_size=hidden_size,
        pin_memory=cfg.use_gpu,
    )
    # Our client optimizer also serves offloaded states (DeepSpeed would insist on its CPU Adam),
    # and ZeRO shards SGD's states like Adam's (DeepSpeed only lists Adam variants as tested).
    ds_config["zero_force_ds_cpu_optimizer"] = False
    ds_config["zero_allow_untested_optimizer"] = True
    return ds_config


def load_base_model(cfg: TrainConfig, ds_config: dict[str, Any], dtype: torch.dtype) -> tuple[Any, Any]:
    """The frozen base model for training (no key/value cache; activation checkpointing if asked), and
    under ZeRO-3 the object that keeps transformers loading into shards: hold it as long as the model.

    With ``--quantization`` the Linear weights load quantized by bitsandbytes (QLoRA: NF4, matmuls in
    ``dtype``), straight onto this worker's device, and PEFT prepares the model for k-bit training.
    """
    import deepspeed

    from robolora.models import load_model

    quantization = cfg.quantization
    zero3_loading = None
    if cfg.zero_stage == 3:
        # While this object lives, transformers builds the model inside deepspeed.zero.Init and
        # loads each weight into its shard: no worker ever holds the whole frozen model.
        from deepspeed.accelerator import get_accelerator
        from transformers.integrations import HfDeepSpeedConfig

        # DeepSpeed's view of the process group Ray Train started (deepspeed.initialize does the same)
        deepspeed.comm.init_distributed(
            dist_backend=get_accelerator().communication_backend_name(), dist_init_required=False
        )
        # A quantized model is the exception: transformers skips zero.Init for it (and refuses the
        # device_map bitsandbytes needs while ZeRO-3 is announced), so every rank loads the whole
        # quantized model and deepspeed.initialize partitions it afterwards (bitsandbytes #1249, DeepSpeed
        # #5637); the memory planner counts the full quantized base on every GPU. The object is made
        # after the load then, for what transformers does differently under ZeRO-3 later.
        if not quantization:
            zero3_loading = HfDeepSpeedConfig(ds_config)
    device = torch.device("cuda", torch.cuda.current_device()) if cfg.use_gpu else torch.device("cpu")
    # A GPU worker under ZeRO-2 holds the whole model on its GPU: load it there weight by weight, rather than
    # into host memory first (eight workers of a node would each hold a full copy there while loading).
    straight_to_gpu = cfg.use_gpu and zero3_loading is None and not quantization
    model = load_model(
        cfg.model_name,
        dtype=dtype,
        trust_remote_code=cfg.trust_remote_code,
        attention=training_attention(cfg.use_gpu),
        quantization=quantization,
        device=device if quantization else None,
        placement={"device_map": {"": device}} if straight_to_gpu else None,
    )
    model.config.use_cache = False
    if quantization and cfg.zero_stage == 3:
        zero3_loading = HfDeepSpeedConfig(ds_config)
    if quantization:
        prepare_quantized(model, cfg, dtype)
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model, zero3_loading


def prepare_quantized(model: Any, cfg: TrainConfig, dtype: torch.dtype) -> None:
    """A bitsandbytes-quantized base made ready for LoRA training (PEFT's k-bit preparation), in the run's dtype."""
    from peft import prepare_model_for_kbit_training

    prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=cfg.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )
    # On CPUs with AVX512-BF16, bitsandbytes repacks a 4-bit weight in place at its first forward
    # without gradients (our evaluation) and unpacks it in state_dict: under ZeRO-3 that repacks a
    # gathered weight whose shard DeepSpeed later restores unpacked, and state_dict fails on the
    # shard ("packed_weight should be [N, K/2]"). Keep the trained layout throughout.
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    # PEFT upcasts every unquantized weight (embeddings, norms, LM head) to float32; back to the
    # run's dtype, so the planner's figures hold and ZeRO-3 partitions tensors of one dtype.
    for p in model.parameters():
        if p.dtype.is_floating_point and p.dtype != dtype and type(p).__name__ == "Parameter":
            p.data = p.data.to(dtype)
    if cfg.gradient_checkpointing:
        model.enable_input_require_grads()


def conv1d_targets(model: torch.nn.Module, targets: list[str]) -> bool:
    """Whether the modules LoRA adapts are transformers' ``Conv1D`` layers (GPT-2), whose weights are
    stored as (in, out): PEFT's ``fan_in_fan_out``."""
    from transformers.pytorch_utils import Conv1D

    from robolora.targets import matches

    adapted = [m for n, m in model.named_modules() if any(matches(t, n) for t in targets)]
    return bool(adapted) and all(isinstance(m, Conv1D) for m in adapted)


def apply_lora(model: Any, cfg: TrainConfig) -> Any:
    """``model`` as a PEFT model with the run's LoRA adapters (the ``--resume-from`` weights if given)."""
    from peft import LoraConfig, get_peft_model

    from robolora.checkpoints import load_adapter_weights

    torch.manual_seed(cfg.seed)  # identical LoRA initialisation on every rank
    targets = cfg.target_modules()  # resolved for the model by the driver (robolora.targets.resolve_targets)
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        # GPT-2's Conv1D layers keep their weight as (in, out): PEFT must know to merge and save it so.
        fan_in_fan_out=conv1d_targets(model, targets),
        layers_to_transform=cfg.lora_layer_indices(model.config.num_hidden_layers),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    if cfg.use_gpu:
        use_fused_norms(model)
    else:
        use_fast_dropout(model)
    use_fused_lora(model)
    if cfg.resume_from:  # already absolute: the driver makes every local path so (config.absolute_paths)
        load_adapter_weights(model, cfg.resume_from)
    return model


def initialize_engine(
    model: Any, cfg: TrainConfig, ds_config: dict[str, Any], dtype: torch.dtype, total_steps: int
) -> tuple[Any, Any, torch.optim.Optimizer]:
    """The DeepSpeed engine over ``model`` with the response-only loss, its scheduler, and our optimizer."""
    import deepspeed

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if cfg.zero_stage == 3:
        # The adapters were created after the sharded load, in PEFT's float32; DeepSpeed casts a
        # module it builds whole (ZeRO-2), not one already sharded: the same dtype either way.
        for _, p in named:
            p.data = p.data.to(dtype)
    optimizer = build_optimizer(param_groups(named, cfg), cfg)
    engine, _, _, scheduler = deepspeed.initialize(
        model=TargetLogitsLM(model),
        optimizer=optimizer,
        lr_scheduler=lr_schedule(cfg, total_steps),
        config=ds_config,
        dist_init_required=False,
    )
    return engine, scheduler, optimizer


def trainable_params(model: Any) -> int:
    """The number of weights training updates (the adapters'); counted before DeepSpeed partitions them."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def total_params(model: Any) -> int:
    """The number of the model's weights, counted whole where ZeRO-3 shards them."""
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())


def activation_checkpointing(model: Any) -> bool:
    """Whether activation checkpointing is on (the property's name changed in transformers 5)."""
    if hasattr(type(model), "is_activation_checkpointing"):
        return bool(model.is_activation_checkpointing)
    return bool(model.is_gradient_checkpointing)
