"""Device monitoring for each worker: NVML figures on a GPU, process memory on the CPU.

Every worker samples its own device at each logging step; rank 0 writes the samples of all workers
beside the training metrics (``metrics.jsonl`` and TensorBoard). On a GPU a sample holds the memory
used on the device, utilisation, temperature and power draw from NVML (``pynvml``, from the
``nvidia-ml-py`` package). Without a GPU or without NVML it holds the process's resident memory and the
monitor says once why. Monitoring never stops a run: a failing NVML call leaves its field out.

Example (on a machine without a GPU):
    >>> monitor = DeviceMonitor(gpu_index=None)
    >>> sorted(monitor.sample())
    ['rss_mb']
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import resource
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robolora.memplan import GpuInventory

if TYPE_CHECKING:
    import torch

#: Fields of a GPU sample, in the order they are printed.
GPU_FIELDS = ("gpu_mem_used_mb", "gpu_util_pct", "gpu_temp_c", "gpu_power_w")


def process_rss_mb() -> float:
    """The process's current resident memory (its peak where the current value cannot be read)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def live_tensor_mb() -> float:
    """The memory of the CPU tensors Python can reach now, each storage counted once (a view shares its
    base's): on the CPU the figure a GPU's allocator reports as allocated. The process's resident memory
    also holds libraries, Python objects and the allocator's free pages; tensors that only C++ holds
    (autograd's saved activations between a forward pass and its backward) are not counted here."""
    import gc

    import torch

    seen: set[int] = set()
    total = 0
    for obj in gc.get_objects():
        if not isinstance(obj, torch.Tensor) or obj.device.type != "cpu":
            continue
        try:
            storage = obj.untyped_storage()
        except Exception:  # sparse tensors and subclasses without a storage: a measurement never stops a run
            continue
        key = storage.data_ptr()
        if key and key not in seen:
            seen.add(key)
            total += storage.nbytes()
    return total / 2**20


def local_gpus(nodes: int = 1) -> GpuInventory | None:
    """This machine's GPUs (sized by the smallest), counted ``nodes`` times; None where NVML sees none."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        sizes = [pynvml.nvmlDeviceGetMemoryInfo(h).total for h in handles]
        name = pynvml.nvmlDeviceGetName(handles[0]) if handles else ""
    except Exception:  # no NVML (no driver, a CPU-only machine): the GPUs may be elsewhere in the cluster
        return None
    if not sizes:
        return None
    name = name.decode() if isinstance(name, bytes) else name
    return GpuInventory(len(sizes) * nodes, min(sizes), nodes, source=f"this machine: {len(sizes)} x {name}")


def available_memory(use_gpu: bool) -> tuple[int | None, str]:
    """Bytes one worker may use: the smallest GPU's total memory, or the host's available memory."""
    if use_gpu:
        gpus = local_gpus()
        return (gpus.memory, "per GPU") if gpus else (None, "GPU memory not visible from this machine")
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024, "host memory available"
    return None, "host memory unknown"


class DeviceMonitor:
    """Samples one worker's device; ``note`` says why GPU figures are missing, if they are."""

    def __init__(self, gpu_index: int | None):
        self.handle: Any = None
        self.note: str | None = None
        if gpu_index is None:
            self.note = "no GPU in this worker: logging its process memory (rss_mb) instead of NVML figures"
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            self.handle = _nvml_handle(pynvml, gpu_index)
            self._nvml = pynvml
        except Exception as e:  # ImportError, NVMLError: no driver, no library, no such device
            self.handle = None
            self.note = f"NVML is not available ({type(e).__name__}: {e}); logging process memory (rss_mb) instead"

    def sample(self) -> dict[str, float]:
        """The device's figures now; never raises."""
        if self.handle is None:
            return {"rss_mb": round(process_rss_mb(), 1)}
        nvml, h = self._nvml, self.handle
        readers = {
            "gpu_mem_used_mb": lambda: nvml.nvmlDeviceGetMemoryInfo(h).used / 2**20,
            "gpu_util_pct": lambda: nvml.nvmlDeviceGetUtilizationRates(h).gpu,
            "gpu_temp_c": lambda: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU),
            "gpu_power_w": lambda: nvml.nvmlDeviceGetPowerUsage(h) / 1000,  # milliwatts
        }
        out = {}
        for key, read in readers.items():
            try:
                out[key] = round(float(read()), 1)
            except Exception:  # a field this GPU or driver does not report
                continue
        return out


