"""The API of `robolora serve` without a model: request checks, errors, response shapes (parsed by the
`openai` client's own types), which requests share a batch, and the batcher's queue."""

from __future__ import annotations

import json
import threading

import pytest
from openai.types import Completion, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from robolora.errors import UserError
from robolora.serve import App
from robolora.serve_api import (
    MAX_CHOICES,
    Answer,
    ApiError,
    Limits,
    Result,
    Settings,
    batch_groups,
    check_context,
    combine_votes,
    parse_request,
    response,
    stream_events,
)
from robolora.serve_backend import Batcher, Job, choose_backend, split_lora_option, vllm_adapter_problem, vllm_lora_rank

LIMITS = Limits(max_model_len=1024, max_tokens=512, default_max_tokens=128)
MODELS = ("alpha", "beta", "ensemble")


def parse(endpoint: str, **body):
    return parse_request(endpoint, json.dumps(body).encode(), MODELS, LIMITS)


def refused(endpoint: str, raw: bytes | dict, status: int = 400) -> ApiError:
    data = raw if isinstance(raw, bytes) else json.dumps(raw).encode()
    with pytest.raises(ApiError) as e:
        parse_request(endpoint, data, MODELS, LIMITS)
    assert e.value.status == status, e.value.message
    assert set(e.value.body()["error"]) == {"message", "type", "param", "code"}
    return e.value


def test_a_completion_takes_a_command_or_a_list_with_defaults():
    one = parse("completions", model="alpha", prompt="go home")
    assert one.commands == ("go home",) and one.n == 1 and one.param == "prompt" and not one.stream
    assert one.settings == Settings(max_tokens=128, temperature=0.0, constrained=True, seed=None)
    many = parse("completions", model="beta", prompt=["stop", "go home"], n=3, max_tokens=40, temperature=0.5, seed=3)
    assert many.commands == ("stop", "go home") and many.n == 3
    assert many.settings == Settings(max_tokens=40, temperature=0.5, constrained=True, seed=3)
    assert parse("completions", model="alpha", prompt="stop", constrained=False).settings.constrained is False


def test_a_chat_answers_its_last_user_message():
    req = parse(
        "chat",
        model="alpha",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "say hi"},
            {"role": "assistant", "content": 'robot.say(text="hi")'},
            {"role": "user", "content": [{"type": "text", "text": "turn "}, {"type": "text", "text": "left"}]},
        ],
        max_completion_tokens=30,
    )
    assert req.commands == ("turn left",) and req.param == "messages" and req.settings.max_tokens == 30


