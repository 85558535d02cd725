"""Checkpoints appear in the output directory whole or not at all.

Ray Train persists each worker's part of a checkpoint into its own storage (``<output_dir>/.ray`` by
default), and registers the checkpoint only once every worker's part is there; resuming reads from
there. After all workers have reported, rank 0 *publishes* the checkpoint for people and tools: it
links (or, across file systems, copies) the files into a hidden ``.checkpoint-<step>.partial``
folder and renames that to ``checkpoint-<step>``, so a visible checkpoint folder is always complete.
Leftover partial folders from an interrupted publish are removed on the next start. Ray Train's
controller registers a reported checkpoint only when it next polls the workers: a run stopped in
between resumes from the published one (:func:`newer_than_registered`), read from Ray's storage.

Example:
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> for step in (3, 6):
    ...     src = root / "ray" / f"checkpoint-{step}"
    ...     src.mkdir(parents=True)
    ...     _ = (src / "adapter_model.safetensors").write_bytes(b"w")
    ...     _ = publish(src, root / "out", step, keep=1)
    >>> sorted(p.name for p in (root / "out").iterdir())
    ['checkpoint-6']
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

LEFTOVER = re.compile(r"\.checkpoint-\d+\.(partial|old)")
VISIBLE = re.compile(r"checkpoint-(\d+)")


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # no second copy of the bytes on the same file system
    except OSError:
        shutil.copy2(src, dst)


def publish(src: Path, out: Path, step: int, keep: int = 0) -> Path:
    """Make ``src`` visible as ``out/checkpoint-<step>`` in one rename; keep the newest ``keep`` (0: all)."""
    out.mkdir(parents=True, exist_ok=True)
    final = out / f"checkpoint-{step}"
    partial = out / f".checkpoint-{step}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(src, partial, copy_function=_link_or_copy)
    if final.exists():  # the same step saved again after a resume: the new one replaces it
        old = out / f".checkpoint-{step}.old"
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        partial.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        partial.rename(final)
    if keep:
        prune(out, keep)
    return final


def visible_steps(out: Path) -> list[int]:
    """The steps of the checkpoint folders in ``out``, oldest first."""
    if not out.is_dir():
        return []
    return sorted(int(m.group(1)) for p in out.iterdir() if (m := VISIBLE.fullmatch(p.name)) and p.is_dir())


def newer_than_registered(visible: list[int], registered: str | None) -> int | None:
    """The newest of the ``visible`` checkpoint steps if Ray Train's newest registered checkpoint (its
    folder name, None for none) is older; None when the registered one is the one to resume from.

    >>> newer_than_registered([3, 6], "checkpoint-3"), newer_than_registered([3, 6], None)
    (6, 6)
    >>> newer_than_registered([3, 6], "checkpoint-6"), newer_than_registered([], None)
    (None, None)
    """
    if not visible:
        return None
    if registered is not None:
        match = VISIBLE.fullmatch(registered)
        if match is None or int(match.group(1)) >= visible[-1]:  # not a name this toolkit gives, or as new
            return None
    return visible[-1]


def prune(out: Path, keep: int) -> None:
    """Remove all but the newest ``keep`` checkpoint folders."""
    for step in visible_steps(out)[:-keep]:
        shutil.rmtree(out / f"checkpoint-{step}", ignore_errors=True)


def remove_partials(out: Path) -> None:
    """Drop what an interrupted publish left behind."""
    if out.is_dir():
        for p in out.iterdir():
            if LEFTOVER.fullmatch(p.name):
                shutil.rmtree(p, ignore_errors=True)
