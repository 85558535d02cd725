"""`robolora serve` end to end: the real command in a subprocess, two PEFT adapters of tiny-llama, and the
`openai` client (and raw HTTP where a client would not send such a request)."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import yaml

from robolora.robot.checker import check

COMMANDS = ["stop", "go home", "move forward 3 meters", "say hello", "turn left", "take a photo"]
#: Short answers keep the tests fast; the random model rarely ends a program before this.
TOKENS = 24


def _adapter(dest: Path, seed: int) -> Path:
    """A LoRA adapter of tiny-llama with random B matrices (so it changes what the model writes), saved as
    a training run saves it: PEFT's files and the run's config.yaml naming the base model."""
    import torch
    from peft import LoraConfig, get_peft_model

    from robolora.models import load_model

    torch.manual_seed(seed)
    with warnings.catch_warnings():  # PEFT reads a property transformers 5 deprecates
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
        model = get_peft_model(load_model("tiny-llama"), config)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn_like(param) * 0.5)
        model.save_pretrained(dest)
    (dest / "config.yaml").write_text(yaml.safe_dump({"model_name": "tiny-llama", "lora_r": 8}))
    return dest


@pytest.fixture(scope="module")
def adapters(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("serve")
    return _adapter(root / "run-a", seed=1), _adapter(root / "run-b", seed=2)


@pytest.fixture(scope="module")
def server(adapters, tmp_path_factory):
    """`robolora serve` on a free port with both adapters (the first named alpha) and their vote; yields
    the base URL, and stops the server with Ctrl-C (SIGINT) at the end, which must end it cleanly."""
    logs = tmp_path_factory.mktemp("serve-logs")
    out, err = logs / "stdout.txt", logs / "stderr.txt"
    a, b = adapters
    command = [sys.executable, "-m", "robolora.cli", "serve", "--lora-path", f"alpha={a}", "--lora-path", str(b)]
    command += ["--ensemble", "--port", "0", "--max-batch", "8", "--backend", "transformers"]
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(command, stdout=stdout, stderr=stderr)
    deadline = time.monotonic() + 180
    url = None
    while url is None:
        assert proc.poll() is None, f"the server exited with {proc.returncode}: {err.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"no address printed: {out.read_text()} {err.read_text()[-2000:]}"
        found = [w for w in out.read_text().split() if w.startswith("http://")]
        url = found[0] if found else None
        time.sleep(0.2)
    yield url
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0, err.read_text()[-2000:]
    assert out.read_text().rstrip().endswith("stopped")


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server, api_key="x", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def local(adapters):
    """Each adapter on its own copy of the base, unmerged, as the server runs several adapters beside one
    base: what the server must answer."""
    from robolora.infer import Generator

    return [Generator.load(path, merge=False) for path in adapters]


def _raw(url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """One HTTP request as bytes on the wire: status and parsed JSON body."""
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request(method, path, body=body, headers=headers or {})
    reply = conn.getresponse()
    status, data = reply.status, reply.read()
    conn.close()
    return status, json.loads(data)


def _error_shape(body: dict) -> dict:
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert "Traceback" not in body["error"]["message"]
    return body["error"]


def test_models_lists_the_adapters_by_name_and_the_ensemble(client, adapters):
    models = client.models.list()
    assert [m.id for m in models.data] == ["alpha", adapters[1].name, "ensemble"]
    assert client.models.retrieve("alpha").id == "alpha"


def test_completion_is_the_adapters_constrained_program(client, local):
    """Constrained by default: valid robot code even from a random model, the very program the adapter
    writes through `Generator.generate(..., constrained=True)`."""
    reply = client.completions.create(model="alpha", prompt="move forward 3 meters", max_tokens=TOKENS)
    (choice,) = reply.choices
    expected = local[0].generate(["move forward 3 meters"], max_new_tokens=TOKENS, constrained=True)[0]
    assert choice.text == expected.code and check(choice.text).api_valid, choice.text
    assert choice.finish_reason == ("stop" if expected.finished else "length")
    assert reply.object == "text_completion" and reply.model == "alpha" and reply.id.startswith("cmpl-")
    prompt_ids = local[0].prompt_ids("move forward 3 meters")
    assert reply.usage.prompt_tokens == len(prompt_ids) and reply.usage.completion_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_unconstrained_when_asked(client):
    """`"constrained": false` lets the random model write what it likes: not valid robot code, which the
    default never returns (so the default is constrained decoding, not luck)."""
    free = client.completions.create(
        model="alpha", prompt=COMMANDS, max_tokens=TOKENS, extra_body={"constrained": False}
    )
    default = client.completions.create(model="alpha", prompt=COMMANDS, max_tokens=TOKENS)
    assert not all(check(c.text).api_valid for c in free.choices), [c.text for c in free.choices]
    assert all(check(c.text).api_valid for c in default.choices), [c.text for c in default.choices]


def test_two_adapters_by_name_answer_as_each_adapter(client, adapters, local):
    names = ["alpha", adapters[1].name]
    served = {
        n: [c.text for c in client.completions.create(model=n, prompt=COMMANDS, max_tokens=TOKENS).choices]
        for n in names
    }
    for name, gen in zip(names, local, strict=True):
        assert served[name] == [g.code for g in gen.generate(COMMANDS, max_new_tokens=TOKENS, constrained=True)]
    assert served[names[0]] != served[names[1]]  # two different adapters, two different models


def test_adapters_share_one_base_and_answer_as_each_adapter_in_any_order(adapters, local):
    """Several adapters hold one copy of the base weights (a 34B base served with 3 adapters is one 34B
    model, not three); each batch switches to its adapter, whichever ran before. One adapter alone is
    merged, as `robolora eval` runs it."""
    from robolora.serve_api import Settings
    from robolora.serve_backend import AdapterSpec, Job, TransformersBackend

    specs = [AdapterSpec(name, path, "tiny-llama") for name, path in zip("ab", adapters, strict=True)]
    backend = TransformersBackend(specs, max_batch=8, log=lambda line: None)
    try:
        models = {id(g.model) for g in backend._generators.values()}
        assert len(models) == 1
        expected = [[g.code for g in gen.generate(COMMANDS, max_new_tokens=TOKENS, constrained=True)] for gen in local]
        for name in "abba":
            job = Job(tuple(COMMANDS), 1, Settings(max_tokens=TOKENS))
            result = backend.submit(name, job).result(timeout=300)
            assert [a.text for a in result.answers] == expected["ab".index(name)], name
    finally:
        backend.close()
    alone = TransformersBackend(specs[:1], max_batch=8, log=lambda line: None)
    try:
        assert not hasattr(alone._generators["a"].model, "peft_config")  # merged into the base
    finally:
        alone.close()


def test_ensemble_answers_with_the_vote_of_the_adapters(client, local):
    from robolora.infer import ensemble

    reply = client.completions.create(model="ensemble", prompt=COMMANDS, max_tokens=TOKENS)
    members = [g.generate(COMMANDS, max_new_tokens=TOKENS, constrained=True) for g in local]
    assert [c.text for c in reply.choices] == [g.code for g in ensemble(members)]


def test_chat_answers_the_last_user_message_normalized_as_in_training(client):
    messages = [
        {"role": "system", "content": "You are a poet."},  # the server's system turn is training's
        {"role": "user", "content": "say hello"},
        {"role": "assistant", "content": 'robot.say(text="hello")'},
        {"role": "user", "content": "go ten feet"},
    ]
    chat = client.chat.completions.create(model="alpha", messages=messages, max_tokens=TOKENS)
    plain = client.completions.create(model="alpha", prompt="go 3.05 m", max_tokens=TOKENS)
    assert chat.object == "chat.completion" and chat.choices[0].message.role == "assistant"
    # "ten feet" is rewritten as "3.05 m" before the prompt is rendered: the same tokens, the same program
    assert chat.choices[0].message.content == plain.choices[0].text
    assert chat.usage.prompt_tokens == plain.usage.prompt_tokens
    stream = client.chat.completions.create(model="alpha", messages=messages, max_tokens=TOKENS, stream=True)
    assert "".join(e.choices[0].delta.content or "" for e in stream if e.choices) == chat.choices[0].message.content


def test_n_choices_per_prompt_in_order(client):
    reply = client.completions.create(model="alpha", prompt=["stop", "go home"], n=2, max_tokens=TOKENS)
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    texts = [c.text for c in reply.choices]
    assert texts[0] == texts[1] and texts[2] == texts[3]  # greedy: the same program twice per prompt
    sampled = client.completions.create(model="alpha", prompt="go home", n=3, temperature=1.0, seed=7, max_tokens=8)
    assert len(sampled.choices) == 3 and all(check(c.text).api_valid for c in sampled.choices)


def test_eight_concurrent_clients_are_all_answered(client, adapters):
    names = ["alpha", adapters[1].name]

    def ask(i: int) -> str:
        reply = client.completions.create(model=names[i % 2], prompt=COMMANDS[i % len(COMMANDS)], max_tokens=TOKENS)
        return reply.choices[0].text

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(8)))
    assert len(answers) == 8 and all(check(a).api_valid for a in answers), answers


def test_bad_requests_are_4xx_with_openai_error_bodies_and_the_server_goes_on(server, client):
    status, body = _raw(server, "POST", "/v1/completions", b'{"model": "alpha", "prompt": ')
    assert status == 400 and "not valid JSON" in _error_shape(body)["message"]

    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="nope", prompt="stop")
    error = _error_shape(e.value.response.json())
    assert error["code"] == "model_not_found" and "alpha" in error["message"]

    long_prompt = "move forward 3 meters and then " * 200  # past tiny-llama's 1024 positions
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="alpha", prompt=long_prompt, max_tokens=TOKENS)
    error = _error_shape(e.value.response.json())
    assert error["code"] == "context_length_exceeded" and "1024 tokens" in error["message"]

    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="alpha", prompt="stop", max_tokens=100_000)
    assert _error_shape(e.value.response.json())["param"] == "max_tokens"

    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="alpha", messages=[{"role": "system", "content": "hi"}])
    assert _error_shape(e.value.response.json())["param"] == "messages"

    status, body = _raw(server, "GET", "/v1/nowhere")
    assert status == 404 and _error_shape(body)
    status, body = _raw(server, "POST", "/v1/completions", b"x" * 10, {"Content-Length": str(2 << 20)})
    assert status == 413 and _error_shape(body)

    reply = client.completions.create(model="alpha", prompt="stop", max_tokens=TOKENS)
    assert check(reply.choices[0].text).api_valid


def test_startup_errors_are_one_line(run_cli, adapters, tmp_path):
    a, b = adapters
    code, _, err = run_cli("serve", "--lora-path", tmp_path / "missing", "--port", "0")
    assert code == 2 and err.count("\n") == 1 and "holds no adapter" in err

    other = tmp_path / "other-base"
    shutil.copytree(b, other)
    (other / "config.yaml").write_text(yaml.safe_dump({"model_name": "smollm2-135m"}))
    code, _, err = run_cli("serve", "--lora-path", a, "--lora-path", other, "--port", "0")
    assert code == 2 and err.count("\n") == 1 and "one base model" in err and "smollm2-135m" in err

    code, _, err = run_cli("serve", "--lora-path", f"x={a}", "--lora-path", f"x={b}", "--port", "0")
    assert code == 2 and "two adapters are named 'x'" in err
    code, _, err = run_cli("serve", "--lora-path", a, "--ensemble", "--port", "0")
    assert code == 2 and "at least two" in err

    with socket.socket() as taken:  # a port in use: refused before any model loads
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, _, err = run_cli("serve", "--lora-path", a, "--port", taken.getsockname()[1])
    assert code == 2 and err.count("\n") == 1 and "cannot listen on 127.0.0.1" in err
