"""The OpenAI-compatible API of ``robolora serve`` as pure functions: request bodies in, checked requests
out; generated programs in, response bodies out.

Nothing here touches a socket or a model, so every rule a client meets (which fields, which ranges, which
error) is stated and tested once, apart from the HTTP server (:mod:`robolora.serve`) and the models
(:mod:`robolora.serve_backend`). Errors are :class:`ApiError`: an HTTP status and OpenAI's error body.

Example:
    >>> limits = Limits(max_model_len=1024, max_tokens=512, default_max_tokens=128)
    >>> req = parse_request("completions", b'{"model": "a", "prompt": "stop"}', ("a",), limits)
    >>> req.commands, req.settings.max_tokens, req.settings.constrained
    (('stop',), 128, True)
    >>> parse_request("completions", b'{"model": "b", "prompt": "stop"}', ("a",), limits)
    Traceback (most recent call last):
    ...
    robolora.serve_api.ApiError: The model 'b' does not exist: this server serves a
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: The largest request body read, in bytes: a command is a sentence, a request at most a few hundred of them.
MAX_BODY_BYTES = 1 << 20
#: The most choices (prompts x n) one request may ask for.
MAX_CHOICES = 256
#: The most choices per prompt (``n``).
MAX_N = 16
#: OpenAI's range of ``temperature``.
MAX_TEMPERATURE = 2.0
#: The largest ``seed`` (torch's generator takes 64-bit seeds; JSON clients rarely go past 63 bits).
MAX_SEED = 2**63 - 1
#: The name of the model that answers with the vote of every adapter.
ENSEMBLE = "ensemble"

ENDPOINTS = ("completions", "chat")
#: Fields every generation request may carry; the endpoint adds its own (:data:`ENDPOINT_FIELDS`).
COMMON_FIELDS = frozenset({"model", "max_tokens", "temperature", "n", "seed", "stream", "constrained", "user"})
ENDPOINT_FIELDS = {"completions": frozenset({"prompt"}), "chat": frozenset({"messages", "max_completion_tokens"})}
#: OpenAI fields this server does not implement, taken only with the value that changes nothing.
DEFAULT_ONLY: dict[str, tuple[Any, ...]] = {
    "top_p": (1, None),
    "presence_penalty": (0, None),
    "frequency_penalty": (0, None),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "echo": (None, False),
    "best_of": (None, 1),
    "stop": (None, [], ""),
    "suffix": (None, ""),
    "logit_bias": (None, {}),
    "stream_options": (None,),
    "tools": (None, []),
    "tool_choice": (None, "none"),
}


class ApiError(Exception):
    """A request the server refuses: the HTTP status and OpenAI's ``{"error": {...}}`` body.

    >>> ApiError(400, "n: expected an integer", param="n").body()
    {'error': {'message': 'n: expected an integer', 'type': 'invalid_request_error', 'param': 'n', 'code': None}}
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # OpenAI's field name
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class Limits:
    """What one request may ask for: prompt plus completion within ``max_model_len`` tokens, at most
    ``max_tokens`` completion tokens per choice (``default_max_tokens`` when it does not say)."""

    max_model_len: int
    max_tokens: int
    default_max_tokens: int


@dataclass(frozen=True)
class Settings:
    """How to generate: requests with equal settings can share one batch. ``seed`` None: any seed."""

    max_tokens: int
    temperature: float = 0.0
    constrained: bool = True
    seed: int | None = None


@dataclass(frozen=True)
class GenerationRequest:
    """A checked ``/v1/completions`` or ``/v1/chat/completions`` request: robot commands to answer."""

    endpoint: str
    model: str
    commands: tuple[str, ...]
    n: int
    settings: Settings
    stream: bool = False

    @property
    def param(self) -> str:
        """The request field that holds the commands (named by a too-long-prompt error)."""
        return "prompt" if self.endpoint == "completions" else "messages"


@dataclass(frozen=True)
class Answer:
    """One generated program: its code, why it ended ("stop": the model ended it; "length": it ran into
    ``max_tokens``), its tokens and their mean log-probability (what the ensemble's vote weighs)."""

    text: str
    finish_reason: str
    completion_tokens: int
    mean_logprob: float


