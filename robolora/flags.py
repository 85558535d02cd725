"""TrainConfig as command-line flags: one flag per field, grouped as in the training guide.

``robolora train``, ``launch/train_robot.py``, ``robolora plan`` and a submitted job's command line all
read their training flags through here; the config dataclass stays the single source of every flag's
name, type, choices, help and default.

Flags are also read as Hugging Face's ``HfArgumentParser`` writes them, so a command line brought from
there works: each flag with underscores (``--batch_size``; a switch then takes an optional true/false,
``--bf16 False``), and the names of :data:`robolora.aliases.ALIASES` (``--micro_batch_size``,
``--base_model``), both hidden from ``--help`` but for one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

from robolora.aliases import ALIASES, resolve_aliases
from robolora.config import FIELDS, GROUPS, TrainConfig, field_type, flag, from_dict, load_config_file
from robolora.errors import ConfigError

#: Where an alias flag's value waits in the namespace until :func:`config_from_namespace` reads it.
ALIAS_DEST = "alias:"


class Parser(argparse.ArgumentParser):
    """argparse that raises ConfigError (one line, naming the command) instead of printing usage."""

    def error(self, message: str) -> typing.NoReturn:
        raise ConfigError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def true_or_false(text: str) -> bool:
    """A switch's value as Hugging Face's parser reads it (``--bf16 False``).

    >>> true_or_false("True"), true_or_false("no")
    (True, False)
    """
    value = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value


def _add_switch(group: Any, *names: str, dest: str, **kw: Any) -> None:
    """A hidden ``--name [true|false]`` switch, as Hugging Face writes one."""
    group.add_argument(*names, dest=dest, nargs="?", const=True, type=true_or_false, metavar="BOOL", **kw)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` and one flag per config field, grouped as in the training guide, and the hidden
    spellings other tools use (underscores, aliases).

    Defaults are suppressed so that only flags actually given override the config file.
    """
    parser.add_argument("--config", help="YAML or JSON file of config keys; flags given here override it")
    groups = {key: parser.add_argument_group(title) for key, title in GROUPS.items()}
    hidden = {"default": argparse.SUPPRESS, "help": argparse.SUPPRESS}
    for f in dataclasses.fields(TrainConfig):
        base, _ = field_type(f)
        group = groups[f.metadata["group"]]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f"{f.metadata['help']} (default: {default})"
        common = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if base is bool:
            group.add_argument(flag(f.name), action=argparse.BooleanOptionalAction, **common)
            if "_" in f.name:
                _add_switch(group, f"--{f.name}", dest=f.name, **hidden)
            group.add_argument(f"--no_{f.name}", dest=f.name, action="store_false", **hidden)
        else:
            kind = {"type": base, "metavar": f.name.split("_")[-1].upper(), "choices": f.metadata["choices"]}
            group.add_argument(flag(f.name), **kind, **common)
            if "_" in f.name:
                group.add_argument(f"--{f.name}", dest=f.name, **kind, **hidden)
    for alias in ALIASES.values():
        field = FIELDS[alias.field]
        kind = alias.kind or field_type(field)[0]
        names = dict.fromkeys([f"--{alias.name}", flag(alias.name)])
        if kind is bool:
            _add_switch(parser, *names, dest=ALIAS_DEST + alias.name, **hidden)
        else:
            choices = None if alias.convert else field.metadata["choices"]
            parser.add_argument(*names, dest=ALIAS_DEST + alias.name, type=kind, choices=choices, **hidden)
    parser.epilog = (
        "Also read: every flag with underscores (--batch_size), and the names axolotl and Hugging Face use: "
        + ", ".join(f"--{a.name}" for a in ALIASES.values())
        + " (each sets the field `robolora config` prints)."
    )


def _flag_names(ns: argparse.Namespace) -> dict[str, Any]:
    """The training settings given as flags, aliases still under their own names."""
    given = {k: v for k, v in vars(ns).items() if k in FIELDS}
    given.update({k[len(ALIAS_DEST) :]: v for k, v in vars(ns).items() if k.startswith(ALIAS_DEST)})
    return given


def _spelled(name: str) -> str:
    """A setting as the command line names it: ``--batch-size`` for a field, ``--micro_batch_size`` for an alias."""
    return flag(name) if name in FIELDS else f"--{name}"


def config_from_namespace(ns: argparse.Namespace) -> TrainConfig:
    """Merge defaults, the ``--config`` file and the flags given into a validated config.

    The file is checked on its own first (its errors name it), without its ``--deepspeed`` file, whose
    values are checked against the merged settings.
    """
    values: dict[str, Any] = {}
    source = "config"
    if getattr(ns, "config", None):
        values.update(load_config_file(ns.config))
        source = ns.config
    given = resolve_aliases(_flag_names(ns), "", FIELDS, name_of=_spelled)
    file_values = {}
    if values:
        try:
            file_values = from_dict(values, source=source, deepspeed=False).to_dict()
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
