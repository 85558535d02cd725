"""Ray Jobs: run a ``robolora`` command on a running Ray cluster, follow it, and manage it.

    robolora submit --address http://HEAD:8265 -- train --config examples/codellama-7b.yaml \
        --output-dir /mnt/shared/robolora/codellama-7b
    robolora jobs status raysubmit_XXXX --address http://HEAD:8265

The command runs as ``robolora ARGS...`` on the head node, in a copy of the working directory
(the project checkout without ``.venv``, ``models/``, ``.git`` and caches), so relative paths
in ARGS name files in that copy; ``robolora train`` there connects to the cluster through the
``RAY_ADDRESS`` Ray sets for a job's driver.

Ray 2.60 clusters check a token on every request. It is read as Ray's own CLI reads it:
``$RAY_AUTH_TOKEN``, else the file ``$RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``, and sent
as a bearer header; it is never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from robolora.errors import UserError
from robolora.fileio import FileReadError, read_text
from robolora.storage import is_uri

#: Never shipped to the cluster (gitignore syntax, relative to the working directory). Ray also
#: skips what the directory's .gitignore lists.
EXCLUDES = [
    ".venv/",
    ".git/",
    "models/",
    "outputs/",
    "build/",
    "dist/",
    "*.egg-info/",
    "__pycache__/",
    "*.pyc",
    ".pytest_cache/",
    ".ruff_cache/",
    ".mypy_cache/",
]
#: Local settings the job's driver and workers need too.
FORWARDED_ENV = ("ROBOLORA_CACHE",)
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
ADDRESS_ENV = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
CONNECT_TIMEOUT_S = 10
#: How long a request to the job server may wait for its answer (``--timeout``), in seconds.
REQUEST_TIMEOUT_S = 30.0


class Detached(UserError):
    """Ctrl-C while following a job: the job keeps running on the cluster."""

    exit_code = 130


# ----------------------------------------------------------------------------- connection


def resolve_address(address: str | None) -> str:
    """The job server's URL: ``--address``, else ``$RAY_API_SERVER_ADDRESS`` or ``$RAY_ADDRESS``.

    >>> resolve_address("10.0.0.5:8265"), resolve_address("https://ray.example.com/")
    ('http://10.0.0.5:8265', 'https://ray.example.com')
    >>> resolve_address("http://head:99999")
    Traceback (most recent call last):
    ...
    robolora.errors.UserError: --address http://head:99999: the port must be a number in 1..65535, e.g. http://HEAD_IP:8265
    """
    source = "--address"
    given = address
    if not given:
        source, given = next(((k, os.environ[k]) for k in ADDRESS_ENV if os.environ.get(k)), (source, None))
    if not given or not given.strip():
        raise UserError(
            "--address: give the Ray dashboard URL of the cluster's head node, e.g. http://HEAD_IP:8265 "
            "(or set RAY_API_SERVER_ADDRESS)"
        )
    given = given.strip()
    shown = given if len(given) <= 200 else f"{given[:200]}..."
    url = given if "://" in given else f"http://{given}"
    expected = "e.g. http://HEAD_IP:8265"
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError:  # a bracket of an IPv6 address left open
        raise UserError(f"{source} {shown}: not a URL (an IPv6 address goes in brackets: http://[::1]:8265)") from None
    if parts.scheme not in ("http", "https") or not hostname or any(c.isspace() for c in url):
        raise UserError(f"{source} {shown}: expected the dashboard URL, {expected}")
    try:
        port = parts.port
    except ValueError:  # not a number, or out of range
        port = 0
    if port == 0:
        raise UserError(f"{source} {shown}: the port must be a number in 1..65535, {expected}")
    return url.rstrip("/")


#: Largest token file read (a token is a few hundred bytes).
MAX_TOKEN_BYTES = 64 << 10


def load_token() -> str | None:
    """The cluster token, from the same places and in the same order as Ray's CLI; None if none is set."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return None
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        try:
            token = read_text(Path(path).expanduser(), "a file holding the cluster's token", MAX_TOKEN_BYTES).strip()
        except FileReadError as e:
            raise UserError(f"RAY_AUTH_TOKEN_PATH: {e}") from None
        if not token:
            raise UserError(f"RAY_AUTH_TOKEN_PATH: {path} is empty")
        return token
    default = Path.home() / ".ray" / "auth_token"
    if default.exists():
        try:
            return read_text(default, "a file holding the cluster's token", MAX_TOKEN_BYTES).strip() or None
        except FileReadError as e:
            raise UserError(f"{e} (or set RAY_AUTH_TOKEN)") from None
    return None


