"""Where an inference model's weights go: one device, or sharded over the visible GPUs (and the CPU).

``robolora eval``, ``demo`` and a sweep's evaluation load the base model (and its adapter) once per
process. A 7B model fits one GPU; a 34B model in bf16 (~68 GB) does not fit a 48 GB card, so its layers
are spread over every visible GPU by accelerate's ``device_map="auto"``, each GPU filled up to its share of
``--max-memory`` (``0:20GiB,1:20GiB,cpu:64GiB``; a bare size caps every GPU). With ``--quantization
4bit`` the weights take about a quarter of that. Batched, constrained generation is the same either way:
the inputs go to the device of the first layer and accelerate moves activations between the others.

Everything here is pure: it decides, :func:`robolora.models.load_model` loads.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from robolora.errors import UserError

if TYPE_CHECKING:
    from robolora.sizing import ModelDims

#: Bytes per unit a size may be given in: decimal (GB, as cards are sold) and binary (GiB, as CUDA reports).
UNITS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)\s*")
#: Where weights may go besides GPUs (accelerate's names); "disk" is refused: generation from disk crawls.
HOST = "cpu"


def parse_size(text: str, flag: str = "--max-memory") -> int:
    """Bytes in ``20GiB``, ``24GB``, ``512MiB``.

    >>> parse_size("20GiB"), parse_size("1.5 GB"), parse_size("512mib")
    (21474836480, 1500000000, 536870912)
    """
    match = _SIZE.fullmatch(text)
    unit = match[2].upper() if match else ""
    if not match or unit not in UNITS:
        raise UserError(f"{flag}: {text.strip()!r} is not a size; write a number and a unit, e.g. 20GiB or 24GB")
    size = int(float(match[1]) * UNITS[unit])
    if size <= 0:
        raise UserError(f"{flag}: {text.strip()!r} is no memory at all; give a positive size")
    return size


def parse_max_memory(text: str, gpus: int, flag: str = "--max-memory") -> dict[int | str, int]:
    """``--max-memory`` as accelerate's ``max_memory``: per GPU index, and ``cpu`` for the host.

    A bare size caps every one of the ``gpus`` visible GPUs alike.

    >>> parse_max_memory("0:20GiB,1:18GiB,cpu:64GiB", gpus=2)
    {0: 21474836480, 1: 19327352832, 'cpu': 68719476736}
    >>> parse_max_memory("40GB", gpus=2)
    {0: 40000000000, 1: 40000000000}
    """
    text = text.strip()
    if ":" not in text:
        size = parse_size(text, flag)
        if gpus == 0:
            raise UserError(f"{flag} {text}: no GPU is visible; cap the host instead with cpu:{text}")
        return dict.fromkeys(range(gpus), size)
    limits: dict[int | str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        where, _, size = part.partition(":")
        where = where.strip().lower()
        if where == HOST:
            key: int | str = HOST
        elif where.isdigit() and int(where) < gpus:
            key = int(where)
        elif where.isdigit():
            seen = f"GPUs 0..{gpus - 1}" if gpus else "no GPU"
            raise UserError(f"{flag}: GPU {where} is not visible ({seen}); name a visible GPU or cpu")
        else:
            raise UserError(f"{flag}: {part!r} names neither a GPU index nor cpu; write e.g. 0:20GiB,cpu:64GiB")
        if key in limits:
            raise UserError(f"{flag}: {where} is capped twice; give each device once")
        limits[key] = parse_size(size, flag)
    return limits


def device_map(gpus: int, max_memory: dict[int | str, int] | None) -> dict[str, object]:
    """``from_pretrained``'s placement arguments for ``gpus`` visible GPUs: the whole model on the one GPU
    or the CPU, else (several GPUs, or caps given) spread by accelerate within ``max_memory``.

    >>> device_map(0, None), device_map(1, None)
    ({'device_map': {'': 'cpu'}}, {'device_map': {'': 0}})
    >>> device_map(2, None)
    {'device_map': 'auto'}
    >>> device_map(1, {0: 2**30, 'cpu': 2**33})
    {'device_map': 'auto', 'max_memory': {0: 1073741824, 'cpu': 8589934592}}
    """
    if max_memory:
        return {"device_map": "auto", "max_memory": max_memory}
    if gpus > 1:
        return {"device_map": "auto"}
    return {"device_map": {"": 0 if gpus == 1 else HOST}}


def check_fits(weights: int, max_memory: dict[int | str, int], flag: str = "--max-memory") -> None:
    """Refuse caps that cannot hold the model's ``weights`` bytes (accelerate would spill to disk, or fail
    on the first forward pass), before anything loads.

    >>> check_fits(10 * 2**30, {0: 8 * 2**30, "cpu": 4 * 2**30})
    >>> check_fits(10 * 2**30, {0: 8 * 2**30})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    robolora.errors.UserError: --max-memory: the weights need about 10.0 GiB but the caps allow 8.0 GiB in all; ...
    """
    room = sum(max_memory.values())
    if weights > room:
        raise UserError(
            f"{flag}: the weights need about {weights / 2**30:.1f} GiB but the caps allow {room / 2**30:.1f} GiB "
            "in all; raise them, add cpu:SIZE, or load with --quantization 4bit"
        )


#: The most GPUs one evaluation spreads a model over: one node's.
MAX_GPUS_PER_EVAL = 8


def gpus_to_reserve(max_memory: str | None, trained_on: int) -> int:
    """The GPUs a sweep's evaluation of a run reserves (its Ray task sees exactly those): the GPU indices its
    caps name; with a bare cap, as many as the run trained on (one node's at most); else one.

    >>> gpus_to_reserve(None, 8), gpus_to_reserve("0:40GiB,1:40GiB,cpu:100GiB", 8), gpus_to_reserve("40GB", 16)
    (1, 2, 8)
    """
    if not max_memory:
        return 1
    if ":" not in max_memory:
        return max(1, min(trained_on, MAX_GPUS_PER_EVAL))
    named = {p.partition(":")[0].strip() for p in max_memory.split(",")}
    return max(1, sum(name.isdigit() for name in named))


#: The share of a GPU inference fills with weights; the rest holds the key/value cache of a batch of
#: prompts, the activations of one layer and CUDA's own memory.
WEIGHTS_SHARE = 0.85


def inference_needs(dims: ModelDims, gpu_memory: int) -> str:
    """What ``robolora eval``/``demo`` (and a sweep's evaluation) need for a model of ``dims`` on GPUs of
    ``gpu_memory`` bytes: its weights in bf16 and in 4-bit, and how many such GPUs each fills.

    >>> from robolora.sizing import SIZES
    >>> print(inference_needs(SIZES["34B"], 44 * 2**30))
    Inference (eval, demo, a sweep's evaluation): the weights take 62.9 GiB in bf16 (2 of these GPUs: \
--max-memory 37GiB) or 16.9 GiB with --quantization 4bit (1 GPU)
    """
    from robolora.sizing import GIB, quantized_weight_bytes

    room = gpu_memory * WEIGHTS_SHARE
    bf16, nf4 = dims.params() * 2, quantized_weight_bytes(dims, "4bit", 2)
    n16, n4 = math.ceil(bf16 / room), math.ceil(nf4 / room)
    spread = f"{n16} of these GPUs: --max-memory {math.floor(room / GIB)}GiB" if n16 > 1 else "1 GPU"
    return (
        f"Inference (eval, demo, a sweep's evaluation): the weights take {bf16 / GIB:.1f} GiB in bf16 ({spread}) "
        f"or {nf4 / GIB:.1f} GiB with --quantization 4bit ({n4} GPU{'s' if n4 > 1 else ''})"
    )
