"""Generation: a base model with or without a LoRA adapter, batched, greedy or sampled, optionally
constrained to code the robot API accepts.

Prompts are rendered exactly as in training (:func:`robolora.prompts.render_prompt`). A base model
without an adapter can be given a few worked examples first (few-shot), so comparisons with the
adapter are fair. Generated text goes through :func:`robolora.evaluate.extract_code`; it is never
executed.

Example (CPU, the bundled model):
    gen = Generator.load("models/quickstart-20261125-150000")
    gen.generate(["move forward 3 meters"])   # -> ['robot.move_forward(distance=3.0, speed=1.0)']
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from robolora.errors import UserError
from robolora.evaluate import EVAL_DEFAULTS, extract_code
from robolora.models import adapter_base_model, adapter_dir
from robolora.prompts import BASE_SYSTEM_PROMPT, FEW_SHOT_EXAMPLES, SYSTEM_PROMPT, prompt_messages, render_prompt


def base_model_of(lora: Path, flag: str = "--lora-path") -> str:
    """The base model a run was trained from: its config.yaml (alias or hub name), else PEFT's record;
    a damaged or silent file is one :class:`UserError` (see :func:`robolora.models.adapter_base_model`)."""
    return adapter_base_model(lora, flag)


def longest_complete_program(text: str) -> str:
    r"""The program in a constrained generation that ran into ``max_new_tokens`` mid-statement.

    Constrained decoding keeps every prefix inside the grammar, so the text's whole lines are a valid
    program; where not even its first statement was finished (a model repeating itself inside a
    string, say), that statement is completed by the grammar (closed string, closing parenthesis).

    >>> longest_complete_program('robot.stop()\nrobot.turn_left(angle=9')
    'robot.stop()'
    >>> longest_complete_program('robot.say(text="go go go go')
    'robot.say(text="go go go go")'
    """
    from robolora.robot.grammar import accepts, advance, completion, start

    lines = text.split("\n")
    for end in range(len(lines), 0, -1):
        candidate = "\n".join(lines[:end])
        if accepts(candidate):
            return candidate
    state = advance(start(), text)
    rest = completion(state) if state is not None else None
    return text + rest if rest is not None else ""


@dataclass
class Generation:
    """One generated program: the raw text, the extracted code, its mean token log-probability, and
    whether the model ended it (False when it ran into ``max_new_tokens``)."""

    raw: str
    code: str
    mean_logprob: float
    finished: bool


def vote(candidates: list[tuple[str, float]]) -> int:
    """The ensemble's answer among members' ``(code, mean_logprob)``: the index of its pick.

    The program most members wrote wins, compared in canonical form (defaults written out, keyword
    order and float spelling ignored); a tie goes to the program whose writers were surer (the higher
    mean log-probability). Invalid code votes for nothing, unless no member wrote valid code; the
    pick within the winning program is its surest writer.

    >>> vote([("robot.stop()", -0.1), ("robot.turn_left(angle=90)", -0.4), ("robot.turn_left(angle=90.0)", -0.3)])
    2
    >>> vote([("robot.stop()", -0.5), ("robot.go_home()", -0.2), ("robot.fly()", -0.01)])
    1
    """
    from robolora.robot.checker import RobotCodeError, canonicalize

    groups: dict[str, list[int]] = {}
    for i, (code, _) in enumerate(candidates):
        try:
            groups.setdefault(canonicalize(code), []).append(i)
        except RobotCodeError:
            continue
    if not groups:
        return max(range(len(candidates)), key=lambda i: candidates[i][1])

    def strength(members: list[int]) -> tuple[int, float]:
        return len(members), sum(candidates[i][1] for i in members) / len(members)

    best = max(groups.values(), key=strength)
    return max(best, key=lambda i: candidates[i][1])


def ensemble(member_generations: list[list[Generation]]) -> list[Generation]:
    """Per command, the generation :func:`vote` picks among the members' (index = command)."""
    picks = []
    for row in zip(*member_generations, strict=True):
        picks.append(row[vote([(g.code, g.mean_logprob) for g in row])])
    return picks


