"""Constrained decoding on a grammar engine: transformers logits processors on xgrammar and llguidance, beside
the recognizer's own (:class:`robolora.robot.constrained.RobotLogitsProcessor`).

xgrammar compiles :func:`robolora.robot.ebnf.robot_ebnf`, llguidance reads :func:`robolora.robot.ebnf.robot_lark`;
each once per tokenizer and model vocabulary size (:func:`compiled`, cached while the tokenizer lives).
:class:`GrammarLogitsProcessor` keeps one matcher per batch row. It serves any number of ``generate`` calls
(xgrammar's own ``contrib.hf`` processor serves one): it knows each row only by the ids generated so far, its
matcher following them token by token and starting again where they are not what it read last, so left-padded
prompts, rows that end early and sampled tokens need no special handling.

What the engines allow is what the recognizer allows, token for token, with the bundled model's byte-level BPE
tokenizer (tests/integration/test_grammar_engines.py):

* special and added tokens (``<|im_start|>``, say) are never text of a program, for the recognizer's index
  leaves them out; xgrammar would read them as their spelling inside a string, so its vocabulary has them
  blanked; llguidance keeps tokens marked special out of text itself (an added token not marked special,
  which the bundled tokenizer has none of, would be text to it);
* llguidance lets the model split fixed text into any tokens (``no_forcing``), as the recognizer does;
* EOS is allowed exactly where the program is whole; a row that emitted EOS is left alone (``generate`` pads
  it); a row forced out of the grammar from outside may only end, as with the recognizer.

With SentencePiece tokenizers (CodeLlama's) the first generated token reads without its leading space; the
recognizer's index handles that, the engines their own way, and that case is not compared here.

One difference is by design: the recognizer keeps only the allowed tokens among the ``top_k`` best, an engine
keeps every allowed token. Greedy decoding picks the same token either way; sampling draws from all allowed
tokens here, and the mean log-probabilities of a generation differ accordingly.

Example (the bundled model)::

    processor = logits_processor("xgrammar", tokenizer, model.config.vocab_size, prompt_lengths=width)
    out = model.generate(**inputs, logits_processor=LogitsProcessorList([processor]), max_new_tokens=128)
"""

from __future__ import annotations

import importlib
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from robolora.errors import UserError
from robolora.robot.ebnf import robot_ebnf, robot_lark

#: The engines ``--grammar-engine`` offers; "recognizer" is :mod:`robolora.robot.grammar` and needs no package.
ENGINES = ("xgrammar", "llguidance", "recognizer")
#: The package each engine needs.
PACKAGES = {"xgrammar": "xgrammar", "llguidance": "llguidance"}

_COMPILED: weakref.WeakKeyDictionary[Any, dict[tuple[str, int], Any]] = weakref.WeakKeyDictionary()


def _importable(package: str) -> bool:
    """Whether the package imports (a missing or broken install does not)."""
    try:
        importlib.import_module(package)
    except ImportError:
        return False
    return True


def check_engine(engine: str, flag: str = "--grammar-engine") -> None:
    """Refuse an unknown engine or one whose package is missing, naming the flag and the fix."""
    if engine not in ENGINES:
        raise UserError(f"{flag}: unknown grammar engine {engine!r}; choose one of {', '.join(ENGINES)}")
    package = PACKAGES.get(engine)
    if package and not _importable(package):
        raise UserError(
            f"{flag} {engine}: the {package} package is not installed; `pip install {package}`, "
            f"or choose {flag} recognizer (no package needed)"
        )


def _excluded_ids(tokenizer: Any) -> set[int]:
    """Tokens that are never text of a program: special and added ones (as the recognizer's index has it)."""
    return set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)


def _eos_ids(tokenizer: Any) -> list[int]:
    if tokenizer.eos_token_id is None:
        raise ValueError("constrained decoding needs a tokenizer with an EOS token")
    return [tokenizer.eos_token_id]


