"""Typed configuration: every flag of the training guide plus what a distributed run needs.

One dataclass, :class:`TrainConfig`, is the single source of truth. The CLI parser (:mod:`robolora.flags`),
the YAML/JSON ``--config`` file, the saved ``config.yaml`` of a run and the Ray workers' ``train_loop_config``
are all derived from its fields. Precedence: field defaults < config file < command-line flags.

Example:
    >>> from robolora.flags import parse_train_args
    >>> cfg = parse_train_args(["--data-json", "d.json", "--lora-r", "64", "--lora-target-modules", "q_proj, v_proj"])
    >>> cfg.lora_r, cfg.lora_alpha, cfg.target_modules()
    (64, 64, ['q_proj', 'v_proj'])
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from robolora.aliases import resolve_aliases
from robolora.ds_config import file_settings, read_user_config
from robolora.errors import ConfigError
from robolora.fileio import read_mapping
from robolora.models import QUANTIZATIONS
from robolora.storage import is_uri, shown

DEFAULT_MODEL = "codellama/CodeLlama-7b-Python-hf"
#: PEFT's shorthand for every linear layer but the LM head, whatever the architecture names them.
ALL_LINEAR_MODULES = "all-linear"
SCHEDULERS = ("linear", "cosine", "constant")
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "sgd")
OFFLOAD = ("none", "optimizer", "all")
PLACEMENTS = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")

GROUPS = {
    "data": "Data",
    "model": "Model and LoRA",
    "train": "Training",
    "monitor": "Monitoring and checkpoints",
    "perf": "Performance",
    "dist": "Distributed (Ray Train + DeepSpeed)",
}


def _f(default: Any, help: str, group: str, choices: tuple | None = None, **kw: Any) -> Any:
    """A config field with its help text, --help group and allowed values."""
    meta = {"help": help, "group": group, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass
class TrainConfig:
    """Everything a training run needs. Field names are the config-file keys; flags are ``--field-name``."""

    # Data
    data_json: str | None = _f(None, "one dataset (JSON list or JSONL); a validation split is taken from it", "data")
    train_json: str | None = _f(None, "training records (JSON list or JSONL)", "data")
    val_json: str | None = _f(None, "validation records; with --train-json", "data")
    val_ratio: float = _f(0.1, "share of each category held out for validation when no --val-json", "data")
    max_length: int = _f(256, "maximum tokens per example; longer prompts are truncated on the left", "data")
    check_api: bool = _f(True, "refuse records whose output is not valid robot API code", "data")
    category_weights: str = _f(
        "",
        "how often each category's training records are seen per epoch, such as 'control_flow=2,navigation=0.5' "
        "(a weight below 1 keeps that share of them; validation is untouched)",
        "data",
    )
    # Model and LoRA
    model_name: str = _f(
        DEFAULT_MODEL, "base model: an alias (smollm2-135m, tiny-llama), a local path or a hub name", "model"
    )
    trust_remote_code: bool = _f(
        False, "run the model repository's own Python code (only for repositories you trust)", "model"
    )
    quantization: str | None = _f(
        None,
        "QLoRA: load the base model's Linear weights quantized by bitsandbytes, 4bit (NF4, double quantization, "
        "matmuls in bf16 or fp32) or 8bit (LLM.int8); the adapters train in full precision and load on the "
        "unquantized model (needs `pip install bitsandbytes`)",
        "model",
        QUANTIZATIONS,
    )
    lora_r: int = _f(32, "LoRA rank (higher = more trainable parameters)", "model")
    lora_alpha: int = _f(64, "LoRA scaling factor (effective scale = alpha / r)", "model")
    lora_dropout: float = _f(0.05, "dropout on the LoRA input", "model")
    lora_target_modules: str = _f(
        "auto",
        "comma-separated names of the modules to adapt, each matching the end of some module's name; "
        "'auto' for the architecture's default (q_proj,k_proj,v_proj,o_proj on Llama-class models, PEFT's "
        "default on others, such as c_attn on GPT-2); 'all-linear' for every linear layer but the LM head",
        "model",
    )
    lora_layers: str = _f(
        "",
        "decoder layers that get LoRA: empty for all, 'top:N' for the last N (backward stops below them), "
        "or indices and ranges such as '0-3,8'",
        "model",
    )
    # Training
    output_dir: str = _f("./models/robot-lora", "where the adapter, checkpoints, metrics and plots go", "train")
    num_epochs: float = _f(3.0, "passes over the training data", "train")
    max_steps: int = _f(
        -1,
        "train exactly this many optimizer steps, overriding --num-epochs (fewer or more epochs of the same "
        "seeded plan, as Hugging Face's max_steps); -1: run --num-epochs",
        "train",
    )
    batch_size: int = _f(4, "examples per worker per micro-step", "train")
    gradient_accumulation_steps: int = _f(1, "micro-steps per optimizer step", "train")
    learning_rate: float = _f(1e-4, "peak learning rate", "train")
    weight_decay: float = _f(0.0, "AdamW weight decay", "train")
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0: off)", "train")
    warmup_ratio: float = _f(0.1, "share of steps with linear warmup", "train")
    lr_scheduler_type: str = _f("linear", "learning-rate schedule after warmup", "train", SCHEDULERS)
    optim: str = _f(
        "adamw_torch_fused",
        "optimizer: AdamW as one fused kernel (the default, as in Hugging Face Trainer), AdamW over tensor "
        "lists (adamw_torch) or SGD with momentum",
        "train",
        OPTIMIZERS,
    )
    loraplus_lr_ratio: float = _f(
        0.0, "LoRA+: the B matrices' learning rate as a multiple of --learning-rate (0: off; 16 is typical)", "train"
    )
    seed: int = _f(42, "seed for the split, shuffling, LoRA initialisation and dropout", "train")
    resume_from: str | None = _f(None, "start from this checkpoint or adapter (a new stage on new data)", "train")
    early_stopping_patience: int = _f(0, "stop after this many evaluations without improvement (0: off)", "train")
    # Monitoring
    eval_steps: int = _f(100, "optimizer steps between evaluations", "monitor")
    save_steps: int = _f(500, "optimizer steps between checkpoints", "monitor")
    logging_steps: int = _f(50, "optimizer steps between log lines", "monitor")
    save_total_limit: int = _f(0, "keep only the newest K checkpoints (0: keep all)", "monitor")
    # Performance
    gradient_checkpointing: bool = _f(False, "recompute activations in the backward pass to save memory", "perf")
    group_by_length: bool = _f(False, "batch examples of similar length to reduce padding", "perf")
    packing: bool = _f(
        False,
        "pack several examples into each row of up to --max-length tokens, each attending only to itself: "
        "fuller micro-batches, fewer steps; --batch-size then counts rows",
        "perf",
    )
    dataloader_num_workers: int = _f(0, "data-loading processes per worker", "perf")
    dataloader_pin_memory: bool | None = _f(
        None, "pin host memory for asynchronous copies to the GPU (default: on when training on GPUs)", "perf"
    )
    bf16: bool | None = _f(None, "bfloat16 mixed precision (default: on where the hardware supports it)", "perf")
    profile_steps: str = _f(
        "",
        "profile these optimizer steps on rank 0 with torch.profiler, e.g. 10-12: a summary table and a "
        "Chrome trace in <output-dir>/profile",
        "perf",
    )
    # Distributed
    num_workers: int | None = _f(None, "Ray Train workers (default: planned from the hardware)", "dist")
    use_gpu: bool | None = _f(None, "one GPU per worker (default: when the cluster has GPUs)", "dist")
    cpus_per_worker: int | None = _f(None, "CPUs reserved per worker (default: planned)", "dist")
    zero_stage: int | None = _f(None, "DeepSpeed ZeRO stage 2 or 3 (default: planned)", "dist", (2, 3))
    offload: str | None = _f(None, "DeepSpeed CPU offload (default: planned)", "dist", OFFLOAD)
    ray_address: str | None = _f(None, "an existing Ray cluster (default: $RAY_ADDRESS, else a local one)", "dist")
    dashboard_host: str = _f(
        "127.0.0.1",
        "where a local Ray cluster's dashboard listens: localhost only by default; 0.0.0.0 for every interface",
        "dist",
    )
    storage_path: str | None = _f(
        None,
        "Ray Train storage for checkpoints, shared by all nodes: a folder, or a bucket (s3://, gs://, any "
        "pyarrow file system) (default: <output-dir>/.ray)",
        "dist",
    )
    max_failures: int = _f(0, "worker-group restarts allowed before the run fails", "dist")
    placement_strategy: str = _f(
        "PACK",
        "how Ray places the workers: PACK on as few nodes as possible, SPREAD across nodes, STRICT_SPREAD each "
        "on its own node (needs as many nodes as workers), STRICT_PACK all on one node",
        "dist",
        PLACEMENTS,
    )
    deepspeed: str | None = _f(
        None,
        'a DeepSpeed JSON config of your own, merged over robolora\'s for the ZeRO stage: its "auto" values are '
        "filled from these flags, a value that contradicts one is refused, and its ZeRO stage, offload and bf16 "
        "are taken where those flags are left out (a multi-node run reads it on every node: a shared path)",
        "dist",
    )
    # Monitoring, continued (last, so that the keys of earlier runs' config.yaml keep their order)
    report_to: str = _f(
        "tensorboard",
        "experiment trackers that get the metrics, comma-separated: tensorboard, wandb, mlflow, or none "
        "(metrics.jsonl only); wandb reads WANDB_PROJECT and WANDB_MODE, mlflow MLFLOW_TRACKING_URI (default: "
        "a file store in <output-dir>/mlruns) and MLFLOW_EXPERIMENT_NAME",
        "monitor",
    )
    # Training, continued
    structure_weight: float = _f(
        1.0,
        "loss weight of the response tokens that shape a program: its line breaks (where a loop or condition "
        "opens, goes on or closes) and its end; 1: every response token alike",
        "train",
    )

    def __post_init__(self) -> None:
        from robolora.trackers import parse_report_to  # the trackers' names live with the trackers

        parse_report_to(self.report_to)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None and f.metadata["choices"] and value not in f.metadata["choices"]:
                allowed = ", ".join(str(c) for c in f.metadata["choices"])
                raise ConfigError(f"{flag(f.name)}: {value!r} is not one of {allowed}")
        _check_numbers(self)
        _check_consistency(self)

    def target_modules(self) -> list[str]:
        """The LoRA target module names as a list (``['auto']`` until a run resolves it for its model:
        ``robolora.targets.resolve_targets``)."""
        return [m.strip() for m in self.lora_target_modules.split(",") if m.strip()]

    def lora_layer_indices(self, num_layers: int) -> list[int] | None:
        """The decoder layers that get LoRA in a model with ``num_layers`` layers (None: all of them)."""
        return parse_layers(self.lora_layers, num_layers)

    def global_batch_size(self, num_workers: int) -> int:
        """Examples per optimizer step across all workers."""
        return self.batch_size * self.gradient_accumulation_steps * num_workers

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML/JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed, validated again."""
        return from_dict({**self.to_dict(), **changes}, source="overrides", deepspeed=False)


