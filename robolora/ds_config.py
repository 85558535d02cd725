"""DeepSpeed config templates (``ds_configs/*.json``) resolved into the dicts each engine gets.

Templates leave batch sizes, precision, clipping, bucket sizes and pinning as ``"auto"``; the
training config and the model's hidden size fill them in, so a run's DeepSpeed settings can never
disagree with its flags.

They also turn off DeepSpeed's bf16 ``check_grad_overflow``: it reduces every gradient twice and waits
for the device each step to skip steps with non-finite gradients, a guard made for fp16's loss scaling.
bf16 has fp32's range, and fp32 runs have no such check either (nor does ``Trainer`` in bf16); on one
H100 it cost 8% of a 7B LoRA step. A loss that turns non-finite still ends in the run's diagnosis.

Example:
    >>> cfg = resolve(load_template(2, "none"), micro_batch=4, grad_accum=2, world_size=2, bf16=True,
    ...               grad_clip=1.0, hidden_size=576, pin_memory=False)
    >>> cfg["train_batch_size"], cfg["bf16"], cfg["zero_optimization"]["stage"]
    (16, {'enabled': True, 'check_grad_overflow': False}, 2)

A user's own file (``--deepspeed FILE``, as in Hugging Face's Trainer and axolotl) is merged over the
template (:func:`merge_user_config`). Its ``"auto"`` values are filled like the template's, as
``transformers``' ``HfTrainerDeepSpeedConfig`` fills them; :func:`file_settings` checks its other values
against the run's settings before anything starts: a value that contradicts a flag is refused, and the
settings robolora plans when left out (ZeRO stage, offload, bf16, workers) are taken from the file. An
``optimizer`` or ``scheduler`` block is accepted only where it means what robolora's own AdamW and
schedule do (its values ``"auto"`` or equal to the flags), and then dropped: the run keeps its client
optimizer (LoRA+ groups, fused AdamW) and exact warmup, the same with or without the file.
"""

from __future__ import annotations

import copy
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

from robolora.errors import ConfigError
from robolora.fileio import FileReadError, load_json, shown

#: (ZeRO stage, offload) -> template file name in ds_configs/.
TEMPLATES: dict[tuple[int, str], str] = {
    (2, "none"): "zero2.json",
    (2, "optimizer"): "zero2_offload_optimizer.json",
    (3, "none"): "zero3.json",
    (3, "optimizer"): "zero3_offload_optimizer.json",
    (3, "all"): "zero3_offload_all.json",
}


def load_template(stage: int, offload: str = "none") -> dict[str, Any]:
    """The shipped template for a ZeRO stage and offload mode, with its ``"auto"`` fields."""
    name = TEMPLATES[(stage, offload)]
    try:
        folder: Any = resources.files("robolora.ds_configs")
    except ModuleNotFoundError:  # a source checkout on the path, not installed: the top-level folder
        folder = Path(__file__).resolve().parents[1] / "ds_configs"
    return json.loads(folder.joinpath(name).read_text(encoding="utf-8"))


def resolve(
    template: dict[str, Any],
    *,
    micro_batch: int,
    grad_accum: int,
    world_size: int,
    bf16: bool,
    grad_clip: float,
    hidden_size: int | None,
    pin_memory: bool,
) -> dict[str, Any]:
    """Fill every ``"auto"`` field; the result has none left.

    Bucket sizes follow the Hugging Face integration's rules of thumb (hidden_size**2 for reduce
    buckets, 0.9x that for ZeRO-3 prefetch, 10x hidden for the persistence threshold), which keep
    communication in few large messages without holding much memory; without a hidden size they are
    dropped so DeepSpeed's defaults apply.
    """
    cfg = copy.deepcopy(template)
    top = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch * grad_accum * world_size,
        "gradient_clipping": grad_clip,
    }
    for key, value in top.items():
        if cfg.get(key) == "auto":
            cfg[key] = value
    if cfg.get("bf16", {}).get("enabled") == "auto":
        cfg["bf16"]["enabled"] = bf16
    for block in ("fp16", "amp"):  # a user's file may leave them "auto": robolora never trains in fp16
        if cfg.get(block, {}).get("enabled") == "auto":
            cfg[block]["enabled"] = False
    zero = cfg.get("zero_optimization", {})
    sizes = {}
    if hidden_size:
        sizes = {
            "reduce_bucket_size": hidden_size * hidden_size,
            "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
            "stage3_param_persistence_threshold": 10 * hidden_size,
        }
    for key in [k for k, v in zero.items() if v == "auto"]:
        if key in sizes:
            zero[key] = sizes[key]
        else:
            del zero[key]
    if world_size == 1 and zero.get("overlap_comm"):
        # One worker has nothing to communicate: overlapping it only adds device synchronisations.
        zero["overlap_comm"] = False
    for key in ("offload_optimizer", "offload_param"):
        if zero.get(key, {}).get("pin_memory") == "auto":
            zero[key]["pin_memory"] = pin_memory
    return cfg


