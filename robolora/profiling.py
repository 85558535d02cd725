"""``--profile-steps``: torch.profiler over a range of optimizer steps on rank 0.

It writes ``<output-dir>/profile/summary.txt`` (the wall time per step, the device's busy share and the
operators that cost the most device and host time) and ``trace.json`` for chrome://tracing or Perfetto.
The window covers forward, backward and optimizer step; evaluation and checkpoints are left out.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

ROWS = 25


class StepProfiler:
    """Start before the first step of ``steps``, stop after the last; a no-op elsewhere."""

    def __init__(self, steps: tuple[int, int] | None, out: Path, device: torch.device):
        self.steps = steps
        self.out = out / "profile"
        self.device = device
        self._prof: Any = None
        self._start = 0.0

    def before(self, step: int) -> None:
        """``step`` (from 1) is about to run."""
        if self.steps is None or self._prof is not None or step != self.steps[0]:
            return
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
        self._sync()
        self._prof = profile(activities=activities)
        self._prof.start()
        self._start = time.perf_counter()

    def after(self, step: int) -> None:
        """``step`` has run: the window closes after its last step."""
        if self._prof is None or self.steps is None or step < self.steps[1]:
            return
        self._sync()
        wall = time.perf_counter() - self._start
        self._prof.stop()
        count = step - self.steps[0] + 1
        self.out.mkdir(parents=True, exist_ok=True)
        self._prof.export_chrome_trace(str(self.out / "trace.json"))
        (self.out / "summary.txt").write_text(summary(self._prof, wall, count, self.steps, self.device.type))
        self._prof, self.steps = None, None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def summary(prof: Any, wall: float, count: int, steps: tuple[int, int], device_type: str) -> str:
    averages = prof.key_averages()
    lines = [f"steps {steps[0]}-{steps[0] + count - 1}: {wall / count * 1000:.1f} ms per step (wall)"]
    tables = [("self_cpu_time_total", "host")]
    if device_type == "cuda":
        from torch.autograd import DeviceType

        # The kernels themselves (operators also carry their kernels' time, which would count it twice)
        busy = sum(e.self_device_time_total for e in averages if e.device_type == DeviceType.CUDA) / 1e6
        lines.append(f"device kernels: {busy / count * 1000:.1f} ms per step, busy {busy / wall:.0%} of the wall time")
        tables.insert(0, ("self_device_time_total", "device"))
    for key, label in tables:
        lines += ["", f"operators by self {label} time", averages.table(sort_by=key, row_limit=ROWS)]
    return "\n".join(lines) + "\n"
