"""Sweeps: variants of one training config, trained concurrently by Ray Tune, compared and voted.

A sweep file holds a base config, the settings every variant shares, and the variants: an explicit
list, a grid over any training field, or both (each listed variant crossed with the grid)::

    output_dir: models/sweep
    base: examples/smollm2-135m.yaml       # a training config file, or a mapping (optional)
    shared: {num_epochs: 0.5}              # on top of the base, for every variant
    variants:
      - {name: r16, lora_r: 16, lora_alpha: 32}
      - {name: r32}
    grid: {learning_rate: [1.0e-3, 2.0e-3]}
    metric: semantic                       # picks best/: semantic, exact, api_valid, syntax or eval_loss
    max_concurrent: 2                      # default: as many as the cluster holds side by side
    evaluate: {constrained: true, limit: 0, batch_size: 32, max_new_tokens: 128}   # or false

Every variant trains into ``<output_dir>/<name>`` as its own Ray Train run inside a Ray Tune trial;
then its adapter generates code for its validation split (``eval.json``, ``eval_predictions.jsonl``).
At the end the sweep writes ``comparison.txt``/``.csv``, ``loss_curves.png`` and ``sweep.json``,
links the best variant as ``best/`` and scores the members' majority vote (``ensemble_eval.json``).
A failing variant is reported and the others go on. Running the same sweep again keeps the
finished variants and continues the others from their last checkpoints, each only while its settings
and inputs are those its run used (:mod:`robolora.runrecord`); otherwise nothing starts and one line
names the changed variants. Every label in the comparison is read from the run's own files.

Example:
    >>> sweep = build_sweep({"output_dir": "out", "shared": {"data_json": "d.json"},
    ...     "variants": [{"name": "a"}, {"name": "b", "lora_r": 8}], "grid": {"learning_rate": [1e-3, 2e-3]}},
    ...     source="s.yaml")
    >>> for v in sweep.variants:
    ...     print(v.name, v.config.lora_r, v.config.learning_rate)
    a_learning_rate-0.001 32 0.001
    a_learning_rate-0.002 32 0.002
    b_learning_rate-0.001 8 0.001
    b_learning_rate-0.002 8 0.002
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from robolora.config import TrainConfig, absolute_paths, from_dict, load_config_file
from robolora.errors import ConfigError, UserError
from robolora.evaluate import EvalSettings
from robolora.fileio import atomic_write_bytes, atomic_write_text, read_mapping
from robolora.launcher import run_finished

KEYS = ("output_dir", "base", "shared", "variants", "grid", "metric", "max_concurrent", "evaluate")
#: The metrics a sweep can rank by, and whether higher is better.
METRICS = {"semantic": True, "exact": True, "api_valid": True, "syntax": True, "eval_loss": False}
#: Training fields the sweep sets itself, or that one sweep cannot vary.
FIXED = ("output_dir", "ray_address")
#: Names a variant cannot take: the sweep's own entries in its folder.
RESERVED = ("best", "logs", "tune", "ensemble")
NAME = re.compile(r"[A-Za-z0-9][\w.-]*")
#: The most variants one sweep may hold: each is a training run, and a grid multiplies quickly.
MAX_VARIANTS = 1000
#: What a trial reserves for itself (it drives a Train run and evaluates through a Ray task).
TRIAL_MEMORY = 256 * 2**20
METRICS_FILE = "metrics.jsonl"
#: Largest summary or evaluation file a sweep reads back (an evaluation holds a table per category).
MAX_RESULT_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Variant:
    name: str
    #: What this variant sets on top of the base and shared settings.
    changes: dict[str, Any]
    config: TrainConfig


@dataclass(frozen=True)
class Sweep:
    output_dir: Path
    variants: list[Variant]
    metric: str = "semantic"
    max_concurrent: int | None = None
    evaluate: EvalSettings | None = field(default_factory=EvalSettings)


# ----------------------------------------------------------------------------- the sweep file (pure)


def _value_name(value: Any) -> str:
    text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return re.sub(r"[^\w.]+", "-", text).strip("-") or "x"


def grid_points(grid: dict[str, list[Any]], source: str) -> list[tuple[str, dict[str, Any]]]:
    """Every combination of a grid as ``(name, changes)``; the name spells the values out.

    >>> grid_points({"lora_r": [8, 16], "lora_target_modules": ["q_proj,v_proj"]}, "s.yaml")
    [('lora_r-8_lora_target_modules-q_proj-v_proj', {'lora_r': 8, 'lora_target_modules': 'q_proj,v_proj'}), \
('lora_r-16_lora_target_modules-q_proj-v_proj', {'lora_r': 16, 'lora_target_modules': 'q_proj,v_proj'})]
    """
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"{source}: grid: expected a mapping of training fields to lists of values")
    count = 1
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            shown = repr(values) if len(repr(values)) < 80 else type(values).__name__
            raise ConfigError(f"{source}: grid: {key}: expected a non-empty list of values, got {shown}")
        count *= len(values)
        if count > MAX_VARIANTS:
            raise ConfigError(
                f"{source}: grid: its combinations make more than {MAX_VARIANTS} variants; "
                "a sweep trains each one: grid fewer fields or fewer values"
            )
    keys = list(grid)
    points = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        changes = dict(zip(keys, combo, strict=True))
        points.append(("_".join(f"{k}-{_value_name(v)}" for k, v in changes.items()), changes))
    return points


def _base_values(base: Any, source: str) -> dict[str, Any]:
    if base is None:
        return {}
    if isinstance(base, str):
        return load_config_file(base, flag=f"{source}: base")
    if isinstance(base, dict):
        return dict(base)
    raise ConfigError(f"{source}: base: give a training config file or a mapping of training settings")


def _listed_variants(variants: Any, source: str) -> list[tuple[str | None, dict[str, Any]]]:
    if variants is None:
        return []
    if not isinstance(variants, list) or not variants:
        raise ConfigError(f"{source}: variants: expected a list of mappings, each a name and its settings")
    out = []
    for i, v in enumerate(variants):
        if not isinstance(v, dict):
            raise ConfigError(f"{source}: variants[{i}]: expected a mapping with a name and training settings")
        changes = dict(v)
        out.append((changes.pop("name", None), changes))
    return out


def _evaluate_settings(value: Any, source: str) -> EvalSettings | None:
    if value is False:
        return None
    if value is None or value is True:
        return EvalSettings()
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: evaluate: expected false or a mapping of constrained, limit, batch_size, ...")
    known = EvalSettings.__dataclass_fields__
    for key, v in value.items():
        if key not in known:
            raise ConfigError(f"{source}: evaluate: {key}: unknown; use {', '.join(known)}")
        want = bool if key == "constrained" else int
        if not isinstance(v, want) or (want is int and (isinstance(v, bool) or v < (0 if key == "limit" else 1))):
            raise ConfigError(f"{source}: evaluate: {key}: {v!r} is not a valid {want.__name__}")
    return EvalSettings(**value)


def build_sweep(data: Any, source: str) -> Sweep:
    """The variants of a parsed sweep file, each a validated :class:`TrainConfig`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with {', '.join(KEYS)}")
    for key in data:
        if key not in KEYS:
            raise ConfigError(f"{source}: {key}: unknown key; a sweep has {', '.join(KEYS)}")
    output_dir = data.get("output_dir")
    if not isinstance(output_dir, str) or not output_dir.strip():
        raise ConfigError(f"{source}: output_dir: give the folder the variants' folders go in")
    base = _base_values(data.get("base"), source)
    shared = data.get("shared") or {}
    if not isinstance(shared, dict):
        raise ConfigError(f"{source}: shared: expected a mapping of training settings")
    listed = _listed_variants(data.get("variants"), source)
    grid = grid_points(data["grid"], source) if data.get("grid") is not None else []
    if max(1, len(listed)) * max(1, len(grid)) > MAX_VARIANTS:
        raise ConfigError(
            f"{source}: {len(listed)} listed variants crossed with {len(grid)} grid points make more than "
            f"{MAX_VARIANTS} variants; list or grid fewer"
        )
    if not listed and not grid:
        raise ConfigError(f"{source}: give variants (a list) or a grid (fields to lists of values), or both")
    combos: list[tuple[str, dict[str, Any], str]] = []
    for i, (name, changes) in enumerate(listed or [(None, {})]):
        where = f"{source}: variants[{i}]" if listed else f"{source}: grid"
        if listed and (not isinstance(name, str) or not NAME.fullmatch(name)):
            raise ConfigError(f"{where}: name: give each variant a folder-safe name, got {name!r}")
        for point_name, point in grid or [("", {})]:
            both = {**changes, **point}
            combos.append(("_".join(n for n in (name, point_name) if n), both, where))
    evaluate = _evaluate_settings(data.get("evaluate"), source)
    metric = data.get("metric") or ("semantic" if evaluate else "eval_loss")
    if metric not in METRICS:
        raise ConfigError(f"{source}: metric: {metric!r} is not one of {', '.join(METRICS)}")
    if metric != "eval_loss" and evaluate is None:
        raise ConfigError(f"{source}: metric: {metric} needs the evaluation; use eval_loss or leave evaluate on")
    concurrent = data.get("max_concurrent")
    if concurrent is not None and (isinstance(concurrent, bool) or not isinstance(concurrent, int) or concurrent < 1):
        raise ConfigError(f"{source}: max_concurrent: expected a whole number of at least 1, got {concurrent!r}")
    variants, seen = [], set()
    for name, changes, where in combos:
        if name in seen or name in RESERVED:
            raise ConfigError(f"{where}: name: {name!r} is {'taken' if name in seen else 'reserved'}; rename it")
        seen.add(name)
        for key in FIXED:
            if key in changes or (key == "output_dir" and key in shared):
                raise ConfigError(f"{where}: {key}: set by the sweep; give it once at the sweep's top level")
        # The base file's own output_dir, if any, gives way to the sweep's folder.
        values = {**base, **shared, **changes, "output_dir": str(Path(output_dir) / name)}
        label = f"{where} ({name})"
        try:
            cfg = from_dict(values, source=label)
        except ConfigError as e:  # a rule on the values (ranges, combinations) names only the field
            raise (e if str(e).startswith(label) else ConfigError(f"{label}: {e}")) from None
        variants.append(Variant(name, changes, cfg))
    return Sweep(Path(output_dir), variants, metric, concurrent, evaluate)


