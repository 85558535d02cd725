"""The pre-training checklist and the run's plan, before any worker starts.

:func:`preflight` checks the data, the output directory, the base model, the LoRA targets and the
adapter a run starts from (the training guide's pre-training checklist); :func:`plan_run` fills in the
distributed settings the user left out (workers, CPUs, ZeRO stage, offload, precision, and on GPUs of
known memory the micro-batch and gradient checkpointing the memory planner picks) and returns the
resolved config the workers train with. :func:`check_batches` and :func:`check_memory` judge that plan.
Nothing here starts Ray, torch or DeepSpeed: bad input is refused within a second or so.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robolora.config import TrainConfig, check_against_model
from robolora.data import load_datasets
from robolora.errors import UserError
from robolora.gpu import available_memory
from robolora.memplan import GpuInventory, Workload, plan_memory
from robolora.runrecord import changes, describe_changes, input_digests, read_marker
from robolora.sizing import GIB, ModelDims, known_model
from robolora.storage import check_storage, is_uri


@dataclass
class Check:
    """One line of the pre-training checklist."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"  [{'ok' if self.ok else 'FAIL'}] {self.name}: {self.detail}"


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


def check_quantization(cfg: TrainConfig) -> Check | None:
    """``--quantization`` needs bitsandbytes importable here, before Ray starts workers that would fail
    one by one; on CPU workers it runs on bitsandbytes' CPU backend, correct but slow."""
    if not cfg.quantization:
        return None
    from robolora.models import BNB_HINT, bitsandbytes_problem

    if problem := bitsandbytes_problem():
        raise UserError(f"--quantization {cfg.quantization}: {problem}; {BNB_HINT}")
    import bitsandbytes

    kind = "NF4 + double quantization (QLoRA)" if cfg.quantization == "4bit" else "LLM.int8"
    detail = f"{cfg.quantization}, {kind}, bitsandbytes {bitsandbytes.__version__}"
    if cfg.use_gpu is False:
        detail += "; on CPU workers it runs on bitsandbytes' CPU backend (slowly)"
    elif cfg.use_gpu is None:
        detail += " (on CPU workers, if planned, it runs slowly on bitsandbytes' CPU backend)"
    return Check("quantization", True, detail)


def check_trackers(cfg: TrainConfig) -> Check:
    """``--report-to``: every tracker's package importable here and its settings sound, before Ray starts
    workers that would fail one by one (the workers log from the driver's settings: robolora.trackers)."""
    from robolora.trackers import TRACKERS, TrackerSettings, missing_package, parse_report_to

    names = parse_report_to(cfg.report_to)
    settings = TrackerSettings.from_env(os.environ, cfg.output_dir)
    for name in names:
        if install := missing_package(name):
            raise UserError(f"--report-to {name}: the {name} package is not installed; {install}, or leave it out")
    if "wandb" in names and (problem := settings.problem()):
        raise UserError(f"--report-to {cfg.report_to}: {problem}")
    shown = []
    for name in names:
        label, where = " ".join(filter(None, [name, _installed_version(*TRACKERS[name])])), settings.where(name)
        shown.append(f"{label} ({where})" if where else label)
    return Check("trackers", True, ", ".join(shown) or "none (metrics.jsonl only)")


def _installed_version(*distributions: str) -> str:
    """The version of the first of ``distributions`` installed ("" for none: importable without metadata)."""
    from importlib.metadata import PackageNotFoundError, version

    for name in distributions:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return ""


def check_targets(cfg: TrainConfig, model_config: Any) -> tuple[Check, list[str]]:
    """The LoRA target modules, checked against the model's modules (built without weights) and with
    ``auto`` and ``all-linear`` resolved for it; returns the check and the resolved names."""
    from robolora.targets import matches, module_tree, resolve_targets

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


