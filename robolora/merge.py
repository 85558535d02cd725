"""Merge a LoRA adapter into its base model's safetensors files, one tensor at a time.

PEFT's ``merge_and_unload`` needs the whole model in memory (the export used to hold two float32 copies:
~270 GB for CodeLlama-34B). Here each base shard is copied as it stands (same header, same layout, same
``model.safetensors.index.json``) and only the tensors LoRA adapts are rewritten in place, as PEFT's
``Linear.get_delta_weight`` computes them: ``W + transpose(B @ A, fan_in_fan_out) * scaling`` in float32,
stored back in ``W``'s dtype. Host memory holds the adapter plus one adapted tensor's temporaries.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robolora.errors import UserError

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
#: Files beside the weights that make the merged folder a model (the tokenizer is saved by the export).
MODEL_FILES = ("config.json", "generation_config.json")
#: safetensors' names of the float dtypes a LoRA merge writes, as torch names them.
FLOAT_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B)")


@dataclass(frozen=True)
class Delta:
    """One base weight LoRA adapts: its adapter tensors, scaling, and whether ``B @ A`` is transposed."""

    weight: str
    a: str
    b: str
    scaling: float
    transpose: bool


@dataclass
class MergeStats:
    """What a merge did and the host memory it took (bytes)."""

    shards: int = 0
    merged: int = 0
    total_bytes: int = 0
    adapter_bytes: int = 0
    #: The most tensor bytes alive at once: the adapter plus one adapted weight's temporaries.
    peak_held_bytes: int = 0
    #: The largest growth of the process's resident memory over its size when the merge started (sampled).
    peak_rss_growth: int = 0


def parse_adapter_key(key: str) -> tuple[str, str]:
    """``(module, kind)`` of a PEFT adapter tensor name (any adapter name PEFT kept in it is ignored).

    >>> parse_adapter_key("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")
    ('model.layers.0.self_attn.q_proj', 'lora_A')
    >>> parse_adapter_key("base_model.model.model.embed_tokens.lora_embedding_B")
    ('model.embed_tokens', 'lora_embedding_B')
    """
    match = _KEY.match(key)
    rest = key[match.end() :] if match else ""
    if not match or (rest not in ("", ".weight") and not re.fullmatch(r"\.[\w-]+(\.weight)?", rest)):
        return "", ""
    return match["module"], match["kind"]


def base_weight_name(module: str, base_names: set[str]) -> str | None:
    """The base tensor that ``module``'s ``weight`` is stored as: ``<module>.weight``, else the one name that
    differs from it only by leading prefixes (``transformer.h.0...`` saved as ``h.0...``, or the reverse).

    >>> base_weight_name("transformer.h.0.attn.c_attn", {"h.0.attn.c_attn.weight", "h.0.attn.c_attn.bias"})
    'h.0.attn.c_attn.weight'
    >>> base_weight_name("model.layers.1.mlp.up_proj", {"model.layers.0.mlp.up_proj.weight"}) is None
    True
    """
    name = f"{module}.weight"
    if name in base_names:
        return name
    found = [b for b in base_names if b.endswith("." + name) or name.endswith("." + b)]
    return found[0] if len(found) == 1 else None


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """``rank_pattern``/``alpha_pattern`` lookup as PEFT's ``get_pattern_key`` does it."""
    for key in patterns or {}:
        if re.match(rf"(.*\.)?({key})$", module):
            return patterns[key]
    return default


def scaling_of(config: dict[str, Any], module: str) -> float:
    """PEFT's scaling of ``module``: ``lora_alpha / r``, or ``lora_alpha / sqrt(r)`` under rsLoRA.

    >>> scaling_of({"r": 8, "lora_alpha": 16}, "q"), scaling_of({"r": 16, "lora_alpha": 8, "use_rslora": True}, "q")
    (2.0, 2.0)
    """
    r = _pattern_value(config.get("rank_pattern"), module, config["r"])
    alpha = _pattern_value(config.get("alpha_pattern"), module, config.get("lora_alpha", 8))
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def refusal(config: dict[str, Any], keys: list[str]) -> str | None:
    """Why this adapter cannot be merged by adding ``B @ A`` to base weights, or None."""
    if config.get("use_dora"):
        return "it is a DoRA adapter (use_dora), whose merge rescales whole weights"
    if config.get("modules_to_save") or any(".modules_to_save." in k for k in keys):
        return f"it trains whole modules (modules_to_save: {config.get('modules_to_save')}), not only LoRA weights"
    if config.get("lora_bias") or any(k.endswith(".bias") for k in keys):
        return "it trains biases (lora_bias)"
    odd = [k for k in keys if not parse_adapter_key(k)[0]]
    if odd:
        return f"its tensor {odd[0]} is not a LoRA A or B matrix"
    return None


