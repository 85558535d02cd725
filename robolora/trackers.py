"""Experiment trackers beside ``metrics.jsonl``: TensorBoard, Weights & Biases and MLflow (``--report-to``).

Rank 0's :class:`robolora.metrics_log.MetricsLog` starts the run's trackers before its first step, sends
every logged row's scalars to each of them, and at the end its final metrics (``train_summary.json``).
Each tracker is one small class with the same three calls: ``start(config, run_name, output_dir)``,
``log(metrics, step)`` and ``finish(final_metrics)``.

Where W&B and MLflow log is read from the environment of the command that starts the run (``WANDB_PROJECT``,
``WANDB_ENTITY``, ``WANDB_MODE``, ``WANDB_DIR``, ``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_NAME``) and
written into the output directory (:data:`SETTINGS_FILE`) before the workers start: a worker on another node,
or on a Ray cluster started before the command, does not see that environment. Credentials are never
written there: a worker logs in as its own machine does (``wandb login``, ``WANDB_API_KEY``, MLflow's own
variables).

A resumed run logs into the same tracker runs as the attempts before it (their IDs are kept in
:data:`RUNS_FILE`); a run that starts from step 0 starts new ones.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from robolora.errors import ConfigError

#: Every tracker ``--report-to`` takes: the module it imports and the pip package that provides it.
TRACKERS = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow-skinny"),
}
#: ``--report-to none``: metrics.jsonl alone.
NONE = "none"
#: Where the driver writes the trackers' settings for the workers.
SETTINGS_FILE = "trackers.json"
#: The IDs of the run's W&B and MLflow runs, so that a resumed run goes on logging into them.
RUNS_FILE = "tracker_runs.json"
#: The W&B project and the MLflow experiment when the environment names none.
DEFAULT_PROJECT = "robolora"
#: What ``WANDB_MODE`` may be (wandb's own modes).
WANDB_MODES = ("online", "offline", "disabled", "dryrun", "run", "shared")
#: MLflow's limits (mlflow.utils.validation): longest param value and key, params and metrics per request.
PARAM_VALUE_LIMIT = 6000
KEY_LIMIT = 250
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000


def parse_report_to(spec: str) -> tuple[str, ...]:
    """The trackers of a ``--report-to`` value, in order, each once; ``none`` for none.

    >>> parse_report_to("tensorboard"), parse_report_to(" WandB, mlflow,wandb "), parse_report_to("none")
    (('tensorboard',), ('wandb', 'mlflow'), ())
    >>> parse_report_to("tensorbord")
    Traceback (most recent call last):
    ...
    robolora.errors.ConfigError: --report-to: 'tensorbord' is not a tracker; use a comma-separated list of \
tensorboard, wandb, mlflow, or none
    """
    names = [part.strip().lower() for part in spec.split(",") if part.strip()]
    usage = f"use a comma-separated list of {', '.join(TRACKERS)}, or {NONE}"
    if not names:
        raise ConfigError(f"--report-to: {spec!r} names no tracker; {usage}")
    if NONE in names:
        if len(names) > 1:
            raise ConfigError(f"--report-to: {spec!r}: {NONE} cannot be combined with trackers; {usage}")
        return ()
    for name in names:
        if name not in TRACKERS:
            raise ConfigError(f"--report-to: {name!r} is not a tracker; {usage}")
    return tuple(dict.fromkeys(names))


def missing_package(name: str) -> str | None:
    """The pip command that installs tracker ``name``'s package when it is not importable here, else None."""
    module, package = TRACKERS[name]
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install, or an import blocked by a None in sys.modules
        found = False
    return None if found else f"pip install {package}"


