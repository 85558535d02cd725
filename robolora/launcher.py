"""The driver of a training run: Ray wiring, the run itself, and the report after it.

``run_training(cfg)`` runs the pre-training checklist (:mod:`robolora.preflight`) before any worker
starts, plans the run on the cluster, then starts a Ray Train ``TorchTrainer`` on a local Ray cluster
or an existing one, and finally writes the loss curve, the model card and the loss diagnosis.

Ray Train keeps the run's state and checkpoints in ``<output_dir>/.ray`` (or ``--storage-path``);
each complete checkpoint is published as ``<output_dir>/checkpoint-<step>`` (see
:mod:`robolora.checkpoints`), and starting the same command again continues from the last one. On
several nodes the output directory must be shared storage, as Ray Train requires for checkpoints.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from robolora.config import TrainConfig, absolute_paths, save_config
from robolora.errors import UserError
from robolora.fileio import atomic_write_text
from robolora.gpu import available_memory
from robolora.preflight import Check, Plan, check_batches, check_memory, plan_run, preflight
from robolora.progress import PROGRESS, ProgressWatcher
from robolora.runrecord import write_marker
from robolora.storage import is_uri, join
from robolora.trackers import save_settings


def _sigterm_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def init_ray(cfg: TrainConfig) -> None:
    """Connect to ``--ray-address``/``$RAY_ADDRESS``, else start a local Ray cluster."""
    import ray

    if ray.is_initialized():
        return
    address = cfg.ray_address or os.environ.get("RAY_ADDRESS")
    env = {
        "env_vars": {
            # One copy of each worker print (Ray Train would also copy prints into its logger).
            "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
            # Ray Train's controller learns that the workers started, reported or finished when it polls
            # them (every 2 s by default): each run waited up to that long at its start and its end, and
            # for each report. Polling every 0.5 s costs a few small calls a second.
            "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5"),
            "TOKENIZERS_PARALLELISM": "false",
            "TRANSFORMERS_VERBOSITY": "error",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning",
            "ROBOLORA_CACHE": str(Path(os.environ.get("ROBOLORA_CACHE", "")).resolve())
            if os.environ.get("ROBOLORA_CACHE")
            else "",
        }
    }
    # Ray's own info lines and transient warnings would bury the progress bar; errors still show,
    # and everything is in the session's log folder.
    quiet = ray.LoggingConfig(encoding="TEXT", log_level="ERROR")
    if address:
        # Inside a Ray Job (robolora submit, a KubeRay RayJob) the job's runtime env may set the same
        # variables (ROBOLORA_CACHE); Ray refuses to merge the two unless told to.
        os.environ.setdefault("RAY_OVERRIDE_JOB_RUNTIME_ENV", "1")
        ray.init(address=address, runtime_env=env, logging_config=quiet)
    else:
        # A laptop or a single machine is never preempted; the watcher would only add noise.
        env["env_vars"]["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"
        # The dashboard starts where its packages are installed (ray[default]); a minimal Ray trains without it.
        ray.init(runtime_env=env, include_dashboard=None, dashboard_host=cfg.dashboard_host, logging_config=quiet)
    # SIGTERM (a scheduler, `kill`) stops a run as cleanly as Ctrl-C; ray.init made it a bare exit.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)


def command_start() -> float:
    """When this process started (wall clock): the start-up report counts from the command."""
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # no psutil, or no /proc: count from now
        return time.time()


def run_training(
    cfg: TrainConfig,
    train_loop: Callable[[dict], None] | None = None,
    callbacks: Sequence[Any] = (),
    watch: bool = True,
    started_at: float | None = None,
    label: str = "",
) -> dict[str, Any]:
    """Preflight, train on Ray Train workers, then plot, diagnose and describe the run.

    ``train_loop`` replaces the per-worker function (tests wrap the standard one to probe the model);
    ``callbacks`` are Ray Train callbacks (a sweep passes Tune's reporter); ``watch`` shows the
    progress bar and log lines; ``started_at`` is when the command started (wall clock), where the
    start-up report counts from (default: now); ``label`` starts every line the workers print (a sweep's
    variant name).
    """
    t0 = time.perf_counter()
    # Wall-clock marks of the start-up, completed by the workers (robolora.startup)
    marks = {"start": started_at or time.time()}
    # Checked before Ray, torch and DeepSpeed are imported: bad input is refused within a second or so.
    checks, ctx = preflight(cfg)
    from robolora.worker import RunSpec, train_loop_per_worker

    # From here on the run's LoRA targets are the ones resolved for the model (auto, all-linear) and its
    # paths absolute (workers start in folders of their own): the planner, config.yaml and workers use them.
    given, cfg = cfg, absolute_paths(cfg.replace(lora_target_modules=ctx["lora_target_modules"]))
    marks["checks"] = time.time()
    init_ray(cfg)
    marks["ray"] = time.time()
    plan = plan_on_cluster(cfg, ctx["model_config"])
    checks += fetch_on_remote_nodes(cfg)
    # The resolved config: the plan's choices written in. config.yaml saves it (it reproduces the run) and
    # the workers train with it.
    cfg = plan.config
    checks += [check_batches(cfg, len(ctx["train"])), check_memory(cfg, ctx["model_config"])]
    print_checklist(checks, plan)
    out = Path(cfg.output_dir).resolve()
    start_output(out, given, cfg, ctx)
    storage, name = ray_storage(cfg, out)
    spec = RunSpec(
        config=cfg.to_dict(),
        output_dir=str(out),
        train_records=ctx["train"],
        val_records=ctx["val"],
        checkpoint_root=join(storage, name),
        startup=marks,
        label=label,
    )
    trainer = ray_trainer(cfg, train_loop or train_loop_per_worker, spec, (storage, name), callbacks)
    result = fit(trainer, out, watch)
    summary = finish_run(cfg, out, time.perf_counter() - t0)
    write_marker(out, given, cfg, finished=True, inputs=ctx["inputs"])
    summary["ray_metrics"] = result.metrics
    return summary


def plan_on_cluster(cfg: TrainConfig, model_config: Any) -> Plan:
    """:func:`robolora.preflight.plan_run` for the Ray cluster this process is connected to: its CPUs,
    its GPUs and their nodes, and the memory of this machine's GPUs."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    gpu_nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("GPU")]
    gpu_memory = available_memory(True)[0] if gpus else None
    cpus_per_gpu = min((int(r.get("CPU", 0) // r["GPU"]) for r in gpu_nodes), default=1)
    # What Ray lets tasks and actors use of each GPU node's memory: where offloaded states and weights live.
    host_memory = min((int(r["memory"]) for r in gpu_nodes if r.get("memory")), default=None)
    nodes = max(1, len(gpu_nodes))
    return plan_run(cfg, int(resources.get("CPU", 1)), gpus, model_config, gpu_memory, nodes, cpus_per_gpu, host_memory)


def fetch_on_remote_nodes(cfg: TrainConfig) -> list[Check]:
    """On a remote cluster, a hub model's weights downloaded on every node that hosts workers first, with
    progress lines (:mod:`robolora.download`); on this machine's own cluster the preflight downloaded them."""
    from robolora.models import ALIASES, is_local_model

    remote = cfg.ray_address or os.environ.get("RAY_ADDRESS")
    if not remote or cfg.model_name in ALIASES or is_local_model(cfg.model_name):
        return []
    from robolora.download import fetch_on_nodes

    return [Check("model weights", True, line) for line in fetch_on_nodes(cfg.model_name)]


def print_checklist(checks: list[Check], plan: Plan) -> None:
    print("Pre-training checklist")
    for c in checks:
        print(c.line())
    print(plan.describe(), flush=True)


def start_output(out: Path, given: TrainConfig, cfg: TrainConfig, ctx: dict[str, Any]) -> None:
    """The output directory before the workers start: the resolved config, the validation split (so
    ``robolora eval --lora-path <output-dir>`` judges on held-out records) and the unfinished-run marker."""
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    atomic_write_text(out / "val.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ctx["val"]))
    save_settings(out, cfg.report_to)  # where W&B and MLflow log, from this command's environment
    write_marker(out, given, cfg, finished=False, inputs=ctx["inputs"])


def ray_trainer(
    cfg: TrainConfig,
    train_loop: Callable[[dict], None],
    spec: Any,
    storage: tuple[str, str],
    callbacks: Sequence[Any],
) -> Any:
    """The Ray Train ``TorchTrainer`` for a planned config: its workers, resources, storage and checkpoints."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    return TorchTrainer(
        train_loop,
        train_loop_config=spec.to_dict(),
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers,
            use_gpu=cfg.use_gpu,
            resources_per_worker={"CPU": cfg.cpus_per_worker, **({"GPU": 1} if cfg.use_gpu else {})},
            placement_strategy=cfg.placement_strategy,
        ),
        run_config=RunConfig(
            name=storage[1],
            storage_path=storage[0],
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.save_total_limit or None),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            logging_config=LoggingConfig(log_level="WARNING"),
            callbacks=list(callbacks),
        ),
    )


def fit(trainer: Any, out: Path, watch: bool) -> Any:
    """Train, showing progress when ``watch``; a stop or a failure becomes one clear error."""
    import ray

    watcher = ProgressWatcher(out)
    if watch:
        watcher.start()
    try:
        return _fit_interruptibly(trainer)
    except KeyboardInterrupt:
        ray.shutdown()  # stops the workers; checkpoints already persisted stay complete
        raise Interrupted(out) from None
    except Exception as e:  # Ray wraps worker errors; say what happened and how to go on
        raise TrainingFailed(out, e) from e
    finally:
        if watch:
            watcher.stop()


def ray_storage(cfg: TrainConfig, out: Path) -> tuple[str, str]:
    """Where Ray Train keeps the run's state and registered checkpoints, as its (storage path, run name):
    ``<output_dir>/.ray/train``, or ``<storage_path>/<output_dir name>`` on shared storage or in a bucket
    (:mod:`robolora.storage`; a URI stays one).

    >>> from robolora.config import TrainConfig
    >>> ray_storage(TrainConfig(), Path("/runs/a")), ray_storage(TrainConfig(storage_path="s3://b/x"), Path("/runs/a"))
    (('/runs/a/.ray', 'train'), ('s3://b/x', 'a'))
    """
    if not cfg.storage_path:
        return str(out / ".ray"), "train"
    if is_uri(cfg.storage_path):
        return cfg.storage_path, out.name
    return str(Path(cfg.storage_path).resolve()), out.name


def _fit_interruptibly(trainer: Any) -> Any:
    """``trainer.fit()`` in a thread, so Ctrl-C and SIGTERM reach this process as KeyboardInterrupt
    (Ray Train would otherwise take over SIGINT and end the run as a failure)."""
    box: dict[str, Any] = {}

    def fit() -> None:
        try:
            box["result"] = trainer.fit()
        except BaseException as e:
            box["error"] = e

    thread = threading.Thread(target=fit, name="ray-train-fit", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.5)
    except KeyboardInterrupt:
        # The thread still waits on Ray Train's controller; were Ray shut down under it, Ray would end this
        # process with exit code 1 from that thread. Ending the controller first lets the thread return.
        _end_train_controllers()
        thread.join(30)
        raise
    if "error" in box:
        raise box["error"]
    return box["result"]


def _end_train_controllers() -> None:
    """Kill this job's Ray Train controllers on this node (their workers go with them; checkpoints already
    persisted stay complete). Best effort: whatever is left, ``ray.shutdown`` stops."""
    import ray

    try:
        from ray._private import state

        context = ray.get_runtime_context()
        job, node = context.get_job_id(), context.get_node_id()
        for actor in state.actors().values():
            if (
                actor.get("ActorClassName") == "TrainController"
                and actor.get("State") == "ALIVE"
                and actor.get("JobID") == job
                and actor.get("Address", {}).get("NodeID") == node
                and actor.get("Pid")
            ):
                os.kill(int(actor["Pid"]), signal.SIGKILL)
    except Exception:  # a Ray without this table, or a controller already gone
        pass


class TrainingFailed(UserError):
    """The workers failed; the output directory keeps its last checkpoint for a resume."""

    exit_code = 1

    def __init__(self, out: Path, error: Exception):
        cause = error.__cause__ or error
        text = " ".join(str(cause).split())[-600:]
        advice = oom_advice(f"{type(cause).__name__}: {text}")
        super().__init__(
            f"training failed: {type(cause).__name__}: {text}\n"
            + (f"{advice}\n" if advice else "")
            + f"the last complete checkpoint in {out} is kept; run the same command again to resume from it"
        )


#: What a worker's error says when memory ran out: PyTorch on a GPU; PyTorch's CPU allocator ("DefaultCPUAllocator:
#: can't allocate memory: you tried to allocate ... bytes. Error code 12 (Cannot allocate memory)"), Python and C++
#: allocations, the system (ENOMEM); Ray's OOM killer.
OOM_SIGNS = (
    "OutOfMemoryError",
    "out of memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "can't allocate memory",
    "Cannot allocate memory",
    "MemoryError",
    "bad_alloc",
    "running low on memory",
)


def oom_advice(error_text: str) -> str | None:
    """The flags that lower memory, when an error says memory ran out (the guide's troubleshooting).

    >>> oom_advice("OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB").splitlines()[0]
    'out of memory: lower it with any of these (robolora plan --model ... --gpus ... shows what fits):'
    >>> oom_advice("RuntimeError: DefaultCPUAllocator: can't allocate memory: you tried to allocate 64 bytes") is None
    False
    >>> oom_advice("ValueError: bad value") is None
    True
    """
    if not any(sign in error_text for sign in OOM_SIGNS):
        return None
    return (
        "out of memory: lower it with any of these (robolora plan --model ... --gpus ... shows what fits):\n"
        "  --batch-size smaller, with --gradient-accumulation-steps larger to keep the global batch\n"
        "  --gradient-checkpointing (recompute activations in the backward pass)\n"
        "  --zero-stage 3 (shard the frozen weights across workers)\n"
        "  --offload optimizer, or --offload all with --zero-stage 3 (CPU memory instead of GPU memory)\n"
        "  --max-length shorter (fewer tokens per example)"
    )


class Interrupted(UserError):
    """The run was stopped (Ctrl-C or SIGTERM); its last complete checkpoint is kept."""

    exit_code = 130

    def __init__(self, out: Path):
        super().__init__(
            f"interrupted: the last complete checkpoint in {out} is kept; run the same command again to resume"
        )


def finish_run(cfg: TrainConfig, out: Path, wall_s: float) -> dict[str, Any]:
    """Loss curve, diagnosis and model card from ``metrics.jsonl``; marks the run finished."""
    from robolora.diagnose import diagnose
    from robolora.report import model_card, plot_loss_curve, read_metrics, run_summary

    rows = read_metrics(out / "metrics.jsonl")
    diagnosis = diagnose(rows, cfg.to_dict())
    plot_loss_curve(rows, out / "loss_curve.png", title=f"{cfg.model_name} LoRA r={cfg.lora_r}")
    summary_path = out / "train_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    tokens = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r]
    extra = {
        "global_batch": cfg.global_batch_size(cfg.num_workers),
        "workers": cfg.num_workers,
        "zero_stage": cfg.zero_stage,
        "offload": cfg.offload,
        "wall_time_s": round(wall_s, 1),  # this command's; train_runtime_s counts every attempt
        "mean_tokens_per_s": round(sum(tokens) / len(tokens), 1) if tokens else None,
    }
    atomic_write_text(out / "README.md", model_card(cfg.to_dict(), rows, diagnosis, extra))
    # The losses from the whole metrics.jsonl, every attempt of a resumed run included.
    summary.update(run_summary(rows), **extra, verdict=diagnosis.verdict)
    atomic_write_text(summary_path, json.dumps(summary, indent=2))
    (out / PROGRESS).unlink(missing_ok=True)
    print(diagnosis.text())
    print(
        f"Done in {wall_s:.0f} s: adapter in {out} (adapter_model.safetensors), loss curve {out / 'loss_curve.png'}, "
        f"metrics {out / 'metrics.jsonl'}"
    )
    return summary