@contextmanager
def _quiet_peft_load() -> Iterator[None]:
    """Around a PEFT adapter load: PEFT reads a property transformers 5 deprecates, on every load."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        yield


class Generator:
    """A model (with an optional adapter) that turns commands into robot code, in batches."""

    def __init__(self, model: Any, tokenizer: Any, few_shot: int = 0, name: str = "model", adapter: str | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"  # generation continues every row from its last real token
        self.few_shot = few_shot
        self.name = name
        #: The adapter directory (None for a base model).
        self.adapter = adapter

    @classmethod
    def load(
        cls,
        lora_path: str | Path | None = None,
        *,
        model_name: str | None = None,
        few_shot: int = 0,
        merge: bool = True,
        dtype: torch.dtype | None = None,
        quantization: str | None = None,
        max_memory: str | None = None,
    ) -> Generator:
        """The base model named in the adapter's run (or ``model_name``), with the adapter applied.

        ``merge`` folds the LoRA weights into the base weights: the same outputs, faster generation (not
        into quantized weights: the adapter stays beside them). The weights go to the one visible GPU (or
        the CPU), or are spread over several GPUs within ``max_memory`` (:mod:`robolora.placement`);
        ``quantization`` ("4bit", "8bit") loads them through bitsandbytes.
        """
        from peft import PeftModel
        from transformers.utils import logging as hf_logging

        from robolora.kernels import use_fused_norms, use_shape_free_attention
        from robolora.models import bf16_supported, load_model, load_tokenizer

        hf_logging.disable_progress_bar()

        lora = adapter_dir(lora_path) if lora_path else None
        name = model_name or (base_model_of(lora) if lora else None)
        if name is None:
            raise UserError("--model-name: give the base model (or --lora-path to a trained adapter)")
        gpus = torch.cuda.device_count()
        use_shape_free_attention()  # each generated token brings a new shape
        # Decoding reads every weight once per token: bf16 halves that traffic where it runs natively.
        dtype = dtype or (torch.bfloat16 if bf16_supported(gpus > 0) else torch.float32)
        where = placement_of(name, gpus, dtype, quantization, max_memory)
        model = load_model(name, dtype=dtype, quantization=quantization, placement=where)
        tokenizer = load_tokenizer(name)
        if lora is not None:
            with _quiet_peft_load():
                model = PeftModel.from_pretrained(model, str(lora))
            if merge and not quantization:
                model = model.merge_and_unload()
        if gpus:
            use_fused_norms(model)
        # A short label for tables: the run folder (and checkpoint), not the whole path.
        short = f"{lora.parent.name}/{lora.name}" if lora and lora.name.startswith("checkpoint-") else None
        label = (short or lora.name) if lora else f"{name} (base{f', {few_shot}-shot' if few_shot else ''})"
        return cls(model, tokenizer, few_shot=few_shot, name=label, adapter=str(lora) if lora else None)

    def beside(self, lora_path: str | Path, adapter_name: str, name: str) -> Generator:
        """Another adapter loaded beside this unmerged one, on the same base weights (PEFT's
        ``load_adapter``): a generator for it sharing this model; ``model.set_adapter(adapter_name)``
        switches the shared model to it."""
        with _quiet_peft_load():
            self.model.load_adapter(str(lora_path), adapter_name=adapter_name)
        return Generator(self.model, self.tokenizer, few_shot=self.few_shot, name=name, adapter=str(lora_path))

    def prompt_ids(self, command: str) -> list[int]:
        """Token ids of the prompt for one command, with few-shot turns first where asked."""
        tok = self.tokenizer
        system = BASE_SYSTEM_PROMPT if self.few_shot else SYSTEM_PROMPT
        if tok.chat_template:
            messages = prompt_messages(command, system, FEW_SHOT_EXAMPLES[: self.few_shot])
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return tok(text, add_special_tokens=False)["input_ids"]
        shots = "".join(render_prompt(tok, q, system)[0] + a + "\n\n" for q, a in FEW_SHOT_EXAMPLES[: self.few_shot])
        return tok(shots + render_prompt(tok, command, system)[0])["input_ids"]

    @torch.no_grad()
    def generate(
        self,
        commands: list[str],
        *,
        batch_size: int = EVAL_DEFAULTS.batch_size,
        max_new_tokens: int = EVAL_DEFAULTS.max_new_tokens,
        constrained: bool = EVAL_DEFAULTS.constrained,
        temperature: float = 0.0,
        seed: int = 0,
        grammar_engine: str = EVAL_DEFAULTS.grammar_engine,
        repair_beams: int = EVAL_DEFAULTS.repair_beams,
    ) -> list[Generation]:
        """Generate code for each command; greedy when ``temperature`` is 0, else sampled. ``constrained``
        keeps the code inside the robot grammar, on ``grammar_engine`` (:data:`robolora.robot.engines.ENGINES`).

        ``repair_beams`` (greedy only; 0: off): a program that leaves out a number, quoted text, colour, place or
        action its command names, names one the command never mentions, makes up a condition, a loop or an
        ``else``, or orders its blocks against the command's words (:func:`robolora.robot.coverage.mismatch`), is
        decoded again with that many beams, and the best-scored beam without a mismatch replaces it; when none is,
        the greedy program stays."""
        torch.manual_seed(seed)
        engine = grammar_engine if constrained else None
        out = self._in_batches(
            commands, batch_size, lambda batch: self._generate_batch(batch, max_new_tokens, engine, temperature)
        )
        if repair_beams > 1 and temperature == 0:
            self._repair(commands, out, batch_size, max_new_tokens, engine, repair_beams)
        return out

    @staticmethod
    def _in_batches(commands: list[str], batch_size: int, run: Any) -> list[Any]:
        """``run`` over batches of ``commands``, longest prompts together (less padding), results in order."""
        order = sorted(range(len(commands)), key=lambda i: -len(commands[i]))
        out: dict[int, Any] = {}
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out.update(zip(idx, run([commands[i] for i in idx]), strict=True))
        return [out[i] for i in range(len(commands))]

    def _repair(
        self,
        commands: list[str],
        out: list[Generation],
        batch_size: int,
        max_new_tokens: int,
        engine: str | None,
        beams: int,
    ) -> None:
        """Replace, in ``out``, each program that does not fit its command by the best beam that does."""
        from robolora.robot.coverage import mismatch

        lacking = [i for i, (command, gen) in enumerate(zip(commands, out, strict=True)) if mismatch(command, gen.code)]
        if not lacking:
            return
        per_batch = max(1, batch_size // beams)
        candidates = self._in_batches(
            [commands[i] for i in lacking],
            per_batch,
            lambda batch: self._generate_batch(batch, max_new_tokens, engine, 0.0, beams=beams),
        )
        for i, beam in zip(lacking, candidates, strict=True):
            out[i] = next((g for g in beam if g.finished and not mismatch(commands[i], g.code)), out[i])

    def _generate_batch(
        self,
        commands: list[str],
        max_new_tokens: int,
        grammar_engine: str | None,
        temperature: float,
        beams: int = 1,
    ) -> list[Any]:
        """One batch of commands, left-padded to the longest prompt, generated together; constrained to the robot
        grammar on ``grammar_engine`` (None: unconstrained). With ``beams`` > 1 (beam search), each command's
        result is its list of ``beams`` generations, best first."""
        from transformers import LogitsProcessorList

        tok = self.tokenizer
        # The first layer's device: with the weights spread over GPUs, accelerate carries the rest.
        device = self.model.get_input_embeddings().weight.device
        prompts = [self.prompt_ids(c) for c in commands]
        width = max(map(len, prompts))
        pad = tok.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        processors = LogitsProcessorList()
        constrained = grammar_engine is not None
        if constrained:
            from robolora.robot.engines import logits_processor

            vocab = self.model.config.vocab_size  # the logits' width, which may differ from len(tokenizer)
            processors.append(logits_processor(grammar_engine, tok, vocab, prompt_lengths=width))
        generated = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            max_new_tokens=max_new_tokens,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_p=None,
            top_k=None,
            num_beams=beams,
            num_return_sequences=beams,
            logits_processor=processors,
            pad_token_id=pad,
            eos_token_id=tok.eos_token_id,
            output_scores=True,
            return_dict_in_generate=True,
        )
        new = generated.sequences[:, width:]
        if beams > 1:
            # Beam search keeps the processed log-probabilities: each beam's score is its mean per token.
            scores = generated.sequences_scores.tolist()
            rows = [self._generation(new[r].tolist(), torch.tensor([scores[r]]), constrained) for r in range(len(new))]
            return [rows[c * beams : (c + 1) * beams] for c in range(len(commands))]
        logprobs = self.model.compute_transition_scores(generated.sequences, generated.scores, normalize_logits=True)
        return [self._generation(new[row].tolist(), logprobs[row], constrained) for row in range(len(commands))]

    def _generation(self, ids: list[int], logprobs: torch.Tensor, constrained: bool) -> Generation:
        """One row's new tokens as a :class:`Generation`: cut at EOS, decoded, its code extracted."""
        tok = self.tokenizer
        keep = ids.index(tok.eos_token_id) if tok.eos_token_id in ids else len(ids)
        raw = tok.decode([t for t in ids[:keep] if t != tok.pad_token_id], skip_special_tokens=False)
        lp = logprobs[:keep]
        finite = lp[torch.isfinite(lp)]
        mean = float(finite.mean()) if finite.numel() else float("-inf")
        finished = tok.eos_token_id in ids
        code = extract_code(raw)
        if constrained and not finished:
            code = longest_complete_program(raw)
        return Generation(raw=raw, code=code, mean_logprob=mean, finished=finished)