def flag(name: str) -> str:
    """The command-line flag of a field: ``lora_r`` -> ``--lora-r``."""
    return "--" + name.replace("_", "-")


def parse_layers(spec: str, num_layers: int) -> list[int] | None:
    """Layer indices from a ``--lora-layers`` value; None means every layer.

    >>> parse_layers("top:3", 30), parse_layers("0-2,7", 30), parse_layers("", 30)
    ([27, 28, 29], [0, 1, 2, 7], None)
    """
    text = spec.replace(" ", "")
    if text in ("", "all"):
        return None
    bad = ConfigError(
        f"--lora-layers: {spec!r} is not a layer selection; use 'top:N', or indices and ranges such as '0-3,8'"
    )
    if text.startswith("top:"):
        if not text[4:].isdigit() or int(text[4:]) < 1:
            raise bad
        count = int(text[4:])
        if count > num_layers:
            raise ConfigError(f"--lora-layers: top:{count} asks for more than the model's {num_layers} layers")
        return list(range(num_layers - count, num_layers))
    layers: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()) or int(hi or lo) < int(lo):
            raise bad
        layers.update(range(int(lo), int(hi or lo) + 1))
    if max(layers) >= num_layers:
        raise ConfigError(f"--lora-layers: layer {max(layers)} does not exist; the model has layers 0-{num_layers - 1}")
    return sorted(layers)


