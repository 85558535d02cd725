"""DeepSpeed config templates (``ds_configs/*.json``) resolved into the dicts each engine gets.

Templates leave batch sizes, precision, clipping, bucket sizes and pinning as ``"auto"``; the
training config and the model's hidden size fill them in, so a run's DeepSpeed settings can never
disagree with its flags.

They also turn off DeepSpeed's bf16 ``check_grad_overflow``: it reduces every gradient twice and waits
for the device each step to skip steps with non-finite gradients, a guard made for fp16's loss scaling.
bf16 has fp32's range, and fp32 runs have no such check either (nor does ``Trainer`` in bf16); on one
H100 it cost 8% of a 7B LoRA step. A loss that turns non-finite still ends in the run's diagnosis.

Example:
    >>> cfg = resolve(load_template(2, "none"), micro_batch=4, grad_accum=2, world_size=2, bf16=True,
    ...               grad_clip=1.0, hidden_size=576, pin_memory=False)
    >>> cfg["train_batch_size"], cfg["bf16"], cfg["zero_optimization"]["stage"]
    (16, {'enabled': True, 'check_grad_overflow': False}, 2)
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

#: (ZeRO stage, offload) -> template file name in ds_configs/.
TEMPLATES: dict[tuple[int, str], str] = {
    (2, "none"): "zero2.json",
    (2, "optimizer"): "zero2_offload_optimizer.json",
    (3, "none"): "zero3.json",
    (3, "optimizer"): "zero3_offload_optimizer.json",
    (3, "all"): "zero3_offload_all.json",
}


def load_template(stage: int, offload: str = "none") -> dict[str, Any]:
    """The shipped template for a ZeRO stage and offload mode, with its ``"auto"`` fields."""
    name = TEMPLATES[(stage, offload)]
    try:
        folder: Any = resources.files("robolora.ds_configs")
    except ModuleNotFoundError:  # a source checkout on the path, not installed: the top-level folder
        folder = Path(__file__).resolve().parents[1] / "ds_configs"
    return json.loads(folder.joinpath(name).read_text(encoding="utf-8"))


def resolve(
    template: dict[str, Any],
    *,
    micro_batch: int,
    grad_accum: int,
    world_size: int,
    bf16: bool,
    grad_clip: float,
    hidden_size: int | None,
    pin_memory: bool,
) -> dict[str, Any]:
    """Fill every ``"auto"`` field; the result has none left.

    Bucket sizes follow the Hugging Face integration's rules of thumb (hidden_size**2 for reduce
    buckets, 0.9x that for ZeRO-3 prefetch, 10x hidden for the persistence threshold), which keep
    communication in few large messages without holding much memory; without a hidden size they are
    dropped so DeepSpeed's defaults apply.
    """
    cfg = copy.deepcopy(template)
    top = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch * grad_accum * world_size,
        "gradient_clipping": grad_clip,
    }
    for key, value in top.items():
        if cfg.get(key) == "auto":
            cfg[key] = value
    if cfg.get("bf16", {}).get("enabled") == "auto":
        cfg["bf16"]["enabled"] = bf16
    zero = cfg.get("zero_optimization", {})
    sizes = {}
    if hidden_size:
        sizes = {
            "reduce_bucket_size": hidden_size * hidden_size,
            "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
            "stage3_param_persistence_threshold": 10 * hidden_size,
        }
    for key in [k for k, v in zero.items() if v == "auto"]:
        if key in sizes:
            zero[key] = sizes[key]
        else:
            del zero[key]
    if world_size == 1 and zero.get("overlap_comm"):
        # One worker has nothing to communicate: overlapping it only adds device synchronisations.
        zero["overlap_comm"] = False
    for key in ("offload_optimizer", "offload_param"):
        if zero.get(key, {}).get("pin_memory") == "auto":
            zero[key]["pin_memory"] = pin_memory
    return cfg


def find_auto(value: Any, path: str = "") -> list[str]:
    """Paths of every field still set to ``"auto"`` (empty for a resolved config)."""
    if value == "auto":
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in find_auto(v, f"{path}.{k}" if path else k)]
    return []