@contextmanager
def _address_env_removed() -> Iterator[None]:
    """Ray's client lets ``$RAY_ADDRESS`` override the address it is given; --address must win."""
    saved = {k: os.environ.pop(k) for k in ADDRESS_ENV if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _refused(url: str, status: int, had_token: bool) -> UserError:
    if status == 401 or not had_token:
        return UserError(
            f"{url} requires token authentication and no token was found: set RAY_AUTH_TOKEN, or save the "
            "cluster's token in ~/.ray/auth_token (`ray get-auth-token` on the head node prints it)"
        )
    return UserError(
        f"{url} refused the token (from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token): "
        "it is not this cluster's token"
    )


def _silent(url: str, timeout_s: float) -> UserError:
    return UserError(
        f"--address {url}: the job server accepted the connection but did not answer within {timeout_s:g} s "
        "(--timeout); is this the cluster's dashboard port (8265), and is the head node overloaded?"
    )


def _client_class(seconds: float) -> type:
    """``JobSubmissionClient`` whose every request gives up after ``seconds`` without an answer."""
    from ray.job_submission import JobSubmissionClient

    class Client(JobSubmissionClient):
        timeout_s = seconds

        def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", self.timeout_s)
            return super()._do_request(method, endpoint, **kwargs)

    return Client


def connect(address: str | None, timeout_s: float = REQUEST_TIMEOUT_S) -> Any:
    """A ``JobSubmissionClient`` for the cluster, with its token; one clear error if that fails.

    Every request the client makes waits at most ``timeout_s`` for the server's answer.
    """
    url = resolve_address(address)
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    # A fast, bounded check: an unreachable host would otherwise hang for the OS's TCP timeout.
    try:
        socket.create_connection((parts.hostname, port), timeout=min(CONNECT_TIMEOUT_S, timeout_s)).close()
    except (OSError, UnicodeError) as e:  # UnicodeError: a host name IDNA cannot encode
        raise UserError(
            f"--address {url}: cannot reach the Ray job server ({getattr(e, 'strerror', None) or type(e).__name__}); "
            "is the cluster up and its dashboard port (8265) reachable from here?"
        ) from None

    import requests
    from ray.exceptions import AuthenticationError

    token = load_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with _address_env_removed():
            return _client_class(timeout_s)(url, headers=headers)
    except AuthenticationError as e:
        raise _refused(url, 401 if "required" in str(e).lower() else 403, token is not None) from None
    except requests.Timeout:
        raise _silent(url, timeout_s) from None
    except (ConnectionError, RuntimeError, requests.RequestException, ValueError, KeyError, TypeError) as e:
        raise UserError(
            f"--address {url}: no Ray job server answers there ({' '.join(str(e).split())[:200]}); "
            "give the dashboard URL of the head node, e.g. http://HEAD_IP:8265"
        ) from None


def _job_error(url: str, job_id: str, e: Exception) -> UserError:
    text = " ".join(str(e).split())
    if "404" in text or "does not exist" in text:
        return UserError(f"job {job_id}: no such job on {url} (`robolora jobs list` shows the jobs there)")
    return UserError(f"job {job_id}: the job server at {url} failed: {text[:300]}")


@contextmanager
def _job_call(client: Any, job_id: str | None) -> Iterator[None]:
    """Turn the job server's errors (for one job, or ``None``: the cluster's) into one-line user errors.

    Besides its refusals (RuntimeError), a server that stops answering (a timeout), drops the
    connection or answers with something other than the JSON it should is one error too.
    """
    import requests
    from ray.exceptions import AuthenticationError

    url = client.get_address()
    try:
        yield
    except AuthenticationError:
        raise _refused(url, 403, True) from None
    except requests.Timeout:
        raise _silent(url, getattr(client, "timeout_s", REQUEST_TIMEOUT_S)) from None
    except RuntimeError as e:
        if job_id is None:
            raise UserError(f"the job server at {url} failed: {' '.join(str(e).split())[:300]}") from None
        raise _job_error(url, job_id, e) from None
    except (requests.RequestException, ConnectionError, ValueError, KeyError, TypeError) as e:
        text = " ".join(str(e).split())[:200] or type(e).__name__
        raise UserError(
            f"the job server at {url} gave no usable answer ({type(e).__name__}: {text}); "
            "is the address the cluster's Ray dashboard, and is the head node healthy?"
        ) from None


# ----------------------------------------------------------------------------- submit


def command_line(argv: Sequence[str], working_dir: Path, parser: argparse.ArgumentParser) -> list[str]:
    """Check the robolora command to run on the cluster here, before anything is uploaded.

    ``parser`` is robolora's own command-line parser (the caller's: this module does not import the
    CLI). ``train`` arguments are parsed and validated as ``robolora train`` would (config files and
    data paths relative to the working directory), and the run's output must go to an absolute
    path: a relative one would land in the job's temporary copy of the working directory.
    """
    from robolora.flags import config_from_namespace

    args = list(argv[1:] if argv and argv[0] == "robolora" else argv)
    if not args or args[0].startswith("-"):
        raise UserError(
            "submit: give the robolora command to run after --, e.g. "
            "`robolora submit --address URL -- train --config examples/smollm2-135m.yaml --output-dir /shared/run`"
        )
    if args[0] in ("submit", "jobs"):
        raise UserError(f"submit: `robolora {args[0]}` runs here, not as a job on the cluster")
    ns = parser.parse_args(args)
    if args[0] != "train":
        return args
    if getattr(ns, "config", None) and not Path(ns.config).is_absolute():
        ns.config = str(working_dir / ns.config)
    cfg = config_from_namespace(ns)
    for name in ("data_json", "train_json", "val_json", "resume_from"):
        value = getattr(cfg, name)
        if value and not Path(value).is_absolute() and not (working_dir / value).exists():
            flag = "--" + name.replace("_", "-")
            raise UserError(
                f"{flag} {value}: not found in the working directory {working_dir}, which is what the job gets; "
                "put the file there or give an absolute path that exists on the cluster"
            )
    for name in ("output_dir", "storage_path"):
        value = getattr(cfg, name)
        if value and not Path(value).is_absolute() and not is_uri(value):
            flag = "--" + name.replace("_", "-")
            raise UserError(
                f"{flag} {value}: give an absolute path on storage that every node of the cluster shares "
                "(e.g. /mnt/shared/robolora/run-1); a relative path would land in the job's temporary copy "
                "of the working directory"
            )
    return args


def runtime_env(working_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    """The job's runtime environment: the working directory and the environment variables it needs."""
    env_vars = {"PYTHONUNBUFFERED": "1"}  # the driver's prints reach the log stream as they happen
    for name in FORWARDED_ENV:
        if os.environ.get(name):
            env_vars[name] = str(Path(os.environ[name]).expanduser().resolve())
    env_vars.update(env)
    return {"working_dir": str(working_dir), "excludes": list(EXCLUDES), "env_vars": env_vars}


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    """``NAME=VALUE`` pairs from ``--env``.

    >>> parse_env(["HF_HOME=/mnt/hf", "A=b=c"])
    {'HF_HOME': '/mnt/hf', 'A': 'b=c'}
    """
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UserError(f"--env {pair}: expected NAME=VALUE")
        env[name.strip()] = value
    return env


def submit(
    argv: Sequence[str],
    parser: argparse.ArgumentParser,
    address: str | None = None,
    working_dir: str | os.PathLike | None = None,
    env: dict[str, str] | None = None,
    job_id: str | None = None,
    wait: bool = True,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
) -> int:
    """Submit ``robolora ARGV`` (checked with ``parser``, robolora's own) as a Ray Job; follow its logs
    unless ``wait`` is False.

    Returns the exit code: 0 when the job succeeded (or was only submitted), 1 when it failed or
    was stopped. ``request_timeout_s`` bounds the wait for each answer of the job server.
    """
    root = Path(working_dir or Path.cwd()).expanduser().resolve()
    if not root.is_dir():
        raise UserError(f"--working-dir {root}: no such directory")
    args = command_line(argv, root, parser)
    client = connect(address, request_timeout_s)
    url = client.get_address()
    entrypoint = "robolora " + shlex.join(args)
    # Ray logs each packaging step, and that it skips .git and .venv; the line below says the same.
    for name in (
        "dashboard.modules.dashboard_sdk",
        "_private.runtime_env.packaging",
        "_private.runtime_env.working_dir",
    ):
        logging.getLogger(f"ray.{name}").setLevel(logging.ERROR)
    print(f"uploading {root} (without {', '.join(e.rstrip('/') for e in EXCLUDES[:3])} and caches)", flush=True)
    with _job_call(client, None):  # a silent or garbled server
        try:
            job_id = client.submit_job(
                entrypoint=entrypoint, runtime_env=runtime_env(root, env or {}), submission_id=job_id
            )
        except RuntimeError as e:
            text = " ".join(str(e).split())[:300]
            raise UserError(f"submit: the job server at {url} refused the job: {text}") from None
    print(f"submitted job {job_id} to {url}: {entrypoint}", flush=True)
    if not wait:
        print(f"follow it with `robolora jobs logs {job_id} --follow --address {url}`", flush=True)
        return 0
    print(f"following its logs (Ctrl-C stops following; the job keeps running)\n{'-' * 80}", flush=True)
    status = follow(client, job_id)
    return exit_code(client, job_id, status)


def exit_code(client: Any, job_id: str, status: str) -> int:
    """Print the job's outcome; 0 for SUCCEEDED, 1 for FAILED or STOPPED."""
    if status == "SUCCEEDED":
        print(f"job {job_id} SUCCEEDED", flush=True)
        return 0
    with _job_call(client, job_id):
        info = client.get_job_info(job_id)
    # Ray's message repeats the end of the logs, which were streamed already; its first clause says what happened.
    detail = " ".join((info.message or "").split()).split(", last available logs")[0]
    if info.driver_exit_code == 127:  # the shell found no `robolora` command on the head node
        detail = "the head node has no `robolora` command on its PATH; install this project on every node"
    print(f"robolora: job {job_id} {status}" + (f": {detail[:500]}" if detail else ""), file=sys.stderr, flush=True)
    return 1


def follow(client: Any, job_id: str, timeout_s: float = 60) -> str:
    """Stream the job's logs to stdout until it ends; returns its final status."""

    logging.getLogger("ray.dashboard.modules.job.sdk").setLevel(logging.WARNING)  # not a line per closed stream

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    try:
        with _job_call(client, job_id):
            client.get_job_status(job_id)  # an unknown job is one clear error, not a failed stream
            try:
                asyncio.run(tail())
            except Exception as e:  # the stream broke (network, head restart); the job may well go on
                print(f"robolora: the log stream ended early ({' '.join(str(e).split())[:200]})", file=sys.stderr)
            # The stream ends when the driver exits; the status turns terminal a moment later.
            deadline = time.monotonic() + timeout_s
            status = str(client.get_job_status(job_id))
            while status not in TERMINAL and time.monotonic() < deadline:
                time.sleep(0.5)
                status = str(client.get_job_status(job_id))
    except KeyboardInterrupt:
        raise Detached(_detached(client, job_id)) from None
    if status not in TERMINAL:
        raise UserError(f"job {job_id} is still {status} but its log stream ended; {_follow_hint(client, job_id)}")
    return status


def _follow_hint(client: Any, job_id: str) -> str:
    return f"`robolora jobs logs {job_id} --follow --address {client.get_address()}` follows it again"


def _detached(client: Any, job_id: str) -> str:
    return (
        f"stopped following job {job_id}; it keeps running on the cluster. {_follow_hint(client, job_id)}, "
        f"`robolora jobs stop {job_id} --address {client.get_address()}` stops it"
    )


# ----------------------------------------------------------------------------- manage


def _duration(info: Any) -> str:
    if not info.start_time:
        return ""
    end = info.end_time or time.time() * 1000
    return f"{(end - info.start_time) / 1000:.0f} s"


def job_status(job_id: str, address: str | None = None, request_timeout_s: float = REQUEST_TIMEOUT_S) -> dict[str, Any]:
    """The job's status, entrypoint, message and run time."""
    client = connect(address, request_timeout_s)
    with _job_call(client, job_id):
        info = client.get_job_info(job_id)
    return {
        "job_id": job_id,
        "status": str(info.status),
        "entrypoint": info.entrypoint,
        "message": " ".join((info.message or "").split()),
        "run_time": _duration(info),
    }


def job_logs(
    job_id: str, address: str | None = None, follow_logs: bool = False, request_timeout_s: float = REQUEST_TIMEOUT_S
) -> int:
    """Print the job's logs so far; with ``follow_logs``, keep printing until it ends."""
    client = connect(address, request_timeout_s)
    if follow_logs:
        return exit_code(client, job_id, follow(client, job_id))
    with _job_call(client, job_id):
        sys.stdout.write(client.get_job_logs(job_id))
    return 0


def stop_job(
    job_id: str, address: str | None = None, timeout_s: float = 30, request_timeout_s: float = REQUEST_TIMEOUT_S
) -> str:
    """Ask the job to stop and wait (up to ``timeout_s``) until it has; returns its final status."""
    client = connect(address, request_timeout_s)
    with _job_call(client, job_id):
        client.stop_job(job_id)
        deadline = time.monotonic() + timeout_s
        status = str(client.get_job_status(job_id))
        while status not in TERMINAL and time.monotonic() < deadline:
            time.sleep(0.5)
            status = str(client.get_job_status(job_id))
    return status


def list_jobs(address: str | None = None, request_timeout_s: float = REQUEST_TIMEOUT_S) -> list[dict[str, Any]]:
    """Every submitted job on the cluster, oldest first."""
    client = connect(address, request_timeout_s)
    with _job_call(client, None):
        jobs = [j for j in client.list_jobs() if j.submission_id]
        jobs.sort(key=lambda j: j.start_time or 0)
        return [
            {"job_id": j.submission_id, "status": str(j.status), "run_time": _duration(j), "entrypoint": j.entrypoint}
            for j in jobs
        ]
