"""robolora push as a user runs it (its own process, the real huggingface_hub client): no token, a Hub out of reach
and a server that answers with an error are each one line and a non-zero exit, never a traceback."""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

REPO = "my-org/robot-lora"


def push(folder: Path, tmp_path: Path, *flags: str, **env: str) -> subprocess.CompletedProcess:
    """``robolora push`` with a Hugging Face home of its own (no saved token) and ``env`` on top."""
    base = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_ENDPOINT", "HUGGING_FACE_HUB_TOKEN")}
    return subprocess.run(
        [sys.executable, "-m", "robolora.cli", "push", "--lora-path", str(folder), "--repo-id", REPO, *flags],
        env={**base, "HF_HOME": str(tmp_path / "hf-home"), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def adapter(tmp_path) -> Path:
    """An adapter folder as a run writes it (the push stops before reading anything else)."""
    folder = tmp_path / "run"
    folder.mkdir()
    config = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]}
    (folder / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "tiny-llama"}))
    save_file({"base_model.model.q_proj.lora_A.weight": torch.ones(8, 16)}, str(folder / "adapter_model.safetensors"))
    return folder


def test_no_token_is_one_error_naming_the_ways_to_give_one(adapter, tmp_path):
    done = push(adapter, tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "robolora: error: --token: no Hugging Face token; create one with write access at "
        "https://huggingface.co/settings/tokens and set HF_TOKEN, run `hf auth login`, or pass --token"
    )
    assert done.stdout == ""


def test_a_hub_out_of_reach_is_one_error(adapter, tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = push(adapter, tmp_path, HF_TOKEN="hf_token_of_the_test", HF_ENDPOINT=f"http://127.0.0.1:{port}")
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert line.startswith(f"robolora: error: push: cannot reach http://127.0.0.1:{port} (")
    assert line.endswith("; check the network or HF_ENDPOINT") and "\n" not in line


def test_a_server_answering_with_an_error_is_one_error(adapter, tmp_path):
    """A plain HTTP file server takes no POST (HTTP 501): the push reports the status and the server's words."""
    (tmp_path / "www").mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        done = push(adapter, tmp_path, "--private", HF_TOKEN="hf_token_of_the_test", HF_ENDPOINT=endpoint)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert line.startswith(f"robolora: error: --repo-id {REPO}: the Hub refused the push, HTTP 501: "), line
    assert "Traceback" not in done.stderr and "\n" not in line