def load_sweep(path: str | os.PathLike) -> Sweep:
    """Read and validate a sweep file (YAML or JSON)."""
    return build_sweep(read_mapping(path), source=str(path))


def share_cluster(configs: list[TrainConfig], cpus: int, gpus: int, max_concurrent: int | None) -> tuple[int, list]:
    """How many variants run at once, and each variant's workers and CPUs so that many fit side by side.

    Settings the user gave are kept. On GPUs a variant without ``num_workers`` gets an equal share of
    the GPUs; on CPUs it gets one worker with an equal share of the cores (one process with several
    threads trains faster than several single-threaded ones on one machine).

    >>> n, cfgs = share_cluster([TrainConfig(), TrainConfig(), TrainConfig()], cpus=4, gpus=0, max_concurrent=None)
    >>> n, [(c.num_workers, c.cpus_per_worker) for c in cfgs]
    (3, [(1, 1), (1, 1), (1, 1)])
    >>> n, cfgs = share_cluster([TrainConfig(), TrainConfig()], cpus=16, gpus=8, max_concurrent=None)
    >>> n, [(c.num_workers, c.use_gpu) for c in cfgs]
    (2, [(4, True), (4, True)])
    """
    use_gpu = [c.use_gpu if c.use_gpu is not None else gpus > 0 for c in configs]
    capacity = gpus if any(use_gpu) else cpus
    widest = max((c.num_workers or 1) for c in configs)
    concurrent = max_concurrent or max(1, min(len(configs), capacity // widest))
    out = []
    for cfg, gpu in zip(configs, use_gpu, strict=True):
        if gpu:
            out.append(cfg.replace(use_gpu=True, num_workers=cfg.num_workers or max(1, gpus // concurrent)))
            continue
        workers = cfg.num_workers or 1
        cpus_each = cfg.cpus_per_worker or max(1, cpus // concurrent // workers)
        out.append(cfg.replace(use_gpu=False, num_workers=workers, cpus_per_worker=cpus_each))
    return concurrent, out


# ----------------------------------------------------------------------------- results (pure over files)


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


def collect(variant: Variant, error: str | None = None) -> VariantResult:
    """What a variant's folder holds: its summary, evaluation and adapter size.

    Every label comes from the run itself: the settings from its saved ``config.yaml`` (what it trained
    with), the losses from its whole ``metrics.jsonl``.
    """
    from robolora.report import read_metrics, run_summary

    out = Path(variant.config.output_dir)
    done = run_finished(out)
    summary = _read_json(out / "train_summary.json")
    saved = _saved_config(out)
    changes = {k: saved.get(k, v) for k, v in variant.changes.items()} if saved else dict(variant.changes)
    metrics = run_summary(read_metrics(out / METRICS_FILE)) if (out / METRICS_FILE).is_file() else {}
    adapter = out / "adapter_model.safetensors"
    return VariantResult(
        variant.name,
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


# ----------------------------------------------------------------------------- running it


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
    gen = Generator.load(folder)
    generations = gen.generate(
        [r["input"] for r in records],
        batch_size=s.batch_size,
        max_new_tokens=s.max_new_tokens,
        constrained=s.constrained,
    )
    report = score_generations(records, generations, folder / "eval_predictions.jsonl")
    data = {**compare_dict({folder.name: report}), "settings": s.__dict__}
    atomic_write_text(folder / "eval.json", json.dumps(data, indent=2))
    return rates(report.overall.to_dict())


def evaluated_with(folder: Path, settings: dict[str, Any] | None) -> bool:
    """Whether the run in ``folder`` holds an evaluation made with ``settings`` (the sweep's ``evaluate``)."""
    return settings is None or _read_json(folder / "eval.json").get("settings") == settings


def _error_file(job: dict[str, Any]) -> Path:
    return Path(job["logs"]) / f"{job['name']}.error"


def run_variant(config: dict[str, Any]) -> None:
    """The Ray Tune trial: train one variant (reporting its metrics live), then evaluate it."""
    import ray
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from robolora.launcher import run_training

    job = config["variant"]
    cfg = from_dict(job["config"], source=job["name"])
    logs = Path(job["logs"])
    logs.mkdir(parents=True, exist_ok=True)
    _error_file(job).unlink(missing_ok=True)
    with (
        open(logs / f"{job['name']}.log", "a") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        try:
            if not run_finished(Path(cfg.output_dir)):
                run_training(cfg, callbacks=[TuneReportCallback()], watch=False, label=job["name"])
            scores = {}
            if job["evaluate"] is not None:
                resources = {"num_gpus": 1} if cfg.use_gpu else {"num_cpus": cfg.num_workers * cfg.cpus_per_worker}
                threads = None if cfg.use_gpu else resources["num_cpus"]
                # Its own resources, outside the trial's placement group (which holds only the trial).
                free = PlacementGroupSchedulingStrategy(placement_group=None)
                task = ray.remote(evaluate_adapter).options(**resources, scheduling_strategy=free)
                scores = ray.get(task.remote(cfg.output_dir, job["evaluate"], threads))
        except BaseException as e:
            message = " ".join(str(e).split()) or type(e).__name__
            atomic_write_text(_error_file(job), f"{type(e).__name__}: {message}"[-2000:])
            raise
    tune.report({"finished": 1, **scores})


def _variant_callback() -> Any:
    """A Tune callback that prints one line per variant event: its metrics as they arrive, its end."""
    from ray import tune

    class VariantLines(tune.Callback):
        def _name(self, trial: Any) -> str:
            return trial.config["variant"]["name"]

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            print(f"[{self._name(trial)}] started", flush=True)

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            if result.get("finished"):
                shown = [f"{k} {100 * result[k]:.1f}%" for k in RATES if k in result]
                print(f"[{self._name(trial)}] evaluated: {', '.join(shown) or 'done'}", flush=True)
                return
            parts = [f"step {result['step']}"] if "step" in result else []
            for key in ("train_loss", "eval_loss"):
                if isinstance(result.get(key), float):
                    parts.append(f"{key.replace('_', ' ')} {result[key]:.4f}")
            if isinstance(result.get("tokens_per_s"), float):
                parts.append(f"{result['tokens_per_s']:.0f} tok/s")
            print(f"[{self._name(trial)}] {', '.join(parts)}", flush=True)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            print(f"[{self._name(trial)}] failed (see its log)", flush=True)

    return VariantLines()


class SweepFailed(UserError):
    """Some variants failed; the finished ones and the comparison are kept."""

    exit_code = 1


def _link_best(out: Path, best: VariantResult | None) -> None:
    link = out / "best"
    if link.is_symlink() or link.exists():
        if not link.is_symlink():
            raise UserError(f"{link} exists and is not the sweep's link; move it away to link the best variant")
        link.unlink()
    if best is not None:
        link.symlink_to(best.name, target_is_directory=True)


def _ensemble(sweep: Sweep, results: list[VariantResult]) -> dict[str, Any] | None:
    """Score the finished members' vote from their saved predictions (no generation needed)."""
    from robolora.evaluate import compare_dict, score, write_predictions

    members = {}
    for r in results:
        path = sweep.output_dir / r.name / "eval_predictions.jsonl"
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
    write_predictions(sweep.output_dir / "ensemble_predictions.jsonl", records, picks, report.judgements)
    data = {"members": list(members), **compare_dict({"ensemble (vote)": report})}
    atomic_write_text(sweep.output_dir / "ensemble_eval.json", json.dumps(data, indent=2))
    return {"members": len(members), "scores": rates(report.overall.to_dict()), "table": report.table()}


def report_sweep(sweep: Sweep, errors: dict[str, str]) -> tuple[list[VariantResult], VariantResult | None]:
    """Write the comparison (text, CSV, PNG, JSON), link ``best/`` and score the ensemble."""
    from robolora.report import read_metrics

    out = sweep.output_dir
    results = [collect(v, errors.get(v.name)) for v in sweep.variants]
    shared = at_once({v.name: training_span(Path(v.config.output_dir)) for v in sweep.variants})
    for r in results:
        r.at_once = shared.get(r.name)
    best = pick_best(results, sweep.metric)
    ensemble = _ensemble(sweep, results) if sweep.evaluate else None
    table = comparison_table(results, best.name if best else None, ensemble)
    atomic_write_text(out / "comparison.txt", table + "\n")
    atomic_write_text(out / "comparison.csv", comparison_csv(results, ensemble))
    curves = {}
    for r in results:
        metrics = out / r.name / "metrics.jsonl"
        if metrics.is_file():
            curves[r.name] = read_metrics(metrics)
    if curves:
        plot_curves(curves, out / "loss_curves.png", best.name if best else None)
    summary = {
        "metric": sweep.metric,
        "best": best.name if best else None,
        "variants": [r.__dict__ for r in results],
        "ensemble": {k: v for k, v in ensemble.items() if k != "table"} if ensemble else None,
    }
    atomic_write_text(out / "sweep.json", json.dumps(summary, indent=2, default=str))
    _link_best(out, best)
    print(f"\nSweep {out} ({sweep.metric} picks the best; * marks it)\n{table}")
    if ensemble:
        print(f"\nensemble of {ensemble['members']} (majority vote over canonical programs):\n{ensemble['table']}")
    return results, best


#: What a start of the sweep does with each variant.
ACTIONS = {
    "train": "train",
    "resume": "resume from its last checkpoint",
    "evaluate": "finished earlier: evaluate it",
    "reuse": "finished earlier: kept",
}


def describe(sweep: Sweep, concurrent: int, configs: list[TrainConfig], actions: dict[str, str]) -> str:
    lines = [f"{len(sweep.variants)} variants into {sweep.output_dir}, {concurrent} at a time:"]
    for v, cfg in zip(sweep.variants, configs, strict=True):
        changes = ", ".join(f"{k}={val}" for k, val in v.changes.items()) or "(base settings)"
        each = "1 GPU" if cfg.use_gpu else f"{cfg.cpus_per_worker} CPU{'s' * (cfg.cpus_per_worker > 1)}"
        lines.append(
            f"  {v.name}: {changes}  [{cfg.num_workers} worker{'s' * (cfg.num_workers > 1)} x {each}]  "
            f"-> {ACTIONS[actions[v.name]]}"
        )
    return "\n".join(lines)


def plan_variants(sweep: Sweep, source: str) -> dict[str, str]:
    """What starting the sweep does with each variant (a key of :data:`ACTIONS`), from its folder.

    A finished variant is kept, and an unfinished one resumed, only when its run's settings and inputs (the
    data files' content, the starting adapter) are those the sweep now gives, the rule ``robolora train``
    follows. Otherwise nothing starts: one line names the variants, what changed, and the fix.
    """
    from robolora.launcher import check_creatable
    from robolora.runrecord import describe_changes, folder_state

    actions, stale, foreign = {}, [], []
    settings = sweep.evaluate.__dict__ if sweep.evaluate else None
    for v in sweep.variants:
        state, found = folder_state(v.config)
        if found:
            stale.append(f"{v.name} ({describe_changes(found, 2)})")
        elif state == "foreign":
            foreign.append(v.name)
        elif state == "new":
            check_creatable(Path(v.config.output_dir))
            actions[v.name] = "train"
        elif state == "unfinished":
            actions[v.name] = "resume"
        else:
            actions[v.name] = "reuse" if evaluated_with(Path(v.config.output_dir), settings) else "evaluate"
    if stale:
        shown = "; ".join(stale[:3]) + (f"; and {len(stale) - 3} more" if len(stale) > 3 else "")
        raise UserError(
            f"{source}: {len(stale)} variant folder{'s hold runs' if len(stale) > 1 else ' holds a run'} made with "
            f"other settings or inputs than the sweep gives now: {shown}; rename the changed variants, move their "
            f"folders away, or give the sweep a new output_dir (finished runs are never relabelled or overwritten)"
        )
    if foreign:
        raise UserError(
            f"{source}: {', '.join(foreign[:3])}: the variant's folder in {sweep.output_dir} is not empty and "
            "holds no robolora run; rename the variant or move the folder away"
        )
    return actions


def check_data(sweep: Sweep) -> None:
    """Every distinct dataset of the variants, validated as ``robolora train`` does before a run starts."""
    from robolora.launcher import load_datasets

    seen = set()
    for v in sweep.variants:
        c = v.config
        key = (c.data_json, c.train_json, c.val_json, c.check_api, c.val_ratio, c.seed, c.category_weights)
        if key not in seen:
            seen.add(key)
            try:
                load_datasets(c)
            except UserError as e:
                raise e.prefixed(f"variant {v.name}: ") from None


def local_resources(cfg: TrainConfig) -> tuple[int, int] | None:
    """CPUs and GPUs a local Ray cluster started for ``cfg`` would have; None when it joins a running cluster."""
    from robolora.launcher import local_gpus

    if cfg.ray_address or os.environ.get("RAY_ADDRESS"):
        return None
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    gpus = local_gpus()
    return cpus, gpus.count if gpus else 0


def run_sweep(path: str | os.PathLike, max_concurrent: int | None = None, dry_run: bool = False) -> list[VariantResult]:
    """Train every variant of a sweep file on Ray Tune, then compare, link the best and vote.

    Everything that can be checked before Ray starts is: the sweep file, each dataset, each base model,
    each variant's folder (new, or a run of the same settings and inputs to keep or resume). ``dry_run``
    prints what would run and what would be kept, and starts nothing (a local cluster is planned from
    this machine's CPUs and GPUs).

    Raises:
        SweepFailed: some variants failed (everything else is written first).
    """
    from robolora.launcher import check_model, init_ray

    if max_concurrent is not None and max_concurrent < 1:
        raise ConfigError(f"--max-concurrent: must be at least 1, got {max_concurrent}")
    source = str(path)
    loaded = load_sweep(path)
    base = loaded.variants[0].config
    check_data(loaded)
    for name in dict.fromkeys(v.config.model_name for v in loaded.variants):
        # Once, before the trials: a bundled model is converted here, not by several trials at once.
        check_model(next(v.config for v in loaded.variants if v.config.model_name == name))

    def laid_out(cpus: int, gpus: int) -> tuple[int, Sweep, dict[str, str]]:
        concurrent, configs = share_cluster(
            [absolute_paths(v.config) for v in loaded.variants], cpus, gpus, max_concurrent or loaded.max_concurrent
        )
        sweep = replace(
            loaded,
            output_dir=loaded.output_dir.resolve(),
            variants=[replace(v, config=c) for v, c in zip(loaded.variants, configs, strict=True)],
        )
        return concurrent, sweep, plan_variants(sweep, source)

    local = local_resources(base)
    if local is not None:
        concurrent, sweep, actions = laid_out(*local)
    if local is None or not dry_run:
        import ray

        init_ray(base)
        resources = ray.cluster_resources()
        concurrent, sweep, actions = laid_out(int(resources.get("CPU", 1)), int(resources.get("GPU", 0)))
    configs = [v.config for v in sweep.variants]
    print(describe(sweep, concurrent, configs, actions), flush=True)
    if dry_run:
        return []
    return _train_and_report(sweep, concurrent, actions)


def _train_and_report(sweep: Sweep, concurrent: int, actions: dict[str, str]) -> list[VariantResult]:
    from ray import tune

    out = sweep.output_dir
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    evaluate = sweep.evaluate.__dict__ if sweep.evaluate else None
    todo = []
    for v in sweep.variants:
        if actions[v.name] == "reuse":
            print(f"[{v.name}] finished earlier: kept")
            continue
        todo.append({"name": v.name, "config": v.config.to_dict(), "evaluate": evaluate, "logs": str(logs)})
    errors: dict[str, str] = {}
    if todo:
        print(
            f"training {len(todo)} variants; each one's output is in {logs}/<name>.log; "
            f"their curves side by side: tensorboard --logdir {sweep.output_dir}",
            flush=True,
        )
        tuner = tune.Tuner(
            # The trial only drives its Train run, whose workers hold the CPUs and GPUs; a trial
            # holding a CPU would keep a Train worker waiting (Tune refuses an all-zero request).
            tune.with_resources(run_variant, {"CPU": 0, "memory": TRIAL_MEMORY}),
            param_space={"variant": tune.grid_search(todo)},
            tune_config=tune.TuneConfig(max_concurrent_trials=concurrent),
            run_config=tune.RunConfig(
                name=time.strftime("%Y%m%d-%H%M%S"),
                storage_path=str(out / "tune"),
                verbose=0,
                callbacks=[_variant_callback()],
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        # Failures are reported below, one line each; Tune's own tracebacks stay in the logs.
        tune_log = logging.getLogger("ray.tune")
        level = tune_log.level
        tune_log.setLevel(logging.CRITICAL)
        # Tune's console output even at verbose=0 (its experiment table, and a TensorBoard hint pointing at
        # its own driver artifacts, not at the variants' events) gives way to the lines above.
        new_output = os.environ.get("RAY_AIR_NEW_OUTPUT")
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
        try:
            grid = tuner.fit()
        finally:
            tune_log.setLevel(level)
            if new_output is None:
                os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
            else:
                os.environ["RAY_AIR_NEW_OUTPUT"] = new_output
        for result in grid:
            job = result.config["variant"]
            if result.error is not None:
                path_ = _error_file(job)
                errors[job["name"]] = path_.read_text() if path_.is_file() else str(result.error).splitlines()[-1]
    results, _ = report_sweep(sweep, errors)
    failed = [r for r in results if r.status != "done"]
    if failed:
        lines = "\n".join(f"  {r.name}: {r.error or r.status}" for r in failed)
        raise SweepFailed(
            f"{len(failed)} of {len(results)} variants did not finish:\n{lines}\n"
            "run the same sweep again to retry them; the finished variants are kept"
        )
    return results
