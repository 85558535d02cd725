"""Multi-stage training (the guide's curriculum and multi-stage recipes) as one config.

A pipeline file holds the settings every stage shares and a list of stages, each with its own data,
learning rate, epochs or any other training field. Stage ``k`` trains into ``<output_dir>/<name>``
starting from stage ``k-1``'s adapter (``--resume-from``)::

    output_dir: models/curriculum
    shared: {model_name: smollm2-135m, lora_r: 32, lora_alpha: 64, batch_size: 8}
    stages:
      - {name: simple, data_json: data/simple.json, learning_rate: 2.0e-4, num_epochs: 2}
      - {name: complex, data_json: data/complex.json, learning_rate: 1.0e-4, num_epochs: 1}

Every stage's config is built and validated before the first one starts. Running the same pipeline
again skips the stages that finished and continues an interrupted one from its last checkpoint.

Example:
    >>> stages = build_stages({"output_dir": "out", "stages": [{"name": "a", "data_json": "a.json"},
    ...     {"name": "b", "data_json": "b.json", "learning_rate": 1e-5}]}, source="p.yaml")
    >>> [(s.name, s.config.output_dir, s.config.resume_from) for s in stages]
    [('a', 'out/a', None), ('b', 'out/b', 'out/a')]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robolora.config import TrainConfig, from_dict, read_mapping
from robolora.errors import ConfigError

KEYS = ("output_dir", "shared", "stages")


@dataclass(frozen=True)
class Stage:
    name: str
    config: TrainConfig


def load_pipeline(path: str | Path) -> list[Stage]:
    """Read and validate a pipeline file (YAML or JSON)."""
    return build_stages(read_mapping(path), source=str(path))


def build_stages(data: Any, source: str) -> list[Stage]:
    """The stages of a parsed pipeline file, each a validated :class:`TrainConfig`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with {', '.join(KEYS)}")
    unknown = [k for k in data if k not in KEYS]
    if unknown:
        raise ConfigError(f"{source}: {unknown[0]}: unknown key; a pipeline has {', '.join(KEYS)}")
    output_dir, shared, stages = data.get("output_dir"), data.get("shared") or {}, data.get("stages")
    if not isinstance(output_dir, str) or not output_dir.strip():
        raise ConfigError(f"{source}: output_dir: give the folder the stages' folders go in")
    if not isinstance(shared, dict):
        raise ConfigError(f"{source}: shared: expected a mapping of training settings")
    if not isinstance(stages, list) or not stages:
        raise ConfigError(f"{source}: stages: give a list of stages, each with a name and its own settings")
    out, seen, previous = [], set(), None
    for i, stage in enumerate(stages):
        where = f"{source}: stages[{i}]"
        if not isinstance(stage, dict):
            raise ConfigError(f"{where}: expected a mapping with a name and training settings")
        values = dict(stage)
        name = values.pop("name", None)
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][\w.-]*", name) or name in seen:
            raise ConfigError(f"{where}: name: give each stage a different folder-safe name, got {name!r}")
        seen.add(name)
        for key in ("output_dir", "resume_from"):
            if key in values or key in shared:
                raise ConfigError(f"{where}: {key}: set by the pipeline (<output_dir>/<name>, the previous stage)")
        values = {**shared, **values, "output_dir": str(Path(output_dir) / name)}
        if previous is not None:
            values["resume_from"] = previous
        out.append(Stage(name, from_dict(values, source=where)))
        previous = values["output_dir"]
    return out


def finished(stage: Stage) -> bool:
    """Whether a stage's folder holds its finished run."""
    from robolora.launcher import run_finished

    return run_finished(stage.config.output_dir)


def run_pipeline(path: str | Path) -> None:
    """Train the stages in order; finished ones are skipped, an interrupted one continues."""
    from robolora.launcher import run_training

    stages = load_pipeline(path)
    for k, stage in enumerate(stages, 1):
        start = f" from {stage.config.resume_from}" if stage.config.resume_from else ""
        if finished(stage):
            print(f"== stage {k}/{len(stages)} {stage.name}: finished earlier ({stage.config.output_dir})", flush=True)
            continue
        print(f"== stage {k}/{len(stages)} {stage.name}: {stage.config.output_dir}{start}", flush=True)
        run_training(stage.config)
    print(f"Pipeline done: the last stage's adapter is in {stages[-1].config.output_dir}")