def _nvml_handle(pynvml: Any, gpu_index: int) -> Any:
    """The NVML handle of torch's CUDA device ``gpu_index``.

    NVML numbers every GPU in the machine while torch numbers only the visible ones
    (``CUDA_VISIBLE_DEVICES``, which Ray sets per worker), so match by UUID where torch reports it.
    """
    import torch

    uuid = getattr(torch.cuda.get_device_properties(gpu_index), "uuid", None)
    if uuid is not None:
        return pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if gpu_index < len(visible):
        v = visible[gpu_index]
        return pynvml.nvmlDeviceGetHandleByIndex(int(v)) if v.isdigit() else pynvml.nvmlDeviceGetHandleByUUID(v)
    return pynvml.nvmlDeviceGetHandleByIndex(gpu_index)


def summarize(samples: list[dict[str, float]]) -> dict[str, Any]:
    """One metrics row's device fields from every worker's sample (index = rank).

    The peak memory and temperature, the mean utilisation and the total power go into flat
    scalars; each worker's own figures stay under ``devices``.

    >>> summarize([{"rss_mb": 900.0}, {"rss_mb": 1000.0}])
    {'devices': [{'rss_mb': 900.0}, {'rss_mb': 1000.0}], 'rss_mb_max': 1000.0}
    """
    row: dict[str, Any] = {"devices": samples}

    def values(key: str) -> list[float]:
        return [s[key] for s in samples if key in s]

    for key, how, name in (
        ("rss_mb", max, "rss_mb_max"),
        ("gpu_mem_used_mb", max, "gpu_mem_used_mb_max"),
        ("gpu_util_pct", lambda v: round(sum(v) / len(v), 1), "gpu_util_pct_mean"),
        ("gpu_temp_c", max, "gpu_temp_c_max"),
        ("gpu_power_w", lambda v: round(sum(v), 1), "gpu_power_w_total"),
    ):
        if values(key):
            row[name] = how(values(key))
    return row


# ----------------------------------------------------------------------------- memory probes


def memory_mb(device: torch.device) -> float:
    """Peak memory of this worker: device memory on a GPU, the process's peak RSS on the CPU."""
    if device.type == "cuda":
        import torch

        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_memory_mb(device: torch.device) -> float:
    """Memory this worker holds now: allocated device memory on a GPU, the process's RSS on the CPU."""
    if device.type == "cuda":
        import torch

        return torch.cuda.memory_allocated(device) / 2**20
    return process_rss_mb()


def tensor_memory_mb(device: torch.device) -> float:
    """The tensors this worker holds now: on a GPU what ``current_memory_mb`` reads (the allocated device
    memory), on the CPU the live CPU tensors."""
    return current_memory_mb(device) if device.type == "cuda" else live_tensor_mb()


def held_weights_mb(model: torch.nn.Module) -> float:
    """The parameter memory this worker holds: whole tensors, or under ZeRO-3 its shard of each."""
    held = 0
    for p in model.parameters():
        shard = getattr(p, "ds_tensor", None)
        t = shard if shard is not None else p
        held += t.numel() * t.element_size()
    return held / 2**20


def release_freed_memory() -> None:
    """Give the heap memory freed by the model load (its full-size temporaries) back to the system:
    glibc keeps freed blocks for reuse otherwise, and a worker's resident memory would stay at its peak."""
    gc.collect()
    trim_heap()


def trim_heap() -> None:
    """Return the heap's free pages to the system (glibc's ``malloc_trim``; elsewhere nothing)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
