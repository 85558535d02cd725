"""The model side of ``robolora serve``: which adapters, checked at start-up, and the engines that answer.

Requests wait in a :class:`Batcher` (a queue and the one thread that empties it), which hands every
request waiting at that moment to the engine in one go, so concurrent clients are answered from shared
batches. Two engines:

* :class:`TransformersBackend` (CPU, or a GPU without vLLM): the base model once, through
  :meth:`robolora.infer.Generator.load` as ``robolora eval`` loads it, every adapter beside it (one
  adapter alone is merged), with one batcher per adapter;
  the prompts are rendered and normalized as in training, decoding is constrained by the robot grammar.
* :class:`VllmBackend` (a CUDA GPU with vLLM installed): vLLM's multi-LoRA engine holds the base model
  once and every adapter beside it; the grammar goes through vLLM's structured outputs. It is written
  against vLLM's API (0.12 and later) and checked by hand on GPU machines; the test suite, on CPUs,
  runs the transformers engine.
"""

from __future__ import annotations

import importlib.util
import os
import queue
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robolora.errors import UserError
from robolora.serve_api import ENSEMBLE, Answer, ApiError, Result, Settings, batch_groups, check_context

#: How long the first request of an idle server waits for others to share its batch: short beside a
#: generation (hundreds of milliseconds), long enough for clients that send together to be answered together.
BATCH_WINDOW_S = 0.01
#: An adapter's model name (``--lora-path NAME=PATH``, else the folder's name).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
#: The context length assumed for a model whose config and tokenizer state none.
FALLBACK_MAX_MODEL_LEN = 2048
#: The LoRA ranks vLLM's engine is built for (``max_lora_rank``).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
BACKENDS = ("auto", "transformers", "vllm")


# ----------------------------------------------------------------------------- adapters


@dataclass(frozen=True)
class AdapterSpec:
    """An adapter to serve: its model name, its folder and the base model it was trained on."""

    name: str
    path: Path
    base_model: str


def split_lora_option(value: str, exists: Callable[[str], bool] = os.path.exists) -> tuple[str | None, str]:
    """``--lora-path NAME=PATH`` or ``--lora-path PATH``: the name given (or None) and the path. A value
    that exists as a path, or whose part before ``=`` is no model name, is a path.

    >>> split_lora_option("fast=runs/a", exists=lambda p: False)
    ('fast', 'runs/a')
    >>> split_lora_option("runs/a", exists=lambda p: False), split_lora_option("runs/a=b", exists=lambda p: False)
    ((None, 'runs/a'), (None, 'runs/a=b'))
    """
    name, sep, path = value.partition("=")
    if sep and path and NAME.fullmatch(name) and not exists(value):
        return name, path
    return None, value


def base_key(name: str) -> str:
    """One spelling of a base model: an alias and its cache folder, a relative and an absolute path agree."""
    from robolora.models import ALIASES, cache_dir, is_local_model

    if name in ALIASES:
        return str((cache_dir() / "models" / name).resolve())
    if is_local_model(name):
        return str(Path(name).expanduser().resolve())
    return name


def adapter_specs(values: Sequence[str], ensemble: bool) -> list[AdapterSpec]:
    """The ``--lora-path`` adapters, each checked and named, all of one base model (vLLM serves one base,
    and the ensemble's members must share the tokenizer); a problem is one :class:`UserError`."""
    from robolora.models import adapter_base_model, adapter_dir

    if not values:
        raise UserError("--lora-path: give at least one adapter to serve (a run's output directory)")
    specs: list[AdapterSpec] = []
    for value in values:
        name, path = split_lora_option(value)
        lora = adapter_dir(path)
        name = name or lora.name
        if not NAME.fullmatch(name):
            raise UserError(
                f"--lora-path: {value}: {name!r} is not a model name (letters, digits, '.', '_', ':', '-'); "
                "name it: --lora-path NAME=PATH"
            )
        if ensemble and name == ENSEMBLE:
            raise UserError(f"--lora-path: {value}: '{ENSEMBLE}' names the vote of --ensemble; name it otherwise")
        if any(s.name == name for s in specs):
            raise UserError(f"--lora-path: two adapters are named {name!r}; name them: --lora-path NAME=PATH")
        specs.append(AdapterSpec(name, lora, adapter_base_model(lora)))
    first = specs[0]
    for spec in specs[1:]:
        if base_key(spec.base_model) != base_key(first.base_model):
            raise UserError(
                f"--lora-path: {spec.name} ({spec.path}) was trained on {spec.base_model}, but {first.name} "
                f"({first.path}) on {first.base_model}: serve the adapters of one base model together "
                "(one server per base model)"
            )
    if ensemble and len(specs) < 2:
        raise UserError("--ensemble: give at least two --lora-path adapters to vote")
    return specs


