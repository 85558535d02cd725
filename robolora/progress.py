"""The driver's view of a running job: a progress bar and one line per logged row.

Rank 0 writes ``progress.json`` after every step and appends rows to ``metrics.jsonl``; a thread in
the driver follows both files, so the terminal shows a live bar and the log lines without routing
them through Ray's log forwarding.

Example:
    >>> format_row({"step": 20, "train_loss": 1.23456, "learning_rate": 1e-4, "tokens_per_s": 250.4}, 100)
    'step 20/100 | train_loss 1.2346 | lr 1.00e-04 | tokens/s 250'
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

METRICS = "metrics.jsonl"
PROGRESS = "progress.json"

_FIELDS = (
    ("train_loss", "train_loss", ".4f"),
    ("eval_loss", "eval_loss", ".4f"),
    ("learning_rate", "lr", ".2e"),
    ("tokens_per_s", "tokens/s", ".0f"),
    ("memory_mb", "mem_mb", ".0f"),
    ("gpu_mem_used_mb_max", "gpu_mem_mb", ".0f"),
    ("gpu_util_pct_mean", "gpu_util%", ".0f"),
    ("gpu_temp_c_max", "gpu_temp_c", ".0f"),
    ("gpu_power_w_total", "gpu_power_w", ".0f"),
)


def format_row(row: dict[str, Any], total_steps: int | None) -> str:
    """One human-readable log line for a metrics row."""
    parts = [f"step {row.get('step')}/{total_steps or '?'}"]
    parts += [f"{label} {row[key]:{fmt}}" for key, label, fmt in _FIELDS if key in row]
    return " | ".join(parts)


class ProgressWatcher(threading.Thread):
    """Follows ``progress.json`` and ``metrics.jsonl`` in an output directory until stopped."""

    def __init__(self, out: Path, interval_s: float = 0.5):
        super().__init__(daemon=True)
        self.out, self.interval_s = out, interval_s
        self.metrics = out / METRICS
        self._stop_event = threading.Event()
        self._offset = self.metrics.stat().st_size if self.metrics.is_file() else 0
        self._bar: Any = None
        self._total: int | None = None

    def _poll(self) -> None:
        from tqdm import tqdm

        try:
            progress = json.loads((self.out / PROGRESS).read_text())
        except (OSError, ValueError):
            progress = None
        if progress:
            if self._bar is None:
                self._total = progress["total_steps"]
                # disable=None: a bar on a terminal, only the log lines in a file or a CI log.
                self._bar = tqdm(total=self._total, desc="training", unit="step", dynamic_ncols=True, disable=None)
            self._bar.n = progress["step"]
            self._bar.refresh()
        if self.metrics.is_file():
            size = self.metrics.stat().st_size
            if size < self._offset:  # cut back to the checkpoint on resume: those rows were shown before
                self._offset = size
            with open(self.metrics) as f:
                f.seek(self._offset)
                chunk = f.read()
            complete = chunk[: chunk.rfind("\n") + 1]
            self._offset += len(complete.encode())
            for line in complete.splitlines():
                try:
                    text = format_row(json.loads(line), self._total)
                except ValueError:
                    continue
                (self._bar.write if self._bar else print)(text)

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            self._poll()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)
        self._poll()
        if self._bar is not None:
            self._bar.close()
