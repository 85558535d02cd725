"""Typed configuration: every flag of the training guide plus what a distributed run needs.

One dataclass, :class:`TrainConfig`, is the single source of truth. The CLI parser, the YAML/JSON
``--config`` file, the saved ``config.yaml`` of a run and the Ray workers' ``train_loop_config``
are all derived from its fields. Precedence: field defaults < config file < command-line flags.

Example:
    >>> cfg = parse_train_args(["--data-json", "d.json", "--lora-r", "64", "--lora-alpha", "128"])
    >>> cfg.lora_r, cfg.lora_alpha, cfg.target_modules()[:2]
    (64, 128, ['q_proj', 'k_proj'])
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from robolora.errors import ConfigError

DEFAULT_MODEL = "codellama/CodeLlama-7b-Python-hf"
ALL_LINEAR_MODULES = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
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
    lora_r: int = _f(32, "LoRA rank (higher = more trainable parameters)", "model")
    lora_alpha: int = _f(64, "LoRA scaling factor (effective scale = alpha / r)", "model")
    lora_dropout: float = _f(0.05, "dropout on the LoRA input", "model")
    lora_target_modules: str = _f("q_proj,k_proj,v_proj,o_proj", "comma-separated module names to adapt", "model")
    lora_layers: str = _f(
        "",
        "decoder layers that get LoRA: empty for all, 'top:N' for the last N (backward stops below them), "
        "or indices and ranges such as '0-3,8'",
        "model",
    )
    # Training
    output_dir: str = _f("./models/robot-lora", "where the adapter, checkpoints, metrics and plots go", "train")
    num_epochs: float = _f(3.0, "passes over the training data", "train")
    max_steps: int = _f(-1, "stop after this many optimizer steps (-1: run all epochs)", "train")
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
        None, "Ray Train storage for checkpoints, shared by all nodes (default: <output-dir>/.ray)", "dist"
    )
    max_failures: int = _f(0, "worker-group restarts allowed before the run fails", "dist")
    placement_strategy: str = _f(
        "PACK",
        "how Ray places the workers: PACK on as few nodes as possible, SPREAD across nodes, STRICT_SPREAD each "
        "on its own node (needs as many nodes as workers), STRICT_PACK all on one node",
        "dist",
        PLACEMENTS,
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None and f.metadata["choices"] and value not in f.metadata["choices"]:
                allowed = ", ".join(str(c) for c in f.metadata["choices"])
                raise ConfigError(f"{flag(f.name)}: {value!r} is not one of {allowed}")
        _check_numbers(self)
        _check_consistency(self)

    def target_modules(self) -> list[str]:
        """The LoRA target module names as a list."""
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
        return from_dict({**self.to_dict(), **changes}, source="overrides")


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


def _check_numbers(c: TrainConfig) -> None:
    def need(ok: bool, name: str, rule: str) -> None:
        if not ok:
            raise ConfigError(f"{flag(name)}: must be {rule}, got {getattr(c, name)!r}")

    for name in ("max_length", "lora_r", "lora_alpha", "batch_size", "gradient_accumulation_steps"):
        need(getattr(c, name) >= 1, name, "a positive integer")
    for name in ("eval_steps", "save_steps", "logging_steps"):
        need(getattr(c, name) >= 1, name, "a positive number of steps")
    for name in ("learning_rate", "num_epochs"):
        need(math.isfinite(getattr(c, name)) and getattr(c, name) > 0, name, "a positive number")
    for name in ("weight_decay", "max_grad_norm", "loraplus_lr_ratio"):
        need(math.isfinite(getattr(c, name)) and getattr(c, name) >= 0, name, "a number >= 0")
    for name in ("dataloader_num_workers", "save_total_limit", "early_stopping_patience", "max_failures"):
        need(getattr(c, name) >= 0, name, "an integer >= 0")
    need(0 < c.val_ratio < 1, "val_ratio", "between 0 and 1 (exclusive)")
    need(0 <= c.warmup_ratio < 1, "warmup_ratio", "in [0, 1)")
    need(0 <= c.lora_dropout < 1, "lora_dropout", "in [0, 1)")
    need(c.max_steps == -1 or c.max_steps >= 1, "max_steps", "-1 or a positive integer")
    need(c.max_length >= 16, "max_length", "at least 16 tokens")
    need(bool(c.target_modules()), "lora_target_modules", "a comma-separated list of module names")
    parse_layers(c.lora_layers, 10**6)  # the syntax now; the layer count once the model is known
    parse_step_range(c.profile_steps)
    parse_category_weights(c.category_weights)  # the syntax now; the categories once the data is read
    need(bool(c.output_dir.strip()), "output_dir", "a directory path")
    need(bool(c.model_name.strip()), "model_name", "a model alias, path or hub name")
    need(bool(re.fullmatch(r"[\w.:-]+", c.dashboard_host)), "dashboard_host", "a host name or IP address")
    for name in ("num_workers", "cpus_per_worker"):
        need(getattr(c, name) is None or getattr(c, name) >= 1, name, "a positive integer")


def _check_consistency(c: TrainConfig) -> None:
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
    if c.packing and c.trust_remote_code:
        raise ConfigError(
            "--packing cannot be combined with --trust-remote-code: packed examples are kept apart by "
            "transformers' own attention masking, which a model's remote code may not do; drop one of them"
        )


# ----------------------------------------------------------------------------- types


def _field_type(f: dataclasses.Field) -> tuple[type, bool]:
    """(base type, optional) of a field such as ``int | None``."""
    hint = typing.get_type_hints(TrainConfig)[f.name]
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        base = next(a for a in args if a is not type(None))
        return base, type(None) in args
    return hint, False


def _coerce(name: str, value: Any, source: str) -> Any:
    """Check a config-file value against the field's type; ints are accepted for floats."""
    f = _FIELDS[name]
    base, optional = _field_type(f)
    where = f"{source}: {name}"
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
    raise ConfigError(f"{where}: expected a string, got {value!r}")


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _unknown_key(key: str, source: str) -> ConfigError:
    close = difflib.get_close_matches(str(key), _FIELDS, n=1)
    hint = f" (did you mean {close[0]}?)" if close else "; `robolora train --help` lists the keys"
    return ConfigError(f"{source}: {key}: unknown key{hint}")