def model_max_len(config: Any, tokenizer: Any) -> int:
    """The longest sequence the model takes: its positions, or its tokenizer's limit where that is lower."""
    stated = [getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    known = [int(x) for x in stated if isinstance(x, int) and 0 < x < 10**8]
    return min(known) if known else FALLBACK_MAX_MODEL_LEN


def resolve_max_model_len(model_len: int, asked: int | None) -> int:
    """``--max-model-len`` where given (never above what the model takes), else the model's."""
    if asked is None:
        return model_len
    if asked > model_len:
        raise UserError(f"--max-model-len: {asked} is more than the model takes ({model_len} tokens); lower it")
    return asked


# ----------------------------------------------------------------------------- batching


@dataclass(frozen=True)
class Job:
    """What one request asks of one model: ``n`` answers to each command, with these settings; ``param``
    is the request field a too-long prompt error names."""

    commands: tuple[str, ...]
    n: int
    settings: Settings
    param: str = "prompt"

    @property
    def rows(self) -> list[str]:
        """The commands as generated: each ``n`` times, in order."""
        return [c for c in self.commands for _ in range(self.n)]


@dataclass
class Pending:
    """A job waiting for its model, and where its :class:`Result` (or :class:`ApiError`) goes."""

    model: str
    job: Job
    future: Future


_STOP = object()


class Batcher:
    """A queue of jobs and the one thread that empties it: it takes the first job, then every job that
    arrives within :data:`BATCH_WINDOW_S` or waits already, up to ``max_rows`` generated rows, and hands
    them to ``run`` together. ``run`` resolves each job's future; a failure of ``run`` fails the jobs of
    that batch, not the server."""

    def __init__(self, run: Callable[[list[Pending]], None], max_rows: int, name: str):
        self._run = run
        self._max_rows = max_rows
        self._queue: queue.Queue[Any] = queue.Queue()
        self._held: Any = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"generate-{name}", daemon=True)
        self._thread.start()

    def submit(self, model: str, job: Job) -> Future:
        future: Future = Future()
        self._queue.put(Pending(model, job, future))
        return future

    def close(self, timeout: float = 30.0) -> None:
        """Finish the batch being generated, fail the jobs still waiting, and end the thread."""
        self._stopping.set()
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _take(self) -> list[Pending] | None:
        first = self._held if self._held is not None else self._queue.get()
        self._held = None
        if first is _STOP:
            return None
        items, rows = [first], len(first.job.rows)
        deadline = time.monotonic() + BATCH_WINDOW_S
        while rows < self._max_rows:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is _STOP or rows + len(item.job.rows) > self._max_rows:
                self._held = item  # the next batch starts with it
                break
            items.append(item)
            rows += len(item.job.rows)
        return items

    def _loop(self) -> None:
        while not self._stopping.is_set() and (items := self._take()) is not None:
            try:
                self._run(items)
            except Exception as e:
                for p in items:
                    _fail(p, e)
            for p in items:
                _fail(p, RuntimeError("the generation left this request unanswered"))
        waiting = [self._held] if self._held is not None else []
        while not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        for item in waiting:  # stopped: whoever still waits is told so
            if item is not _STOP:
                _fail(item, ApiError(503, "the server is stopping", type="server_error"))


def _fail(p: Pending, error: BaseException) -> None:
    if not p.future.done():
        p.future.set_exception(error)


# ----------------------------------------------------------------------------- transformers


