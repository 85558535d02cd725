"""The config names users bring from axolotl, Hugging Face (``TrainingArguments``, TRL) and LLaMA-Factory.

A config file key or a flag such as ``micro_batch_size`` / ``--micro_batch_size`` is read as the one
:class:`robolora.config.TrainConfig` field it means (``batch_size``), through :data:`ALIASES`, the one
table of these names; where the other tool's value means something else (``lora_target_linear: true``,
``val_set_size: 0.05``) the alias converts it, and a value with no clean equivalent is refused with the
setting to use instead. Run configs, ``config.yaml`` and ``robolora config`` always speak our names.

Example:
    >>> resolve_aliases({"base_model": "smollm2-135m", "micro_batch_size": 8, "lora_target_linear": True},
    ...                 "run.yaml", {"model_name", "batch_size", "lora_target_modules"})
    {'model_name': 'smollm2-135m', 'batch_size': 8, 'lora_target_modules': 'all-linear'}
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from robolora.errors import ConfigError
from robolora.fileio import shown

#: What a converter returns for a value that sets nothing (``lora_target_linear: false``).
SKIP = object()


@dataclass(frozen=True)
class Alias:
    """Another tool's name for one of our fields."""

    name: str
    field: str
    #: The tools that use the name (for the docs).
    origin: str
    #: Turns the other tool's value into ours (raises ValueError saying what to write instead); None: the same.
    convert: Callable[[Any], Any] | None = None
    #: The type a flag of this name parses, where it differs from the field's (a bool for a switch).
    kind: type | None = None


def _true_means(value: Any) -> Callable[[Any], Any]:
    """A switch (``lora_target_linear: true``) that sets ``value``; false sets nothing."""

    def convert(flag: Any) -> Any:
        if not isinstance(flag, bool):
            raise ValueError(f"expected true or false, got {flag!r}")
        return value if flag else SKIP

    return convert


def _llama_factory_target(value: Any) -> Any:
    """LLaMA-Factory's ``lora_target: all`` is every linear layer (our ``all-linear``)."""
    return "all-linear" if isinstance(value, str) and value.strip().lower() == "all" else value


def _checkpoint(value: Any) -> Any:
    """``resume_from_checkpoint: true`` (the last checkpoint of the output directory) is what robolora does
    anyway: started again, a run continues from its last complete checkpoint. A path starts from its adapter."""
    if isinstance(value, bool) or value is None:
        return SKIP
    return value


def _fraction(value: Any) -> Any:
    """axolotl's ``val_set_size`` and LLaMA-Factory's ``val_size``: a share of the records, or a count."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {value!r}")
    if value == 0:
        raise ValueError(
            "0 (no validation) is not supported: robolora always evaluates; give a share such as 0.05, "
            "or --train-json and --val-json"
        )
    if not 0 < value < 1:
        raise ValueError(f"{value!r} records: only a share in (0, 1) maps to val_ratio, such as 0.05")
    return float(value)


def _warmup_steps(value: Any) -> Any:
    """transformers 5 reads ``warmup_steps`` below 1 as a share of the steps (what our ``warmup_ratio`` is)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {value!r}")
    if not 0 <= value < 1:
        raise ValueError(
            f"{value!r} steps: robolora warms up for a share of the run's steps; give warmup_ratio "
            "(a number in [0, 1), such as 0.1)"
        )
    return float(value)


AXOLOTL, HF, TRL, LLAMA_FACTORY = "axolotl", "Hugging Face", "TRL", "LLaMA-Factory"

