"""Shared fixtures. Tiers: tests/unit (pure, fast), tests/integration (real tokenizer, models, Ray,
DeepSpeed on CPU), tests marked ``gpu`` (skipped without CUDA)."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from robolora.cli import main

# A line Ray forwards to the driver from its own processes ("(raylet) ...", "(pid=123) ..."), after an optional
# "[time level pid tid] " header. Integration tests keep one local cluster running in the test process, and its
# raylet may speak at any moment (a disk nearly full, say), into whatever test is capturing output then.
_RAY_FORWARDED = re.compile(r"^(\[[^\]]*\] )?\((raylet|gcs_server|[^)]*pid=\d+[^)]*)\) .*\n?", re.MULTILINE)


def without_ray_lines(text: str) -> str:
    """``text`` less the lines the test session's Ray cluster forwarded into it."""
    return _RAY_FORWARDED.sub("", text)


def pytest_configure(config):
    """A model cache of the test run's own, made before any test (or Ray worker, or ``robolora`` subprocess,
    which inherit the environment) looks for one: the bundled model is converted and the tiny models built
    afresh, so a broken conversion cannot hide behind a model an earlier run left in the user's cache."""
    if not hasattr(config, "workerinput"):  # once per run, not per pytest-xdist worker
        config._robolora_cache = tempfile.mkdtemp(prefix="robolora-test-cache-")
        os.environ["ROBOLORA_CACHE"] = config._robolora_cache


def pytest_unconfigure(config):
    cache = getattr(config, "_robolora_cache", None)
    if cache:
        shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture
def run_cli(capsys):
    """Run ``robolora ARGS...`` in-process; return (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, without_ray_lines(out.out), without_ray_lines(out.err)

    return run


@pytest.fixture
def write_json(tmp_path: Path):
    """Write a Python value (or raw text/bytes) to a file under tmp_path and return its path."""

    def write(name: str, content) -> Path:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_text(json.dumps(content), encoding="utf-8")
        return path

    return write


def pytest_collection_modifyitems(config, items):
    import importlib.util

    has_cuda = False
    if importlib.util.find_spec("torch") is not None:
        import torch

        has_cuda = torch.cuda.is_available()
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)
        if item.get_closest_marker("gpu") and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
