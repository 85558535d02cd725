"""Hub weights on every node of a remote cluster before its workers start, with progress in the driver's log.

On this machine's own Ray cluster the preflight downloads once, with progress bars (:func:`robolora.models.
fetch_weights`). On a remote cluster (``--ray-address``, a submitted job) the workers load the model from
their own node's hub cache: a 34B model is some 63 GiB per node, and a worker would sit silent in
``from_pretrained`` for as long as that takes. So the driver first runs one small task on every node that
will host workers, which downloads into that node's cache (or finds it there) and prints a line every
``every_s`` seconds: how much of the model's files are on disk. Ray forwards those lines to the driver.
Nodes that share one cache (``HF_HOME`` on shared storage, as the cluster manifests set it) download once:
the hub client's file locks make the others wait and then find the files.
"""

from __future__ import annotations

import fnmatch
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robolora.errors import UserError


def progress_line(done: int, total: int | None, elapsed_s: float) -> str:
    """One progress line: bytes on disk, of how many, and the rate so far.

    >>> progress_line(3 * 2**30, 12 * 2**30, 60.0)
    '3.0 of 12.0 GiB (25%), 51.2 MiB/s'
    >>> progress_line(2**29, None, 0.0)
    '0.5 GiB'
    """
    text = f"{done / 2**30:.1f} GiB"
    if total:
        text = f"{done / 2**30:.1f} of {total / 2**30:.1f} GiB ({min(100, round(100 * done / total))}%)"
    if elapsed_s > 0:
        text += f", {done / 2**20 / elapsed_s:.1f} MiB/s"
    return text


def bytes_on_disk(folder: Path) -> int:
    """The bytes of every file under ``folder``, partial downloads (``*.incomplete``) included."""
    total = 0
    for path in folder.rglob("*") if folder.is_dir() else ():
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except OSError:  # a partial file renamed between listing and stat
            pass
    return total


@dataclass
class DownloadWatch:
    """A thread that prints :func:`progress_line` for ``folder`` every ``every_s`` seconds until stopped."""

    folder: Path
    total: int | None
    every_s: float = 30.0
    prefix: str = ""
    lines: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> DownloadWatch:
        self._start = time.monotonic()
        self._before = bytes_on_disk(self.folder)
        self._thread = threading.Thread(target=self._run, name="download-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            done = bytes_on_disk(self.folder)
            line = self.prefix + progress_line(done, self.total, time.monotonic() - self._start)
            self.lines.append(line)
            print(line, flush=True)


def repo_cache_folder(name: str) -> Path:
    """Where the hub client keeps ``name``'s files on this machine (its blobs, partial ones included)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / ("models--" + name.replace("/", "--"))


def expected_bytes(name: str) -> int | None:
    """The size of the files a download of ``name`` fetches, from the hub's file list (None if unknown)."""
    from huggingface_hub import HfApi

    from robolora.models import HUB_PATTERNS

    try:
        info = HfApi().model_info(name, files_metadata=True)
    except Exception:  # no network, gated: the download itself will say why
        return None
    sizes = [s.size or 0 for s in info.siblings or () if any(fnmatch.fnmatch(s.rfilename, p) for p in HUB_PATTERNS)]
    return sum(sizes) or None


def fetch_on_this_node(name: str, every_s: float) -> tuple[str, str]:
    """Download ``name`` into this node's hub cache (or find it there); returns (node address, result line)."""
    import ray

    from robolora.models import fetch_weights

    node = ray.util.get_node_ip_address()
    folder = repo_cache_folder(name)
    total = expected_bytes(name) if not (folder / "snapshots").is_dir() else None
    with DownloadWatch(folder, total, every_s, prefix=f"{name} on {node}: "):
        line = fetch_weights(name, bars=False)
    return node, line or f"{name}: nothing to download"


def nodes_to_fetch_on() -> list[dict[str, Any]]:
    """The alive nodes that can host workers: those with GPUs, or every node with CPUs on a CPU cluster."""
    import ray

    alive = [n for n in ray.nodes() if n.get("Alive")]
    with_gpus = [n for n in alive if n.get("Resources", {}).get("GPU")]
    return with_gpus or [n for n in alive if n.get("Resources", {}).get("CPU")]


def fetch_on_nodes(name: str, every_s: float = 30.0) -> list[str]:
    """Run :func:`fetch_on_this_node` on every node of :func:`nodes_to_fetch_on` at once; one line per node.

    The tasks ask for no CPU, so they run beside anything else on the node. A node that cannot download
    (no network, a gated model without a token there) fails the run here, before any worker starts, with
    the same message the preflight gives on one machine.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0, max_retries=0)(fetch_on_this_node)
    refs = [
        task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(name, every_s)
        for n in nodes_to_fetch_on()
    ]
    try:
        found = ray.get(refs)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, UserError):  # the node's own clear message, without the remote traceback
            raise e.cause from None
        raise
    return [f"{line} (node {node})" for node, line in sorted(found)]