def plan_deltas(config: dict[str, Any], keys: list[str], base_names: set[str], label: str) -> dict[str, Delta]:
    """For each base tensor the adapter changes, its :class:`Delta`.

    Raises:
        UserError: the adapter is not plain LoRA, or one of its modules matches no base weight.
    """
    why = refusal(config, keys)
    if why:
        raise UserError(f"--lora-path: {label} cannot be merged: {why}")
    pairs: dict[str, dict[str, str]] = {}
    for key in keys:
        module, kind = parse_adapter_key(key)
        pairs.setdefault(module, {})[kind.removeprefix("lora_embedding_").removeprefix("lora_")] = key
    deltas = {}
    for module, pair in sorted(pairs.items()):
        weight = base_weight_name(module, base_names)
        if weight is None or set(pair) != {"A", "B"}:
            what = "matches no weight of the base model" if weight is None else "lacks its A or B matrix"
            raise UserError(f"--lora-path: {label} cannot be merged: its module {module} {what}; is it this base's?")
        embedding = "lora_embedding" in pair["A"]
        transpose = embedding or bool(config.get("fan_in_fan_out"))
        deltas[weight] = Delta(weight, pair["A"], pair["B"], scaling_of(config, module), transpose)
    return deltas


def merged_weight(weight: Any, a: Any, b: Any, delta: Delta) -> Any:
    """``weight + transpose(B @ A) * scaling`` computed in float32, in ``weight``'s dtype (PEFT's arithmetic).

    A Conv1D weight (GPT-2) is stored (in, out): where ``B @ A`` fits only transposed, it is transposed, as
    PEFT forces ``fan_in_fan_out`` on such layers.
    """
    import torch

    update = b.float() @ a.float()
    if delta.transpose or (update.shape != weight.shape and update.T.shape == weight.shape):
        update = update.T
    if update.shape != weight.shape:
        raise UserError(
            f"--lora-path: the adapter's update of {delta.weight} is {tuple(update.shape)}, the weight "
            f"{tuple(weight.shape)}; is it this base's?"
        )
    update = update * delta.scaling
    return (weight.to(torch.float32) + update).to(weight.dtype)


def base_folder(name: str) -> Path:
    """A local folder with the base model's safetensors: an alias's or local path's, else a hub snapshot
    (weights and configs only)."""
    from robolora.models import HUB_PATTERNS, resolve_model

    source = Path(resolve_model(name))
    if source.is_dir():
        return source
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(source), allow_patterns=list(HUB_PATTERNS)))
    except Exception as e:  # offline, gated, missing: all one line for the user
        raise UserError(f"--lora-path: the base model {name} could not be fetched ({str(e).splitlines()[0]})") from None


def shard_files(folder: Path) -> tuple[list[str], bool]:
    """The base's safetensors files in index order, and whether an index lists them.

    Raises:
        UserError: the folder holds no safetensors weights.
    """
    index = folder / INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        return list(dict.fromkeys(weight_map.values())), True
    if (folder / SINGLE).is_file():
        return [SINGLE], False
    raise UserError(f"--lora-path: the base model in {folder} has no safetensors weights ({SINGLE} or {INDEX})")


def read_header(path: Path) -> dict[str, Any]:
    """A safetensors file's header: tensor name -> dtype, shape, data_offsets (and ``__metadata__``)."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(size))


def base_dtype(folder: Path) -> Any:
    """The torch dtype most of the base's weight bytes are stored in (what the merged model keeps)."""
    import torch

    names = {key: getattr(torch, value) for key, value in FLOAT_DTYPES.items()}
    totals: dict[str, int] = {}
    for file in shard_files(folder)[0]:
        for name, entry in read_header(folder / file).items():
            if name != "__metadata__" and entry["dtype"] in names:
                start, end = entry["data_offsets"]
                totals[entry["dtype"]] = totals.get(entry["dtype"], 0) + end - start
    return names[max(totals, key=totals.__getitem__)] if totals else torch.float32


