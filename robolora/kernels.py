"""Faster equivalents of what the training loop runs most, chosen where a profile showed them.

- :class:`FastDropout`: PEFT's LoRA dropout (``torch.nn.Dropout``) draws one Bernoulli number per
  element; on a 2-core CPU that took 15% of a training step. This draws only the positions that are
  dropped, as the geometric gaps between them (about ``p`` draws per element instead of one), from
  the same seeded generator: the same distribution of masks, at a fraction of the cost.
- :func:`use_fused_lora`: PEFT's LoRA branch runs as five operations with autograd between them
  (dropout, ``A``, ``B``, the ``scaling`` multiply, the add to the base output), each a full pass over
  the activations forward and back (on the CPU) or a kernel launch and its Python around it (on a GPU,
  1-2% of a 7B LoRA step on one H100). Fused into one autograd function, ``scaling``
  rides inside the last matrix multiply (which also adds the base output), and the backward pass
  scales only the rank-``r`` intermediate.
- :func:`use_fused_norms`: on a GPU, Llama's RMSNorm runs as eight kernels forward (to float32,
  square, mean, add, reciprocal square root, multiply, back to the input dtype, times the weight) and
  more backward, most a full pass over the activations: 65 norms in a 7B model.
  ``torch.nn.functional.rms_norm`` is one fused kernel there, forward and backward. (On the CPU it
  decomposes into the same passes: nothing to gain.)
- :func:`training_attention`: on the CPU, the eager attention (plain matmuls) trains faster than
  PyTorch's fused CPU attention kernel, whose backward pass is slow for the short sequences of robot
  commands; on a GPU the fused kernels win.
- :func:`use_shape_free_attention`: on a GPU, PyTorch's cuDNN attention builds an execution plan for
  every new batch shape; length-grouped batches bring a new shape most steps.

Results keep their meaning (same dropout rate, same attention maths).
"""

from __future__ import annotations

import functools
import math
from typing import Any

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
    return positions[: int(torch.searchsorted(positions, float(n)))].long()  # sorted: cut where n would go


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


class _LoraBranch(torch.autograd.Function):
    """``result + scale * (dropout(x) @ a.T) @ b.T`` and its gradients, with one of two dropouts:

    - ``positions``, flat positions of ``x`` to zero (the CPU's :func:`drop_positions`); zeroing is
      all it does to the activations, its ``1 / (1 - p)`` is part of ``scale``;
    - ``p``, a rate for ``torch.native_dropout`` (other devices): one kernel draws the mask and
      scales the kept elements, as ``torch.nn.Dropout`` does there (the same draws for the same seed).
    """

    @staticmethod
    def forward(ctx, result, x, a, b, positions, p, scale):
        h = x.reshape(-1, x.shape[-1])
        mask = None
        if p > 0:
            h, mask = torch.native_dropout(h, p, True)
        elif positions.numel():
            h = h.clone()
            h.view(-1).index_fill_(0, positions, 0)
        u = h @ a.t()
        out = torch.addmm(result.reshape(-1, result.shape[-1]), u, b.t(), alpha=scale)
        ctx.save_for_backward(h, u, a, b, positions, mask)
        ctx.scale, ctx.x_shape, ctx.p = scale, x.shape, p
        return out.view(result.shape)

    @staticmethod
    def backward(ctx, grad):
        h, u, a, b, positions, mask = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        gu = (g @ b).mul_(ctx.scale)
        gx = ga = gb = None
        if ctx.needs_input_grad[1]:
            gx = gu @ a
            if mask is not None:
                gx = torch.ops.aten.native_dropout_backward(gx, mask, 1.0 / (1.0 - ctx.p))
            elif positions.numel():
                gx.view(-1).index_fill_(0, positions, 0)
            gx = gx.view(ctx.x_shape)
        if ctx.needs_input_grad[2]:
            ga = gu.t() @ h
        if ctx.needs_input_grad[3]:
            gb = (g.t() @ u).mul_(ctx.scale)
        return grad, gx, ga, gb, None, None, None


#: The dropouts a fused branch reproduces by their rate ``p`` (``torch.nn.Identity`` is PEFT's rate 0).
_RATE_DROPOUTS = (FastDropout, torch.nn.Dropout)
_NO_POSITIONS = torch.empty(0, dtype=torch.long)


