"""The optimizer and learning-rate schedule the DeepSpeed engine wraps.

The worker builds the client optimizer over the trainable (LoRA) parameters, in LoRA+ groups where
asked, and hands DeepSpeed a function that builds the schedule around the optimizer it returns. ZeRO
shards the optimizer's fp32 states across workers either way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from robolora.schedule import lr_factor, warmup_steps_for

if TYPE_CHECKING:
    from robolora.config import TrainConfig


def param_groups(named: list[tuple[str, torch.nn.Parameter]], cfg: TrainConfig) -> list[dict[str, Any]]:
    """The trainable parameters as optimizer groups: with LoRA+ the B matrices learn ``ratio`` times faster.

    LoRA+ (Hayou et al., 2024): A and B play different roles, and a larger step for B lets the adapter
    learn faster at the same stability. Without it there is one group.
    """
    ratio = cfg.loraplus_lr_ratio
    if not ratio:
        return [{"params": [p for _, p in named]}]
    b = [p for n, p in named if ".lora_B." in n]
    rest = [p for n, p in named if ".lora_B." not in n]
    return [{"params": rest}, {"params": b, "lr": cfg.learning_rate * ratio}]


def build_optimizer(params: list[dict[str, Any]], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The client optimizer DeepSpeed wraps (ZeRO keeps its fp32 states sharded)."""
    if cfg.optim == "sgd":
        return torch.optim.SGD(params, lr=cfg.learning_rate, momentum=0.9, weight_decay=cfg.weight_decay)
    fused = cfg.optim == "adamw_torch_fused"
    return torch.optim.AdamW(
        params,
        lr=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        fused=fused or None,
        foreach=None if fused else True,
    )


def lr_schedule(
    cfg: TrainConfig, total_steps: int
) -> Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LambdaLR]:
    """The learning-rate schedule as ``deepspeed.initialize`` takes it: a function of the optimizer, since
    DeepSpeed schedules the optimizer it builds around ours (warmup, then ``--lr-scheduler-type``)."""
    warmup = warmup_steps_for(total_steps, cfg.warmup_ratio)

    def schedule(opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        def factor(step: int) -> float:
            return lr_factor(step, total_steps=total_steps, warmup_steps=warmup, kind=cfg.lr_scheduler_type)

        return torch.optim.lr_scheduler.LambdaLR(opt, factor)

    return schedule
