"""Rank 0's record of a training run in its output directory, as it goes.

Each logged row is appended to ``metrics.jsonl`` (which the driver prints and the report reads) and
its numbers written as TensorBoard scalars; a tiny progress file, replaced whole after every step,
holds the step counter the driver's progress bar follows. A resumed run first drops the rows past
the checkpoint it resumes from: those steps are trained and logged again.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from robolora.fileio import atomic_write_text
from robolora.progress import METRICS, PROGRESS


class MetricsLog:
    """The metrics, TensorBoard events and progress file in ``out`` (written by rank 0 only)."""

    def __init__(self, out: Path):
        self.out = out
        self.rows: list[dict[str, Any]] = []
        self.writer: Any = None
        #: The last step each TensorBoard scalar was written at (one value per scalar and step).
        self.tb_steps: dict[str, int] = {}

    def clear(self) -> None:
        """A run that starts from step 0 starts a new ``metrics.jsonl``."""
        (self.out / METRICS).unlink(missing_ok=True)

    def truncate(self, step: int) -> None:
        """Keep the rows up to ``step``, the checkpoint a run resumes from (unreadable lines, a write cut
        short, go too)."""
        path = self.out / METRICS
        if path.is_file():
            keep = []
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if row.get("step", 0) <= step:
                    keep.append(line)
            atomic_write_text(path, "".join(k + "\n" for k in keep))

    def write(self, row: dict[str, Any]) -> None:
        """One row to metrics.jsonl (the driver prints it) and its scalars to TensorBoard."""
        row = {**row, "time": round(time.time(), 3)}  # wall clock: when it was logged (runs side by side)
        self.rows.append(row)
        with open(self.out / METRICS, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # This attempt's first row: an earlier attempt (interrupted, or a worker group Ray Train restarted)
            # may have logged this step and later ones before it stopped; the new event file starts by purging
            # them, so that TensorBoard keeps one value per step, as metrics.jsonl does after its truncation.
            self.writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=row["step"])
        step = row["step"]
        scalars = {
            key: value
            for key, value in row.items()
            if key not in ("step", "time") and isinstance(value, (int, float)) and math.isfinite(value)
        }
        for rank, sample in enumerate(row.get("devices", [])):
            scalars.update({f"device/rank{rank}/{key}": value for key, value in sample.items()})
        for tag, value in scalars.items():
            if self.tb_steps.get(tag, 0) < step:  # an evaluation row repeats its step's epoch: written once
                self.writer.add_scalar(tag, value, step)
                self.tb_steps[tag] = step
        self.writer.flush()

    def progress(self, step: int, total_steps: int, epoch: int) -> None:
        """The step counter the driver's progress bar follows (a tiny file, replaced whole)."""
        tmp = self.out / (PROGRESS + ".tmp")
        tmp.write_text(json.dumps({"step": step, "total_steps": total_steps, "epoch": epoch}))
        tmp.replace(self.out / PROGRESS)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
