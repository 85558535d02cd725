"""A sweep's results: what each variant's folder holds, the comparison, the best variant and the members' vote.

Everything here reads the files the runs wrote (``train_summary.json``, ``metrics.jsonl``, ``config.yaml``,
``eval.json``, ``eval_predictions.jsonl``) or writes the sweep's report from them; nothing trains. The
sweep itself (its file, its variants, running them on Ray Tune) is :mod:`robolora.sweep`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from robolora.errors import UserError
from robolora.evaluate import EvalSettings
from robolora.fileio import atomic_write_bytes, atomic_write_text
from robolora.runrecord import run_finished

#: The metrics a sweep can rank by, and whether higher is better.
METRICS = {"semantic": True, "exact": True, "api_valid": True, "syntax": True, "eval_loss": False}
#: The rows a run logs as it trains (see :mod:`robolora.report`).
METRICS_FILE = "metrics.jsonl"
#: Largest summary or evaluation file a sweep reads back (an evaluation holds a table per category).
MAX_RESULT_BYTES = 64 * 2**20


@dataclass
class VariantResult:
    name: str
    status: str  # "done", "failed" or "not run"
    changes: dict[str, Any]
    error: str | None = None
    eval_loss: float | None = None
    train_loss: float | None = None
    scores: dict[str, float] = field(default_factory=dict)  # overall eval rates, 0..1
    tokens_per_s: float | None = None
    #: How many variants (this one included) were training on the cluster during its run, at most.
    at_once: int | None = None
    #: Seconds of training over every attempt of the run (a resumed run counts each one).
    train_time_s: float | None = None
    adapter_mb: float | None = None

    def value(self, metric: str) -> float | None:
        return self.eval_loss if metric == "eval_loss" else self.scores.get(metric)


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object a run wrote (its summary, its evaluation); {} when it is missing or damaged."""
    from robolora.fileio import FileReadError, load_json

    try:
        data = load_json(path, max_bytes=MAX_RESULT_BYTES)
    except FileReadError:
        return {}
    return data if isinstance(data, dict) else {}


def rates(scores: dict[str, Any]) -> dict[str, float]:
    """The fractions (0..1) in a :meth:`Scores.to_dict` (which holds counts and ``*_rate`` fractions).

    >>> rates({"n": 4, "semantic": 3, "semantic_rate": 0.75, "syntax": 4, "syntax_rate": 1.0})
    {'semantic': 0.75, 'syntax': 1.0}
    """
    return {m: scores[f"{m}_rate"] for m in RATES if f"{m}_rate" in scores}


def variant_scores(out: Path) -> dict[str, float]:
    """The overall rates of a variant's ``eval.json`` (written by the sweep or ``robolora eval``)."""
    overall = _read_json(out / "eval.json").get("overall") or {}
    return rates(next(iter(overall.values()), {})) if overall else {}


def _saved_config(out: Path) -> dict[str, Any] | None:
    """The resolved settings a run saved (``config.yaml``), or None when there is none to read."""
    try:
        data = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def collect(name: str, changes: dict[str, Any], out: Path, error: str | None = None) -> VariantResult:
    """What a variant's folder ``out`` holds: its summary, evaluation and adapter size (``changes``: what the
    sweep file says the variant sets; ``error``: why its trial failed, if it did).

    Every label comes from the run itself: the settings from its saved ``config.yaml`` (what it trained
    with), the losses from its whole ``metrics.jsonl``.
    """
    from robolora.report import read_metrics, run_summary

    done = run_finished(out)
    summary = _read_json(out / "train_summary.json")
    saved = _saved_config(out)
    changes = {k: saved.get(k, v) for k, v in changes.items()} if saved else dict(changes)
    metrics = run_summary(read_metrics(out / METRICS_FILE)) if (out / METRICS_FILE).is_file() else {}
    adapter = out / "adapter_model.safetensors"
    return VariantResult(
        name,
        "done" if done and not error else ("failed" if error else "not run"),
        changes,
        error=error,
        eval_loss=metrics.get("eval_loss", summary.get("eval_loss")),
        train_loss=metrics.get("train_loss", summary.get("train_loss")),
        scores=variant_scores(out),
        tokens_per_s=summary.get("mean_tokens_per_s"),
        train_time_s=summary.get("train_runtime_s"),
        adapter_mb=adapter.stat().st_size / 2**20 if adapter.is_file() else None,
    )