@dataclass(frozen=True)
class Result:
    """A request's answers, ``n`` per command in command order, and the tokens of its prompts."""

    answers: tuple[Answer, ...]
    prompt_tokens: int


@dataclass
class Reply:
    """What the HTTP layer sends: a status and a JSON body, or (``events``) a server-sent event stream."""

    status: int
    body: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)


# ----------------------------------------------------------------------------- requests


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying where it stops being one."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ApiError(400, f"the request body is not UTF-8 text (byte {e.start}); send JSON") from None
    except json.JSONDecodeError as e:
        raise ApiError(
            400, f"the request body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    except RecursionError:
        raise ApiError(400, "the request body is not valid JSON: it nests too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {_kind(data)}")
    return data


def parse_request(endpoint: str, raw: bytes, models: Sequence[str], limits: Limits) -> GenerationRequest:
    """A completions or chat request checked field by field; the first problem is an :class:`ApiError`."""
    body = parse_json_body(raw)
    _check_fields(endpoint, body)
    model = _model(body, models)
    if endpoint == "completions":
        commands = _prompt_commands(body.get("prompt"))
    else:
        commands = (_chat_command(body.get("messages")),)
    n = _integer(body, "n", 1, MAX_N, default=1)
    if n * len(commands) > MAX_CHOICES:
        raise ApiError(400, f"{len(commands)} prompts x n={n}: at most {MAX_CHOICES} choices per request", param="n")
    return GenerationRequest(
        endpoint=endpoint,
        model=model,
        commands=commands,
        n=n,
        settings=_settings(endpoint, body, limits),
        stream=_boolean(body, "stream", default=False),
    )


def _check_fields(endpoint: str, body: dict[str, Any]) -> None:
    known = COMMON_FIELDS | ENDPOINT_FIELDS[endpoint]
    for key, value in body.items():
        if key in known:
            continue
        if key in DEFAULT_ONLY:
            if _is_default(value, DEFAULT_ONLY[key]):
                continue
            raise ApiError(400, f"{key}: not supported by this server; leave it out", param=key)
        taken = ", ".join(sorted(known))
        raise ApiError(400, f"unrecognized request argument: {key}; this endpoint takes {taken}", param=key)


def _is_default(value: Any, defaults: tuple[Any, ...]) -> bool:
    """Whether ``value`` is one of ``defaults`` (1.0 is 1, but false is not 0).

    >>> _is_default(1.0, (1, None)), _is_default(False, (None, 0)), _is_default(None, (0,))
    (True, False, True)
    """
    return value is None or any(value == d and isinstance(value, bool) == isinstance(d, bool) for d in defaults)


def _model(body: dict[str, Any], models: Sequence[str]) -> str:
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise ApiError(400, f"model: expected the name of a served model ({', '.join(models)})", param="model")
    if name not in models:
        served = ", ".join(models)
        raise ApiError(
            404,
            f"The model {name[:200]!r} does not exist: this server serves {served}",
            param="model",
            code="model_not_found",
        )
    return name


def _command(text: Any, where: str, param: str) -> str:
    """A command: non-empty text."""
    if not isinstance(text, str):
        raise ApiError(400, f"{where}: expected a robot command as text, got {_kind(text)}", param=param)
    if not text.strip():
        raise ApiError(400, f"{where}: the command is empty", param=param)
    return text


def _prompt_commands(prompt: Any) -> tuple[str, ...]:
    """``prompt``: one command, or a list of them (token ids are not taken: the server renders prompts)."""
    if prompt is None:
        raise ApiError(400, "prompt: missing; give a robot command or a list of them", param="prompt")
    if isinstance(prompt, str):
        return (_command(prompt, "prompt", "prompt"),)
    if not isinstance(prompt, list) or not prompt:
        raise ApiError(
            400, f"prompt: expected a command or a non-empty list of them, got {_kind(prompt)}", param="prompt"
        )
    if any(isinstance(p, (int, list)) for p in prompt):
        raise ApiError(
            400, "prompt: give commands as text; token ids are not taken (the server renders prompts)", param="prompt"
        )
    if len(prompt) > MAX_CHOICES:
        raise ApiError(400, f"prompt: {len(prompt)} commands; at most {MAX_CHOICES} per request", param="prompt")
    return tuple(_command(p, f"prompt[{i}]", "prompt") for i, p in enumerate(prompt))


def _message_text(content: Any, where: str) -> str:
    """A message's text: a string, or a list of ``{"type": "text", "text": ...}`` parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ApiError(400, f"{where}[{j}]: only text parts are taken", param="messages")
            texts.append(part["text"])
        return "".join(texts)
    raise ApiError(400, f"{where}: expected text or a list of text parts, got {_kind(content)}", param="messages")


def _chat_command(messages: Any) -> str:
    """The command of a chat: the last user message (the server sets the system turn, as in training)."""
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, f"messages: expected a non-empty list of messages, got {_kind(messages)}", param="messages")
    last_user = None
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ApiError(400, f"messages[{i}]: expected an object with a role and content", param="messages")
        if message["role"] == "user":
            last_user = _message_text(message.get("content"), f"messages[{i}].content"), i
    if last_user is None:
        raise ApiError(400, "messages: no user message; the last user message is the robot command", param="messages")
    text, i = last_user
    return _command(text, f"messages[{i}].content", "messages")


def _integer(body: dict[str, Any], key: str, low: int, high: int, default: int | None) -> int:
    value = body.get(key)
    if value is None and default is not None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise ApiError(400, f"{key}: expected an integer in {low}..{high}, got {_kind(value)}", param=key)
    if not low <= value <= high:
        raise ApiError(400, f"{key}: expected an integer in {low}..{high}, got {value}", param=key)
    return value


def _boolean(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f"{key}: expected true or false, got {_kind(value)}", param=key)
    return value


def _max_tokens(endpoint: str, body: dict[str, Any], limits: Limits) -> int:
    """``max_tokens`` (chat also takes its newer name ``max_completion_tokens``), within the server's cap."""
    key = "max_tokens"
    if endpoint == "chat" and body.get("max_completion_tokens") is not None:
        if body.get("max_tokens") is not None and body["max_tokens"] != body["max_completion_tokens"]:
            raise ApiError(400, "max_tokens and max_completion_tokens differ; give one", param="max_completion_tokens")
        key = "max_completion_tokens"
    value = body.get(key)
    if value is None:
        return limits.default_max_tokens
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ApiError(400, f"{key}: expected a positive integer, got {_kind(value)}", param=key)
    if value > limits.max_tokens:
        raise ApiError(
            400,
            f"{key} is too large: {value}. This server generates at most {limits.max_tokens} tokens per choice",
            param=key,
            code="invalid_value",
        )
    return value


def _settings(endpoint: str, body: dict[str, Any], limits: Limits) -> Settings:
    temperature = body.get("temperature")
    if temperature is None:
        temperature = 0.0
    ok = isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
    if not ok or not math.isfinite(temperature) or not 0 <= temperature <= MAX_TEMPERATURE:
        got = temperature if ok else _kind(temperature)
        raise ApiError(400, f"temperature: expected a number in 0..{MAX_TEMPERATURE:g}, got {got}", param="temperature")
    seed = None if body.get("seed") is None else _integer(body, "seed", 0, MAX_SEED, default=None)
    return Settings(
        max_tokens=_max_tokens(endpoint, body, limits),
        temperature=float(temperature),
        constrained=_boolean(body, "constrained", default=True),
        seed=seed,
    )


def _kind(value: Any) -> str:
    """A JSON value's kind, for messages ("a string", "null", "a list")."""
    names = {
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "an object",
    }
    return "null" if value is None else names.get(type(value), type(value).__name__)


# ----------------------------------------------------------------------------- generation


def check_context(prompt_tokens: int, max_tokens: int, max_model_len: int, param: str) -> None:
    """Refuse a prompt whose tokens and the completion asked for do not fit the model's context.

    >>> check_context(1000, 100, 1024, "prompt")
    Traceback (most recent call last):
    ...
    robolora.serve_api.ApiError: This model's maximum context length is 1024 tokens. However, you requested 1100 \
tokens (1000 in the prompt, 100 for the completion). Shorten the prompt or ask for fewer tokens (max_tokens).
    """
    if prompt_tokens + max_tokens > max_model_len:
        raise ApiError(
            400,
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, {max_tokens} for the completion). "
            "Shorten the prompt or ask for fewer tokens (max_tokens).",
            param=param,
            code="context_length_exceeded",
        )