def from_dict(values: dict[str, Any], source: str = "config") -> TrainConfig:
    """Build a validated config from a flat dict of field values (unknown keys are refused)."""
    checked = {}
    for key, value in values.items():
        if key not in _FIELDS:
            raise _unknown_key(key, source)
        checked[key] = _coerce(key, value, source)
    return TrainConfig(**checked)


def read_mapping(path: str | os.PathLike, flag: str = "--config") -> dict[str, Any]:
    """A YAML or JSON file that holds one mapping (an empty file is an empty mapping)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{flag}: {p}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{flag}: {p}: cannot be read ({e.__class__.__name__}: {e})") from None
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        detail = " ".join(str(e).split())
        raise ConfigError(f"{flag}: {p}: not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {detail}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{flag}: {p}: expected a mapping of keys to values, got a {type(data).__name__}")
    return data


def load_config_file(path: str | os.PathLike, flag: str = "--config") -> dict[str, Any]:
    """Read a YAML or JSON config file into a flat dict of field values (not yet validated)."""
    data = read_mapping(path, flag)
    for key in data:
        if not isinstance(key, str) or key not in _FIELDS:
            raise _unknown_key(key, str(path))
    return data


# ----------------------------------------------------------------------------- CLI


class Parser(argparse.ArgumentParser):
    """argparse that raises ConfigError (one line, naming the command) instead of printing usage."""

    def error(self, message: str) -> typing.NoReturn:
        raise ConfigError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` and one flag per config field, grouped as in the training guide.

    Defaults are suppressed so that only flags actually given override the config file.
    """
    parser.add_argument("--config", help="YAML or JSON file of config keys; flags given here override it")
    groups = {key: parser.add_argument_group(title) for key, title in GROUPS.items()}
    for f in dataclasses.fields(TrainConfig):
        base, _ = _field_type(f)
        group = groups[f.metadata["group"]]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f"{f.metadata['help']} (default: {default})"
        common = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if base is bool:
            group.add_argument(flag(f.name), action=argparse.BooleanOptionalAction, **common)
        else:
            group.add_argument(
                flag(f.name), type=base, metavar=f.name.split("_")[-1].upper(), choices=f.metadata["choices"], **common
            )


def config_from_namespace(ns: argparse.Namespace) -> TrainConfig:
    """Merge defaults, the ``--config`` file and the flags given into a validated config."""
    values: dict[str, Any] = {}
    source = "config"
    if getattr(ns, "config", None):
        values.update(load_config_file(ns.config))
        source = ns.config
    given = {k: v for k, v in vars(ns).items() if k in _FIELDS}
    file_values = {}
    if values:
        try:
            file_values = from_dict(values, source=source).to_dict()
        except ConfigError as e:
            msg = str(e)
            raise ConfigError(msg if msg.startswith(source) else f"{source}: {msg}") from None
    return from_dict({**file_values, **given}, source="flags")


def build_train_parser(prog: str = "robolora train") -> argparse.ArgumentParser:
    """The parser of ``robolora train`` and ``launch/train_robot.py``."""
    parser = Parser(prog=prog, description="Fine-tune a code LLM with LoRA on robot commands.")
    add_train_arguments(parser)
    return parser


def parse_train_args(argv: list[str] | None = None) -> TrainConfig:
    """Parse command-line arguments into a validated :class:`TrainConfig`."""
    return config_from_namespace(build_train_parser().parse_args(argv))


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML (loadable again with ``--config``)."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
