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
names the changed variants. Every label in the comparison is read from the run's own files
(:mod:`robolora.sweep_report` collects the results and writes the comparison).

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
import itertools
import logging
import os
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from robolora.config import TrainConfig, absolute_paths, from_dict, load_config_file
from robolora.errors import ConfigError, UserError
from robolora.evaluate import EVAL_DEFAULTS, EvalSettings, settings_from
from robolora.fileio import atomic_write_text, read_mapping
from robolora.placement import gpus_to_reserve
from robolora.runrecord import run_finished
from robolora.sweep_report import (
    METRICS,
    RATES,
    VariantResult,
    collect,
    evaluate_adapter,
    evaluated_with,
    report_sweep,
)

KEYS = ("output_dir", "base", "shared", "variants", "grid", "metric", "max_concurrent", "evaluate")
#: Training fields the sweep sets itself, or that one sweep cannot vary.
FIXED = ("output_dir", "ray_address")
#: Names a variant cannot take: the sweep's own entries in its folder.
RESERVED = ("best", "logs", "tune", "ensemble")
NAME = re.compile(r"[A-Za-z0-9][\w.-]*")
#: The most variants one sweep may hold: each is a training run, and a grid multiplies quickly.
MAX_VARIANTS = 1000
#: What a trial reserves for itself (it drives a Train run and evaluates through a Ray task).
TRIAL_MEMORY = 256 * 2**20


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
    evaluate: EvalSettings | None = EVAL_DEFAULTS


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


def base_values(base: Any, source: str) -> dict[str, Any]:
    """The training settings a sweep or pipeline file's ``base`` gives: those of a training config file
    (named by ``base``), or a mapping as written; None gives none.

    >>> base_values({"lora_r": 8}, "s.yaml"), base_values(None, "s.yaml")
    ({'lora_r': 8}, {})
    """
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


def _combinations(
    listed: list[tuple[str | None, dict[str, Any]]], grid: list[tuple[str, dict[str, Any]]], source: str
) -> list[tuple[str, dict[str, Any], str]]:
    """Each listed variant crossed with each grid point, as ``(name, changes, where)``; ``where`` names
    the variant's place in the file for its errors."""
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
    return combos


def _ranking(data: dict[str, Any], source: str) -> tuple[EvalSettings | None, str, int | None]:
    """The sweep's ``evaluate``, ``metric`` and ``max_concurrent``, checked against each other."""
    evaluate = settings_from(data.get("evaluate"), f"{source}: evaluate")
    metric = data.get("metric") or ("semantic" if evaluate else "eval_loss")
    if metric not in METRICS:
        raise ConfigError(f"{source}: metric: {metric!r} is not one of {', '.join(METRICS)}")
    if metric != "eval_loss" and evaluate is None:
        raise ConfigError(f"{source}: metric: {metric} needs the evaluation; use eval_loss or leave evaluate on")
    concurrent = data.get("max_concurrent")
    if concurrent is not None and (isinstance(concurrent, bool) or not isinstance(concurrent, int) or concurrent < 1):
        raise ConfigError(f"{source}: max_concurrent: expected a whole number of at least 1, got {concurrent!r}")
    return evaluate, metric, concurrent


def _variant(name: str, changes: dict[str, Any], where: str, values: dict[str, Any], shared: dict[str, Any]) -> Variant:
    """One variant: ``changes`` on top of ``values`` (the base and shared settings, and its folder)."""
    for key in FIXED:
        if key in changes or (key == "output_dir" and key in shared):
            raise ConfigError(f"{where}: {key}: set by the sweep; give it once at the sweep's top level")
    label = f"{where} ({name})"
    try:
        cfg = from_dict({**values, **changes}, source=label)
    except ConfigError as e:  # a rule on the values (ranges, combinations) names only the field
        raise (e if str(e).startswith(label) else ConfigError(f"{label}: {e}")) from None
    return Variant(name, changes, cfg)


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
    base = base_values(data.get("base"), source)
    shared = data.get("shared") or {}
    if not isinstance(shared, dict):
        raise ConfigError(f"{source}: shared: expected a mapping of training settings")
    listed = _listed_variants(data.get("variants"), source)
    grid = grid_points(data["grid"], source) if data.get("grid") is not None else []
    combos = _combinations(listed, grid, source)
    evaluate, metric, concurrent = _ranking(data, source)
    variants, seen = [], set()
    for name, changes, where in combos:
        if name in seen or name in RESERVED:
            raise ConfigError(f"{where}: name: {name!r} is {'taken' if name in seen else 'reserved'}; rename it")
        seen.add(name)
        # The base file's own output_dir, if any, gives way to the sweep's folder.
        values = {**base, **shared, "output_dir": str(Path(output_dir) / name)}
        variants.append(_variant(name, changes, where, values, shared))
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


