"""Device monitoring degrades to process memory without a GPU or NVML and never raises."""

from __future__ import annotations

import mmap

import pytest
import torch

from robolora.gpu import DeviceMonitor, live_tensor_mb, process_rss_mb, summarize


def test_cpu_worker_reports_its_process_memory():
    monitor = DeviceMonitor(gpu_index=None)
    assert monitor.note and "no GPU" in monitor.note
    before = monitor.sample()["rss_mb"]
    # Touch 64 MiB of fresh pages: the figure is current, not a peak fixed at start. A new mapping, not the
    # heap, whose freed but resident pages (after the integration tests in this process) it could reuse.
    block = mmap.mmap(-1, 64 * 2**20)
    block[::4096] = b"x" * len(block[::4096])
    assert monitor.sample()["rss_mb"] >= before + 60
    assert abs(process_rss_mb() - monitor.sample()["rss_mb"]) < 16


def test_live_tensors_count_each_storage_once_and_only_while_held():
    before = live_tensor_mb()
    block = torch.empty(16 * 2**20, dtype=torch.int32)  # 64 MiB, untouched: no resident pages
    views = [block[:1000], block.view(torch.float32), block[2**20 :]]
    assert live_tensor_mb() - before == pytest.approx(64, abs=1)
    del block, views
    assert live_tensor_mb() - before == pytest.approx(0, abs=1)


def test_gpu_index_without_nvml_falls_back_once():
    """On a machine without an NVIDIA driver NVML cannot start: the monitor says why and goes on."""
    monitor = DeviceMonitor(gpu_index=0)
    if torch.cuda.is_available():
        assert monitor.note is None and "gpu_mem_used_mb" in monitor.sample()
        return
    assert monitor.note.startswith("NVML is not available (")
    assert set(monitor.sample()) == {"rss_mb"}


def test_summary_of_gpu_samples():
    samples = [
        {"gpu_mem_used_mb": 30000.0, "gpu_util_pct": 90.0, "gpu_temp_c": 60.0, "gpu_power_w": 400.0},
        {"gpu_mem_used_mb": 31000.0, "gpu_util_pct": 80.0, "gpu_temp_c": 65.0},  # no power reading
    ]
    row = summarize(samples)
    assert row == {
        "devices": samples,
        "gpu_mem_used_mb_max": 31000.0,
        "gpu_util_pct_mean": 85.0,
        "gpu_temp_c_max": 65.0,
        "gpu_power_w_total": 400.0,
    }