def parse_category_weights(spec: str) -> dict[str, float]:
    """Category -> weight from a ``--category-weights`` value (empty: every weight 1).

    >>> parse_category_weights("control_flow=2, navigation=0.5"), parse_category_weights("")
    ({'control_flow': 2.0, 'navigation': 0.5}, {})
    """
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = (x.strip() for x in part.partition("="))
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if not sep or not name or not math.isfinite(weight) or weight <= 0 or name in weights:
            raise ConfigError(
                f"--category-weights: {part!r} is not a weight; use CATEGORY=WEIGHT pairs with weights above 0, "
                "each category once, such as 'control_flow=2,navigation=0.5'"
            )
        weights[name] = weight
    return weights


def parse_step_range(spec: str) -> tuple[int, int] | None:
    """The optimizer steps of a ``--profile-steps`` value (both ends included); None when empty.

    >>> parse_step_range("10-12"), parse_step_range("5"), parse_step_range("")
    ((10, 12), (5, 5), None)
    """
    text = spec.replace(" ", "")
    if not text:
        return None
    match = re.fullmatch(r"(\d+)(?:-(\d+))?", text)
    if not match or int(match[1]) < 1 or int(match[2] or match[1]) < int(match[1]):
        raise ConfigError(f"--profile-steps: {spec!r} is not a step range; use START-END, such as 10-12 (steps from 1)")
    return int(match[1]), int(match[2] or match[1])