# ----------------------------------------------------------------------------- what the trackers get (pure)


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings and lists as one level, their keys joined with ``/``.

    >>> flatten({"a": 1, "b": {"c": None, "d": [2, {"e": "x"}]}})
    {'a': 1, 'b/c': None, 'b/d/0': 2, 'b/d/1/e': 'x'}
    """
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}/"))
        elif isinstance(value, (list, tuple)) and any(isinstance(v, (Mapping, list, tuple)) for v in value):
            flat.update(flatten({str(i): v for i, v in enumerate(value)}, f"{name}/"))
        else:
            flat[name] = value
    return flat


def mlflow_params(config: Mapping[str, Any]) -> dict[str, str]:
    """The config as MLflow params: flattened, every value a string, keys and values cut to MLflow's limits.

    >>> mlflow_params({"lora_r": 8, "resume_from": None, "x": {"y": "z" * 7000}})["x/y"][-12:]
    'zzz... (cut)'
    >>> mlflow_params({"lora_r": 8, "resume_from": None})
    {'lora_r': '8', 'resume_from': 'None'}
    """
    params = {}
    for key, value in flatten(config).items():
        text = str(value)
        if len(text) > PARAM_VALUE_LIMIT:
            text = text[: PARAM_VALUE_LIMIT - 9] + "... (cut)"
        params[key[:KEY_LIMIT]] = text
    return params


def is_number(value: Any) -> bool:
    """A finite int or float, not a bool: what a tracker can plot."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def final_metrics(summary: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """A run's summary (``train_summary.json``) as final numbers and texts, keys prefixed ``final/``; empty
    values are left out.

    >>> final_metrics({"train_loss": 0.5, "steps": 3, "precision": "fp32", "eval_loss": None,
    ...                "startup_s": {"ray": 1.5}, "memory_per_worker": [{"peak_mb": 10}]})
    ({'final/train_loss': 0.5, 'final/steps': 3, 'final/startup_s/ray': 1.5, \
'final/memory_per_worker/0/peak_mb': 10}, {'final/precision': 'fp32'})
    """
    numbers, texts = {}, {}
    for key, value in flatten(summary).items():
        name = f"final/{key}"[:KEY_LIMIT]
        if is_number(value):
            numbers[name] = value
        elif isinstance(value, (str, bool)) and value != "":
            texts[name] = str(value)
    return numbers, texts


# ----------------------------------------------------------------------------- settings, from the driver


@dataclass(frozen=True)
class TrackerSettings:
    """Where W&B and MLflow log, as the command that starts the run sees its environment."""

    wandb_project: str
    wandb_entity: str | None
    #: online, offline or disabled (None: wandb's default, online unless ``wandb offline`` was run here).
    wandb_mode: str | None
    #: The folder wandb writes its run files into (a ``wandb/`` folder in it).
    wandb_dir: str
    mlflow_tracking_uri: str
    mlflow_experiment: str

    @classmethod
    def from_env(cls, env: Mapping[str, str], output_dir: str | os.PathLike) -> TrackerSettings:
        """The settings from ``env`` (such as ``os.environ``) for a run in ``output_dir``: W&B's files in the
        output directory unless ``WANDB_DIR`` says otherwise, MLflow into a file store there unless
        ``MLFLOW_TRACKING_URI`` names another.

        Local paths are made absolute: the workers start in folders of their own.

        >>> s = TrackerSettings.from_env({"WANDB_MODE": "offline"}, "/runs/a")
        >>> s.wandb_project, s.wandb_mode, s.wandb_dir, s.mlflow_tracking_uri, s.mlflow_experiment
        ('robolora', 'offline', '/runs/a', 'file:///runs/a/mlruns', 'robolora')
        >>> TrackerSettings.from_env({"MLFLOW_TRACKING_URI": "/srv/mlruns"}, "/o").mlflow_tracking_uri
        'file:///srv/mlruns'
        """
        out = Path(output_dir).absolute()
        uri = env.get("MLFLOW_TRACKING_URI") or str(out / "mlruns")
        if not re.match(r"[A-Za-z][\w+.-]+:", uri):  # a plain path, which MLflow reads as a file store
            uri = Path(uri).expanduser().absolute().as_uri()
        return cls(
            wandb_project=env.get("WANDB_PROJECT") or DEFAULT_PROJECT,
            wandb_entity=env.get("WANDB_ENTITY") or None,
            wandb_mode=env.get("WANDB_MODE") or None,
            wandb_dir=str(Path(env.get("WANDB_DIR") or out).expanduser().absolute()),
            mlflow_tracking_uri=uri,
            mlflow_experiment=env.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_PROJECT,
        )

    def problem(self) -> str | None:
        """What is wrong with the settings, or None.

        >>> TrackerSettings.from_env({"WANDB_MODE": "ofline"}, "/o").problem()
        'WANDB_MODE=ofline is not a W&B mode; set it to online, offline, disabled, dryrun, run or shared'
        """
        if self.wandb_mode is not None and self.wandb_mode not in WANDB_MODES:
            modes = ", ".join(WANDB_MODES[:-1]) + f" or {WANDB_MODES[-1]}"
            return f"WANDB_MODE={self.wandb_mode} is not a W&B mode; set it to {modes}"
        return None

    def where(self, name: str) -> str:
        """Where tracker ``name`` logs, for the pre-training checklist ("" for TensorBoard: the output directory).

        >>> TrackerSettings.from_env({"WANDB_ENTITY": "lab"}, "/o").where("wandb")
        'project lab/robolora, online'
        """
        if name == "wandb":
            entity = f"{self.wandb_entity}/" if self.wandb_entity else ""
            return f"project {entity}{self.wandb_project}, {self.wandb_mode or 'online'}"
        if name == "mlflow":
            return f"{self.mlflow_tracking_uri}, experiment {self.mlflow_experiment}"
        return ""


def save_settings(output_dir: Path, report_to: str, env: Mapping[str, str] | None = None) -> None:
    """Write the trackers' settings into the output directory for the workers (only where W&B or MLflow is on)."""
    path = output_dir / SETTINGS_FILE
    if not {"wandb", "mlflow"} & set(parse_report_to(report_to)):
        path.unlink(missing_ok=True)
        return
    from robolora.fileio import atomic_write_text

    settings = TrackerSettings.from_env(os.environ if env is None else env, output_dir)
    atomic_write_text(path, json.dumps(asdict(settings), indent=2))