def find_auto(value: Any, path: str = "") -> list[str]:
    """Paths of every field still set to ``"auto"`` (empty for a resolved config)."""
    if value == "auto":
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in find_auto(v, f"{path}.{k}" if path else k)]
    return []


# ----------------------------------------------------------------------------- a user's own file

#: Where a user's file may write ``"auto"``: what robolora fills from the run (as Hugging Face's Trainer does).
AUTO_FILLED = frozenset(
    {
        "train_micro_batch_size_per_gpu",
        "gradient_accumulation_steps",
        "train_batch_size",
        "gradient_clipping",
        "bf16.enabled",
        "fp16.enabled",
        "amp.enabled",
        "zero_optimization.stage",
        "zero_optimization.reduce_bucket_size",
        "zero_optimization.stage3_prefetch_bucket_size",
        "zero_optimization.stage3_param_persistence_threshold",
        "zero_optimization.offload_optimizer.pin_memory",
        "zero_optimization.offload_param.pin_memory",
        "optimizer.params.lr",
        "optimizer.params.betas",
        "optimizer.params.eps",
        "optimizer.params.weight_decay",
        "scheduler.params.warmup_min_lr",
        "scheduler.params.warmup_max_lr",
        "scheduler.params.warmup_num_steps",
        "scheduler.params.total_num_steps",
    }
)
#: File keys that must equal a setting: key -> (field, type). ``"auto"`` takes the setting.
MATCHED = (
    ("train_micro_batch_size_per_gpu", "batch_size", int),
    ("gradient_accumulation_steps", "gradient_accumulation_steps", int),
    ("gradient_clipping", "max_grad_norm", float),
    ("optimizer.params.lr", "learning_rate", float),
    ("optimizer.params.weight_decay", "weight_decay", float),
    ("scheduler.params.warmup_max_lr", "learning_rate", float),
)
#: File keys for settings robolora plans when they are left out: the file's value is taken then.
PLANNED = (("bf16.enabled", "bf16", bool), ("zero_optimization.stage", "zero_stage", int))
#: File keys whose only accepted value is what robolora does, and why.
FIXED = (
    ("fp16.enabled", False, "robolora trains in bf16 (--bf16) or fp32, never fp16"),
    ("amp.enabled", False, "robolora trains in bf16 (--bf16) or fp32, never with apex AMP"),
    ("optimizer.params.betas", [0.9, 0.999], "robolora's AdamW uses betas 0.9, 0.999"),
    ("optimizer.params.eps", 1e-8, "robolora's AdamW uses eps 1e-8"),
    ("optimizer.params.adam_w_mode", True, "robolora's optimizer is AdamW (decoupled weight decay)"),
    ("scheduler.params.warmup_min_lr", 0, "robolora warms up from 0"),
    ("scheduler.params.warmup_min_ratio", 0, "robolora warms up from 0"),
    ("scheduler.params.cos_min_ratio", 0, "robolora's cosine schedule decays to 0"),
    ("scheduler.params.warmup_type", "linear", "robolora warms up linearly"),
    ("scheduler.params.warmup_num_steps", "auto", "robolora counts it from --warmup-ratio"),
    ("scheduler.params.total_num_steps", "auto", "robolora counts it from the run's steps"),
)
#: The keys an optimizer or scheduler block may hold (robolora's optimizer and schedule have them all).
BLOCK_KEYS = {
    "optimizer": {"lr", "betas", "eps", "weight_decay", "adam_w_mode", "torch_adam"},
    "scheduler": {
        "warmup_min_lr",
        "warmup_max_lr",
        "warmup_num_steps",
        "total_num_steps",
        "warmup_type",
        "warmup_min_ratio",
        "cos_min_ratio",
    },
}
#: DeepSpeed's schedules as --lr-scheduler-type values.
SCHEDULES = {"warmupdecaylr": "linear", "warmupcosinelr": "cosine", "warmuplr": "constant"}
_MISSING = object()
_KINDS = {int: "an integer", float: "a number", bool: "true or false"}


def read_user_config(path: str) -> dict[str, Any]:
    """A user's DeepSpeed JSON file; bad JSON is one error naming the file, line and column."""
    try:
        data = load_json(Path(path).expanduser(), "a DeepSpeed JSON config")
    except FileReadError as e:
        raise ConfigError(f"--deepspeed: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--deepspeed {path}: expected a JSON object of DeepSpeed settings, got {shown(data)}")
    return data


