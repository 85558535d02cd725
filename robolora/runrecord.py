"""What an output directory holds: the run marker, and whether a new start may resume or reuse it.

Every run writes ``robolora_run.json`` into its output directory as it starts and again as it
finishes: the settings it was given, the settings the plan resolved them to, digests of what it
read besides its settings (the dataset files' content, the starting adapter), and whether it
finished. One rule, used by ``train``, ``sweep`` and ``pipeline`` alike, compares a config with that
record: a run is resumed (unfinished) or reused (finished) only when every setting and input is the
same; otherwise the start is refused with one line naming what changed.

Example:
    >>> from robolora.config import TrainConfig
    >>> old = fingerprint(TrainConfig(output_dir="/runs/a", data_json="/d.json"))
    >>> marker = {"given": old, "resolved": old, "inputs": {"data_json": "sha256:1"}, "finished": True}
    >>> changes(TrainConfig(output_dir="/runs/a", data_json="/d.json", lora_r=8), marker, {"data_json": "sha256:2"})
    ['lora_r 32 -> 8', "data_json's content (/d.json)"]
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from robolora.config import TrainConfig
from robolora.errors import UserError
from robolora.fileio import FileReadError, atomic_write_text, load_json

RUN_MARKER = "robolora_run.json"
#: Fields that may differ when a run is started again: where and how it runs, not what it computes.
RESUMABLE_CHANGES = {
    "ray_address",
    "max_failures",
    "storage_path",
    "dataloader_num_workers",
    "dataloader_pin_memory",
    "placement_strategy",
    "dashboard_host",
    "cpus_per_worker",
    "report_to",
}
#: Fields holding local paths: compared as absolute paths, so a relative path given again from the same
#: folder is the same setting.
PATH_FIELDS = ("data_json", "train_json", "val_json", "resume_from", "output_dir", "deepspeed")
#: The inputs whose content is digested: the dataset files, the starting adapter and a --deepspeed file.
INPUT_FIELDS = ("data_json", "train_json", "val_json", "resume_from", "deepspeed")
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def fingerprint(cfg: TrainConfig) -> dict[str, Any]:
    """The settings that decide what a run computes, local paths made absolute."""
    return _absolute({k: v for k, v in cfg.to_dict().items() if k not in RESUMABLE_CHANGES})


def _absolute(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    for key in PATH_FIELDS:
        if isinstance(out.get(key), str) and out[key]:
            out[key] = os.path.abspath(out[key])  # noqa: PTH100 (normalized, symbolic links kept)
    return out


#: Digests already computed in this process, by path, size and modification time: a sweep's variants
#: mostly share one dataset, which is read once.
_digests: dict[tuple, str] = {}


def _digest(paths: list[Path]) -> str:
    key = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
    if key not in _digests:
        _digests[key] = _compute_digest(paths)
    return _digests[key]


def _compute_digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return "sha256:" + h.hexdigest()


def input_digests(cfg: TrainConfig) -> dict[str, str]:
    """Digests of the content a run reads besides its settings: each dataset file, the starting adapter.

    A missing input is recorded as ``"missing"`` (preflight refuses it before a run starts).
    """
    out = {}
    for key in INPUT_FIELDS:
        value = getattr(cfg, key)
        if not value:
            continue
        path = Path(value)
        files = [path / name for name in ADAPTER_FILES] if key == "resume_from" else [path]
        try:
            out[key] = _digest([f for f in files if f.is_file()]) if any(f.is_file() for f in files) else "missing"
        except OSError:
            out[key] = "missing"
    return out


def read_marker(out: str | os.PathLike) -> dict[str, Any] | None:
    """The run marker in ``out``; None when there is none. A marker that is not one is refused."""
    path = Path(out) / RUN_MARKER
    if not path.is_file():  # a FIFO or a folder of that name is no marker either
        return None
    try:
        data = load_json(path, "a run marker")
    except FileReadError as e:
        raise UserError(
            f"{e} (not a readable robolora run marker); move {out} away or choose another output directory"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("given", {}), dict):
        raise UserError(
            f"{path}: not a robolora run marker (expected a JSON object with given, resolved, finished); "
            f"move {out} away or choose another output directory"
        )
    return data


def run_finished(out: str | os.PathLike) -> bool:
    """Whether ``out`` holds a run that finished (its marker says so); a corrupt marker counts as not."""
    try:
        marker = read_marker(out)
    except UserError:
        return False
    return bool(marker and marker.get("finished") is True)


def write_marker(
    out: Path, given: TrainConfig, resolved: TrainConfig, finished: bool, inputs: dict[str, str] | None = None
) -> None:
    """Record what this directory holds: the settings asked for, the resolved ones, the inputs, whether done."""
    marker = {
        "given": fingerprint(given),
        "resolved": fingerprint(resolved),
        "inputs": inputs if inputs is not None else input_digests(given),
        "finished": finished,
    }
    atomic_write_text(out / RUN_MARKER, json.dumps(marker, indent=2))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def changes(cfg: TrainConfig, marker: dict[str, Any], inputs: dict[str, str] | None = None) -> list[str]:
    """What differs between ``cfg`` (with its ``inputs`` digests) and the run ``marker`` records; empty when
    nothing does. A setting matches if it equals what the run was given or what its plan made of it, so both
    the same flags and the run's saved ``config.yaml`` match.

    >>> fp = fingerprint(TrainConfig(output_dir="/o"))
    >>> changes(TrainConfig(output_dir="/o", num_workers=2), {"given": fp, "resolved": {**fp, "num_workers": 2}})
    []
    """
    given, resolved = _absolute(marker.get("given") or {}), _absolute(marker.get("resolved") or {})
    found = []
    for key, value in fingerprint(cfg).items():
        if (key in given or key in resolved) and value not in (given.get(key), resolved.get(key)):
            found.append(f"{key} {_shown(resolved.get(key, given.get(key)))} -> {_shown(value)}")
    recorded = marker.get("inputs")
    if isinstance(recorded, dict) and inputs is not None:
        for key in INPUT_FIELDS:
            if key in inputs and key in recorded and inputs[key] != recorded[key]:
                what = "adapter" if key == "resume_from" else "content"
                found.append(f"{key}'s {what} ({getattr(cfg, key)})")
    return found


def describe_changes(found: list[str], limit: int = 4) -> str:
    """The first few changes as one phrase.

    >>> describe_changes(["a 1 -> 2", "b 3 -> 4"])
    'a 1 -> 2, b 3 -> 4'
    """
    more = f" and {len(found) - limit} more" if len(found) > limit else ""
    return ", ".join(found[:limit]) + more


def folder_state(cfg: TrainConfig, inputs: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """What ``cfg.output_dir`` holds for a start of ``cfg``, and what differs from it.

    Returns ``("new", [])`` for a missing or empty folder, ``("foreign", [])`` for a folder with other
    files and no run, else ``("finished" | "unfinished", changes)`` where ``changes`` lists the settings and
    inputs that differ from the run's (empty: the run may be reused or resumed).
    """
    out = Path(cfg.output_dir)
    try:
        if not out.is_dir() or not any(out.iterdir()):
            return "new", []
    except OSError as e:
        raise UserError(f"{out}: cannot be read ({e.strerror}); choose another output directory") from None
    marker = read_marker(out)
    if marker is None:
        return "foreign", []
    state = "finished" if marker.get("finished") is True else "unfinished"
    return state, changes(cfg, marker, inputs if inputs is not None else input_digests(cfg))
