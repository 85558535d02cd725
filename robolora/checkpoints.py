"""Checkpoints appear in the output directory whole or not at all.

Ray Train persists each worker's part of a checkpoint into its own storage (``<output_dir>/.ray`` by
default), and registers the checkpoint only once every worker's part is there; resuming reads from
there. After all workers have reported, rank 0 *publishes* the checkpoint for people and tools: it
links (or, across file systems, copies) the files into a hidden ``.checkpoint-<step>.partial``
folder and renames that to ``checkpoint-<step>``, so a visible checkpoint folder is always complete.
Leftover partial folders from an interrupted publish are removed on the next start. Ray Train's
controller registers a reported checkpoint only when it next polls the workers: a run stopped in
between resumes from the published one (:func:`newer_than_registered`), read from Ray's storage.

What goes into a checkpoint is written here too: the LoRA adapter (:func:`save_adapter`, also the run's
final output), each rank's random state, and DeepSpeed's engine state under the tag :data:`DS_TAG`.

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

import json
import os
import re
import shutil
import tempfile
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robolora.storage import download, is_uri

if TYPE_CHECKING:
    import torch

#: The tag of DeepSpeed's engine state (module, optimizer, scheduler) inside a checkpoint folder.
DS_TAG = "deepspeed"
#: The loop's counters in a checkpoint folder (rank 0's), read back on resume.
TRAINER_STATE = "trainer_state.json"
#: The files of a LoRA adapter, in an output directory or a checkpoint folder.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
LEFTOVER = re.compile(r"\.checkpoint-\d+\.(partial|old)")
VISIBLE = re.compile(r"checkpoint-(\d+)")


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # no second copy of the bytes on the same file system
    except OSError:
        shutil.copy2(src, dst)


def publish(src: str | os.PathLike, out: Path, step: int, keep: int = 0) -> Path:
    """Make ``src`` (a folder, or one in a bucket: :mod:`robolora.storage`) visible as ``out/checkpoint-<step>``
    in one rename; keep the newest ``keep`` (0: all)."""
    out.mkdir(parents=True, exist_ok=True)
    final = out / f"checkpoint-{step}"
    partial = out / f".checkpoint-{step}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    if is_uri(str(src)):
        download(str(src), str(partial))
    else:
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


# ----------------------------------------------------------------------------- adapter and random state


def lora_state_dict(model: Any, zero_stage: int) -> dict[str, torch.Tensor] | None:
    """The adapter's weights on rank 0 (None elsewhere); under ZeRO-3 they are gathered first.

    Every rank must call this: the gather is a collective.
    """
    import deepspeed
    from peft import get_peft_model_state_dict

    from robolora import dist

    trainable = [p for p in model.parameters() if p.requires_grad]
    gather = deepspeed.zero.GatheredParameters(trainable, modifier_rank=None) if zero_stage == 3 else nullcontext()
    with gather:
        if not dist.is_main():
            return None
        state = get_peft_model_state_dict(model)
        return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def save_adapter(model: Any, state: dict[str, torch.Tensor], directory: Path) -> None:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` (rank 0 only)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed, so a reader (or a crash) sees the old adapter or the new one; with the
    # folder's permissions less the execute bits (safetensors makes 0600 files).
    with tempfile.TemporaryDirectory(prefix=".adapter-", dir=directory) as tmp:
        model.peft_config["default"].save_pretrained(tmp)
        save_file(state, str(Path(tmp) / "adapter_model.safetensors"), metadata={"format": "pt"})
        mode = directory.stat().st_mode & 0o666
        for name in ("adapter_model.safetensors", "adapter_config.json"):
            (Path(tmp) / name).chmod(mode)
            (Path(tmp) / name).replace(directory / name)


def load_adapter_weights(model: Any, source: str) -> None:
    """Load LoRA weights (safetensors only) from an adapter or checkpoint directory into a PEFT model."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(str(Path(source) / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(model, state)
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"--resume-from {source}: adapter does not match the model ({result.unexpected_keys[:3]})")


def save_rng_state(directory: Path, rank: int, device: torch.device) -> None:
    """This rank's random state (CPU, and its GPU's) into a checkpoint folder: dropout continues where it stopped."""
    import torch
    from safetensors.torch import save_file

    rng = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    save_file(rng, str(directory / f"rng_rank{rank}.safetensors"))


def load_rng_state(directory: Path, rank: int, device: torch.device) -> None:
    """Restore this rank's random state saved by :func:`save_rng_state`, if the checkpoint has it."""
    rng = directory / f"rng_rank{rank}.safetensors"
    if rng.is_file():
        import torch
        from safetensors.torch import load_file

        states = load_file(str(rng))
        torch.set_rng_state(states["cpu"])
        if "cuda" in states and device.type == "cuda":
            torch.cuda.set_rng_state(states["cuda"], device)


def write_checkpoint(
    directory: Path,
    engine: Any,
    state: dict[str, Any],
    adapter: tuple[Any, dict[str, torch.Tensor]] | None,
    rank: int,
    device: torch.device,
) -> None:
    """This rank's part of a checkpoint into ``directory``: its DeepSpeed shard (with ``state``) and random
    state; with ``adapter`` (rank 0: the PEFT model and its weights) the adapter and :data:`TRAINER_STATE`."""
    engine.save_checkpoint(str(directory), tag=DS_TAG, client_state=state, exclude_frozen_parameters=True)
    save_rng_state(directory, rank, device)
    if adapter is not None:
        save_adapter(*adapter, directory)
        (directory / TRAINER_STATE).write_text(json.dumps(state, indent=2))


def read_checkpoint(directory: Path, engine: Any, rank: int, device: torch.device) -> dict[str, Any]:
    """Load the engine, optimizer, scheduler and this rank's random state from ``directory``; returns the
    loop's state that :func:`write_checkpoint` saved."""
    engine.load_checkpoint(
        str(directory), tag=DS_TAG, load_module_strict=False, load_optimizer_states=True, load_lr_scheduler_states=True
    )
    state = json.loads((directory / TRAINER_STATE).read_text())
    load_rng_state(directory, rank, device)
    return state
