"""DeepSpeed's compiled ops: a build lock left by a killed build is removed, a fresh one (a build under way)
stays, and an op training never calls is never compiled."""

from __future__ import annotations

import os
import time

from robolora.dist import STALE_BUILD_LOCK_S, clear_stale_build_locks


def test_only_stale_build_locks_are_removed(tmp_path, capsys):
    stale, fresh = tmp_path / "deepspeed_shm_comm" / "lock", tmp_path / "cpu_adam" / "lock"
    for lock in (stale, fresh):
        lock.parent.mkdir()
        lock.touch()
    old = time.time() - STALE_BUILD_LOCK_S - 60
    os.utime(stale, (old, old))
    (tmp_path / "deepspeed_shm_comm" / "shm.o").touch()  # build outputs are not locks

    assert clear_stale_build_locks(tmp_path) == [stale]
    assert not stale.exists() and fresh.exists() and (tmp_path / "deepspeed_shm_comm" / "shm.o").exists()
    assert str(stale) in capsys.readouterr().out
    assert clear_stale_build_locks(tmp_path) == []  # nothing left to do


def test_the_default_folder_is_torchs(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    lock = tmp_path / "op" / "lock"
    lock.parent.mkdir()
    lock.touch()
    os.utime(lock, (0, 0))
    assert clear_stale_build_locks() == [lock]


def test_ops_training_never_calls_are_not_compiled():
    from deepspeed.comm.torch import build_shm_op

    from robolora.dist import skip_unused_ops

    skip_unused_ops()
    started = time.monotonic()
    assert build_shm_op() is None  # DeepSpeed's comm backend then all-reduces through torch.distributed
    assert time.monotonic() - started < 1.0
