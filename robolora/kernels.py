"""Faster CPU equivalents of what the training loop runs most, chosen where a profile showed them.

- :class:`FastDropout`: PEFT's LoRA dropout (``torch.nn.Dropout``) draws one Bernoulli number per
  element; on a 2-core CPU that took 15% of a training step. This draws only the positions that are
  dropped, as the geometric gaps between them (about ``p`` draws per element instead of one), from
  the same seeded generator: the same distribution of masks, at a fraction of the cost.
- :func:`training_attention`: on the CPU, the eager attention (plain matmuls) trains faster than
  PyTorch's fused CPU attention kernel, whose backward pass is slow for the short sequences of robot
  commands; on a GPU the fused kernels win.

Only the CPU path changes; results keep their meaning (same dropout rate, same attention maths).
"""

from __future__ import annotations

import math

import torch


def drop_positions(n: int, p: float, first_draw: int | None = None) -> torch.Tensor:
    """Sorted flat positions in ``range(n)``, each included independently with probability ``p``.

    The gap from one dropped position to the next is geometric: ``floor(log(1 - u) / log(1 - p)) + 1``
    for a uniform ``u``. Enough gaps to pass ``n`` are drawn at once almost always (the expected count
    plus six standard deviations); if not, more are drawn until they do.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if p == 0.0 or n == 0:
        return torch.empty(0, dtype=torch.long)
    log_keep = math.log1p(-p)
    want = first_draw or int(n * p + 6 * math.sqrt(n * p * (1 - p)) + 16)
    parts, reached = [], 0.0
    while reached < n:
        gaps = torch.rand(want, dtype=torch.float64).neg_().log1p_().div_(log_keep).floor_().add_(1)
        ends = gaps.cumsum_(0).add_(reached)
        parts.append(ends)
        reached = float(ends[-1])
        want = int(max(16, (n - reached) * p * 2))
    positions = (torch.cat(parts) if len(parts) > 1 else parts[0]).sub_(1)
    return positions[positions < n].long()


class _Dropout(torch.autograd.Function):
    """``x * scale`` with the given flat positions zeroed, and the same for its gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, positions: torch.Tensor, scale: float) -> torch.Tensor:
        out = x.mul(scale).contiguous()
        out.view(-1).index_fill_(0, positions, 0)
        ctx.save_for_backward(positions)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (positions,) = ctx.saved_tensors
        out = grad.mul(ctx.scale).contiguous()
        out.view(-1).index_fill_(0, positions, 0)
        return out, None, None


class FastDropout(torch.nn.Module):
    """``torch.nn.Dropout`` with a cheaper mask on CPU tensors (other devices use the native kernel).

    Each element is zeroed independently with probability ``p`` and the rest scaled by ``1 / (1 - p)``;
    the positions come from the default (seeded) generator, so runs repeat.
    """

    def __init__(self, p: float):
        super().__init__()
        drop_positions(0, p)  # validates p
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return torch.nn.functional.dropout(x, self.p, True)
        return _Dropout.apply(x, drop_positions(x.numel(), self.p), 1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_fast_dropout(model: torch.nn.Module) -> int:
    """Replace every ``torch.nn.Dropout`` inside PEFT's LoRA dropout containers; returns how many."""
    replaced = 0
    for module in model.modules():
        container = getattr(module, "lora_dropout", None)
        if not isinstance(container, torch.nn.ModuleDict):
            continue
        for name, dropout in container.items():
            if isinstance(dropout, torch.nn.Dropout):
                container[name] = FastDropout(dropout.p)
                replaced += 1
    return replaced


def training_attention(use_gpu: bool) -> str | None:
    """The attention implementation to train with: eager on the CPU; the model's default on a GPU."""
    return None if use_gpu else "eager"