def load_settings(output_dir: Path) -> TrackerSettings:
    """The settings the driver wrote for this run; this process's environment where it wrote none."""
    path = output_dir / SETTINGS_FILE
    if path.is_file():
        data = json.loads(path.read_text())
        return TrackerSettings(**{f.name: data.get(f.name) for f in fields(TrackerSettings)})
    return TrackerSettings.from_env(os.environ, output_dir)


def _run_ids(output_dir: Path) -> dict[str, str]:
    try:
        data = json.loads((output_dir / RUNS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


def _keep_run_id(output_dir: Path, name: str, run_id: str) -> None:
    from robolora.fileio import atomic_write_text

    atomic_write_text(output_dir / RUNS_FILE, json.dumps({**_run_ids(output_dir), name: run_id}))


def forget_runs(output_dir: Path) -> None:
    """A run that starts from step 0 logs into new tracker runs."""
    (output_dir / RUNS_FILE).unlink(missing_ok=True)


# ----------------------------------------------------------------------------- the trackers


class Tracker:
    """The interface: ``start`` once, ``log`` every row, ``finish`` at the end of the run."""

    name = ""

    def __init__(self, settings: TrackerSettings):
        self.settings = settings

    def start(self, config: dict[str, Any], run_name: str, output_dir: Path) -> None:
        raise NotImplementedError

    def log(self, metrics: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def finish(self, final: Mapping[str, Any]) -> None:
        raise NotImplementedError


class TensorBoardTracker(Tracker):
    """Scalars in ``<output_dir>/tensorboard``, as every run wrote before trackers could be chosen."""

    name = "tensorboard"

    def start(self, config: dict[str, Any], run_name: str, output_dir: Path) -> None:
        self.folder = output_dir / "tensorboard"
        self.writer: Any = None

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # This attempt's first row: an earlier attempt (interrupted, or a worker group Ray Train restarted)
            # may have logged this step and later ones before it stopped; the new event file starts by purging
            # them, so that TensorBoard keeps one value per step, as metrics.jsonl does after its truncation.
            self.writer = SummaryWriter(str(self.folder), purge_step=step)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def finish(self, final: Mapping[str, Any]) -> None:
        if self.writer is not None:
            self.writer.close()


class WandbTracker(Tracker):
    """A W&B run: the config at its start, every row at its step, the final metrics in its summary."""

    name = "wandb"

    def start(self, config: dict[str, Any], run_name: str, output_dir: Path) -> None:
        import wandb

        s = self.settings
        Path(s.wandb_dir).mkdir(parents=True, exist_ok=True)
        previous = _run_ids(output_dir).get(self.name)
        self.run = wandb.init(
            project=s.wandb_project,
            entity=s.wandb_entity,
            name=run_name,
            config=config,
            dir=s.wandb_dir,
            mode=s.wandb_mode,
            id=previous,
            resume="allow" if previous else None,
            # The worker's own output stays Ray's: wandb would otherwise wrap this process's stdout.
            settings=wandb.Settings(console="off"),
        )
        _keep_run_id(output_dir, self.name, self.run.id)

    def log(self, metrics: dict[str, float], step: int) -> None:
        # A resumed run logs its steps after the checkpoint again: wandb drops those it already has (the
        # same values: a resumed run follows the unbroken run's curve).
        self.run.log(metrics, step=step)

    def finish(self, final: Mapping[str, Any]) -> None:
        numbers, texts = final_metrics(final)
        self.run.summary.update({**numbers, **texts})
        self.run.finish()


class MlflowTracker(Tracker):
    """An MLflow run: the config as params, every row's metrics at its step, the final metrics at the last."""

    name = "mlflow"

    def start(self, config: dict[str, Any], run_name: str, output_dir: Path) -> None:
        s = self.settings
        if s.mlflow_tracking_uri.startswith("file:"):
            # MLflow 3 keeps its file store only for those who opt in; a local run's default store is one.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=s.mlflow_tracking_uri)
        experiment = self._experiment_id(s.mlflow_experiment)
        self.run_id = self._resumable(_run_ids(output_dir).get(self.name))
        if self.run_id is None:
            tags = {"robolora.output_dir": str(output_dir)}
            self.run_id = self.client.create_run(experiment, run_name=run_name, tags=tags).info.run_id
            _keep_run_id(output_dir, self.name, self.run_id)
        logged = self.client.get_run(self.run_id).data.params
        # A param cannot change once logged: a resumed run adds only the ones its earlier attempts had not.
        params = [(k, v) for k, v in mlflow_params(config).items() if k not in logged]
        from mlflow.entities import Param

        for i in range(0, len(params), PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in params[i : i + PARAMS_PER_BATCH]])
        self.last_step = 0

    def _experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException:  # created meanwhile by a run beside this one (a sweep's variants)
            return self.client.get_experiment_by_name(name).experiment_id

    def _resumable(self, run_id: str | None) -> str | None:
        """``run_id`` if that run is still in the store (set running again), else None."""
        if run_id is None:
            return None
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return None
        if run.info.lifecycle_stage != "active":
            return None
        self.client.update_run(run_id, status="RUNNING")
        return run_id

    def _log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(key[:KEY_LIMIT], float(value), now, step) for key, value in metrics.items()]
        for i in range(0, len(items), METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=items[i : i + METRICS_PER_BATCH])

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._log_metrics(metrics, step)
        self.last_step = max(self.last_step, step)

    def finish(self, final: Mapping[str, Any]) -> None:
        numbers, texts = final_metrics(final)
        self._log_metrics(numbers, int(final.get("steps") or self.last_step))
        for key, value in texts.items():
            self.client.set_tag(self.run_id, key, value)
        self.client.set_terminated(self.run_id)


def make_trackers(names: Iterable[str], settings: TrackerSettings) -> list[Tracker]:
    """The trackers of ``names`` (from :func:`parse_report_to`), not yet started."""
    kinds: dict[str, type[Tracker]] = {
        "tensorboard": TensorBoardTracker,
        "wandb": WandbTracker,
        "mlflow": MlflowTracker,
    }
    return [kinds[name](settings) for name in names]