def merge_user_config(template: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """``user`` over ``template``, mappings merged key by key; the optimizer and scheduler blocks (checked
    equal to robolora's own by :func:`file_settings`) are dropped.

    >>> merge_user_config({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"c": 5}, "optimizer": {"type": "AdamW"}})
    {'a': {'b': 1, 'c': 5}, 'd': 3}
    """
    out = copy.deepcopy(template)
    for key, value in user.items():
        if key in BLOCK_KEYS or (key == "stage" and value == "auto"):  # the template's stage is the run's
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_user_config(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _get(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return _MISSING
        data = data[part]
    return data


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _typed(where: str, key: str, value: Any, kind: type) -> Any:
    ok = isinstance(value, (int, float)) if kind is float else isinstance(value, kind)
    if not ok or (kind is not bool and isinstance(value, bool)):
        raise ConfigError(f"{where}: {key}: expected {_KINDS[kind]}, got {shown(value)}")
    return value


def _agree(where: str, key: str, value: Any, cfg: Any, name: str, planned: bool = False) -> None:
    """Refuse a file value that differs from the setting ``name`` (``planned``: one the file gives when its
    flag is left out)."""
    ours = getattr(cfg, name)
    if value == ours or (isinstance(value, float) and math.isclose(value, ours, rel_tol=1e-9)):
        return
    default = " (its default)" if ours == type(cfg).__dataclass_fields__[name].default else ""
    raise ConfigError(
        f"{where}: {key} is {shown(value)} but {_flag(name)} is {shown(ours)}{default}; make them agree, "
        + (f"or leave {_flag(name)} out to take the file's" if planned else f'or write "auto" to take {_flag(name)}')
    )


def _check_structure(user: dict[str, Any], where: str) -> None:
    """The blocks robolora reads are JSON objects, and ``"auto"`` only where robolora fills it."""
    for key in ("bf16", "fp16", "amp", "zero_optimization", "optimizer", "scheduler"):
        if key in user and not isinstance(user[key], dict):
            raise ConfigError(f"{where}: {key}: expected a JSON object, got {shown(user[key])}")
    for key in find_auto(user):
        if key not in AUTO_FILLED:
            raise ConfigError(f'{where}: {key}: "auto" is not a value robolora fills; write a value or remove the key')


def _check_blocks(user: dict[str, Any], where: str, cfg: Any) -> None:
    """An optimizer or scheduler block must mean robolora's own AdamW and schedule."""
    for block, allowed in BLOCK_KEYS.items():
        params = user.get(block, {}).get("params", {})
        if not isinstance(params, dict):
            raise ConfigError(f"{where}: {block}.params: expected a JSON object, got {shown(params)}")
        extra = [f"{block}.{k}" for k in user.get(block, {}) if k not in ("type", "params")]
        extra += [f"{block}.params.{k}" for k in params if k not in allowed]
        if extra:
            raise ConfigError(
                f"{where}: {extra[0]}: robolora builds the {block} from its flags, which have no such setting; "
                f"remove it (or the {block} block)"
            )
    optimizer, scheduler = user.get("optimizer", {}).get("type"), user.get("scheduler", {}).get("type")
    if "optimizer" in user and str(optimizer).lower() not in ("adam", "adamw"):
        raise ConfigError(
            f"{where}: optimizer.type {shown(optimizer)}: robolora trains with --optim (AdamW or SGD); remove the "
            "optimizer block, or write Adam or AdamW"
        )
    if "optimizer" in user and cfg.optim == "sgd":
        raise ConfigError(
            f"{where}: optimizer.type is {shown(optimizer)} but --optim is 'sgd'; remove the optimizer block, or "
            "pass --optim adamw_torch_fused"
        )
    schedule = SCHEDULES.get(str(scheduler).lower())
    if "scheduler" in user and schedule is None:
        raise ConfigError(
            f"{where}: scheduler.type {shown(scheduler)}: robolora schedules with --lr-scheduler-type; remove the "
            "scheduler block, or write WarmupDecayLR, WarmupCosineLR or WarmupLR"
        )
    if schedule and schedule != cfg.lr_scheduler_type:
        raise ConfigError(
            f"{where}: scheduler.type {scheduler} is --lr-scheduler-type {schedule}, but "
            f"--lr-scheduler-type is {cfg.lr_scheduler_type}; make them agree, or remove the scheduler block"
        )


def _file_offload(zero: dict[str, Any], where: str) -> str | None:
    """The --offload value the file's zero_optimization says (None: it says nothing about offload)."""
    devices = {}
    for block in ("offload_optimizer", "offload_param"):
        if block in zero:
            if not isinstance(zero[block], dict):
                raise ConfigError(
                    f"{where}: zero_optimization.{block}: expected a JSON object, got {shown(zero[block])}"
                )
            device = zero[block].get("device", "none")
            if device not in ("cpu", "none"):
                raise ConfigError(
                    f"{where}: zero_optimization.{block}: device {shown(device)}: robolora offloads to the CPU "
                    '("cpu") or not at all ("none")'
                )
            devices[block] = device == "cpu"
    if not devices:
        return None
    if devices.get("offload_param") and not devices.get("offload_optimizer"):
        raise ConfigError(
            f"{where}: zero_optimization.offload_param: robolora offloads the parameters only together with the "
            'optimizer states (--offload all); add "offload_optimizer": {"device": "cpu"}'
        )
    return "all" if devices.get("offload_param") else "optimizer" if devices.get("offload_optimizer") else "none"


def file_settings(user: dict[str, Any], path: str, cfg: Any) -> dict[str, Any]:
    """The settings a user's DeepSpeed file gives where ``cfg`` (a ``TrainConfig``) leaves them to the plan, after
    checking that every other value it states agrees with ``cfg``; one :class:`ConfigError` naming the
    file, the key and the flag otherwise.

    >>> from robolora.config import TrainConfig
    >>> user = {"train_micro_batch_size_per_gpu": "auto", "zero_optimization": {"stage": 3}, "train_batch_size": 16}
    >>> file_settings(user, "ds.json", TrainConfig(batch_size=4, gradient_accumulation_steps=2))
    {'zero_stage': 3, 'num_workers': 2}
    >>> file_settings({"train_micro_batch_size_per_gpu": 4}, "ds.json", TrainConfig(batch_size=8))
    Traceback (most recent call last):
    ...
    robolora.errors.ConfigError: --deepspeed ds.json: train_micro_batch_size_per_gpu is 4 but --batch-size is 8; \
make them agree, or write "auto" to take --batch-size
    """
    where = f"--deepspeed {path}"
    _check_structure(user, where)
    _check_blocks(user, where, cfg)
    for key, value, why in FIXED:
        found = _get(user, key)
        if found is not _MISSING and found != "auto" and found != value:
            fix = '"auto"' if value == "auto" else f'{json.dumps(value)} or "auto"'
            raise ConfigError(f"{where}: {key} is {shown(found)}: {why}; write {fix}")
    fills: dict[str, Any] = {}
    for key, name, kind in PLANNED:
        value = _get(user, key)
        if value is _MISSING or value == "auto":
            continue
        _typed(where, key, value, kind)
        if key == "zero_optimization.stage" and value not in (2, 3):
            raise ConfigError(f"{where}: {key}: {value}: robolora runs ZeRO stage 2 or 3; write 2 or 3")
        if getattr(cfg, name) is None:
            fills[name] = value
        else:
            _agree(where, key, value, cfg, name, planned=True)
    offload = _file_offload(user.get("zero_optimization", {}), where)
    if offload is not None and cfg.offload is None:
        fills["offload"] = offload
    elif offload is not None and offload != cfg.offload:
        raise ConfigError(
            f"{where}: zero_optimization offloads as --offload {offload} does, but --offload is {cfg.offload}; "
            "make them agree"
        )
    for key, name, kind in MATCHED:
        value = _get(user, key)
        if value is not _MISSING and value != "auto":
            _agree(where, key, _typed(where, key, value, kind), cfg, name)
    fills.update(_file_workers(user, where, cfg))
    return fills


def _file_workers(user: dict[str, Any], where: str, cfg: Any) -> dict[str, Any]:
    """A fixed train_batch_size: micro-batch x accumulation x workers, the workers taken from it when planned."""
    total = _get(user, "train_batch_size")
    if total is _MISSING or total == "auto":
        return {}
    _typed(where, "train_batch_size", total, int)
    per_worker = cfg.batch_size * cfg.gradient_accumulation_steps
    product = f"--batch-size {cfg.batch_size} x --gradient-accumulation-steps {cfg.gradient_accumulation_steps}"
    if cfg.num_workers is None and total % per_worker == 0 and total > 0:
        return {"num_workers": total // per_worker}
    if cfg.num_workers is not None and total == per_worker * cfg.num_workers:
        return {}
    if cfg.num_workers is None:
        problem = f"{product} = {per_worker} does not divide it"
    else:
        problem = f"{product} x --num-workers {cfg.num_workers} is {per_worker * cfg.num_workers}"
    raise ConfigError(
        f'{where}: train_batch_size is {total} but {problem}; make them agree, or write "auto" in the file'
    )