@dataclass(frozen=True)
class Bound:
    """The accepted values of a numeric field: ``low`` to ``high``, each end included unless marked open.

    ``rule`` says in words what a value below the range (or not a finite number) must be; ``also``
    holds values accepted outside the range (-1 for "off", None for "planned").
    """

    low: float
    high: float
    rule: str
    low_open: bool = False
    high_open: bool = False
    also: tuple = ()

    def range_text(self) -> str:
        """The range as the error messages write it: ``1..4096`` for integers, ``(0, 10]`` for numbers."""
        if isinstance(self.low, int) and isinstance(self.high, int):
            return f"{self.low}..{self.high}"
        lo, hi = _number_text(self.low), _number_text(self.high)
        return f"{'(' if self.low_open else '['}{lo}, {hi}{')' if self.high_open else ']'}"

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is refused, or None when it is accepted.

        >>> NUMBER_BOUNDS["lora_r"].problem(8), NUMBER_BOUNDS["lora_r"].problem(0)
        (None, 'must be a positive integer, got 0')
        >>> NUMBER_BOUNDS["lora_r"].problem(10**9)
        'must be at most 4096 (an integer in 1..4096), got 1000000000'
        >>> NUMBER_BOUNDS["learning_rate"].problem(float("nan"))
        'must be a positive number, got nan'
        """
        if value in self.also:
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be {self.rule}, got {value!r}"
        if value < self.low or (self.low_open and value == self.low):
            return f"must be {self.rule}, got {value!r}"
        if value > self.high or (self.high_open and value == self.high):
            if self.high_open:  # the ratios: the rule states the whole range
                return f"must be {self.rule}, got {value!r}"
            kind = "an integer" if isinstance(self.high, int) else "a number"
            return f"must be at most {_number_text(self.high)} ({kind} in {self.range_text()}), got {value!r}"
        return None


def _number_text(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


#: Largest number of optimizer steps any step count may name.
MAX_STEPS = 10**9

#: The accepted range of every numeric field: the one table the config file, the flags, the sweep
#: grids and the pipeline stages are checked against. Model-dependent limits (the model's context
#: length and width) are checked by :func:`check_against_model` once the model is known.
NUMBER_BOUNDS: dict[str, Bound] = {
    "max_length": Bound(16, 131072, "at least 16 tokens"),
    "lora_r": Bound(1, 4096, "a positive integer"),
    "lora_alpha": Bound(1, 65536, "a positive integer"),
    "batch_size": Bound(1, 65536, "a positive integer"),
    "gradient_accumulation_steps": Bound(1, 65536, "a positive integer"),
    "eval_steps": Bound(1, MAX_STEPS, "a positive number of steps"),
    "save_steps": Bound(1, MAX_STEPS, "a positive number of steps"),
    "logging_steps": Bound(1, MAX_STEPS, "a positive number of steps"),
    "max_steps": Bound(1, MAX_STEPS, "-1 or a positive integer", also=(-1,)),
    "learning_rate": Bound(0.0, 10.0, "a positive number", low_open=True),
    "num_epochs": Bound(0.0, 10000.0, "a positive number", low_open=True),
    "weight_decay": Bound(0.0, 10.0, "a number >= 0"),
    "max_grad_norm": Bound(0.0, 10000.0, "a number >= 0"),
    "loraplus_lr_ratio": Bound(0.0, 1000.0, "a number >= 0"),
    "structure_weight": Bound(1.0, 100.0, "a number from 1 to 100"),
    "val_ratio": Bound(0.0, 1.0, "between 0 and 1 (exclusive)", low_open=True, high_open=True),
    "warmup_ratio": Bound(0.0, 1.0, "in [0, 1)", high_open=True),
    "lora_dropout": Bound(0.0, 1.0, "in [0, 1)", high_open=True),
    "seed": Bound(0, 2**32 - 1, "an integer >= 0"),
    "dataloader_num_workers": Bound(0, 256, "an integer >= 0"),
    "save_total_limit": Bound(0, 10**6, "an integer >= 0"),
    "early_stopping_patience": Bound(0, 10**6, "an integer >= 0"),
    "max_failures": Bound(0, 1000, "an integer >= 0"),
    "num_workers": Bound(1, 4096, "a positive integer", also=(None,)),
    "cpus_per_worker": Bound(1, 1024, "a positive integer", also=(None,)),
}


def check_against_model(cfg: TrainConfig, max_positions: int | None, hidden_size: int | None) -> None:
    """The limits that depend on the model: its context length and its width (None: not known).

    >>> check_against_model(TrainConfig(max_length=512, lora_r=64), 1024, 64)
    >>> check_against_model(TrainConfig(max_length=2048), 1024, 64)
    Traceback (most recent call last):
    ...
    robolora.errors.ConfigError: --max-length: must be at most 1024 for codellama/CodeLlama-7b-Python-hf \
