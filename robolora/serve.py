"""``robolora serve``: trained adapters behind an OpenAI-compatible HTTP API.

    robolora serve --lora-path models/run-a --lora-path fast=models/run-b --ensemble --port 8000

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")
    client.completions.create(model="run-a", prompt="go ten feet").choices[0].text
    # -> 'robot.move_forward(distance=3.05, speed=1.0)'

``GET /v1/models`` lists the adapters (and ``ensemble``, their vote, with ``--ensemble``);
``POST /v1/completions`` answers a command or a list of them, ``POST /v1/chat/completions`` the last user
message. The answer is the robot code, generated from the prompt training used (the command normalized)
and constrained to the robot API unless the request says ``"constrained": false``.

Three layers: :mod:`robolora.serve_api` checks requests and builds responses (pure),
:mod:`robolora.serve_backend` loads the models and batches the requests of concurrent clients, and this
module holds the HTTP server (the standard library's threading server: one thread per connection) and the
command. Every refusal is a 4xx with OpenAI's error body; the server goes on serving.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from robolora.errors import UserError
from robolora.serve_api import (
    ENSEMBLE,
    MAX_BODY_BYTES,
    ApiError,
    GenerationRequest,
    Limits,
    Reply,
    Result,
    combine_votes,
    model_card,
    models_response,
    parse_request,
    response,
    stream_events,
)

#: Seconds a connection may stay silent (a request being sent, or a kept-alive idle connection).
CONNECTION_TIMEOUT_S = 120
#: Completion tokens a request gets when it does not say (``max_tokens``): robot programs are short.
DEFAULT_MAX_TOKENS = 128
ROUTES = {
    "/v1/models": ("GET",),
    "/v1/completions": ("POST",),
    "/v1/chat/completions": ("POST",),
    "/health": ("GET",),
}


class App:
    """The server's answers, apart from HTTP: a method, a path and a body in, a :class:`Reply` out.

    ``backend`` generates (:mod:`robolora.serve_backend`); with ``ensemble`` the model named
    :data:`ENSEMBLE` answers with the vote of every adapter.
    """

    def __init__(self, backend: Any, limits: Limits, ensemble: bool = False, clock: Callable[[], float] = time.time):
        self.backend = backend
        self.limits = limits
        self.ensemble = ensemble
        self.models = (*backend.models, *((ENSEMBLE,) if ensemble else ()))
        self.clock = clock
        self.started = int(clock())

    def handle(self, method: str, path: str, body: bytes) -> Reply:
        path = urlsplit(path).path.rstrip("/") or "/"
        if path.startswith("/v1/models/") and method == "GET":
            name = path[len("/v1/models/") :]
            if name not in self.models:
                raise ApiError(404, f"The model {name!r} does not exist", param="model", code="model_not_found")
            return Reply(200, model_card(name, self.started))
        if path not in ROUTES:
            routes = ", ".join(f"{m} {p}" for p, ms in ROUTES.items() for m in ms)
            raise ApiError(404, f"no such path: {path[:200]}; this server answers {routes}", code="not_found")
        if method not in ROUTES[path]:
            raise ApiError(405, f"{method} {path}: use {' or '.join(ROUTES[path])}", code="method_not_allowed")
        if path == "/health":
            return Reply(200, {"status": "ok"})
        if path == "/v1/models":
            return Reply(200, models_response(self.models, self.started))
        endpoint = "completions" if path == "/v1/completions" else "chat"
        return self.generate(parse_request(endpoint, body, self.models, self.limits))

    def generate(self, req: GenerationRequest) -> Reply:
        prefix = "cmpl-" if req.endpoint == "completions" else "chatcmpl-"
        body = response(req, self.result(req), prefix + uuid.uuid4().hex, int(self.clock()))
        return Reply(200, body, stream_events(body) if req.stream else [])

    def result(self, req: GenerationRequest) -> Result:
        """The request's answers: from its adapter, or from every adapter and their vote."""
        from robolora.serve_backend import Job

        job = Job(req.commands, req.n, req.settings, req.param)
        if not (self.ensemble and req.model == ENSEMBLE):  # without --ensemble, an adapter may be named so
            return self.backend.submit(req.model, job).result()
        from robolora.infer import vote

        futures = [self.backend.submit(name, job) for name in self.backend.models]
        return combine_votes([f.result() for f in futures], vote)


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with kept-alive connections; every answer JSON (or an event stream), every failure an
    OpenAI error body."""

    protocol_version = "HTTP/1.1"
    server_version = "robolora"
    timeout = CONNECTION_TIMEOUT_S
    server: Server

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _dispatch(self, method: str) -> None:
        started = time.monotonic()
        try:
            reply = self.server.app.handle(
                method, self.path, self._body() if method in ("POST", "PUT", "PATCH") else b""
            )
        except ApiError as e:
            reply = Reply(e.status, e.body())
        except Exception as e:  # a failed generation: the client gets a 500, the log the traceback
            traceback.print_exc(file=sys.stderr)
            message = f"the server failed to answer: {type(e).__name__}: {e}"
            reply = Reply(500, ApiError(500, message, type="server_error").body())
        self._send(reply)
        if self.server.log_requests:
            print(f"{method} {self.path[:200]} {reply.status} {time.monotonic() - started:.2f}s", file=sys.stderr)

    def _body(self) -> bytes:
        """The request body, read only when its declared length is within :data:`MAX_BODY_BYTES`."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise ApiError(411, "send the body with a Content-Length, not chunked", code="length_required")
        length = self.headers.get("Content-Length")
        if length is None:
            raise ApiError(411, "a POST needs a Content-Length header and a JSON body", code="length_required")
        if not length.isdigit():
            self.close_connection = True
            raise ApiError(400, f"Content-Length: expected a number of bytes, got {length[:40]!r}")
        if int(length) > MAX_BODY_BYTES:
            self.close_connection = True  # the body is left unread: the connection cannot be reused
            raise ApiError(
                413, f"the body is {int(length):,} bytes; at most {MAX_BODY_BYTES:,}", code="request_too_large"
            )
        return self.rfile.read(int(length))

    def _send(self, reply: Reply) -> None:
        if reply.events:
            lines = [f"data: {json.dumps(e)}\n\n" for e in reply.events] + ["data: [DONE]\n\n"]
            data, kind = "".join(lines).encode(), "text/event-stream"
        else:
            data, kind = json.dumps(reply.body).encode(), "application/json"
        self.send_response(reply.status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # the standard library's argument name
        """Quiet: :meth:`_dispatch` logs one line per request instead, where asked."""


class Server(ThreadingHTTPServer):
    """The threading HTTP server and the :class:`App` its handlers answer from (set before it serves)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], log_requests: bool = True):
        self.app: App | None = None
        self.log_requests = log_requests
        super().__init__(address, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away before its answer is no error of the server's."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def start_server(host: str, port: int, log_requests: bool = True) -> Server:
    """A bound server (``port`` 0: a free one, see ``server.server_address``); a host or port that cannot
    be bound is one :class:`UserError`, found before any model loads."""
    try:
        return Server((host, port), log_requests)
    except OSError as e:
        raise UserError(f"--host/--port: cannot listen on {host}:{port} ({e.strerror or e}); pick another") from None


def serve_forever(server: Server) -> None:
    """Serve until Ctrl-C (SIGINT) or SIGTERM, then stop accepting and return. Both are caught here, even
    where SIGINT came ignored (a server started in the background by a script)."""
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


SERVE_DESCRIPTION = (
    "Answer robot commands over HTTP as OpenAI's API does: GET /v1/models, POST /v1/completions (prompt: a "
    "command or a list of them), POST /v1/chat/completions (the last user message). Answers are robot code, "
    'constrained to the robot API unless a request says "constrained": false.'
)


def add_serve_arguments(
    p: argparse.ArgumentParser, int_in: Callable[..., Callable[[str], int]], *, max_batch: int, max_tokens: int
) -> None:
    """The flags of ``robolora serve``; ``int_in`` is the CLI's bounded-integer type, ``max_batch`` and
    ``max_tokens`` the CLI's bounds of generation batches and lengths."""
    from robolora.evaluate import EVAL_DEFAULTS
    from robolora.models import QUANTIZATIONS
    from robolora.serve_backend import BACKENDS

    p.add_argument(
        "--lora-path",
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help="a trained adapter to serve as the model NAME (default: the folder's name); repeat for several",
    )
    p.add_argument("--ensemble", action="store_true", help=f"also serve '{ENSEMBLE}': the adapters' vote per command")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int_in(0, 65535, "0: a free one"), default=8000, help="the port (default: 8000)")
    batch = EVAL_DEFAULTS.batch_size
    p.add_argument(
        "--max-batch",
        type=int_in(1, max_batch),
        default=batch,
        help=f"commands generated together per model, 1..{max_batch} (default: {batch})",
    )
    p.add_argument(
        "--max-tokens",
        type=int_in(1, max_tokens),
        default=512,
        help=f"the most tokens a request may ask per answer (max_tokens), 1..{max_tokens}; a request that does not "
        f"say gets {DEFAULT_MAX_TOKENS} (default: 512)",
    )
    p.add_argument(
        "--max-model-len",
        type=int_in(2, 10**7),
        default=None,
        help="the most tokens of prompt plus answer (default: what the model takes)",
    )
    p.add_argument(
        "--quantization",
        choices=QUANTIZATIONS,
        default=EVAL_DEFAULTS.quantization,
        help="load the base model's weights quantized by bitsandbytes: 4bit (NF4) or 8bit (default: not quantized)",
    )
    p.add_argument(
        "--max-memory",
        default=EVAL_DEFAULTS.max_memory,
        help="spread the weights over the visible GPUs within these caps, e.g. 0:20GiB,1:20GiB,cpu:64GiB "
        "(transformers engine; default: one GPU holds the model)",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="the engine (default: auto, vLLM's multi-LoRA engine where vLLM is installed and a CUDA GPU is "
        "visible, else transformers)",
    )
    p.add_argument(
        "--log-requests",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="print one line per request to stderr (default: on)",
    )


def cmd_serve(args: argparse.Namespace) -> int:
    """Check the adapters and the address, load the models, and serve until stopped. Clients that connect
    while the models load wait in the listening socket's backlog."""
    from robolora.serve_backend import adapter_specs, load_backend

    specs = adapter_specs(args.lora_path, args.ensemble)
    server = start_server(args.host, args.port, log_requests=args.log_requests)
    backend = None
    try:
        backend = load_backend(
            specs,
            args.backend,
            max_batch=args.max_batch,
            quantization=args.quantization,
            max_memory=args.max_memory,
            max_model_len=args.max_model_len,
        )
        cap = min(args.max_tokens, backend.max_model_len - 1)
        server.app = App(backend, Limits(backend.max_model_len, cap, min(DEFAULT_MAX_TOKENS, cap)), args.ensemble)
        host, port = server.server_address[:2]
        print(f"serving {', '.join(server.app.models)} at http://{host}:{port}/v1 (Ctrl-C to stop)", flush=True)
        serve_forever(server)
        print("stopped", flush=True)
    finally:
        server.server_close()
        if backend is not None:
            backend.close()
    return 0
