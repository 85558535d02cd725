"""Atomic writes: a reader or a crash sees the old file or the new one, never part of one."""

from __future__ import annotations

import pytest

from robolora import fileio
from robolora.fileio import atomic_write_bytes, atomic_write_text


def test_replaces_the_file_and_leaves_no_temporary_behind(tmp_path):
    path = tmp_path / "sub" / "metrics.json"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]


def test_a_write_that_fails_midway_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    atomic_write_text(path, "complete: true\n")

    class Full:
        def __init__(self, real):
            self.real = real

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.real.close()

        def write(self, data):
            self.real.write(data[:3])  # part of it, then the disk is full
            raise OSError(28, "No space left on device")

    real_open = open
    monkeypatch.setattr(fileio, "open", lambda p, mode: Full(real_open(p, mode)), raising=False)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(path, b"complete: false, and much longer\n")
    assert path.read_text() == "complete: true\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]