def batch_groups(settings: Sequence[Settings]) -> list[list[int]]:
    """Which jobs can share one generation call: those with equal settings, in order of arrival. A sampled
    job with its own ``seed`` runs alone, so the same request draws the same answer whatever else arrives.

    >>> greedy, other = Settings(max_tokens=64), Settings(max_tokens=32)
    >>> batch_groups([greedy, other, greedy, Settings(64, 0.7, seed=1), Settings(64, 0.7, seed=1)])
    [[0, 2], [1], [3], [4]]
    """
    groups: dict[object, list[int]] = {}
    for i, s in enumerate(settings):
        alone = s.seed is not None and s.temperature > 0
        key: object = (s, i) if alone else (s.max_tokens, s.temperature, s.constrained)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def combine_votes(members: Sequence[Result], vote: Callable[[list[tuple[str, float]]], int]) -> Result:
    """The ensemble's result: for every choice the member answer ``vote`` picks (see
    :func:`robolora.infer.vote`); the members share a tokenizer, so the prompt tokens are the first's."""
    picks = []
    for row in zip(*(m.answers for m in members), strict=True):
        picks.append(row[vote([(a.text, a.mean_logprob) for a in row])])
    return Result(answers=tuple(picks), prompt_tokens=members[0].prompt_tokens)