def training_span(out: Path) -> tuple[float, float] | None:
    """When a run trained: the wall-clock times of its first and last logged rows."""
    from robolora.report import read_metrics

    if not (out / METRICS_FILE).is_file():
        return None
    times = [r["time"] for r in read_metrics(out / METRICS_FILE) if isinstance(r.get("time"), (int, float))]
    return (min(times), max(times)) if times else None


def at_once(spans: dict[str, tuple[float, float] | None]) -> dict[str, int]:
    """For each run, how many runs (itself included) were training at the same time as it, at most.

    >>> at_once({"a": (0, 10), "b": (5, 15), "c": (12, 20), "d": None})
    {'a': 2, 'b': 2, 'c': 2}
    >>> at_once({"a": (0, 10), "b": (1, 9), "c": (2, 8)})["a"]
    3
    """
    known = {n: s for n, s in spans.items() if s}
    out = {}
    for name, (start, end) in known.items():
        # the most spans holding one moment of this run: the count peaks at some span's start
        moments = [start] + [s for s, _ in known.values() if start <= s <= end]
        out[name] = max(sum(1 for s, e in known.values() if s <= t <= e) for t in moments)
    return out


def pick_best(results: list[VariantResult], metric: str) -> VariantResult | None:
    """The finished variant with the best value of ``metric`` (ties: the earlier variant)."""
    higher = METRICS[metric]
    ranked = [r for r in results if r.status == "done" and r.value(metric) is not None]
    if not ranked:
        return None
    return max(ranked, key=lambda r: (r.value(metric) if higher else -r.value(metric), -results.index(r)))


COLUMNS = (
    ("variant", lambda r: r.name),
    ("status", lambda r: r.status),
    ("changes", lambda r: ", ".join(f"{k}={v}" for k, v in r.changes.items()) or "-"),
    ("eval_loss", lambda r: r.eval_loss),
    ("train_loss", lambda r: r.train_loss),
    ("semantic", lambda r: r.scores.get("semantic")),
    ("exact", lambda r: r.scores.get("exact")),
    ("api_valid", lambda r: r.scores.get("api_valid")),
    ("syntax", lambda r: r.scores.get("syntax")),
    ("tokens_per_s", lambda r: r.tokens_per_s),
    ("at_once", lambda r: r.at_once),
    ("train_time_s", lambda r: r.train_time_s),
    ("adapter_mb", lambda r: r.adapter_mb),
)
RATES = ("semantic", "exact", "api_valid", "syntax")


def _cell(name: str, value: Any) -> str:
    if value is None:
        return "-"
    if name in RATES:
        return f"{100 * value:.1f}%"
    if isinstance(value, float):
        return f"{value:.4f}" if name.endswith("loss") else f"{value:.2f}" if name == "adapter_mb" else f"{value:.1f}"
    return str(value)


def comparison_table(results: list[VariantResult], best: str | None = None, ensemble: dict | None = None) -> str:
    """The variants side by side as aligned text; the best is starred, the ensemble's vote last.

    >>> r = VariantResult("a", "done", {"lora_r": 8}, eval_loss=0.25, scores={"semantic": 0.9})
    >>> print(comparison_table([r], best="a").splitlines()[2].split())
    ['a', '*', 'done', 'lora_r=8', '0.2500', '-', '90.0%', '-', '-', '-', '-', '-', '-', '-']
    """
    names = [n for n, _ in COLUMNS]
    rows = [[_cell(n, get(r)) for n, get in COLUMNS] for r in results]
    for row, r in zip(rows, results, strict=True):
        if r.name == best:
            row[0] += " *"
    if ensemble:
        scores = [_cell(m, ensemble["scores"].get(m)) for m in RATES]
        rows.append(
            ["ensemble (vote)", "done", f"{ensemble['members']} members", "-", "-", *scores, "-", "-", "-", "-"]
        )
    widths = [max(len(x) for x in col) for col in zip(names, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(names), line(["-" * w for w in widths]), *map(line, rows)])


