"""Learning-rate schedules: linear warmup, then linear decay, cosine decay or constant.

The same shapes as Hugging Face's ``get_*_schedule_with_warmup``, as a multiplier of the peak rate.

Example:
    >>> [round(lr_factor(s, total_steps=10, warmup_steps=2, kind="linear"), 3) for s in (0, 1, 2, 6, 10)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    >>> round(lr_factor(6, total_steps=10, warmup_steps=2, kind="cosine"), 3)
    0.5
"""

from __future__ import annotations

import math


def warmup_steps_for(total_steps: int, warmup_ratio: float) -> int:
    """Warmup steps for a ratio, rounded up as Hugging Face does."""
    return math.ceil(total_steps * warmup_ratio)


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, kind: str) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based)."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if kind == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    if kind == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))
    raise ValueError(f"unknown schedule {kind!r}")
