"""Where Ray Train keeps a run's checkpoints: a local or shared folder, or a cloud bucket by URI.

``--storage-path`` takes a folder every node reaches (NFS, a mounted volume) or a URI that pyarrow's
file systems read: ``s3://bucket/prefix``, ``gs://bucket/prefix``, ``hdfs://...``, ``abfs://...``. Query
parameters are pyarrow's, e.g. ``s3://runs/robolora?endpoint_override=10.0.0.5:9000&scheme=http`` for an
S3-compatible server (pyarrow does not read ``AWS_ENDPOINT_URL``; credentials come from the usual
``AWS_*`` variables, instance roles or ``~/.aws``). A URI is never made local: Ray Train persists the
checkpoints there, every worker resumes from there, and rank 0 copies each complete one into
``<output-dir>/checkpoint-<step>``.

The functions on paths are pure; :func:`filesystem` and what follows open the storage.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from robolora.errors import UserError

#: A URI's scheme: letters, digits, +, - and . after a letter, then "://" (a Windows drive "C:\\" is not one).
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://")
#: Credentials inside a URI (``s3://KEY:SECRET@bucket``).
_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+://)[^/@\s]*@")


def is_uri(path: str | None) -> bool:
    """Whether ``path`` names storage by URI (``s3://``, ``gs://``, ``file://``...), not a local folder.

    >>> is_uri("s3://runs/a"), is_uri("/mnt/shared/runs"), is_uri("runs/s3://x"), is_uri(None)
    (True, False, False, False)
    """
    return bool(path) and _SCHEME.match(path) is not None


def join(uri: str, *parts: str) -> str:
    """``uri`` (or a local path) with ``parts`` appended to its path, a URI's query (pyarrow's options)
    kept at the end.

    >>> join("s3://runs/a?endpoint_override=127.0.0.1:9000&scheme=http", "run-1", "checkpoint-4")
    's3://runs/a/run-1/checkpoint-4?endpoint_override=127.0.0.1:9000&scheme=http'
    >>> join("gs://bucket/", "x"), join("/mnt/runs", "x", "y")
    ('gs://bucket/x', '/mnt/runs/x/y')
    """
    if not is_uri(uri):
        return str(Path(uri, *parts))
    base, sep, query = uri.partition("?")
    path = "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return path + sep + query


def shown(uri: str) -> str:
    """``uri`` as messages show it: without the options after ``?`` (which may hold an endpoint) and
    without credentials given in it (``s3://KEY:SECRET@bucket/...``).

    >>> shown("s3://KEY:SECRET@runs/a?endpoint_override=127.0.0.1:9000")
    's3://runs/a'
    """
    return _CREDENTIALS.sub(r"\1", uri.partition("?")[0])


def filesystem(uri: str) -> tuple[Any, str]:
    """The pyarrow file system of ``uri`` and the path on it (bucket first, no scheme)."""
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)


def check_storage(uri: str, flag: str = "--storage-path") -> str:
    """That ``uri`` names storage this machine can reach and write: a clear error before Ray starts,
    rather than a failed checkpoint after the first steps. Returns a line for the checklist."""
    name = shown(uri)
    try:
        fs, path = filesystem(uri)
    except Exception as e:  # an unknown scheme, a malformed option
        raise UserError(
            f"{flag} {name}: not a storage URI pyarrow can open ({_reason(e)}); use s3://bucket/prefix, "
            "gs://bucket/prefix, or a folder every node shares"
        ) from None
    bucket = path.split("/", 1)[0]
    import pyarrow.fs

    try:
        if fs.get_file_info(bucket).type == pyarrow.fs.FileType.NotFound:
            raise UserError(f"{flag} {name}: the bucket {bucket} does not exist; create it first, or name another")
        probe = f"{path.rstrip('/')}/.robolora-probe"
        with fs.open_output_stream(probe) as f:
            f.write(b"ok")
        fs.delete_file(probe)
    except UserError:
        raise
    except Exception as e:  # unreachable, no credentials, no permission
        raise UserError(
            f"{flag} {name}: cannot write there ({_reason(e)}); check the endpoint, the credentials "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or the cloud's own) and the permissions"
        ) from None
    return f"{name} ({type(fs).__name__}, writable)"


def _reason(error: Exception) -> str:
    """An error's first line, short: pyarrow's messages can run to a stack of causes."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    # pyarrow's messages repeat the URI as given: never its credentials
    return _CREDENTIALS.sub(r"\1", text.split("; Details:")[0])[:200]


def is_dir(uri: str) -> bool:
    """Whether the folder ``uri`` (or a local path) exists on its storage."""
    if not is_uri(uri):
        return Path(uri).is_dir()
    import pyarrow.fs

    fs, path = filesystem(uri)
    return fs.get_file_info(path).type == pyarrow.fs.FileType.Directory


def download(uri: str, local: str) -> None:
    """Copy the folder ``uri`` (and everything under it) into the local folder ``local``."""
    import pyarrow.fs

    fs, path = filesystem(uri)
    pyarrow.fs.copy_files(path, local, source_filesystem=fs, destination_filesystem=pyarrow.fs.LocalFileSystem())


def location(fs: Any, path: str) -> str:
    """A path on a pyarrow file system as a user reads it: local paths as they are, others as a URI."""
    kind = getattr(fs, "type_name", "local") if fs is not None else "local"
    return path if kind == "local" else f"{kind}://{path}"
