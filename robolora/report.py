"""A run's outputs for people: its ``metrics.jsonl`` in, a loss-curve PNG and a model card out.

Example:
    >>> from robolora.config import TrainConfig
    >>> from robolora.diagnose import diagnose
    >>> rows = [{"step": s, "train_loss": loss} for s, loss in [(10, 1.2), (20, 0.6), (30, 0.3)]]
    >>> card = model_card(TrainConfig(data_json="robot.json").to_dict(), rows, diagnose(rows))
    >>> card.splitlines()[:3]
    ['---', 'library_name: peft', 'base_model: codellama/CodeLlama-7b-Python-hf']
"""

from __future__ import annotations

import io
import json
import os
import statistics
import warnings
from pathlib import Path
from typing import Any

import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from robolora.diagnose import EXCELLENT_LOSS, GOOD_LOSS, Diagnosis, fmt_loss, series
from robolora.errors import UserError
from robolora.fileio import atomic_write_bytes

PLOT_PIXELS = (1000, 700)
PLOT_DPI = 100


def read_metrics(path: str | os.PathLike[str]) -> list[dict]:
    """The rows of a ``metrics.jsonl``, one dict per logging event.

    A line that is not a JSON object is skipped: the last one silently (a crash cut its write short),
    others with a warning (a run resumed after such a crash appends to the cut line).

    Raises:
        UserError: the file does not exist.
    """
    path = Path(path)
    try:
        # errors="replace": a write cut inside a multi-byte character spoils one line, not the file.
        lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; a run writes metrics.jsonl into its --output-dir") from None
    rows = []
    for n, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        elif n < len(lines):
            warnings.warn(f"{path}: line {n}: skipped, not a JSON object", stacklevel=2)
    return rows