# ----------------------------------------------------------------------------- responses


def usage(result: Result) -> dict[str, int]:
    completion = sum(a.completion_tokens for a in result.answers)
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": result.prompt_tokens + completion,
    }


def response(req: GenerationRequest, result: Result, response_id: str, created: int) -> dict[str, Any]:
    """OpenAI's ``text_completion`` or ``chat.completion`` body; the choices are ``n`` per command, in order."""
    if req.endpoint == "completions":
        choices = [
            {"index": i, "text": a.text, "logprobs": None, "finish_reason": a.finish_reason}
            for i, a in enumerate(result.answers)
        ]
        obj = "text_completion"
    else:
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": a.text},
                "logprobs": None,
                "finish_reason": a.finish_reason,
            }
            for i, a in enumerate(result.answers)
        ]
        obj = "chat.completion"
    return {
        "id": response_id,
        "object": obj,
        "created": created,
        "model": req.model,
        "choices": choices,
        "usage": usage(result),
    }


def stream_events(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A whole response as the events of a stream (``"stream": true``): the programs are judged whole, so
    each choice comes in one piece, then its finish reason (chat), as OpenAI's chunks.

    >>> body = response(GenerationRequest("chat", "a", ("stop",), 1, Settings(8)),
    ...                 Result((Answer("robot.stop()", "stop", 5, -0.1),), 20), "chatcmpl-1", 0)
    >>> [e["choices"][0]["delta"] for e in stream_events(body)]
    [{'role': 'assistant', 'content': 'robot.stop()'}, {}]
    """
    head = {k: body[k] for k in ("id", "created", "model")}
    if body["object"] == "text_completion":
        return [{**head, "object": "text_completion", "choices": [c]} for c in body["choices"]]
    events = []
    for c in body["choices"]:
        delta = {"index": c["index"], "delta": c["message"], "logprobs": None, "finish_reason": None}
        events.append({**head, "object": "chat.completion.chunk", "choices": [delta]})
    for c in body["choices"]:
        end = {"index": c["index"], "delta": {}, "logprobs": None, "finish_reason": c["finish_reason"]}
        events.append({**head, "object": "chat.completion.chunk", "choices": [end]})
    return events


def model_card(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "robolora"}


def models_response(names: Sequence[str], created: int) -> dict[str, Any]:
    """``GET /v1/models``: every adapter by name, and the ensemble where there is one."""
    return {"object": "list", "data": [model_card(n, created) for n in names]}
