"""The driver of a training run: preflight, Ray Train wiring, and the report after the run.

``run_training(cfg)`` checks everything a run needs before any worker starts (the training
guide's pre-training checklist), then starts a Ray Train ``TorchTrainer`` on a local Ray cluster
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
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from robolora.config import TrainConfig, absolute_paths, check_against_model, parse_category_weights, save_config
from robolora.errors import UserError
from robolora.fileio import atomic_write_text
from robolora.progress import PROGRESS, ProgressWatcher
from robolora.runrecord import (  # noqa: F401  (RUN_MARKER and run_finished: the names other modules import)
    RUN_MARKER,
    changes,
    describe_changes,
    input_digests,
    read_marker,
    run_finished,
    write_marker,
)
from robolora.sizing import GIB, GpuInventory, ModelDims, Workload, known_model, plan_memory


@dataclass
class Check:
    """One line of the pre-training checklist."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"  [{'ok' if self.ok else 'FAIL'}] {self.name}: {self.detail}"


# ----------------------------------------------------------------------------- preflight


def check_output_dir(cfg: TrainConfig, inputs: dict[str, str] | None = None) -> tuple[Check, bool]:
    """Whether the output directory can take this run; returns (check, resuming).

    ``inputs`` are the run's input digests (:func:`robolora.runrecord.input_digests`), computed when left out.
    """
    out = Path(cfg.output_dir)
    try:
        exists, is_dir = out.exists(), out.is_dir()
    except OSError as e:  # a name too long for the file system, say
        raise UserError(f"--output-dir: {out}: {e.strerror}; choose another path") from None
    except ValueError:  # a NUL byte
        raise UserError("--output-dir: the path holds a NUL byte; choose another path") from None
    if exists and not is_dir:
        raise UserError(f"--output-dir: {out} is a file; choose a directory")
    if is_dir and any(out.iterdir()):
        previous = read_marker(out)
        if previous is None:
            raise UserError(
                f"--output-dir: {out} is not empty and holds no robolora run; choose a new or empty directory"
            )
        if previous.get("finished"):
            raise UserError(
                f"--output-dir: {out} already holds a finished run; choose another directory "
                "(or --resume-from it to start a new stage from its adapter)"
            )
        found = changes(cfg, previous, inputs if inputs is not None else input_digests(cfg))
        if found:
            raise UserError(
                f"--output-dir: {out} holds an unfinished run with other settings ({describe_changes(found, 3)}); "
                "start it again with the same flags and inputs to resume, or choose another directory"
            )
        return Check("output directory", True, f"{out} (unfinished run: resuming from its last checkpoint)"), True
    check_creatable(out)
    return Check("output directory", True, f"{out} (new, writable)"), False


def check_creatable(out: Path) -> None:
    """Whether ``out`` (an empty or missing directory) can hold the run: tried, not guessed from
    permission bits (root passes those everywhere, and /proc or a read-only mount still refuses)."""
    base = next((p for p in [out, *out.parents] if p.exists()), Path.cwd())
    if not base.is_dir():
        raise UserError(f"--output-dir: {out} cannot be created: {base} is a file; choose another path")
    for part in out.relative_to(base).parts:
        if len(os.fsencode(part)) > 255:
            raise UserError(f"--output-dir: {out}: the name {part[:40]}... is too long (255 bytes at most)")
    try:
        Path(tempfile.mkdtemp(prefix=".robolora-probe-", dir=base)).rmdir()
    except OSError as e:
        raise UserError(
            f"--output-dir: {out} cannot be created in {base} ({e.strerror}); choose a writable place"
        ) from None


def load_datasets(cfg: TrainConfig) -> tuple[list[dict[str, str]], list[dict[str, str]], str]:
    """Validated train and validation records (split off when only one file is given), the training
    records weighted by category where ``--category-weights`` asks."""
    train, val, how = _read_datasets(cfg)
    weights = parse_category_weights(cfg.category_weights)
    if not weights:
        return train, val, how
    from robolora.data import UNCATEGORIZED, weight_by_category

    present = sorted({r.get("category") or UNCATEGORIZED for r in train})
    for name in weights:
        if name not in present:
            raise UserError(
                f"--category-weights: no training record has the category {name!r}; "
                f"the training records have: {', '.join(present)}"
            )
    weighted = weight_by_category(train, weights, cfg.seed)
    said = ", ".join(f"{name} x{w:g}" for name, w in weights.items())
    return weighted, val, f"{how}; {len(weighted)} training examples per epoch with {said}"