class TransformersBackend:
    """The base model loaded once through transformers (:meth:`Generator.load`, as ``eval`` loads it), each
    adapter with a :class:`Batcher`. One adapter is merged into the base, as ``eval`` runs it; several stay
    beside the one base as PEFT adapters, the one a batch is for switched on before it runs, so N adapters
    of a 34B base hold one copy of its weights, not N. One batch computes at a time: they share the same
    model and cores (or GPU), and an adapter whose turn it is not gathers a bigger batch meanwhile."""

    def __init__(
        self,
        adapters: Sequence[AdapterSpec],
        *,
        max_batch: int,
        quantization: str | None = None,
        max_memory: str | None = None,
        max_model_len: int | None = None,
        log: Callable[[str], None] = print,
    ):
        from robolora.infer import Generator

        self.max_batch = max_batch
        self._compute = threading.Lock()
        first, *others = adapters
        log(f"loading {first.name}: {first.path} on {first.base_model}")
        base = Generator.load(first.path, merge=not others, quantization=quantization, max_memory=max_memory)
        self._generators = {first.name: base}
        #: The PEFT adapter name of each served model (None: the one adapter, merged).
        self._peft_names: dict[str, str | None] = {first.name: "default" if others else None}
        for i, spec in enumerate(others, start=1):
            log(f"loading {spec.name}: {spec.path} beside it")
            peft_name = f"adapter_{i}"
            self._generators[spec.name] = base.beside(spec.path, peft_name, name=spec.name)
            self._peft_names[spec.name] = peft_name
        self.max_model_len = resolve_max_model_len(model_max_len(base.model.config, base.tokenizer), max_model_len)
        for name, gen in self._generators.items():  # the first request should not pay for the grammar's index
            self._activate(name)
            gen.generate(["stop"], max_new_tokens=2, constrained=True)
        self._batchers = {
            name: Batcher(lambda items, n=name: self._run(n, items), max_batch, name) for name in self._generators
        }

    def _activate(self, name: str) -> None:
        """Switch the shared model to this adapter (while holding the compute lock, or before serving)."""
        if (peft_name := self._peft_names[name]) is not None:
            self._generators[name].model.set_adapter(peft_name)

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self._generators)

    def submit(self, model: str, job: Job) -> Future:
        return self._batchers[model].submit(model, job)

    def close(self) -> None:
        for batcher in self._batchers.values():
            batcher.close()

    def _run(self, name: str, items: list[Pending]) -> None:
        """Refuse the jobs whose prompts do not fit, then generate the rest, one call per group of settings."""
        gen = self._generators[name]
        ready: list[tuple[Pending, int]] = []
        for p in items:
            lengths = [len(gen.prompt_ids(c)) for c in p.job.commands]
            try:
                check_context(max(lengths), p.job.settings.max_tokens, self.max_model_len, p.job.param)
            except ApiError as e:
                _fail(p, e)
                continue
            ready.append((p, sum(lengths)))
        for group in batch_groups([p.job.settings for p, _ in ready]):
            members = [ready[i] for i in group]
            try:
                self._generate(name, members)
            except Exception as e:
                for p, _ in members:
                    _fail(p, e)

    def _generate(self, name: str, members: list[tuple[Pending, int]]) -> None:
        gen = self._generators[name]
        settings = members[0][0].job.settings
        rows = [c for p, _ in members for c in p.job.rows]
        seed = settings.seed if settings.seed is not None else secrets.randbelow(2**31)
        with self._compute:
            self._activate(name)
            generations = gen.generate(
                rows,
                batch_size=self.max_batch,
                max_new_tokens=settings.max_tokens,
                constrained=settings.constrained,
                temperature=settings.temperature,
                seed=seed,
                repair_beams=0,  # a request's answer is the model's own decoding, as vLLM's engine gives it
            )
        answers = [_answer(gen.tokenizer, g) for g in generations]
        start = 0
        for p, prompt_tokens in members:
            end = start + len(p.job.rows)
            p.future.set_result(Result(tuple(answers[start:end]), prompt_tokens))
            start = end


def _answer(tokenizer: Any, generation: Any) -> Answer:
    """A :class:`~robolora.infer.Generation` as an answer. It keeps its text, not its ids: the completion's
    tokens are counted by tokenizing that text again (and the end-of-sequence token where it ended)."""
    tokens = len(tokenizer(generation.raw, add_special_tokens=False)["input_ids"]) + int(generation.finished)
    reason = "stop" if generation.finished else "length"
    return Answer(generation.code, reason, tokens, generation.mean_logprob)