def placement_of(
    name: str, gpus: int, dtype: torch.dtype, quantization: str | None, max_memory: str | None
) -> dict[str, Any]:
    """Where the weights of ``name`` go (``from_pretrained``'s placement arguments): caps from ``--max-memory``
    are checked against the weights' size (read from the model's config) before anything loads."""
    from robolora.placement import check_fits, device_map, parse_max_memory

    limits = parse_max_memory(max_memory, gpus) if max_memory else None
    if limits:
        from robolora.models import load_config
        from robolora.sizing import ModelDims, quantized_weight_bytes

        dims = ModelDims.from_config(load_config(name))
        w = dtype.itemsize
        check_fits(quantized_weight_bytes(dims, quantization, w) if quantization else dims.params() * w, limits)
    return device_map(gpus, limits)


def score_generations(
    records: list[dict[str, str]], generations: list[Generation], predictions_out: str | Path | None = None
) -> Any:
    """Judge generated programs against the records' references (an ``evaluate.Report``); with
    ``predictions_out``, also write one line per record with its judgement and mean log-probability."""
    from robolora.evaluate import score, write_predictions

    predictions = [g.code for g in generations]
    report = score(records, predictions)
    if predictions_out:
        logprobs = [g.mean_logprob for g in generations]
        write_predictions(predictions_out, records, predictions, report.judgements, logprobs)
    return report