def _read_datasets(cfg: TrainConfig) -> tuple[list[dict[str, str]], list[dict[str, str]], str]:
    from robolora.data import load_records, split_records

    if cfg.data_json:
        records = load_records(cfg.data_json, check_api=cfg.check_api)
        train, val = split_records(records, cfg.val_ratio, cfg.seed)
        how = f"{cfg.data_json}: {len(records)} records, split {len(train)} train / {len(val)} validation"
        return train, val, how + f" (stratified by category, seed {cfg.seed})"
    if cfg.train_json:
        train = load_records(cfg.train_json, check_api=cfg.check_api)
        if cfg.val_json:
            val = load_records(cfg.val_json, check_api=cfg.check_api)
            return train, val, f"{cfg.train_json}: {len(train)} train; {cfg.val_json}: {len(val)} validation"
        train, val = split_records(train, cfg.val_ratio, cfg.seed)
        return train, val, f"{cfg.train_json}: split {len(train)} train / {len(val)} validation"
    raise UserError("no dataset: pass --data-json FILE, or --train-json FILE [--val-json FILE]")


def local_gpus(nodes: int = 1) -> GpuInventory | None:
    """This machine's GPUs (sized by the smallest), counted ``nodes`` times; None where NVML sees none."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        sizes = [pynvml.nvmlDeviceGetMemoryInfo(h).total for h in handles]
        name = pynvml.nvmlDeviceGetName(handles[0]) if handles else ""
    except Exception:  # no NVML (no driver, a CPU-only machine): the GPUs may be elsewhere in the cluster
        return None
    if not sizes:
        return None
    name = name.decode() if isinstance(name, bytes) else name
    return GpuInventory(len(sizes) * nodes, min(sizes), nodes, source=f"this machine: {len(sizes)} x {name}")


def available_memory(use_gpu: bool) -> tuple[int | None, str]:
    """Bytes one worker may use: the smallest GPU's total memory, or the host's available memory."""
    if use_gpu:
        gpus = local_gpus()
        return (gpus.memory, "per GPU") if gpus else (None, "GPU memory not visible from this machine")
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024, "host memory available"
    return None, "host memory unknown"


@dataclass
class Plan:
    """How the run is laid out on the cluster."""

    num_workers: int
    use_gpu: bool
    cpus_per_worker: int
    zero_stage: int
    offload: str
    bf16: bool
    reason: str
    batch_size: int
    gradient_accumulation_steps: int
    gradient_checkpointing: bool
    #: Why the memory planner chose the layout (GPU runs whose memory is known).
    memory: str = ""


def _dims_of(model_config: Any) -> ModelDims | None:
    try:
        return ModelDims.from_config(model_config) if model_config is not None else None
    except AttributeError:  # neither a Llama-style nor a GPT-2 architecture
        return None


def planned_targets(cfg: TrainConfig, dims: ModelDims) -> list[str]:
    """The LoRA targets for the memory planner: as given, with ``auto`` and ``all-linear`` read for a
    model of ``dims`` (a run resolves them against the model's modules first: :func:`check_targets`).

    >>> from robolora.config import TrainConfig
    >>> from robolora.sizing import SIZES
    >>> planned_targets(TrainConfig(), SIZES["7B"]), planned_targets(TrainConfig(lora_target_modules="v_proj"), None)
    (['q_proj', 'k_proj', 'v_proj', 'o_proj'], ['v_proj'])
    """
    from robolora.models import ALL_LINEAR, AUTO_TARGETS

    given = cfg.target_modules()
    special = given[0].lower() if len(given) == 1 else ""
    if special == AUTO_TARGETS:
        return dims.default_targets()
    if special == ALL_LINEAR:
        return dims.linear_names()
    return given


def workload(cfg: TrainConfig, dims: ModelDims, bf16: bool = True) -> Workload:
    """What the memory planner needs from a training config, for a model of ``dims``."""
    layers = cfg.lora_layer_indices(dims.layers)
    return Workload(
        dims,
        seq_len=cfg.max_length,
        batch_size=cfg.batch_size,
        grad_accum=cfg.gradient_accumulation_steps,
        lora_r=cfg.lora_r,
        targets=tuple(planned_targets(cfg, dims)),
        lora_layers=tuple(layers) if layers else None,
        lora_dropout=cfg.lora_dropout > 0,
        gradient_checkpointing=cfg.gradient_checkpointing,
        bf16=bf16,
    )


def model_dims(cfg: TrainConfig) -> tuple[ModelDims, str]:
    """The model's dimensions and a label: sizes and CodeLlama names without a download, else from its config."""
    known = known_model(cfg.model_name)
    if known:
        return known
    check, model_config = check_model(cfg)
    dims = _dims_of(model_config)
    if dims is None:
        raise UserError(
            f"--model-name: {cfg.model_name} ({model_config.model_type}) has neither Llama-style nor GPT-2 "
            "dimensions to plan with"
        )
    return dims, check.detail


#: CPU workers by default, at most, each with an equal share of the cluster's CPUs: on 2 cores two
#: single-threaded workers train 17-32% faster than one with both (benchmarks/README.md).
CPU_WORKERS = 2

#: CPUs reserved for a GPU worker by default, at most.
GPU_WORKER_MAX_CPUS = 8


def plan_run(
    cfg: TrainConfig,
    cluster_cpus: int,
    cluster_gpus: int,
    model_config: Any = None,
    gpu_memory: int | None = None,
    nodes: int = 1,
    cpus_per_gpu: int = 1,
) -> Plan:
    """Fill in the distributed settings the user left out.

    On GPUs whose memory is known (``gpu_memory`` bytes each, over ``nodes``) the memory planner picks
    the ZeRO stage and offload that were left out, lowers the micro-batch (raising accumulation, so
    the global batch stays) and turns on gradient checkpointing only where the run would not fit
    otherwise, and refuses a run that cannot fit at all. Otherwise ZeRO-2 without offload is the
    default and :func:`check_memory` compares the estimate with what is available.
    """
    use_gpu = cfg.use_gpu if cfg.use_gpu is not None else cluster_gpus > 0
    if use_gpu and cluster_gpus == 0:
        raise UserError("--use-gpu: the Ray cluster has no GPUs; leave the flag out to train on CPU workers")
    capacity = cluster_gpus if use_gpu else cluster_cpus
    workers = cfg.num_workers or (cluster_gpus if use_gpu else min(CPU_WORKERS, max(1, cluster_cpus)))
    if workers > capacity:
        unit = ("GPU" if use_gpu else "CPU") + ("s" if capacity != 1 else "")
        # GPUs found and used by default: CPU workers may be what was meant (a test tier, a laptop's one GPU)
        cpu_hint = cfg.use_gpu is None and use_gpu and workers <= cluster_cpus
        raise UserError(
            f"--num-workers {workers}: the Ray cluster has only {capacity} {unit}; use at most {capacity}"
            + (", or add --no-use-gpu to train on CPU workers" if cpu_hint else "")
        )
    # A GPU worker's host threads launch kernels, collate and pin batches and run the optimizer's
    # bookkeeping: half of its node's CPUs per GPU (up to 8), the rest for data loaders and Ray.
    gpu_cpus = max(1, min(GPU_WORKER_MAX_CPUS, cpus_per_gpu // 2))
    cpus = cfg.cpus_per_worker or (gpu_cpus if use_gpu else max(1, cluster_cpus // workers))
    from robolora.models import bf16_supported

    bf16 = cfg.bf16 if cfg.bf16 is not None else bf16_supported(use_gpu)
    if cfg.num_workers:
        reason = "as given"
    elif use_gpu:
        reason = "one worker per GPU available"
    else:
        shared = f"{cluster_cpus} CPU{'s' if cluster_cpus > 1 else ''}"
        reason = f"the default on CPUs: at most {CPU_WORKERS}, sharing the cluster's {shared}"
    stage = cfg.zero_stage or (3 if cfg.offload == "all" else 2)
    plan = Plan(
        workers,
        use_gpu,
        cpus,
        stage,
        cfg.offload or "none",
        bf16,
        reason,
        cfg.batch_size,
        cfg.gradient_accumulation_steps,
        cfg.gradient_checkpointing,
    )
    dims = _dims_of(model_config)
    if not use_gpu or gpu_memory is None or dims is None:
        return plan
    gpus = GpuInventory(workers, gpu_memory, max(1, min(nodes, workers)))
    memory = plan_memory(workload(cfg, dims, bf16), gpus, zero_stage=cfg.zero_stage, offload=cfg.offload)
    if not memory.fits:
        raise UserError(memory.refusal())
    c = memory.choice
    return replace(
        plan,
        zero_stage=c.zero_stage,
        offload=c.offload,
        batch_size=c.micro_batch,
        gradient_accumulation_steps=c.grad_accum,
        gradient_checkpointing=c.gradient_checkpointing,
        memory=memory.reason,
    )


def check_memory(cfg: TrainConfig, plan: Plan, model_config: Any) -> Check:
    """The estimate for the plan against the memory available (per GPU, or the host for CPU workers)."""
    dims = _dims_of(model_config)
    if dims is None:
        return Check("memory", True, "not estimated (the model's architecture has no Llama-style dimensions)")
    est = workload(cfg, dims, plan.bf16).estimate(
        plan.num_workers,
        plan.zero_stage,
        plan.offload,
        plan.batch_size,
        plan.gradient_checkpointing,
        on_gpu=plan.use_gpu,
    )
    avail, what = available_memory(plan.use_gpu)
    need = est.total if plan.use_gpu else est.total * plan.num_workers
    scope = "per GPU" if plan.use_gpu else f"for {plan.num_workers} workers"
    if avail is None:
        return Check("memory", True, f"~{need / GIB:.1f} GiB needed {scope}; {what}")
    if need > avail:
        raise UserError(
            f"memory: this run needs about {need / GIB:.1f} GiB {scope} but {avail / GIB:.1f} GiB is {what}; "
            "reduce --batch-size or --max-length, add --gradient-checkpointing, use --zero-stage 3 or --offload, "
            "or pick a smaller --model-name"
        )
    return Check("memory", True, f"~{need / GIB:.1f} GiB needed {scope} (worst case), {avail / GIB:.1f} GiB {what}")


def check_batches(cfg: TrainConfig, plan: Plan, num_train: int) -> Check:
    """At least one optimizer step: the training split must fill one global batch."""
    from robolora.sampler import steps_per_epoch, total_steps

    global_batch = cfg.global_batch_size(plan.num_workers)
    if num_train < global_batch:
        raise UserError(
            f"dataset: {num_train} training records cannot fill one global batch of {global_batch} "
            f"(--batch-size {cfg.batch_size} x --gradient-accumulation-steps {cfg.gradient_accumulation_steps} x "
            f"{plan.num_workers} workers); lower those or add records"
        )
    capped = f"; --max-steps {cfg.max_steps} overrides --num-epochs" if cfg.max_steps > 0 else ""
    if cfg.packing:
        return Check(
            "batches",
            True,
            f"global batch {global_batch} rows of packed examples (up to {cfg.max_length} tokens each); the "
            f"steps per epoch follow from the packing, printed when training starts{capped}",
        )
    per_epoch = steps_per_epoch(num_train, global_batch)
    detail = f"global batch {global_batch}, {per_epoch} optimizer steps per epoch"
    if capped:
        steps = total_steps(per_epoch, cfg.num_epochs, cfg.max_steps)
        detail += f"{capped}: {steps} step{'s' if steps != 1 else ''} in all ({steps / per_epoch:.3g} epochs)"
    return Check("batches", True, detail)


def check_model(cfg: TrainConfig) -> tuple[Check, Any]:
    """The base model's config, read without its weights; its dimensions must be positive integers."""
    from robolora.models import is_local_model, load_config, resolve_model
    from robolora.sizing import check_dimensions

    source = resolve_model(cfg.model_name)
    model_config = load_config(cfg.model_name, trust_remote_code=cfg.trust_remote_code)
    local = source != cfg.model_name or is_local_model(cfg.model_name)
    check_dimensions(model_config, str(Path(source) / "config.json") if local else f"{cfg.model_name}: config.json")
    where = source if local else "hub"
    detail = f"{cfg.model_name} ({model_config.model_type}, {where})"
    num_layers = getattr(model_config, "num_hidden_layers", None)
    if cfg.lora_layers and num_layers:
        layers = cfg.lora_layer_indices(num_layers)  # raises ConfigError when the model lacks them
        detail += f"; LoRA on {len(layers or range(num_layers))} of its {num_layers} layers"
    check_against_model(cfg, *(getattr(model_config, k, None) for k in ("max_position_embeddings", "hidden_size")))
    return Check("base model", True, detail), model_config


def check_targets(cfg: TrainConfig, model_config: Any) -> tuple[Check, list[str]]:
    """The LoRA target modules, checked against the model's modules (built without weights) and with
    ``auto`` and ``all-linear`` resolved for it; returns the check and the resolved names."""
    from robolora.models import matches, module_tree, resolve_targets

    tree = module_tree(cfg.model_name, model_config, cfg.trust_remote_code)
    targets = resolve_targets(cfg.target_modules(), tree, cfg.model_name)
    count = sum(any(matches(t, m) for t in targets) for m in tree.adaptable)
    given = "" if targets == cfg.target_modules() else f" (from {cfg.lora_target_modules})"
    return Check("LoRA targets", True, f"{','.join(targets)}{given}: {count} modules of the model"), targets


def check_resume_from(cfg: TrainConfig, targets: list[str] | None = None) -> Check | None:
    """The adapter a run starts from: LoRA of the same rank on the same modules (``targets``: the
    resolved target modules, default as given)."""
    if not cfg.resume_from:
        return None
    from robolora.models import adapter_config, adapter_dir

    src = adapter_dir(cfg.resume_from, flag="--resume-from")
    peft_cfg = adapter_config(src, "--resume-from")
    targets = targets if targets is not None else cfg.target_modules()
    if peft_cfg.get("r") != cfg.lora_r or sorted(peft_cfg.get("target_modules") or []) != sorted(targets):
        raise UserError(
            f"--resume-from: {src} has LoRA r={peft_cfg.get('r')} on {sorted(peft_cfg.get('target_modules') or [])}; "
            "pass the same --lora-r and --lora-target-modules"
        )
    return Check("starting weights", True, f"adapter from {src}")


# ----------------------------------------------------------------------------- the run


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


def preflight(cfg: TrainConfig) -> tuple[list[Check], dict[str, Any]]:
    """The pre-training checklist; raises UserError on the first item that fails."""
    checks = []
    train, val, how = load_datasets(cfg)
    checks.append(Check("dataset", True, how))
    inputs = input_digests(cfg)
    out_check, resuming = check_output_dir(cfg, inputs)
    checks.append(out_check)
    model_check, model_config = check_model(cfg)
    checks.append(model_check)
    target_check, targets = check_targets(cfg, model_config)
    checks.append(target_check)
    resume = check_resume_from(cfg, targets)
    if resume:
        checks.append(resume)
    return checks, {
        "train": train,
        "val": val,
        "resuming": resuming,
        "model_config": model_config,
        "inputs": inputs,
        "lora_target_modules": ",".join(targets),
    }


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
    import ray
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from robolora.worker import RunSpec, train_loop_per_worker

    # From here on the run's LoRA targets are the ones resolved for the model (auto, all-linear) and its
    # paths absolute (workers start in folders of their own): the planner, config.yaml and workers use them.
    given, cfg = cfg, absolute_paths(cfg.replace(lora_target_modules=ctx["lora_target_modules"]))
    marks["checks"] = time.time()
    init_ray(cfg)
    marks["ray"] = time.time()
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    gpu_nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("GPU")]
    gpu_memory = available_memory(True)[0] if gpus else None
    cpus_per_gpu = min((int(r.get("CPU", 0) // r["GPU"]) for r in gpu_nodes), default=1)
    plan = plan_run(
        cfg, int(resources.get("CPU", 1)), gpus, ctx["model_config"], gpu_memory, max(1, len(gpu_nodes)), cpus_per_gpu
    )
    checks.append(check_batches(cfg, plan, len(ctx["train"])))
    checks.append(check_memory(cfg, plan, ctx["model_config"]))
    print("Pre-training checklist")
    for c in checks:
        print(c.line())
    print(
        f"Plan: {plan.num_workers} {'GPU' if plan.use_gpu else 'CPU'} worker{'s' if plan.num_workers > 1 else ''} "
        f"({plan.reason}), {plan.cpus_per_worker} CPU{'s' if plan.cpus_per_worker > 1 else ''} each, "
        f"ZeRO-{plan.zero_stage}, offload {plan.offload}, "
        f"{'bf16' if plan.bf16 else 'fp32'}, micro-batch {plan.batch_size} x accumulation "
        f"{plan.gradient_accumulation_steps}{', gradient checkpointing' if plan.gradient_checkpointing else ''}"
        + (f"\n  memory: {plan.memory}" if plan.memory else ""),
        flush=True,
    )
    # The saved config is the resolved one: the plan's choices written out, so it reproduces the run.
    cfg = cfg.replace(
        num_workers=plan.num_workers,
        use_gpu=plan.use_gpu,
        cpus_per_worker=plan.cpus_per_worker,
        zero_stage=plan.zero_stage,
        offload=plan.offload,
        bf16=plan.bf16,
        batch_size=plan.batch_size,
        gradient_accumulation_steps=plan.gradient_accumulation_steps,
        gradient_checkpointing=plan.gradient_checkpointing,
    )
    out = Path(cfg.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    # The validation split, so `robolora eval --lora-path <output-dir>` judges on held-out records.
    atomic_write_text(out / "val.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ctx["val"]))
    write_marker(out, given, cfg, finished=False, inputs=ctx["inputs"])

    spec = RunSpec(
        config=cfg.to_dict(),
        model_path=cfg.model_name,
        output_dir=str(out),
        num_workers=plan.num_workers,
        zero_stage=plan.zero_stage,
        offload=plan.offload,
        use_gpu=plan.use_gpu,
        bf16=plan.bf16,
        train_records=ctx["train"],
        val_records=ctx["val"],
        resume_weights=str(Path(cfg.resume_from).resolve()) if cfg.resume_from else None,
        threads_per_worker=plan.cpus_per_worker if not plan.use_gpu else None,
        checkpoint_root=str(run_dir := ray_run_dir(cfg, out)),
        startup=marks,
        label=label,
    )
    trainer = TorchTrainer(
        train_loop or train_loop_per_worker,
        train_loop_config=spec.to_dict(),
        scaling_config=ScalingConfig(
            num_workers=plan.num_workers,
            use_gpu=plan.use_gpu,
            resources_per_worker={"CPU": plan.cpus_per_worker, **({"GPU": 1} if plan.use_gpu else {})},
            placement_strategy=cfg.placement_strategy,
        ),
        run_config=RunConfig(
            name=run_dir.name,
            storage_path=str(run_dir.parent),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.save_total_limit or None),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            logging_config=LoggingConfig(log_level="WARNING"),
            callbacks=list(callbacks),
        ),
    )
    watcher = ProgressWatcher(out)
    if watch:
        watcher.start()
    try:
        result = _fit_interruptibly(trainer)
    except KeyboardInterrupt:
        ray.shutdown()  # stops the workers; checkpoints already persisted stay complete
        raise Interrupted(out) from None
    except Exception as e:  # Ray wraps worker errors; say what happened and how to go on
        raise TrainingFailed(out, e) from e
    finally:
        if watch:
            watcher.stop()
    summary = finish_run(cfg, out, plan, time.perf_counter() - t0)
    write_marker(out, given, cfg, finished=True, inputs=ctx["inputs"])
    summary["ray_metrics"] = result.metrics
    return summary


def ray_run_dir(cfg: TrainConfig, out: Path) -> Path:
    """Where Ray Train keeps the run's state and registered checkpoints: ``<output_dir>/.ray/train``,
    or ``<storage_path>/<output_dir name>`` (shared storage for several nodes)."""
    if cfg.storage_path:
        return Path(cfg.storage_path).resolve() / out.name
    return out / ".ray" / "train"


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
    while thread.is_alive():
        thread.join(0.5)
    if "error" in box:
        raise box["error"]
    return box["result"]


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


def finish_run(cfg: TrainConfig, out: Path, plan: Plan, wall_s: float) -> dict[str, Any]:
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
        "global_batch": cfg.global_batch_size(plan.num_workers),
        "workers": plan.num_workers,
        "zero_stage": plan.zero_stage,
        "offload": plan.offload,
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