# ----------------------------------------------------------------------------- running it


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
                gpus = gpus_to_reserve(job["evaluate"].get("max_memory"), cfg.num_workers)  # a big model: several
                resources = {"num_gpus": gpus} if cfg.use_gpu else {"num_cpus": cfg.num_workers * cfg.cpus_per_worker}
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
    from robolora.preflight import check_creatable
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
    from robolora.data import load_datasets

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
    from robolora.gpu import local_gpus

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
    from robolora.launcher import init_ray
    from robolora.preflight import check_model

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


def _jobs(sweep: Sweep, actions: dict[str, str], logs: Path) -> list[dict[str, Any]]:
    """The trials to run, one per variant not kept as it is (a trial's config must be plain data)."""
    evaluate = sweep.evaluate.__dict__ if sweep.evaluate else None
    todo = []
    for v in sweep.variants:
        if actions[v.name] == "reuse":
            print(f"[{v.name}] finished earlier: kept")
            continue
        todo.append({"name": v.name, "config": v.config.to_dict(), "evaluate": evaluate, "logs": str(logs)})
    return todo


@contextlib.contextmanager
def _quiet_tune() -> Any:
    """Tune's own console output gives way to the variants' lines while the trials run."""
    # Failures are reported one line each; Tune's own tracebacks stay in the logs.
    tune_log = logging.getLogger("ray.tune")
    level = tune_log.level
    tune_log.setLevel(logging.CRITICAL)
    # Tune's console output even at verbose=0 (its experiment table, and a TensorBoard hint pointing at
    # its own driver artifacts, not at the variants' events) gives way to the lines above.
    new_output = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        tune_log.setLevel(level)
        if new_output is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = new_output


def _run_trials(todo: list[dict[str, Any]], concurrent: int, out: Path) -> dict[str, str]:
    """Run the trials on Ray Tune, ``concurrent`` at a time; the error of each variant that failed."""
    from ray import tune

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
    with _quiet_tune():
        grid = tuner.fit()
    errors: dict[str, str] = {}
    for result in grid:
        job = result.config["variant"]
        if result.error is not None:
            path_ = _error_file(job)
            errors[job["name"]] = path_.read_text() if path_.is_file() else str(result.error).splitlines()[-1]
    return errors


def _train_and_report(sweep: Sweep, concurrent: int, actions: dict[str, str]) -> list[VariantResult]:
    out = sweep.output_dir
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    todo = _jobs(sweep, actions, logs)
    errors: dict[str, str] = {}
    if todo:
        print(
            f"training {len(todo)} variants; each one's output is in {logs}/<name>.log; "
            f"their curves side by side: tensorboard --logdir {sweep.output_dir}",
            flush=True,
        )
        errors = _run_trials(todo, concurrent, out)
    results = [collect(v.name, v.changes, Path(v.config.output_dir), errors.get(v.name)) for v in sweep.variants]
    report_sweep(out, results, sweep.metric, vote=sweep.evaluate is not None)
    failed = [r for r in results if r.status != "done"]
    if failed:
        lines = "\n".join(f"  {r.name}: {r.error or r.status}" for r in failed)
        raise SweepFailed(
            f"{len(failed)} of {len(results)} variants did not finish:\n{lines}\n"
            "run the same sweep again to retry them; the finished variants are kept"
        )
    return results
