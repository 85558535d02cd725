"""`robolora eval`, `robolora demo`, a sweep's `evaluate:` and the generator share one set of evaluation
defaults: every field of EvalSettings, as each of them reads it."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from robolora.evaluate import EVAL_DEFAULTS, EvalSettings

FIELDS = [f.name for f in dataclasses.fields(EvalSettings)]


def _sweep(**data):
    from robolora.sweep import build_sweep

    return build_sweep(
        {"output_dir": "out", "shared": {"data_json": "d.json"}, "variants": [{"name": "a"}], **data}, "s"
    )


def test_eval_reads_every_default_from_the_eval_settings():
    from robolora.cli import build_parser

    args = vars(build_parser().parse_args(["eval", "--lora-path", "run"]))
    assert {name: args[name] for name in FIELDS} == dataclasses.asdict(EVAL_DEFAULTS)


def test_demo_generates_with_the_same_defaults():
    from robolora.cli import build_parser

    args = vars(build_parser().parse_args(["demo", "--lora-path", "run"]))
    shared = [name for name in FIELDS if name in args]
    assert set(shared) >= {
        "constrained",
        "max_new_tokens",
        "grammar_engine",
        "quantization",
        "max_memory",
        "repair_beams",
    }
    assert {name: args[name] for name in shared} == {name: getattr(EVAL_DEFAULTS, name) for name in shared}


@pytest.mark.parametrize("evaluate", [None, True, {}])
def test_a_sweep_evaluates_with_the_defaults_unless_told_otherwise(evaluate):
    data = {} if evaluate is None else {"evaluate": evaluate}
    assert _sweep(**data).evaluate == EVAL_DEFAULTS


def test_a_sweep_setting_changes_only_itself():
    s = _sweep(evaluate={"limit": 5, "constrained": False})
    assert s.evaluate == dataclasses.replace(EVAL_DEFAULTS, limit=5, constrained=False)
    # what a sweep's trial gets (plain data) rebuilds the same settings
    assert EvalSettings(**s.evaluate.__dict__) == s.evaluate


def test_the_generator_defaults_are_the_eval_settings():
    from robolora.infer import Generator

    params = inspect.signature(Generator.generate).parameters
    shared = [name for name in FIELDS if name in params]
    assert set(shared) == {"batch_size", "max_new_tokens", "constrained", "grammar_engine", "repair_beams"}
    assert {name: params[name].default for name in shared} == {name: getattr(EVAL_DEFAULTS, name) for name in shared}