# ----------------------------------------------------------------------------- vLLM


def vllm_lora_rank(ranks: Iterable[int]) -> int:
    """vLLM's ``max_lora_rank`` for adapters of these ranks: the highest, rounded up to a rank vLLM builds.

    >>> vllm_lora_rank([8, 24]), vllm_lora_rank([4]), vllm_lora_rank([300])
    (32, 8, 320)
    """
    top = max(ranks)
    for rank in VLLM_LORA_RANKS:
        if rank >= top:
            return rank
    raise UserError(
        f"--lora-path: LoRA rank {top} is above vLLM's largest ({VLLM_LORA_RANKS[-1]}); --backend transformers"
    )


def vllm_adapter_problem(config: dict[str, Any]) -> str | None:
    """Why vLLM cannot load an adapter of this ``adapter_config.json``, or None.

    >>> vllm_adapter_problem({"r": 8, "modules_to_save": ["lm_head"]})
    "it trains whole modules beside LoRA (modules_to_save: ['lm_head']), which vLLM does not load"
    >>> vllm_adapter_problem({"r": 8, "use_dora": True}), vllm_adapter_problem({"r": 8})
    ('it is a DoRA adapter (use_dora: true), which vLLM does not serve', None)
    """
    if config.get("modules_to_save"):
        modules = config["modules_to_save"]
        return f"it trains whole modules beside LoRA (modules_to_save: {modules}), which vLLM does not load"
    if config.get("use_dora"):
        return "it is a DoRA adapter (use_dora: true), which vLLM does not serve"
    return None


def vllm_rank_of(config: dict[str, Any]) -> list[int]:
    """The ranks an adapter uses: ``r`` and any per-module ``rank_pattern``."""
    pattern = config.get("rank_pattern") or {}
    return [int(config["r"]), *(int(r) for r in pattern.values())]


def check_vllm_options(configs: dict[Path, dict[str, Any]], quantization: str | None, max_memory: str | None) -> None:
    """Refuse what vLLM's engine cannot serve (an adapter's ``adapter_config.json``, by its folder), naming
    the flag and the way out: the transformers engine takes all of it.

    >>> check_vllm_options({Path("runs/a"): {"r": 8, "use_dora": True}}, None, None)
    Traceback (most recent call last):
    ...
    robolora.errors.UserError: --lora-path: runs/a: it is a DoRA adapter (use_dora: true), which vLLM does not \
serve; use --backend transformers
    """
    for path, config in configs.items():
        if problem := vllm_adapter_problem(config):
            raise UserError(f"--lora-path: {path}: {problem}; use --backend transformers")
    if quantization not in (None, "4bit"):
        raise UserError("--quantization: vLLM quantizes on loading to 4bit only; use 4bit or --backend transformers")
    if max_memory:
        raise UserError("--max-memory: vLLM places the weights itself; drop it or use --backend transformers")


def choose_backend(requested: str, vllm_installed: bool, cuda: bool) -> str:
    """``--backend``: auto is vLLM where it is installed and a CUDA GPU is there, else transformers.

    >>> choose_backend("auto", True, True), choose_backend("auto", True, False), choose_backend("transformers", 1, 1)
    ('vllm', 'transformers', 'transformers')
    """
    if requested == "auto":
        return "vllm" if vllm_installed and cuda else "transformers"
    if requested == "vllm" and not (vllm_installed and cuda):
        missing = (
            "vLLM is not installed (pip install robolora[vllm])" if not vllm_installed else "no CUDA GPU is visible"
        )
        raise UserError(f"--backend vllm: {missing}; use --backend transformers (or auto)")
    return requested


def vllm_available() -> tuple[bool, bool]:
    """Whether vLLM is installed, and whether a CUDA GPU is visible."""
    import torch

    return importlib.util.find_spec("vllm") is not None, torch.cuda.is_available()