(its max_position_embeddings), got 2048
    """
    limits = (("max_length", max_positions, "max_position_embeddings"), ("lora_r", hidden_size, "hidden_size"))
    for name, limit, what in limits:
        value = getattr(cfg, name)
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 and value > limit:
            raise ConfigError(f"{flag(name)}: must be at most {limit} for {cfg.model_name} (its {what}), got {value!r}")


def _check_numbers(c: TrainConfig) -> None:
    def need(ok: bool, name: str, rule: str) -> None:
        if not ok:
            raise ConfigError(f"{flag(name)}: must be {rule}, got {getattr(c, name)!r}")

    for name, bound in NUMBER_BOUNDS.items():
        problem = bound.problem(getattr(c, name))
        if problem:
            raise ConfigError(f"{flag(name)}: {problem}")
    need(bool(c.target_modules()), "lora_target_modules", "a comma-separated list of module names")
    parse_layers(c.lora_layers, 10**6)  # the syntax now; the layer count once the model is known
    parse_step_range(c.profile_steps)
    parse_category_weights(c.category_weights)  # the syntax now; the categories once the data is read
    need(bool(c.output_dir.strip()), "output_dir", "a directory path")
    need(bool(c.model_name.strip()), "model_name", "a model alias, path or hub name")
    need(bool(re.fullmatch(r"[\w.:-]+", c.dashboard_host)), "dashboard_host", "a host name or IP address")


def _check_consistency(c: TrainConfig) -> None:
    for name in LOCAL_PATH_FIELDS:
        value = getattr(c, name)
        if name != "storage_path" and is_uri(value):
            raise ConfigError(
                f"--{name.replace('_', '-')} {shown(value)}: give a local or shared folder or file; "
                "only --storage-path takes a bucket URI (Ray Train keeps the checkpoints there)"
            )
    if c.data_json and (c.train_json or c.val_json):
        raise ConfigError(
            "--data-json cannot be combined with --train-json/--val-json: pass one dataset or a train/val pair"
        )
    if c.val_json and not c.train_json:
        raise ConfigError("--val-json needs --train-json: pass both, or a single --data-json")
    if c.offload == "all" and c.zero_stage == 2:
        raise ConfigError(
            "--offload all needs --zero-stage 3: ZeRO-2 cannot offload parameters (use --offload optimizer)"
        )
    if c.quantization == "8bit" and c.zero_stage == 3:
        raise ConfigError(
            "--quantization 8bit cannot be combined with --zero-stage 3: 8-bit LoRA under ZeRO-3 trains with a "
            "loss ~10x off (bitsandbytes #1451); use --quantization 4bit or --zero-stage 2"
        )
    if c.quantization == "4bit" and c.zero_stage == 3 and c.offload not in (None, "none"):
        raise ConfigError(
            f"--quantization 4bit with --zero-stage 3 cannot be combined with --offload {c.offload}: offloading a "
            "4-bit model under ZeRO-3 uses more GPU memory than not offloading (peft docs); use --offload none"
        )
    if c.packing and c.trust_remote_code:
        raise ConfigError(
            "--packing cannot be combined with --trust-remote-code: packed examples are kept apart by "
            "transformers' own attention masking, which a model's remote code may not do; drop one of them"
        )


# ----------------------------------------------------------------------------- types


@functools.cache
def _type_hints() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)  # evaluated once: every parser and config file needs them


def field_type(f: dataclasses.Field) -> tuple[type, bool]:
    """(base type, optional) of a field such as ``int | None``."""
    hint = _type_hints()[f.name]
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        base = next(a for a in args if a is not type(None))
        return base, type(None) in args
    return hint, False


def _coerce(name: str, value: Any, source: str, key: str | None = None) -> Any:
    """Check a config-file value against the field's type (``key``: the name written, an alias of it);
    ints are accepted for floats."""
    f = FIELDS[name]
    base, optional = field_type(f)
    where = f"{source}: {key or name}"
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: must not be empty (set a value or remove the key)")
    if base is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if isinstance(value, list) and name == "lora_target_modules" and all(isinstance(v, str) for v in value):
        return ",".join(value)
    if isinstance(value, str):
        return value
    if name == "deepspeed":  # Hugging Face and axolotl also take the settings inline
        raise ConfigError(f"{where}: give the path of a DeepSpeed JSON file (settings inline are not read)")
    raise ConfigError(f"{where}: expected a string, got {value!r}")


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _resolved(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Field values from settings written with our names or their aliases (:mod:`robolora.aliases`), typed."""
    return resolve_aliases(values, source, FIELDS, lambda name, value, key: _coerce(name, value, source, key))


