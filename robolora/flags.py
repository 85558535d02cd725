"""TrainConfig as command-line flags: one flag per field, grouped as in the training guide.

``robolora train``, ``launch/train_robot.py``, ``robolora plan`` and a submitted job's command line all
read their training flags through here; the config dataclass stays the single source of every flag's
name, type, choices, help and default.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

from robolora.config import FIELDS, GROUPS, TrainConfig, field_type, flag, from_dict, load_config_file
from robolora.errors import ConfigError


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
        base, _ = field_type(f)
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
    given = {k: v for k, v in vars(ns).items() if k in FIELDS}
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