class VllmBackend:
    """vLLM's multi-LoRA engine: the base model once, every adapter a ``LoRARequest``. One batcher for all
    adapters: each batch is one ``LLM.generate`` call with a sampling setting and an adapter per prompt,
    which vLLM schedules together. Prompts are token ids rendered here, as in training."""

    def __init__(
        self,
        adapters: Sequence[AdapterSpec],
        *,
        max_batch: int,
        quantization: str | None = None,
        max_memory: str | None = None,
        max_model_len: int | None = None,
        log: Callable[[str], None] = print,
    ):
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        from robolora.models import adapter_config, load_config, load_tokenizer, resolve_model

        configs = {spec.name: adapter_config(spec.path) for spec in adapters}
        check_vllm_options({spec.path: configs[spec.name] for spec in adapters}, quantization, max_memory)
        from robolora.robot.ebnf import robot_ebnf

        self._grammar = robot_ebnf()  # the robot API as a grammar vLLM's structured outputs take
        base = adapters[0].base_model
        self._tokenizer = load_tokenizer(base)
        self.max_model_len = resolve_max_model_len(model_max_len(load_config(base), self._tokenizer), max_model_len)
        log(f"loading {base} into vLLM with {len(adapters)} LoRA adapters")
        self._llm = LLM(
            model=resolve_model(base),
            enable_lora=True,
            max_loras=len(adapters),
            max_lora_rank=vllm_lora_rank(r for c in configs.values() for r in vllm_rank_of(c)),
            max_model_len=self.max_model_len,
            max_num_seqs=max_batch,
            quantization="bitsandbytes" if quantization else None,
        )
        self._loras = {spec.name: LoRARequest(spec.name, i + 1, str(spec.path)) for i, spec in enumerate(adapters)}
        self._batcher = Batcher(self._run, max_batch, "vllm")

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self._loras)

    def submit(self, model: str, job: Job) -> Future:
        return self._batcher.submit(model, job)

    def close(self) -> None:
        self._batcher.close()

    def _sampling(self, settings: Settings) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        structured = StructuredOutputsParams(grammar=self._grammar) if settings.constrained else None
        return SamplingParams(
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
            seed=settings.seed,
            logprobs=0,  # the sampled tokens' log-probabilities: the ensemble's vote weighs them
            structured_outputs=structured,
        )

    def _run(self, items: list[Pending]) -> None:
        from robolora.prompts import encode_prompt

        prompts, params, loras, owners = [], [], [], []
        for p in items:
            ids = [encode_prompt(self._tokenizer, c) for c in p.job.commands]
            try:
                check_context(max(map(len, ids)), p.job.settings.max_tokens, self.max_model_len, p.job.param)
            except ApiError as e:
                _fail(p, e)
                continue
            sampling = self._sampling(p.job.settings)
            for one in ids:
                prompts += [{"prompt_token_ids": one}] * p.job.n
                params += [sampling] * p.job.n
                loras += [self._loras[p.model]] * p.job.n
            owners.append((p, sum(map(len, ids))))
        if not prompts:
            return
        outputs = self._llm.generate(prompts, params, lora_request=loras, use_tqdm=False)
        start = 0
        for p, prompt_tokens in owners:
            end = start + len(p.job.rows)
            answers = tuple(_vllm_answer(o.outputs[0], p.job.settings.constrained) for o in outputs[start:end])
            p.future.set_result(Result(answers, prompt_tokens))
            start = end


def _vllm_answer(output: Any, constrained: bool) -> Answer:
    """A vLLM ``CompletionOutput`` as an answer, its code cut as :class:`~robolora.infer.Generator` cuts it."""
    from robolora.evaluate import extract_code
    from robolora.infer import longest_complete_program

    finished = output.finish_reason != "length"
    code = longest_complete_program(output.text) if constrained and not finished else extract_code(output.text)
    tokens = len(output.token_ids)
    cumulative = output.cumulative_logprob
    mean = cumulative / tokens if cumulative is not None and tokens else 0.0
    return Answer(code, "stop" if finished else "length", tokens, mean)


def load_backend(adapters: Sequence[AdapterSpec], backend: str, **options: Any) -> TransformersBackend | VllmBackend:
    """The engine ``--backend`` names (auto: vLLM on a CUDA GPU where installed), with the adapters loaded."""
    chosen = choose_backend(backend, *vllm_available())
    engine = VllmBackend if chosen == "vllm" else TransformersBackend
    return engine(adapters, **options)