#: Every other name a key or flag may have: the other name -> our field, with a converter where the
#: meanings differ. Names that are the same in both tools (``learning_rate``, ``lora_r``, ``seed``,
#: ``output_dir``, ``deepspeed``, ...) need no entry.
ALIASES: dict[str, Alias] = {
    a.name: a
    for a in (
        Alias("base_model", "model_name", AXOLOTL),
        Alias("model_name_or_path", "model_name", f"{HF}, {LLAMA_FACTORY}"),
        Alias("micro_batch_size", "batch_size", AXOLOTL),
        Alias("per_device_train_batch_size", "batch_size", f"{HF}, {LLAMA_FACTORY}"),
        Alias("sequence_len", "max_length", AXOLOTL),
        Alias("cutoff_len", "max_length", LLAMA_FACTORY),
        Alias("max_seq_length", "max_length", TRL),
        Alias("num_train_epochs", "num_epochs", f"{HF}, {LLAMA_FACTORY}"),
        Alias("lora_target_linear", "lora_target_modules", AXOLOTL, _true_means("all-linear"), bool),
        Alias("lora_target", "lora_target_modules", LLAMA_FACTORY, _llama_factory_target, str),
        Alias("resume_from_checkpoint", "resume_from", f"{HF}, {AXOLOTL}", _checkpoint, str),
        Alias("lora_model_dir", "resume_from", AXOLOTL),
        Alias("val_set_size", "val_ratio", AXOLOTL, _fraction, float),
        Alias("val_size", "val_ratio", LLAMA_FACTORY, _fraction, float),
        Alias("warmup_steps", "warmup_ratio", HF, _warmup_steps, float),
        Alias("lr_scheduler", "lr_scheduler_type", AXOLOTL),
        Alias("optimizer", "optim", AXOLOTL),
        Alias("load_in_4bit", "quantization", AXOLOTL, _true_means("4bit"), bool),
        Alias("load_in_8bit", "quantization", AXOLOTL, _true_means("8bit"), bool),
        Alias("sample_packing", "packing", AXOLOTL),
    )
}

#: Values other tools give one of our own keys: axolotl's ``bf16: auto`` is our unset (planned) bf16.
FIELD_VALUES: dict[str, dict[str, Any]] = {"bf16": {"auto": None}}


def unknown_key(key: Any, source: str, fields: Collection[str]) -> ConfigError:
    """The refusal of a key that is neither a field nor an alias, with the closest name if one is close."""
    close = difflib.get_close_matches(str(key), [*fields, *ALIASES], n=1)
    hint = f" (did you mean {close[0]}?)" if close else "; `robolora train --help` lists the keys"
    return ConfigError(f"{source}: {key}: unknown key{hint}")


def _same(a: Any, b: Any) -> bool:
    joined = [",".join(v) if isinstance(v, list) and all(isinstance(x, str) for x in v) else v for v in (a, b)]
    return joined[0] == joined[1]


def resolve_aliases(
    values: Mapping[Any, Any],
    source: str,
    fields: Collection[str],
    coerce: Callable[[str, Any, str], Any] | None = None,
    name_of: Callable[[str], str] = str,
) -> dict[str, Any]:
    """``values`` with every alias replaced by its field (converted); one :class:`ConfigError` for an
    unknown key, an unconvertible value, or two names of one field with different values.

    ``coerce(field, value, key)`` checks a value's type for its field, naming ``key`` (the name written);
    ``name_of`` spells a name in messages (``--micro_batch_size`` for a flag). Errors start with
    ``source: `` unless ``source`` is empty (the command line, whose names are flags).
    """
    where = f"{source}: " if source else ""
    out: dict[str, Any] = {}
    written: dict[str, tuple[str, Any]] = {}
    for key, raw in values.items():
        if not isinstance(key, str) or (key not in fields and key not in ALIASES):
            raise unknown_key(key, source, fields)
        alias = ALIASES.get(key) if key not in fields else None
        field = alias.field if alias else key
        value = raw
        if alias and alias.convert:
            try:
                value = alias.convert(raw)
            except ValueError as e:
                raise ConfigError(f"{where}{name_of(key)}: {e}") from None
        elif not alias and isinstance(raw, str) and raw in FIELD_VALUES.get(key, {}):
            value = FIELD_VALUES[key][raw]
        if value is SKIP:
            continue
        value = coerce(field, value, key) if coerce else value
        if field in out and not _same(out[field], value):
            first, first_raw = written[field]
            raise ConfigError(
                f"{where}{name_of(first)} ({shown(first_raw)}) and {name_of(key)} ({shown(raw)}) both set {field}; "
                "give one of them"
            )
        out[field] = value
        written.setdefault(field, (key, raw))
    return out