def plot_loss_curve(rows: list[dict], path: str | os.PathLike[str], title: str | None = None) -> Path:
    """Draw train and eval loss, and below them the learning rate, against optimizer steps into a PNG.

    The guide's good and excellent loss thresholds are drawn as reference lines. The file is written
    beside ``path`` and renamed into place, so a viewer never sees half a PNG.
    """
    # Figure + FigureCanvasAgg, not pyplot: no global backend switch or figure registry to leak
    # into other code in the process (Ray workers, notebooks).
    fig = Figure(figsize=(PLOT_PIXELS[0] / PLOT_DPI, PLOT_PIXELS[1] / PLOT_DPI), dpi=PLOT_DPI, layout="constrained")
    canvas = FigureCanvasAgg(fig)
    loss_ax, lr_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    # Markers too: a value between two non-finite ones has no line to sit on.
    for key, label, style in (("train_loss", "train loss", ".-"), ("eval_loss", "eval loss", "o-")):
        points = series(rows, key)
        if points:
            loss_ax.plot([s for s, _ in points], [v for _, v in points], style, label=label)
    for bound, name in ((GOOD_LOSS, "good"), (EXCELLENT_LOSS, "excellent")):
        loss_ax.axhline(bound, color="grey", linestyle=":", linewidth=1, label=f"{name} (< {bound})")
    loss_ax.set(ylabel="loss", title=title or "Training loss")
    loss_ax.legend()
    lr = series(rows, "learning_rate")
    lr_ax.plot([s for s, _ in lr], [v for _, v in lr], color="tab:green", label="learning rate")
    lr_ax.set(xlabel="optimizer step", ylabel="learning rate")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))  # 1e-4, not 0.0001
    lr_ax.legend()
    for ax in (loss_ax, lr_ax):
        ax.grid(alpha=0.3)

    buffer = io.BytesIO()
    canvas.print_png(buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _resolved(value: Any) -> str:
    return "planned" if value is None else str(value)


# ----------------------------------------------------------------------------- parts of both model cards
# The run's card (model_card) and the exported model's (robolora.export.export_card) share these.


def table(header: str, pairs: list[tuple[str, str]], value_header: str = "value") -> list[str]:
    """A two-column Markdown table of ``(name, value)`` rows."""
    return [f"| {header} | {value_header} |", "|---|---|", *(f"| {name} | {value} |" for name, value in pairs)]


def front_matter(fields: dict[str, Any]) -> list[str]:
    """Hugging Face model-card metadata: ``fields`` as YAML between ``---`` lines, in their own order."""
    return ["---", yaml.safe_dump(fields, sort_keys=False, default_flow_style=None).strip(), "---"]


def section(title: str, body: list[str]) -> list[str]:
    """A card's ``## title`` section, a blank line after the heading and after ``body``."""
    return [f"## {title}", "", *body, ""]


def lora_lines(base: str, r: Any, alpha: Any, dropout: Any, target_modules: Any) -> list[str]:
    """The base model and LoRA settings that open a card's Model section; each card formats its own values."""
    return [
        f"- base model: `{base}`",
        f"- LoRA: r={r}, alpha={alpha}, dropout={dropout}",
        f"- target modules: `{target_modules}`",
    ]


# ----------------------------------------------------------------------------- the run's model card


def model_card(config: dict, rows: list[dict], diagnosis: Diagnosis, extra: dict | None = None) -> str:
    """The README.md of a run's output directory, with Hugging Face model-card front matter.

    Args:
        config: ``TrainConfig.to_dict()`` of the run.
        rows: its metric rows (:func:`read_metrics`).
        diagnosis: ``diagnose(rows, config)``.
        extra: what the run resolved, where the config says "planned": ``workers``, ``zero_stage``,
            ``offload``, ``global_batch``; and ``wall_time_s`` as the driver measured it (default: the
            largest ``elapsed_s`` logged).
    """
    c, x = config, extra or {}
    front = {
        "library_name": "peft",
        "base_model": c["model_name"],
        "pipeline_tag": "text-generation",
        "tags": ["lora", "robotics", "robolora"],
    }
    lora = lora_lines(c["model_name"], c["lora_r"], c["lora_alpha"], f"{c['lora_dropout']:g}", c["lora_target_modules"])
    lines = [
        *front_matter(front),
        "",
        f"# Robot-LoRA adapter for {c['model_name']}",
        "",
        "A LoRA adapter that turns natural-language robot commands into robot API code, trained with robolora.",
        "",
        *section("Model", lora),
        *section("Data", _data_lines(c)),
        *section("Training", table("setting", _training_settings(c, x))),
        *section("Results", table("metric", _results(rows, diagnosis, x))),
        *section(f"Diagnosis: {diagnosis.verdict}", _diagnosis_lines(diagnosis)),
        *section("Usage", _adapter_usage(c["model_name"], c["output_dir"])),
    ]
    return "\n".join(lines)


def _data_lines(c: dict) -> list[str]:
    """The dataset file(s) the run read, and how its validation split was made."""
    if c["data_json"]:
        return [f"- `{c['data_json']}`, {c['val_ratio']:.0%} of each category held out for validation"]
    return [f"- training: `{c['train_json']}`", f"- validation: `{c['val_json']}`"]


def _training_settings(c: dict, x: dict) -> list[tuple[str, str]]:
    """The run's length, batch, schedule and distribution, as resolved where ``x`` (the run's extra) says."""
    batch = f"{c['batch_size']} per worker x {c['gradient_accumulation_steps']} accumulation steps"
    if "global_batch" in x:
        batch += f" = {x['global_batch']} per optimizer step"
    return [
        (
            ("length", f"{c['max_steps']} optimizer steps (--max-steps, which overrides --num-epochs)")
            if c["max_steps"] > 0
            else ("epochs", f"{c['num_epochs']:g}")
        ),
        ("batch", batch),
        ("learning rate", f"{c['learning_rate']:g}, {c['lr_scheduler_type']} schedule, {c['warmup_ratio']:.0%} warmup"),
        ("optimizer", c["optim"]),
        ("DeepSpeed ZeRO stage", _resolved(x.get("zero_stage", c["zero_stage"]))),
        ("CPU offload", _resolved(x.get("offload", c["offload"]))),
        ("workers", _resolved(x.get("workers", c["num_workers"]))),
    ]


def _results(rows: list[dict], diagnosis: Diagnosis, x: dict) -> list[tuple[str, str]]:
    """Steps, losses, speed, memory and wall time of the run; ``n/a`` where nothing was logged."""
    speeds = [r["tokens_per_s"] for r in rows if r.get("tokens_per_s") is not None]
    memory = [r["memory_mb"] for r in rows if r.get("memory_mb") is not None]
    elapsed = [r["elapsed_s"] for r in rows if r.get("elapsed_s") is not None]
    wall = x.get("wall_time_s", max(elapsed, default=None))
    best = "n/a"
    if diagnosis.best_eval_loss is not None:
        best = f"{fmt_loss(diagnosis.best_eval_loss)} at step {diagnosis.best_eval_step}"
    return [
        ("optimizer steps", str(rows[-1]["step"]) if rows else "n/a"),
        ("final train loss", fmt_loss(diagnosis.final_train_loss)),
        ("final eval loss", fmt_loss(diagnosis.final_eval_loss)),
        ("best eval loss", best),
        ("tokens/s (mean)", f"{statistics.fmean(speeds):.1f}" if speeds else "n/a"),
        ("peak memory", f"{max(memory):.0f} MB" if memory else "n/a"),
        ("wall time", "n/a" if wall is None else _duration(wall)),
    ]


def _diagnosis_lines(diagnosis: Diagnosis) -> list[str]:
    """The diagnosis's findings, then its remedies where it has any."""
    remedies = ["", "Remedies:", "", *(f"- {r}" for r in diagnosis.remedies)] if diagnosis.remedies else []
    return [*(f"- {f}" for f in diagnosis.findings), *remedies]


def _adapter_usage(model_name: str, out: str) -> list[str]:
    """How to load the adapter onto its base model, and how to try it."""
    return [
        "```python",
        "from peft import PeftModel",
        "from robolora.models import load_model  # also resolves aliases such as smollm2-135m",
        "",
        f'base = load_model("{model_name}")',
        f'model = PeftModel.from_pretrained(base, "{out}")',
        "```",
        "",
        "```bash",
        f"robolora demo --lora-path {out}",
        "```",
    ]


def run_summary(rows: list[dict]) -> dict[str, Any]:
    """A run's results from its whole ``metrics.jsonl``: the last train and eval loss, the best eval loss,
    the last step. A resumed run reads the rows of every attempt, so a run resumed at its end loses nothing.

    >>> run_summary([{"step": 1, "train_loss": 2.0}, {"step": 2, "train_loss": 1.0}, {"step": 2, "eval_loss": 1.5},
    ...     {"step": 3, "train_loss": 0.5}, {"step": 3, "eval_loss": 1.7}])
    {'train_loss': 0.5, 'eval_loss': 1.7, 'best_eval_loss': 1.5, 'best_eval_step': 2, 'last_step': 3}
    >>> run_summary([])
    {'train_loss': None, 'eval_loss': None, 'best_eval_loss': None, 'best_eval_step': None, 'last_step': 0}
    """
    train, evals = series(rows, "train_loss"), series(rows, "eval_loss")
    best = min(evals, key=lambda p: p[1]) if evals else None
    return {
        "train_loss": train[-1][1] if train else None,
        "eval_loss": evals[-1][1] if evals else None,
        "best_eval_loss": best[1] if best else None,
        "best_eval_step": best[0] if best else None,
        "last_step": max((r["step"] for r in rows if isinstance(r.get("step"), int)), default=0),
    }