def from_dict(values: dict[str, Any], source: str = "config", deepspeed: bool = True) -> TrainConfig:
    """Build a validated config from a flat dict of settings (unknown keys are refused; aliases are read as
    their fields). With ``deepspeed``, a ``--deepspeed`` file is checked against it (:func:`with_deepspeed_file`)."""
    cfg = TrainConfig(**_resolved(values, source))
    return with_deepspeed_file(cfg) if deepspeed and cfg.deepspeed else cfg


def with_deepspeed_file(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` checked against its ``--deepspeed`` file, with the settings the file gives where the plan would
    choose them (ZeRO stage, offload, bf16, workers); read before Ray starts, and by each worker."""
    fills = file_settings(read_user_config(cfg.deepspeed), cfg.deepspeed, cfg)
    try:
        return cfg.replace(**fills) if fills else cfg
    except ConfigError as e:
        given = ", ".join(f"{flag(k)} {v}" for k, v in fills.items())
        raise ConfigError(f"--deepspeed {cfg.deepspeed} gives {given}: {e}") from None


def load_config_file(path: str | os.PathLike, flag: str = "--config") -> dict[str, Any]:
    """Read a YAML or JSON config file into a flat dict of field values (aliases read as their fields, typed,
    not yet validated together)."""
    return _resolved(read_mapping(path, flag), str(path))


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML (loadable again with ``--config``)."""
    from robolora.fileio import atomic_write_text  # written aside and renamed: never seen half-written

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


#: The fields that name local files or directories (``model_name`` too, where it is a local path).
LOCAL_PATH_FIELDS = ("data_json", "train_json", "val_json", "resume_from", "storage_path", "output_dir", "deepspeed")


def absolute_paths(cfg: TrainConfig, base: str | os.PathLike | None = None) -> TrainConfig:
    """The config with every local path made absolute against ``base`` (default: the working directory).

    A run's workers start in folders of their own (a Ray worker's working directory is not the
    command's), so the driver hands them absolute paths. ``~`` is expanded; symbolic links are kept;
    a model alias or a hub name is left as it is (see :func:`robolora.models.is_local_model`).

    >>> cfg = absolute_paths(TrainConfig(data_json="d.json", model_name="./m", output_dir="out"), "/runs")
    >>> cfg.data_json, cfg.model_name, cfg.output_dir, absolute_paths(TrainConfig(), "/runs").model_name
    ('/runs/d.json', '/runs/m', '/runs/out', 'codellama/CodeLlama-7b-Python-hf')
    """
    from robolora.models import is_local_model

    root = Path(base) if base is not None else Path.cwd()

    def absolute(value: str) -> str:
        return str(root / Path(value).expanduser())

    # A bucket (--storage-path s3://...) is no local path: it stays as given.
    changes = {
        k: absolute(getattr(cfg, k)) for k in LOCAL_PATH_FIELDS if getattr(cfg, k) and not is_uri(getattr(cfg, k))
    }
    if is_local_model(cfg.model_name, root):
        changes["model_name"] = absolute(cfg.model_name)
    return cfg.replace(**changes) if any(getattr(cfg, k) != v for k, v in changes.items()) else cfg