class XGrammarEngine:
    """The robot grammar compiled by xgrammar for one tokenizer and vocabulary size."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        import xgrammar as xgr

        self._xgr = xgr
        eos = _eos_ids(tokenizer)
        base = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=eos)
        # Blank (never allowed) every special or added token but EOS: xgrammar would read them as text.
        vocab = list(base.decoded_vocab)
        for token_id in _excluded_ids(tokenizer) - set(eos):
            if token_id < len(vocab):
                vocab[token_id] = b""
        info = xgr.TokenizerInfo(
            vocab, xgr.VocabType.RAW, vocab_size=vocab_size, stop_token_ids=eos, add_prefix_space=base.add_prefix_space
        )
        self.grammar = xgr.GrammarCompiler(info).compile_grammar(robot_ebnf())
        self.vocab_size = vocab_size
        self.eos_token_ids = frozenset(eos)

    def matcher(self) -> Any:
        """A matcher at the start of a program."""
        return self._xgr.GrammarMatcher(self.grammar)

    @staticmethod
    def accept(matcher: Any, token_id: int) -> bool:
        return matcher.accept_token(token_id)

    def allocate(self, rows: int) -> Any:
        return self._xgr.allocate_token_bitmask(rows, self.vocab_size)

    @staticmethod
    def fill(matcher: Any, bitmask: Any, row: int) -> None:
        matcher.fill_next_token_bitmask(bitmask, row)

    def apply(self, scores: Any, bitmask: Any, rows: list[int]) -> None:
        mask = bitmask.to(scores.device)
        self._xgr.apply_token_bitmask_inplace(scores, mask, vocab_size=self.vocab_size, indices=rows)


class LLGuidanceEngine:
    """The robot grammar for llguidance (:func:`robolora.robot.ebnf.robot_lark`) with one tokenizer and vocabulary
    size."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        import llguidance
        import llguidance.hf
        import llguidance.torch

        self._llg = llguidance
        eos = _eos_ids(tokenizer)
        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=eos[0])
        self.grammar = llguidance.LLMatcher.grammar_from_lark(robot_lark())
        # Building a matcher reads the grammar again (milliseconds); copying a fresh one takes microseconds.
        self._fresh = llguidance.LLMatcher(self.tokenizer, self.grammar, log_level=0)
        if self._fresh.is_error():
            raise ValueError(f"llguidance refused the robot grammar: {self._fresh.get_error()}")
        self.vocab_size = vocab_size
        self.eos_token_ids = frozenset(eos)

    def matcher(self) -> Any:
        """A matcher at the start of a program."""
        return self._fresh.deep_copy()

    @staticmethod
    def accept(matcher: Any, token_id: int) -> bool:
        return matcher.consume_token(token_id)

    def allocate(self, rows: int) -> Any:
        import torch

        return torch.full((rows, (self.vocab_size + 31) // 32), -1, dtype=torch.int32)

    def fill(self, matcher: Any, bitmask: Any, row: int) -> None:
        self._llg.torch.fill_next_token_bitmask(matcher, bitmask, row)

    @staticmethod
    def apply(scores: Any, bitmask: Any, rows: list[int]) -> None:
        """Set the tokens the bitmask refuses to -inf (token 32 * w + j is bit j of word w)."""
        # llguidance's own apply compiles a kernel with torch.compile on first use (seconds on a CPU). On the CPU
        # numpy unpacks the bits (little-endian bytes, bits in little order); on a GPU torch does, there.
        import numpy as np
        import torch

        width = min(scores.shape[-1], 32 * bitmask.shape[1])  # wider logits: the processor masks the rest
        if scores.device.type == "cpu":
            words = bitmask[rows].numpy().astype("<i4", copy=False)
            blocked = torch.from_numpy(np.unpackbits(~words.view(np.uint8), axis=1, bitorder="little").view(bool))
        else:
            words = bitmask[rows].to(scores.device, non_blocking=True)
            bits = torch.arange(32, device=scores.device, dtype=torch.int32)
            blocked = ((words.unsqueeze(-1) >> bits) & 1).flatten(1) == 0
        blocked = blocked[:, :width]
        target = scores[:, :width]
        if len(rows) == scores.shape[0]:
            target.masked_fill_(blocked, float("-inf"))
        else:
            index = torch.tensor(rows, device=scores.device)
            target[index] = target[index].masked_fill(blocked, float("-inf"))


_ENGINE_CLASSES = {"xgrammar": XGrammarEngine, "llguidance": LLGuidanceEngine}


def compiled(engine: str, tokenizer: Any, vocab_size: int) -> XGrammarEngine | LLGuidanceEngine:
    """The engine's grammar for this tokenizer and the model's vocabulary size, compiled once and kept as long
    as the tokenizer lives (under a second for the bundled model's: benchmarks/results/grammar.json)."""
    check_engine(engine)
    if engine not in _ENGINE_CLASSES:
        raise ValueError(f"{engine} has no compiled grammar")
    per_tokenizer = _COMPILED.setdefault(tokenizer, {})
    key = (engine, vocab_size)
    if key not in per_tokenizer:
        per_tokenizer[key] = _ENGINE_CLASSES[engine](tokenizer, vocab_size)
    return per_tokenizer[key]


@dataclass
class _Row:
    """One batch row: its matcher, the generated ids it has read, and whether it ended or left the grammar."""

    matcher: Any
    read: list[int] = field(default_factory=list)
    done: bool = False
    out: bool = False


class GrammarLogitsProcessor:
    """A Hugging Face ``LogitsProcessor`` that sets every token the grammar does not allow next to -inf.

    Args:
        engine: a compiled grammar (:func:`compiled`).
        prompt_lengths: where generation starts in ``input_ids``, for all rows or per row.
    """

    def __init__(self, engine: XGrammarEngine | LLGuidanceEngine, prompt_lengths: int | Sequence[int]) -> None:
        self.engine = engine
        self.prompt_lengths = prompt_lengths
        self._rows: dict[int, _Row] = {}
        self._bitmask: Any = None

    def _prompt_length(self, row: int) -> int:
        lengths = self.prompt_lengths
        return lengths if isinstance(lengths, int) else int(lengths[row])

    def _follow(self, b: int, generated: list[int]) -> _Row:
        """Row ``b``'s matcher, brought up to ``generated`` (from the start where that is not what it read)."""
        row = self._rows.get(b)
        if row is None or row.read != generated[: len(row.read)]:
            row = self._rows[b] = _Row(self.engine.matcher())
        for token_id in generated[len(row.read) :]:
            row.read.append(token_id)
            if row.done:
                continue  # padding after EOS
            if token_id in self.engine.eos_token_ids:
                row.done = True
            elif not row.out and not self.engine.accept(row.matcher, token_id):
                row.out = True  # a token forced from outside: from here the row may only end
        return row

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        scores = scores.clone()  # generate may keep the tensor it passed (its raw logits): never write into it
        batch = scores.shape[0]
        if scores.shape[-1] > self.engine.vocab_size:
            scores[:, self.engine.vocab_size :] = float("-inf")  # ids the grammar's vocabulary does not have
        if self._bitmask is None or self._bitmask.shape[0] < batch:
            self._bitmask = self.engine.allocate(batch)
        masked: list[int] = []
        ended: list[int] = []
        for b, ids in enumerate(input_ids.tolist()):
            row = self._follow(b, ids[self._prompt_length(b) :])
            if row.done:
                continue
            if row.out:
                ended.append(b)
                continue
            self.engine.fill(row.matcher, self._bitmask, b)
            masked.append(b)
        if masked:
            self.engine.apply(scores, self._bitmask, masked)
        for b in ended:
            keep = scores[b, sorted(self.engine.eos_token_ids)]
            scores[b] = float("-inf")
            scores[b, sorted(self.engine.eos_token_ids)] = keep
        return scores


def logits_processor(engine: str, tokenizer: Any, vocab_size: int, prompt_lengths: int | Sequence[int]) -> Any:
    """A logits processor that keeps generation inside the robot grammar, on the named engine."""
    check_engine(engine)
    if engine == "recognizer":
        from robolora.robot.constrained import RobotLogitsProcessor

        return RobotLogitsProcessor(tokenizer, prompt_lengths=prompt_lengths)
    return GrammarLogitsProcessor(compiled(engine, tokenizer, vocab_size), prompt_lengths)