def comparison_csv(results: list[VariantResult], ensemble: dict | None = None) -> str:
    """The same comparison as CSV, with raw numbers (rates as fractions) and the error of failed variants."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([n for n, _ in COLUMNS] + ["error"])
    for r in results:
        writer.writerow([("" if (v := get(r)) is None else v) for _, get in COLUMNS] + [r.error or ""])
    if ensemble:
        scores = ensemble["scores"]
        row = {"variant": "ensemble (vote)", "status": "done", "changes": f"{ensemble['members']} members"}
        writer.writerow([row.get(n, scores.get(n, "")) for n, _ in COLUMNS] + [""])
    return buffer.getvalue()


def plot_curves(runs: dict[str, list[dict]], path: str | os.PathLike[str], best: str | None = None) -> Path:
    """Each variant's train and eval loss in its own panel, side by side on one loss scale, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from robolora.diagnose import series

    n = max(1, len(runs))
    cols = min(n, 4)
    rows_n = math.ceil(n / cols)
    fig = Figure(figsize=(3.6 * cols, 3.0 * rows_n), dpi=100, layout="constrained")
    canvas = FigureCanvasAgg(fig)
    axes = fig.subplots(rows_n, cols, sharey=True, squeeze=False).ravel()
    for ax, (name, rows) in zip(axes, runs.items(), strict=False):
        for key, label, style in (("train_loss", "train", ".-"), ("eval_loss", "eval", "o-")):
            points = series(rows, key)
            if points:
                ax.plot([s for s, _ in points], [v for _, v in points], style, label=label, markersize=3)
        ax.set_title(f"{name}{' (best)' if name == best else ''}", fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[len(runs) :]:
        ax.set_visible(False)
    axes[0].set_ylabel("loss")
    buffer = io.BytesIO()
    canvas.print_png(buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def vote_predictions(members: dict[str, list[dict]]) -> tuple[list[str], list[dict]]:
    """The ensemble's prediction per record from members' ``eval_predictions.jsonl`` rows.

    Each row needs ``prediction`` and ``mean_logprob``; the members must have judged the same inputs
    in the same order. Returns the picks and the records (``input``, ``output``, ``category``).

    >>> rows = lambda *codes: [{"input": "x", "reference": "robot.stop()", "category": "c",
    ...     "prediction": c, "mean_logprob": -0.1} for c in codes]
    >>> vote_predictions({"a": rows("robot.stop()"), "b": rows("robot.go_home()"), "c": rows("robot.stop()")})[0]
    ['robot.stop()']
    """
    from robolora.infer import vote

    columns = list(members.values())
    inputs = [r["input"] for r in columns[0]]
    for name, rows in members.items():
        if [r["input"] for r in rows] != inputs:
            raise ValueError(f"{name} was evaluated on other records; an ensemble needs the same ones")
    picks = []
    for row in zip(*columns, strict=True):
        picks.append(row[vote([(r["prediction"], r.get("mean_logprob", 0.0)) for r in row])]["prediction"])
    records = [{"input": r["input"], "output": r["reference"], "category": r["category"]} for r in columns[0]]
    return picks, records


# ----------------------------------------------------------------------------- judging a variant


def evaluate_adapter(out: str, settings: dict[str, Any], threads: int | None = None) -> dict[str, float]:
    """Generate code for a run's ``val.jsonl`` with its adapter; write ``eval.json`` and the predictions."""
    import torch

    from robolora.data import load_records
    from robolora.evaluate import compare_dict
    from robolora.infer import Generator, score_generations

    if threads:
        torch.set_num_threads(threads)
    s = EvalSettings(**settings)
    folder = Path(out)
    records = load_records(folder / "val.jsonl", check_api=False)[: s.limit or None]
    gen = Generator.load(folder, quantization=s.quantization, max_memory=s.max_memory)
    generations = gen.generate(
        [r["input"] for r in records],
        batch_size=s.batch_size,
        max_new_tokens=s.max_new_tokens,
        constrained=s.constrained,
        grammar_engine=s.grammar_engine,
        repair_beams=s.repair_beams,
    )
    report = score_generations(records, generations, folder / "eval_predictions.jsonl")
    data = {**compare_dict({folder.name: report}), "settings": s.__dict__}
    atomic_write_text(folder / "eval.json", json.dumps(data, indent=2))
    return rates(report.overall.to_dict())


def evaluated_with(folder: Path, settings: dict[str, Any] | None) -> bool:
    """Whether the run in ``folder`` holds an evaluation made with ``settings`` (the sweep's ``evaluate``)."""
    return settings is None or _read_json(folder / "eval.json").get("settings") == settings


# ----------------------------------------------------------------------------- the sweep's report


def _link_best(out: Path, best: VariantResult | None) -> None:
    link = out / "best"
    if link.is_symlink() or link.exists():
        if not link.is_symlink():
            raise UserError(f"{link} exists and is not the sweep's link; move it away to link the best variant")
        link.unlink()
    if best is not None:
        link.symlink_to(best.name, target_is_directory=True)


def _ensemble(out: Path, results: list[VariantResult]) -> dict[str, Any] | None:
    """Score the finished members' vote from their saved predictions (no generation needed)."""
    from robolora.evaluate import compare_dict, score, write_predictions

    members = {}
    for r in results:
        path = out / r.name / "eval_predictions.jsonl"
        if r.status == "done" and path.is_file():
            members[r.name] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if len(members) < 2:
        return None
    try:
        picks, records = vote_predictions(members)
    except ValueError as e:
        print(f"no ensemble: {e}")
        return None
    report = score(records, picks)
    write_predictions(out / "ensemble_predictions.jsonl", records, picks, report.judgements)
    data = {"members": list(members), **compare_dict({"ensemble (vote)": report})}
    atomic_write_text(out / "ensemble_eval.json", json.dumps(data, indent=2))
    return {"members": len(members), "scores": rates(report.overall.to_dict()), "table": report.table()}


def _plot_variants(out: Path, results: list[VariantResult], best: str | None) -> None:
    """``loss_curves.png`` from the variants that logged metrics (none: no plot)."""
    from robolora.report import read_metrics

    curves = {}
    for r in results:
        metrics = out / r.name / METRICS_FILE
        if metrics.is_file():
            curves[r.name] = read_metrics(metrics)
    if curves:
        plot_curves(curves, out / "loss_curves.png", best)


def report_sweep(out: Path, results: list[VariantResult], metric: str, vote: bool = True) -> VariantResult | None:
    """Write the comparison of the variants' ``results`` (text, CSV, PNG, JSON) into the sweep's folder ``out``,
    link ``best/`` and, with ``vote``, score the ensemble. Returns the best variant (None when none finished)."""
    shared = at_once({r.name: training_span(out / r.name) for r in results})
    for r in results:
        r.at_once = shared.get(r.name)
    best = pick_best(results, metric)
    best_name = best.name if best else None
    ensemble = _ensemble(out, results) if vote else None
    table = comparison_table(results, best_name, ensemble)
    atomic_write_text(out / "comparison.txt", table + "\n")
    atomic_write_text(out / "comparison.csv", comparison_csv(results, ensemble))
    _plot_variants(out, results, best_name)
    summary = {
        "metric": metric,
        "best": best_name,
        "variants": [r.__dict__ for r in results],
        "ensemble": {k: v for k, v in ensemble.items() if k != "table"} if ensemble else None,
    }
    atomic_write_text(out / "sweep.json", json.dumps(summary, indent=2, default=str))
    _link_best(out, best)
    print(f"\nSweep {out} ({metric} picks the best; * marks it)\n{table}")
    if ensemble:
        print(f"\nensemble of {ensemble['members']} (majority vote over canonical programs):\n{ensemble['table']}")
    return best
