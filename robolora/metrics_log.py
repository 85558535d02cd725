"""Rank 0's record of a training run in its output directory, as it goes.

Each logged row is appended to ``metrics.jsonl`` (which the driver prints and the report reads) and
its numbers sent to the run's experiment trackers (``--report-to``: TensorBoard scalars by default, W&B,
MLflow; :mod:`robolora.trackers`); a tiny progress file, replaced whole after every step, holds the step
counter the driver's progress bar follows. A resumed run first drops the rows past the checkpoint it
resumes from: those steps are trained and logged again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from robolora.fileio import atomic_write_text
from robolora.progress import METRICS, PROGRESS
from robolora.trackers import Tracker, forget_runs, is_number, load_settings, make_trackers, parse_report_to

#: What rank 0's worker writes at the end of the run: the final metrics the trackers get.
SUMMARY = "train_summary.json"


def row_scalars(row: dict[str, Any]) -> dict[str, float]:
    """The numbers a row plots: its finite values but step and time, each device's samples by rank.

    >>> row_scalars({"step": 3, "time": 1.0, "train_loss": 0.5, "note": "x", "devices": [{"util": 40}]})
    {'train_loss': 0.5, 'device/rank0/util': 40}
    """
    scalars = {key: value for key, value in row.items() if key not in ("step", "time") and is_number(value)}
    for rank, sample in enumerate(row.get("devices", [])):
        scalars.update({f"device/rank{rank}/{key}": value for key, value in sample.items() if is_number(value)})
    return scalars


class MetricsLog:
    """The metrics, tracker runs and progress file in ``out`` (written by rank 0 only).

    The trackers start when a run starts on rank 0 (:meth:`clear` from step 0, :meth:`truncate` when it
    resumes), before its first step: a tracker that cannot start stops the run before it trains. Once
    started, a tracker that fails to log (a server out of reach) is dropped with one warning line and the
    run goes on: ``metrics.jsonl`` keeps every row.
    """

    def __init__(self, out: Path):
        self.out = out
        self.rows: list[dict[str, Any]] = []
        self.trackers: list[Tracker] | None = None
        #: The last step each scalar was sent at (one value per scalar and step).
        self.last_steps: dict[str, int] = {}

    def start_trackers(self) -> None:
        """Start the run's trackers (once) with its resolved config (``config.yaml``, written by the driver)."""
        if self.trackers is not None:
            return
        config = self._config()
        names = parse_report_to(config.get("report_to") or "tensorboard")
        self.trackers = make_trackers(names, load_settings(self.out))
        for tracker in self.trackers:
            tracker.start(config, self.out.name, self.out)

    def _config(self) -> dict[str, Any]:
        from robolora.fileio import read_mapping

        path = self.out / "config.yaml"
        return read_mapping(path, flag="config.yaml") if path.is_file() else {}

    def clear(self) -> None:
        """A run that starts from step 0 starts a new ``metrics.jsonl`` and new tracker runs."""
        (self.out / METRICS).unlink(missing_ok=True)
        forget_runs(self.out)
        self.start_trackers()

    def truncate(self, step: int) -> None:
        """Keep the rows up to ``step``, the checkpoint a run resumes from (unreadable lines, a write cut
        short, go too); the trackers go on logging into the earlier attempts' runs."""
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
        self.start_trackers()

    def write(self, row: dict[str, Any]) -> None:
        """One row to metrics.jsonl (the driver prints it) and its scalars to the trackers."""
        row = {**row, "time": round(time.time(), 3)}  # wall clock: when it was logged (runs side by side)
        self.rows.append(row)
        with open(self.out / METRICS, "a") as f:
            f.write(json.dumps(row) + "\n")
        self.start_trackers()
        step = row["step"]
        # An evaluation row repeats its step's epoch: each scalar is sent once per step.
        fresh = {tag: value for tag, value in row_scalars(row).items() if self.last_steps.get(tag, 0) < step}
        self.last_steps.update(dict.fromkeys(fresh, step))
        for tracker in list(self.trackers or []):
            try:
                tracker.log(fresh, step)
            except Exception as e:  # metrics.jsonl has the row: a tracker's failure does not stop the run
                self._drop(tracker, e)

    def _drop(self, tracker: Tracker, error: Exception) -> None:
        print(
            f"--report-to {tracker.name}: logging failed ({type(error).__name__}: {error}); its run stops here, "
            f"the metrics go on into {self.out / METRICS}",
            flush=True,
        )
        assert self.trackers is not None
        self.trackers.remove(tracker)

    def progress(self, step: int, total_steps: int, epoch: int) -> None:
        """The step counter the driver's progress bar follows (a tiny file, replaced whole)."""
        tmp = self.out / (PROGRESS + ".tmp")
        tmp.write_text(json.dumps({"step": step, "total_steps": total_steps, "epoch": epoch}))
        tmp.replace(self.out / PROGRESS)

    def close(self) -> None:
        """End the tracker runs with the run's final metrics (its ``train_summary.json``, where written)."""
        if not self.trackers:  # every rank closes; rank 0 alone started trackers
            return
        path = self.out / SUMMARY
        final = json.loads(path.read_text()) if path.is_file() else {}
        for tracker in list(self.trackers):
            try:
                tracker.finish(final)
            except Exception as e:
                self._drop(tracker, e)
        self.trackers = None
