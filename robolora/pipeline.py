"""Multi-stage training (the guide's curriculum and multi-stage recipes) as one config.

A pipeline file holds the settings every stage shares (a training config file as ``base``, and/or
``shared`` settings on top of it) and a list of stages, each with its own data,
learning rate, epochs or any other training field. Stage ``k`` trains into ``<output_dir>/<name>``
starting from stage ``k-1``'s adapter (``--resume-from``)::

    output_dir: models/curriculum
    shared: {model_name: smollm2-135m, lora_r: 32, lora_alpha: 64, batch_size: 8}
    stages:
      - {name: simple, data_json: data/simple.json, learning_rate: 2.0e-4, num_epochs: 2}
      - {name: complex, data_json: data/complex.json, learning_rate: 1.0e-4, num_epochs: 1}

Every stage's config, dataset and folder is checked before the first one starts. Running the same
pipeline again keeps the stages that finished and continues an interrupted one from its last
checkpoint, as long as their settings and inputs are unchanged; a stage that changed, and every stage
after it, must be retrained, and the pipeline refuses to start until their old folders are moved away
(nothing is overwritten). ``robolora pipeline --dry-run`` shows what a start would do.

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

from robolora.config import TrainConfig, from_dict
from robolora.errors import ConfigError, UserError
from robolora.fileio import read_mapping

KEYS = ("output_dir", "base", "shared", "stages")


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
    from robolora.sweep import base_values

    output_dir, shared, stages = data.get("output_dir"), data.get("shared") or {}, data.get("stages")
    base = base_values(data.get("base"), source)
    base.pop("output_dir", None)  # the pipeline's folders replace the base file's own
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
            if key in values or key in shared or (key == "resume_from" and base.get(key)):
                raise ConfigError(f"{where}: {key}: set by the pipeline (<output_dir>/<name>, the previous stage)")
        values = {**base, **shared, **values, "output_dir": str(Path(output_dir) / name)}
        if previous is not None:
            values["resume_from"] = previous
        out.append(Stage(name, from_dict(values, source=where)))
        previous = values["output_dir"]
    return out


#: What a start of the pipeline does with each stage.
ACTIONS = {
    "train": "train",
    "resume": "resume from its last checkpoint",
    "reuse": "finished earlier: kept",
}


def plan_stages(stages: list[Stage], source: str) -> dict[str, str]:
    """What starting the pipeline does with each stage (a key of :data:`ACTIONS`), from the stages' folders.

    A finished stage is kept, and an unfinished one resumed, only when its run's settings and inputs (its data
    files' content, the previous stage's adapter) are those the file now gives, the rule ``robolora train``
    follows; once one stage trains, every stage after it starts from a new adapter and trains too. A stage
    folder holding a run that no longer matches is never overwritten: nothing starts, and one line names the
    stages, what changed, and the fix.
    """
    from robolora.preflight import check_creatable
    from robolora.runrecord import describe_changes, folder_state

    actions: dict[str, str] = {}
    stale: list[str] = []
    upstream: str | None = None  # the first stage that trains: every later stage's starting adapter changes
    for stage in stages:
        state, found = folder_state(stage.config)
        if state == "foreign":
            raise UserError(
                f"{source}: stage {stage.name}: {stage.config.output_dir} is not empty and holds no robolora run; "
                "move it away or give the pipeline another output_dir"
            )
        if state != "new" and upstream is not None:
            found = [f"its starting adapter, stage {upstream}'s, is retrained", *found]
        if found:
            stale.append(f"{stage.name} ({describe_changes(found, 2)})")
            upstream = upstream or stage.name
            continue
        if state == "new":
            check_creatable(Path(stage.config.output_dir))
        actions[stage.name] = {"new": "train", "unfinished": "resume", "finished": "reuse"}[state]
        if state != "finished":
            upstream = upstream or stage.name
    if stale:
        names = [s.split(" (")[0] for s in stale]
        raise UserError(
            f"{source}: stage{'s' if len(stale) > 1 else ''} {'; '.join(stale)}: trained with other settings or "
            f"inputs than the file gives now; move {', '.join(names)} out of "
            f"{Path(stages[0].config.output_dir).parent} to retrain them, or give the pipeline a new output_dir "
            "(finished stages are never overwritten)"
        )
    return actions


def describe(stages: list[Stage], actions: dict[str, str]) -> str:
    """One line per stage: its folder, where it starts from, and what a start does with it."""
    lines = []
    for k, stage in enumerate(stages, 1):
        start = f" from {stage.config.resume_from}" if stage.config.resume_from else ""
        action = ACTIONS[actions[stage.name]]
        lines.append(f"  stage {k}/{len(stages)} {stage.name}: {stage.config.output_dir}{start} -> {action}")
    return "\n".join(lines)


def run_pipeline(path: str | Path, dry_run: bool = False) -> None:
    """Train the stages in order; finished ones are kept, an interrupted one continues.

    Every stage's dataset and folder is checked before the first one starts; ``dry_run`` prints what would
    run and what would be kept, and starts nothing.
    """
    from robolora.data import load_datasets
    from robolora.launcher import run_training

    stages = load_pipeline(path)
    for stage in stages:
        try:
            load_datasets(stage.config)
        except UserError as e:
            raise e.prefixed(f"stage {stage.name}: ") from None
    actions = plan_stages(stages, str(path))
    print(f"Pipeline {path}: {len(stages)} stages\n{describe(stages, actions)}", flush=True)
    if dry_run:
        return
    for k, stage in enumerate(stages, 1):
        start = f" from {stage.config.resume_from}" if stage.config.resume_from else ""
        if actions[stage.name] == "reuse":
            print(f"== stage {k}/{len(stages)} {stage.name}: finished earlier ({stage.config.output_dir})", flush=True)
            continue
        print(f"== stage {k}/{len(stages)} {stage.name}: {stage.config.output_dir}{start}", flush=True)
        run_training(stage.config)
    print(f"Pipeline done: the last stage's adapter is in {stages[-1].config.output_dir}")
