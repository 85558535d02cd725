"""--storage-path in a bucket: URIs stay URIs, and storage that cannot take the checkpoints is refused before
Ray starts, with the flag, the storage (never its credentials) and what to do."""

from __future__ import annotations

import pytest

from robolora.config import absolute_paths, from_dict
from robolora.errors import ConfigError, UserError
from robolora.storage import check_storage, is_dir, join


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3-compatible server on 127.0.0.1 with the bucket ``runs``; yields its ``host:port``."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    boto3.client(
        "s3",
        endpoint_url=f"http://{host}:{port}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket="runs")
    yield f"{host}:{port}"
    server.stop()


def _uri(endpoint: str, bucket: str = "runs") -> str:
    return f"s3://KEY:SECRET@{bucket}/robolora?endpoint_override={endpoint}&scheme=http&region=us-east-1"


def test_a_bucket_uri_is_never_made_a_local_path():
    uri = "s3://runs/robolora?endpoint_override=127.0.0.1:9000&scheme=http"
    cfg = absolute_paths(from_dict({"storage_path": uri, "output_dir": "out"}), "/work")
    assert (cfg.storage_path, cfg.output_dir) == (uri, "/work/out")
    assert absolute_paths(from_dict({"storage_path": "shared/ray"}), "/work").storage_path == "/work/shared/ray"


def test_only_the_storage_path_takes_a_uri():
    with pytest.raises(ConfigError) as e:
        from_dict({"output_dir": "s3://KEY:SECRET@runs/out?endpoint_override=x"})
    assert str(e.value) == (
        "--output-dir s3://runs/out: give a local or shared folder or file; only --storage-path takes a bucket "
        "URI (Ray Train keeps the checkpoints there)"
    )
    with pytest.raises(ConfigError, match=r"^--data-json gs://data/robot.json: give a local"):
        from_dict({"data_json": "gs://data/robot.json"})


def test_a_writable_bucket_passes_and_its_folders_are_seen(s3_server):
    uri = _uri(s3_server)
    assert check_storage(uri) == "s3://runs/robolora (S3FileSystem, writable)"
    assert not is_dir(join(uri, "run-1"))


def test_storage_that_cannot_take_the_checkpoints_is_refused_without_its_credentials(s3_server):
    with pytest.raises(UserError) as missing:
        check_storage(_uri(s3_server, bucket="nope"))
    assert str(missing.value) == (
        "--storage-path s3://nope/robolora: the bucket nope does not exist; create it first, or name another"
    )
    with pytest.raises(UserError) as unknown:
        check_storage("foo://KEY:SECRET@bucket/x")
    assert str(unknown.value).startswith("--storage-path foo://bucket/x: not a storage URI pyarrow can open")
    with pytest.raises(UserError) as option:
        check_storage("s3://runs/x?bogus_option=1")
    assert "Unexpected query parameter in S3 URI: 'bogus_option'" in str(option.value)
    for error in (missing, unknown, option):
        assert "SECRET" not in str(error.value) and "\n" not in str(error.value)
