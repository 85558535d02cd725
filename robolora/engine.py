"""The model a worker trains and the DeepSpeed engine around it.

The base model is loaded frozen (under ZeRO-3 each worker loads only its shard of every weight),
LoRA adapters are added with the same initialisation on every rank, and DeepSpeed wraps the
response-only loss (:class:`robolora.loss.TargetLogitsLM`) with the client optimizer and schedule
(:mod:`robolora.optim`), built from the ZeRO stage's ``ds_configs`` template.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from robolora.ds_config import load_template, resolve
from robolora.kernels import training_attention, use_fast_dropout, use_fused_lora, use_fused_norms
from robolora.loss import TargetLogitsLM
from robolora.optim import build_optimizer, lr_schedule, param_groups

if TYPE_CHECKING:
    from robolora.config import TrainConfig


def deepspeed_config(cfg: TrainConfig, world: int, hidden_size: int | None) -> dict[str, Any]:
    """The DeepSpeed config of a resolved run from its ZeRO stage's template."""
    # In bf16 mode DeepSpeed casts the module to bf16 and keeps fp32 master copies of the LoRA
    # weights in the (sharded) optimizer, so updates do not lose precision.
    ds_config = resolve(
        load_template(cfg.zero_stage, cfg.offload),
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
    under ZeRO-3 the object that keeps transformers loading into shards: hold it as long as the model."""
    import deepspeed

    from robolora.models import load_model

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
        zero3_loading = HfDeepSpeedConfig(ds_config)
    model = load_model(
        cfg.model_name,
        dtype=dtype,
        trust_remote_code=cfg.trust_remote_code,
        attention=training_attention(cfg.use_gpu),
    )
    model.config.use_cache = False
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model, zero3_loading


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