@pytest.mark.parametrize(
    ("endpoint", "body", "param"),
    [
        ("completions", {"model": "alpha"}, "prompt"),
        ("completions", {"model": "alpha", "prompt": ""}, "prompt"),
        ("completions", {"model": "alpha", "prompt": []}, "prompt"),
        ("completions", {"model": "alpha", "prompt": [1, 2, 3]}, "prompt"),
        ("completions", {"model": "alpha", "prompt": ["stop", 3]}, "prompt"),
        ("completions", {"model": "alpha", "prompt": ["stop"] * (MAX_CHOICES + 1)}, "prompt"),
        ("completions", {"model": "alpha", "prompt": ["stop"] * 20, "n": 16}, "n"),
        ("completions", {"prompt": "stop"}, "model"),
        ("completions", {"model": "alpha", "prompt": "stop", "n": 0}, "n"),
        ("completions", {"model": "alpha", "prompt": "stop", "n": "2"}, "n"),
        ("completions", {"model": "alpha", "prompt": "stop", "temperature": -0.1}, "temperature"),
        ("completions", {"model": "alpha", "prompt": "stop", "temperature": "hot"}, "temperature"),
        ("completions", {"model": "alpha", "prompt": "stop", "temperature": True}, "temperature"),
        ("completions", {"model": "alpha", "prompt": "stop", "max_tokens": 0}, "max_tokens"),
        ("completions", {"model": "alpha", "prompt": "stop", "max_tokens": 513}, "max_tokens"),
        ("completions", {"model": "alpha", "prompt": "stop", "seed": -1}, "seed"),
        ("completions", {"model": "alpha", "prompt": "stop", "stream": "yes"}, "stream"),
        ("completions", {"model": "alpha", "prompt": "stop", "constrained": 0}, "constrained"),
        ("completions", {"model": "alpha", "prompt": "stop", "top_p": 0.5}, "top_p"),
        ("completions", {"model": "alpha", "prompt": "stop", "messages": []}, "messages"),
        ("chat", {"model": "alpha", "messages": []}, "messages"),
        ("chat", {"model": "alpha", "messages": [{"role": "assistant", "content": "robot.stop()"}]}, "messages"),
        ("chat", {"model": "alpha", "messages": ["stop"]}, "messages"),
        ("chat", {"model": "alpha", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages"),
        ("chat", {"model": "alpha", "messages": [{"role": "user", "content": "x"}], "prompt": "x"}, "prompt"),
        (
            "chat",
            {
                "model": "alpha",
                "messages": [{"role": "user", "content": "x"}],
                "max_tokens": 5,
                "max_completion_tokens": 6,
            },
            "max_completion_tokens",
        ),
    ],
)
def test_a_bad_field_is_a_400_naming_it(endpoint, body, param):
    assert refused(endpoint, body).param == param


def test_too_many_tokens_asked_names_the_servers_cap():
    error = refused("completions", {"model": "alpha", "prompt": "stop", "max_tokens": 100_000})
    assert error.code == "invalid_value" and "at most 512 tokens" in error.message


def test_fields_this_server_ignores_are_taken_only_at_their_defaults():
    req = parse("completions", model="alpha", prompt="stop", top_p=1.0, logprobs=None, stop=None, echo=False, user="u")
    assert req.commands == ("stop",)


def test_an_unknown_model_is_a_404_listing_the_served_ones():
    error = refused("completions", {"model": "gamma", "prompt": "stop"}, status=404)
    assert error.code == "model_not_found" and error.param == "model" and "alpha, beta, ensemble" in error.message


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b'{"model": "alpha", "prompt": ', "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b'["stop"]', "must be a JSON object, got a list"),
        (b"[" * 100_000, "nests too deeply"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_a_400(raw, says):
    assert says in refused("completions", raw).message


def test_the_context_check_lets_a_prompt_fill_the_model_exactly():
    check_context(1000, 24, 1024, "prompt")
    with pytest.raises(ApiError) as e:
        check_context(1001, 24, 1024, "messages")
    assert e.value.code == "context_length_exceeded" and e.value.param == "messages" and e.value.status == 400


ANSWERS = (Answer("robot.stop()", "stop", 5, -0.2), Answer("robot.go_home()", "length", 8, -0.4))


def test_responses_parse_as_the_openai_clients_types():
    req = parse("completions", model="alpha", prompt=["stop", "go home"])
    body = response(req, Result(ANSWERS, prompt_tokens=30), "cmpl-1", 1700000000)
    completion = Completion.model_validate(body)
    assert [c.text for c in completion.choices] == ["robot.stop()", "robot.go_home()"]
    assert [c.finish_reason for c in completion.choices] == ["stop", "length"]
    assert completion.usage.model_dump() == {
        "prompt_tokens": 30,
        "completion_tokens": 13,
        "total_tokens": 43,
        "completion_tokens_details": None,
        "prompt_tokens_details": None,
    }
    assert [Completion.model_validate(e).choices[0].text for e in stream_events(body)] == [
        "robot.stop()",
        "robot.go_home()",
    ]

    chat_req = parse("chat", model="beta", messages=[{"role": "user", "content": "stop"}], n=2)
    chat = response(chat_req, Result(ANSWERS, prompt_tokens=15), "chatcmpl-1", 1700000000)
    parsed = ChatCompletion.model_validate(chat)
    assert [c.message.content for c in parsed.choices] == ["robot.stop()", "robot.go_home()"] and parsed.model == "beta"
    chunks = [ChatCompletionChunk.model_validate(e) for e in stream_events(chat)]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "robot.stop()robot.go_home()"
    assert [c.choices[0].finish_reason for c in chunks] == [None, None, "stop", "length"]


def test_the_ensemble_takes_the_program_most_members_wrote():
    from robolora.infer import vote

    members = [
        Result((Answer("robot.turn_left(angle=90)", "stop", 9, -0.5),), 12),
        Result((Answer("robot.stop()", "stop", 4, -0.1),), 12),
        Result((Answer("robot.turn_left(angle=90.0)", "stop", 11, -0.3),), 12),
    ]
    assert combine_votes(members, vote) == Result((members[2].answers[0],), 12)


def test_requests_share_a_batch_only_with_equal_settings_and_seeded_samples_run_alone():
    greedy, free = Settings(64), Settings(64, constrained=False)
    seeded = Settings(64, temperature=0.8, seed=5)
    assert batch_groups([greedy, free, greedy, seeded, seeded, Settings(64, temperature=0.8)]) == [
        [0, 2],
        [1],
        [3],
        [4],
        [5],
    ]
    assert batch_groups([Settings(64, seed=1), Settings(64, seed=2)]) == [[0, 1]]  # greedy: the seed does nothing


def test_the_batcher_hands_waiting_jobs_over_together_within_max_rows():
    release, started, batches = threading.Event(), threading.Event(), []

    def run(items):
        batches.append([p.job.commands[0] for p in items])
        started.set()
        release.wait(10)
        for p in items:
            p.future.set_result(len(items))

    batcher = Batcher(run, max_rows=4, name="test")
    try:
        first = batcher.submit("alpha", Job(("c0",), 1, Settings(8)))
        assert started.wait(10)  # the first job runs alone: nothing else was waiting
        rest = [batcher.submit("alpha", Job((f"c{i}",), 1, Settings(8))) for i in range(1, 8)]
        release.set()
        assert first.result(10) == 1 and [f.result(10) for f in rest] == [4, 4, 4, 4, 3, 3, 3]
        assert batches == [["c0"], ["c1", "c2", "c3", "c4"], ["c5", "c6", "c7"]]
    finally:
        batcher.close()


def test_a_failing_batch_fails_its_jobs_and_the_batcher_goes_on():
    calls = []

    def run(items):
        calls.append(len(items))
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        for p in items:
            p.future.set_result("ok")

    batcher = Batcher(run, max_rows=8, name="test")
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            batcher.submit("alpha", Job(("stop",), 2, Settings(8))).result(10)
        assert batcher.submit("alpha", Job(("stop",), 1, Settings(8))).result(10) == "ok"
    finally:
        batcher.close()


def test_closing_the_batcher_finishes_the_batch_and_fails_the_jobs_still_waiting():
    release, started = threading.Event(), threading.Event()

    def run(items):
        started.set()
        release.wait(10)
        for p in items:
            p.future.set_result("done")

    batcher = Batcher(run, max_rows=1, name="test")
    first = batcher.submit("alpha", Job(("stop",), 1, Settings(8)))
    assert started.wait(10)
    second = batcher.submit("alpha", Job(("go home",), 1, Settings(8)))
    closer = threading.Thread(target=batcher.close)
    closer.start()
    assert batcher._stopping.wait(10)
    release.set()
    closer.join(10)
    assert first.result(10) == "done"
    with pytest.raises(ApiError) as e:
        second.result(10)
    assert e.value.status == 503 and not closer.is_alive()


class _Models:
    """What App reads of an engine before any generation: the adapters' names."""

    models = ("alpha", "beta")


def test_the_app_routes_and_refuses_unknown_paths_and_methods():
    app = App(_Models(), LIMITS, ensemble=True, clock=lambda: 1700000000.0)
    listing = app.handle("GET", "/v1/models", b"").body
    assert [Model.model_validate(m).id for m in listing["data"]] == ["alpha", "beta", "ensemble"]
    assert app.handle("GET", "/v1/models/beta?x=1", b"").body["id"] == "beta"
    assert app.handle("GET", "/health", b"").body == {"status": "ok"}
    for method, path, status in [
        ("GET", "/v1/models/gamma", 404),
        ("GET", "/v2/completions", 404),
        ("GET", "/v1/completions", 405),
        ("DELETE", "/v1/models", 405),
    ]:
        with pytest.raises(ApiError) as e:
            app.handle(method, path, b"")
        assert e.value.status == status


def test_adapter_options_and_the_vllm_engine_checks():
    assert split_lora_option("fast=runs/a", exists=lambda p: False) == ("fast", "runs/a")
    assert split_lora_option("x=y", exists=lambda p: True) == (None, "x=y")  # a folder named x=y
    assert split_lora_option("/a b=c", exists=lambda p: False) == (None, "/a b=c")
    assert vllm_lora_rank([8, 16]) == 16 and vllm_lora_rank([64, 65]) == 128
    with pytest.raises(UserError, match="above vLLM's largest"):
        vllm_lora_rank([1024])
    assert vllm_adapter_problem({"r": 8, "modules_to_save": None, "use_dora": False}) is None
    with pytest.raises(UserError, match="vLLM is not installed"):
        choose_backend("vllm", vllm_installed=False, cuda=True)
    with pytest.raises(UserError, match="no CUDA GPU"):
        choose_backend("vllm", vllm_installed=True, cuda=False)