@dataclass(frozen=True)
class Plan:
    """How the run is laid out on the cluster: the config with every distributed setting filled in
    (workers, CPUs, GPU or not, ZeRO stage, offload, precision, micro-batch, accumulation, gradient
    checkpointing), and why."""

    config: TrainConfig
    #: Why this many workers.
    reason: str
    #: Why the memory planner chose the layout (GPU runs whose memory is known).
    memory: str = ""

    def describe(self) -> str:
        """The plan's line in the pre-training report."""
        c = self.config
        many = "s" if c.num_workers > 1 else ""
        return (
            f"Plan: {c.num_workers} {'GPU' if c.use_gpu else 'CPU'} worker{many} ({self.reason}), "
            f"{c.cpus_per_worker} CPU{'s' if c.cpus_per_worker > 1 else ''} each, ZeRO-{c.zero_stage}, "
            f"offload {c.offload}, {'bf16' if c.bf16 else 'fp32'}, micro-batch {c.batch_size} x accumulation "
            f"{c.gradient_accumulation_steps}{', gradient checkpointing' if c.gradient_checkpointing else ''}"
            + (f"\n  memory: {self.memory}" if self.memory else "")
        )


#: CPU workers by default, at most, each with an equal share of the cluster's CPUs: on 2 cores two
#: single-threaded workers train 17-32% faster than one with both (benchmarks/README.md).
CPU_WORKERS = 2


#: CPUs reserved for a GPU worker by default, at most.
GPU_WORKER_MAX_CPUS = 8


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
    from robolora.targets import ALL_LINEAR, AUTO_TARGETS

    given = cfg.target_modules()
    special = given[0].lower() if len(given) == 1 else ""
    if special == AUTO_TARGETS:
        return dims.default_targets()
    if special == ALL_LINEAR:
        return dims.linear_names()
    return given


def workload(cfg: TrainConfig, dims: ModelDims) -> Workload:
    """What the memory planner needs from a training config, for a model of ``dims``: the config's own
    values, with its LoRA targets read for the model (:func:`planned_targets`)."""
    return Workload.from_config(cfg, dims, planned_targets(cfg, dims))


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