def _fusable(layer: torch.nn.Module, x: torch.Tensor) -> str | None:
    """The one active adapter of a PEFT LoRA ``Linear`` if its branch is a plain LoRA the fused function
    computes exactly: unmerged, without DoRA or bias, on a plain ``torch.nn.Linear`` base (not GPT-2's
    ``Conv1D``), weights whole (not ZeRO-3 shards) and all of the input's dtype. ``None`` otherwise."""
    if layer.disable_adapters or layer.merged:
        return None
    # Other bases (GPT-2's Conv1D, whose weight is stored transposed: PEFT's fan_in_fan_out) keep PEFT's forward.
    if type(layer.base_layer) is not torch.nn.Linear or getattr(layer, "fan_in_fan_out", False):
        return None
    active = [n for n in layer.active_adapters if n in layer.lora_A]
    if len(active) != 1 or active[0] in getattr(layer, "lora_variant", {}):
        return None
    name = active[0]
    a, b = layer.lora_A[name], layer.lora_B[name]
    if not (type(a) is torch.nn.Linear and type(b) is torch.nn.Linear) or a.bias is not None or b.bias is not None:
        return None
    if hasattr(a.weight, "ds_id") or hasattr(b.weight, "ds_id"):
        return None
    if not (x.dtype == layer.base_layer.weight.dtype == a.weight.dtype == b.weight.dtype):
        return None
    if not isinstance(layer.lora_dropout[name], (*_RATE_DROPOUTS, torch.nn.Identity)):
        return None
    return name


def _fused_forward(layer: torch.nn.Module, original: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    name = None if args or kwargs else _fusable(layer, x)
    if name is None:
        return original(x, *args, **kwargs)
    dropout = layer.lora_dropout[name]
    p = dropout.p if dropout.training and isinstance(dropout, _RATE_DROPOUTS) else 0.0
    result = layer.base_layer(x)
    a, b = layer.lora_A[name].weight, layer.lora_B[name].weight
    if x.device.type != "cpu":
        return _LoraBranch.apply(result, x, a, b, _NO_POSITIONS, p, layer.scaling[name])
    positions = drop_positions(x.numel(), p) if p > 0 else _NO_POSITIONS
    return _LoraBranch.apply(result, x, a, b, positions, 0.0, layer.scaling[name] / (1.0 - p))


def use_fused_lora(model: torch.nn.Module) -> int:
    """Route every PEFT LoRA ``Linear`` through the fused branch; returns how many.

    Each layer checks at every call that its branch is one the fused function computes exactly (see
    :func:`_fusable`) and otherwise runs PEFT's own forward, so merging, disabling adapters, several
    adapters or ZeRO-3 shards keep PEFT's behaviour.
    """
    from peft.tuners.lora import Linear

    count = 0
    for module in model.modules():
        if type(module) is Linear and not getattr(module, "_robolora_fused", False):
            module.forward = functools.partial(_fused_forward, module, module.forward)
            module._robolora_fused = True
            count += 1
    return count


def _rms_norm(norm: torch.nn.Module, original: Any, x: torch.Tensor) -> torch.Tensor:
    if x.device.type == "cpu" or x.dtype != norm.weight.dtype:
        return original(x)  # Llama's forward promotes a bf16 input with a float32 weight to float32
    return torch.nn.functional.rms_norm(x, (x.shape[-1],), norm.weight, norm.variance_epsilon)


def use_fused_norms(model: torch.nn.Module) -> int:
    """Run every Llama RMSNorm as ``torch.nn.functional.rms_norm`` on GPUs; returns how many norms.

    The same maths: the mean square in float32, the activations scaled by its reciprocal square root,
    times the weight. The fused kernel rounds to the input's dtype once, after the weight, where Llama's
    passes also round before it: in bf16 a quarter of the results differ, by one or two bf16 steps
    (emulated on 4096 x 4096 random activations). CPU tensors, and a weight of another dtype than the
    input's, keep Llama's own forward.
    """
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    count = 0
    for module in model.modules():
        if type(module).forward is LlamaRMSNorm.forward and "forward" not in vars(module):
            module.forward = functools.partial(_rms_norm, module, module.forward)
            count += 1
    return count


def training_attention(use_gpu: bool) -> str | None:
    """The attention implementation to train with: eager on the CPU; the model's default on a GPU."""
    return None if use_gpu else "eager"


def use_shape_free_attention() -> None:
    """Leave cuDNN out of the kernels PyTorch's fused attention chooses from on a GPU.

    cuDNN builds an execution plan for every new (batch, length) shape it sees, a large fraction of a
    second forward and backward, and length-grouped batches (or generation, one token longer each
    step) bring a new shape most steps. FlashAttention and the memory-efficient kernel need no plan.
    """
    if torch.cuda.is_available():
        torch.backends.cuda.enable_cudnn_sdp(False)
