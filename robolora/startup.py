"""Where the time before the first training step goes, from wall-clock marks.

The driver marks when the command started, when the pre-training checks and Ray were ready; each
worker adds when it started, when its data was tokenized, the model loaded (with LoRA), the DeepSpeed
engine built and the first optimizer step done. Rank 0 prints one line and keeps the phases in
``train_summary.json``.

    >>> marks = {"start": 100.0, "checks": 101.5, "ray": 104.0, "worker": 106.0, "first_step": 111.0}
    >>> phases(marks)
    {'checks': 1.5, 'ray': 2.5, 'worker': 2.0, 'first_step': 5.0, 'total': 11.0}
    >>> describe(marks)
    'start-up: 11.0 s to the first step (checks 1.5, Ray 2.5, workers 2.0, first step 5.0)'
"""

from __future__ import annotations

PHASES = (
    ("checks", "checks"),
    ("ray", "Ray"),
    ("worker", "workers"),
    ("data", "data"),
    ("model", "model load"),
    ("engine", "DeepSpeed init"),
    ("first_step", "first step"),
)


def phases(marks: dict[str, float]) -> dict[str, float]:
    """Seconds in each phase that has a mark, and ``total`` from the start to the last mark."""
    out: dict[str, float] = {}
    start = previous = marks["start"]
    for key, _ in PHASES:
        if key in marks:
            out[key] = round(marks[key] - previous, 3)
            previous = marks[key]
    out["total"] = round(previous - start, 3)
    return out


def describe(marks: dict[str, float]) -> str:
    seconds = phases(marks)
    parts = ", ".join(f"{label} {seconds[key]:.1f}" for key, label in PHASES if key in seconds)
    return f"start-up: {seconds['total']:.1f} s to the first step ({parts})"