def plan_run(
    cfg: TrainConfig,
    cluster_cpus: int,
    cluster_gpus: int,
    model_config: Any = None,
    gpu_memory: int | None = None,
    nodes: int = 1,
    cpus_per_gpu: int = 1,
    host_memory: int | None = None,
) -> Plan:
    """Fill in the distributed settings the user left out.

    On GPUs whose memory is known (``gpu_memory`` bytes each, over ``nodes`` with ``host_memory`` bytes each
    for what offload moves to the host, unchecked where None) the memory planner picks
    the ZeRO stage and offload that were left out, lowers the micro-batch (raising accumulation, so
    the global batch stays) and turns on gradient checkpointing only where the run would not fit
    otherwise, and refuses a run that cannot fit at all. Otherwise ZeRO-2 without offload is the
    default and :func:`check_memory` compares the estimate with what is available.
    """
    use_gpu, workers, reason = plan_workers(cfg, cluster_cpus, cluster_gpus)
    # A GPU worker's host threads launch kernels, collate and pin batches and run the optimizer's
    # bookkeeping: half of its node's CPUs per GPU (up to 8), the rest for data loaders and Ray.
    gpu_cpus = max(1, min(GPU_WORKER_MAX_CPUS, cpus_per_gpu // 2))
    from robolora.models import bf16_supported

    resolved = cfg.replace(
        num_workers=workers,
        use_gpu=use_gpu,
        cpus_per_worker=cfg.cpus_per_worker or (gpu_cpus if use_gpu else max(1, cluster_cpus // workers)),
        zero_stage=cfg.zero_stage or (3 if cfg.offload == "all" else 2),
        offload=cfg.offload or "none",
        bf16=cfg.bf16 if cfg.bf16 is not None else bf16_supported(use_gpu),
    )
    dims = _dims_of(model_config)
    if not use_gpu or gpu_memory is None or dims is None:
        return Plan(resolved, reason)
    gpus = GpuInventory(workers, gpu_memory, max(1, min(nodes, workers)), host_memory=host_memory)
    # The stage and offload the user left out (None in ``cfg``) are the planner's to choose.
    memory = plan_memory(workload(resolved, dims), gpus, zero_stage=cfg.zero_stage, offload=cfg.offload)
    if not memory.fits:
        raise UserError(memory.refusal())
    c = memory.choice
    chosen = resolved.replace(
        zero_stage=c.zero_stage,
        offload=c.offload,
        batch_size=c.micro_batch,
        gradient_accumulation_steps=c.grad_accum,
        gradient_checkpointing=c.gradient_checkpointing,
    )
    return Plan(chosen, reason, memory.reason)


def plan_workers(cfg: TrainConfig, cluster_cpus: int, cluster_gpus: int) -> tuple[bool, int, str]:
    """GPU or CPU workers, how many, and why; refuses more workers than the cluster can hold.

    >>> from robolora.config import TrainConfig
    >>> plan_workers(TrainConfig(), 16, 0)
    (False, 2, "the default on CPUs: at most 2, sharing the cluster's 16 CPUs")
    >>> plan_workers(TrainConfig(), 64, 8)
    (True, 8, 'one worker per GPU available')
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
    if cfg.num_workers:
        return use_gpu, workers, "as given"
    if use_gpu:
        return use_gpu, workers, "one worker per GPU available"
    shared = f"{cluster_cpus} CPU{'s' if cluster_cpus > 1 else ''}"
    return use_gpu, workers, f"the default on CPUs: at most {CPU_WORKERS}, sharing the cluster's {shared}"


def check_memory(cfg: TrainConfig, model_config: Any) -> Check:
    """The estimate for a planned config (:attr:`Plan.config`) against the memory available (per GPU, or
    the host for CPU workers)."""
    dims = _dims_of(model_config)
    if dims is None:
        return Check("memory", True, "not estimated (the model's architecture has no Llama-style dimensions)")
    est = workload(cfg, dims).estimate(
        cfg.num_workers,
        cfg.zero_stage,
        cfg.offload,
        cfg.batch_size,
        cfg.gradient_checkpointing,
        on_gpu=cfg.use_gpu,
    )
    avail, what = available_memory(cfg.use_gpu)
    need = est.total if cfg.use_gpu else est.total * cfg.num_workers
    scope = "per GPU" if cfg.use_gpu else f"for {cfg.num_workers} workers"
    if avail is None:
        return Check("memory", True, f"~{need / GIB:.1f} GiB needed {scope}; {what}")
    if need > avail:
        raise UserError(
            f"memory: this run needs about {need / GIB:.1f} GiB {scope} but {avail / GIB:.1f} GiB is {what}; "
            "reduce --batch-size or --max-length, add --gradient-checkpointing, use --zero-stage 3 or --offload, "
            "or pick a smaller --model-name"
        )
    return Check("memory", True, f"~{need / GIB:.1f} GiB needed {scope} (worst case), {avail / GIB:.1f} GiB {what}")


def check_batches(cfg: TrainConfig, num_train: int) -> Check:
    """At least one optimizer step for a planned config (:attr:`Plan.config`): the training split must fill
    one global batch."""
    from robolora.sampler import steps_per_epoch, total_steps

    global_batch = cfg.global_batch_size(cfg.num_workers)
    if num_train < global_batch:
        raise UserError(
            f"dataset: {num_train} training records cannot fill one global batch of {global_batch} "
            f"(--batch-size {cfg.batch_size} x --gradient-accumulation-steps {cfg.gradient_accumulation_steps} x "
            f"{cfg.num_workers} workers); lower those or add records"
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


def preflight(cfg: TrainConfig) -> tuple[list[Check], dict[str, Any]]:
    """The pre-training checklist; raises UserError on the first item that fails."""
    checks = []
    train, val, how = load_datasets(cfg)
    checks.append(Check("dataset", True, how))
    inputs = input_digests(cfg)
    out_check, resuming = check_output_dir(cfg, inputs)
    checks.append(out_check)
    checks.append(check_trackers(cfg))
    if is_uri(cfg.storage_path):
        checks.append(Check("checkpoint storage", True, check_storage(cfg.storage_path)))
    model_check, model_config = check_model(cfg)
    checks.append(model_check)
    quantization = check_quantization(cfg)
    if quantization:
        checks.append(quantization)
    target_check, targets = check_targets(cfg, model_config)
    checks.append(target_check)
    resume = check_resume_from(cfg, targets)
    if resume:
        checks.append(resume)
    if not (cfg.ray_address or os.environ.get("RAY_ADDRESS")):
        from robolora.models import fetch_weights

        # On this machine's own Ray cluster the workers read this machine's hub cache: download the weights
        # here, with a progress bar, after every other check (a refused run downloads nothing).
        fetched = fetch_weights(cfg.model_name)
        if fetched:
            checks.append(Check("model weights", True, fetched))
    return checks, {
        "train": train,
        "val": val,
        "resuming": resuming,
        "model_config": model_config,
        "inputs": inputs,
        "lora_target_modules": ",".join(targets),
    }