@contextmanager
def rss_sampler(interval: float = 0.002) -> Iterator[MergeStats]:
    """Sample this process's resident memory in a thread; the yielded stats get its peak growth."""
    stats = MergeStats()
    start = _rss()
    done = threading.Event()

    def sample() -> None:
        while not done.wait(interval):
            stats.peak_rss_growth = max(stats.peak_rss_growth, _rss() - start)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield stats
    finally:
        done.set()
        thread.join()
        stats.peak_rss_growth = max(stats.peak_rss_growth, _rss() - start)


def _rss() -> int:
    """Resident memory of this process in bytes (0 where /proc is not there)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def merge_adapter(base: Path, adapter: Path, out: Path, label: str | None = None) -> MergeStats:
    """Write ``base`` with ``adapter`` merged into ``out`` (an existing folder): the same safetensors layout,
    index, config.json and generation_config.json; one adapted tensor in memory at a time."""
    import torch
    from safetensors.torch import load_file

    from robolora.models import ADAPTER_WEIGHTS, adapter_config

    label = label or str(adapter)
    files, indexed = shard_files(base)
    headers = {file: read_header(base / file) for file in files}
    names = {name for header in headers.values() for name in header if name != "__metadata__"}
    config = adapter_config(adapter)
    if not (adapter / ADAPTER_WEIGHTS).is_file():
        raise UserError(f"--lora-path: {label} has no {ADAPTER_WEIGHTS} to merge")
    with rss_sampler() as stats:
        lora = load_file(adapter / ADAPTER_WEIGHTS)
        deltas = plan_deltas(config, list(lora), names, label)
        stats.adapter_bytes = sum(t.numel() * t.element_size() for t in lora.values())
        stats.peak_held_bytes = stats.adapter_bytes
        for file in files:
            target = out / file
            shutil.copyfile(base / file, target)  # the kernel copies: no tensor passes through this process
            header = headers[file]
            data_start = 8 + int.from_bytes(_head(base / file), "little")
            stats.total_bytes += sum(
                e["data_offsets"][1] - e["data_offsets"][0] for n, e in header.items() if n != "__metadata__"
            )
            adapted = [n for n in header if n in deltas]
            with open(base / file, "rb") as r, open(target, "r+b") as w:
                for name in adapted:
                    delta, offset = deltas[name], data_start + header[name]["data_offsets"][0]
                    weight = _read_tensor(r, offset, header[name], name)
                    merged = merged_weight(weight, lora[delta.a], lora[delta.b], delta)
                    # held: the weight, its merged copy and the float32 temporaries (weight, update)
                    temporaries = weight.numel() * (weight.element_size() * 2 + 8)
                    stats.peak_held_bytes = max(stats.peak_held_bytes, stats.adapter_bytes + temporaries)
                    w.seek(offset)
                    w.write(merged.contiguous().reshape(-1).view(torch.uint8).numpy())
                    stats.merged += 1
                    del weight, merged
            stats.shards += 1
        del lora
    for name in [*MODEL_FILES, *([INDEX] if indexed else [])]:
        if (base / name).is_file():
            shutil.copyfile(base / name, out / name)
    return stats


def _read_tensor(f: Any, offset: int, entry: dict[str, Any], name: str) -> Any:
    """One tensor of an open safetensors file, read into memory of its own (not mapped: the pages a map
    touched would stay counted in the process's resident memory until the file is closed)."""
    import torch

    dtype = FLOAT_DTYPES.get(entry["dtype"])
    if dtype is None:
        raise UserError(f"--lora-path: the base weight {name} is stored as {entry['dtype']}; LoRA merges into floats")
    tensor = torch.empty(entry["shape"], dtype=getattr(torch, dtype))
    f.seek(offset)
    if f.readinto(tensor.reshape(-1).view(torch.uint8).numpy()) != entry["data_offsets"][1] - entry["data_offsets"][0]:
        raise UserError(f"--lora-path: the base weight {name} is cut short in its safetensors file")
    return tensor


def _head(path: Path) -> bytes:
    """The 8 bytes that give a safetensors file's header length."""
    with open(path, "rb") as f:
        return f.read(8)
