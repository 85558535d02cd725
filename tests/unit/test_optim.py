"""Optimizer groups: LoRA+ gives the B matrices a larger learning rate; without it, one group."""

from __future__ import annotations

import pytest
import torch

from robolora.config import TrainConfig
from robolora.errors import ConfigError
from robolora.optim import build_optimizer, param_groups


def _named() -> list[tuple[str, torch.nn.Parameter]]:
    names = ["layers.0.q_proj.lora_A.default.weight", "layers.0.q_proj.lora_B.default.weight"]
    return [(n, torch.nn.Parameter(torch.zeros(2, 2))) for n in names]


def test_loraplus_groups():
    named = _named()
    cfg = TrainConfig(learning_rate=1e-3, loraplus_lr_ratio=16)
    groups = param_groups(named, cfg)
    assert [len(g["params"]) for g in groups] == [1, 1]
    assert groups[1]["params"][0] is named[1][1]
    opt = build_optimizer(groups, cfg)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, pytest.approx(1.6e-2)]


def test_one_group_without_loraplus():
    opt = build_optimizer(param_groups(_named(), TrainConfig(learning_rate=1e-3)), TrainConfig(learning_rate=1e-3))
    assert [g["lr"] for g in opt.param_groups] == [1e-3]


def test_negative_ratio_refused():
    with pytest.raises(ConfigError, match="--loraplus-lr-ratio: must be a number >= 0, got -1"):
        TrainConfig(loraplus_lr_ratio=-1)
