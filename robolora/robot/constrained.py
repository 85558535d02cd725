"""Constrained decoding, token side: a model under :class:`RobotLogitsProcessor` can only write robot code
that :mod:`robolora.robot.grammar` accepts, so what it ends with EOS is api-valid by construction.

:class:`TokenTrieIndex` holds the text of every token of a vocabulary (tokens that can never occur in
a program are dropped) and a trie of those texts, to find every token allowed after a state without
trying them one by one. The processor tracks each batch row's grammar state by its generated ids, so
it is right whatever the rows do between steps, and keeps, per row, the allowed tokens among the
``top_k`` best; when none of those is allowed it keeps the best ``top_k`` of all allowed tokens. EOS
is allowed exactly when the text so far is a whole program. Torch is imported only when a processor
runs. This is the ``recognizer`` engine of ``--grammar-engine``; :mod:`robolora.robot.engines` holds the
processors on xgrammar and llguidance, which this recognizer's tests hold to the same tokens.

Example:
    >>> index = TokenTrieIndex(["robot", ".stop", "()", "(", ")", ".fly", "\\n", "<eos>"], eos_token_ids=[7])
    >>> state = grammar.advance(grammar.start(), "robot")
    >>> allowed_tokens(state, range(8), index)  # after "robot": ".stop" but not ".fly"
    [1]
    >>> allowed_tokens(grammar.advance(state, ".stop()"), range(8), index)  # a whole program: newline or EOS
    [6, 7]

With a model (``inputs`` left-padded, so every row's prompt has the same length)::

    processor = RobotLogitsProcessor(tokenizer, prompt_lengths=inputs["input_ids"].shape[1])
    out = model.generate(**inputs, logits_processor=LogitsProcessorList([processor]), max_new_tokens=200)
    texts = tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from robolora.robot import grammar
from robolora.robot.grammar import PrefixState

#: How many states' full sets of allowed tokens an index remembers.
ALLOWED_CACHE_SIZE = 1024

# Marks a row that has emitted EOS: it is left alone (generate pads it).
_DONE = object()
_NEG_INF = float("-inf")

_INDEXES: weakref.WeakKeyDictionary[Any, TokenTrieIndex] = weakref.WeakKeyDictionary()


class _TokenNode:
    __slots__ = ("ids", "next")

    def __init__(self) -> None:
        self.next: dict[str, _TokenNode] = {}
        self.ids: list[int] = []


def _usable(text: str | None) -> str | None:
    """The text if it can occur in a program, else None."""
    return text if text and grammar.ALPHABET.issuperset(text) else None


class TokenTrieIndex:
    """The text of every token id and a trie of them, for one vocabulary.

    Args:
        texts: each token id's text as it reads inside a generation; None for tokens never allowed.
        eos_token_ids: the ids that end a generation.
        first_texts: ids whose text differs as the first generated token (SentencePiece drops the
            leading space there), with that text.
    """

    def __init__(
        self,
        texts: Sequence[str | None],
        eos_token_ids: Iterable[int],
        first_texts: dict[int, str | None] | None = None,
    ) -> None:
        self.eos_token_ids = frozenset(eos_token_ids)
        self.texts: list[str | None] = [None if i in self.eos_token_ids else _usable(t) for i, t in enumerate(texts)]
        self.first_texts = {i: _usable(t) for i, t in (first_texts or {}).items() if i not in self.eos_token_ids}
        self.root = _TokenNode()
        for token_id, text in enumerate(self.texts):
            if text is not None:
                node = self.root
                for ch in text:
                    node = node.next.setdefault(ch, _TokenNode())
                node.ids.append(token_id)
        self._allowed: OrderedDict[tuple[PrefixState, bool], list[int]] = OrderedDict()

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, eos_token_ids: Iterable[int] | None = None) -> TokenTrieIndex:
        """The index of a Hugging Face tokenizer, built once per tokenizer object (about a second).

        Each token's text is what it adds after a plain token (``decode([a, id])`` minus ``decode([a])``),
        which is right for byte-level BPE (``Ġ`` for a space, ``Ċ`` for a newline) and SentencePiece alike.
        Special and added tokens get no text. EOS is the tokenizer's unless ``eos_token_ids`` says otherwise.
        """
        if eos_token_ids is None:
            cached = _INDEXES.get(tokenizer)
            if cached is not None:
                return cached
        anchor = tokenizer.encode("a", add_special_tokens=False)
        head = tokenizer.decode(anchor, clean_up_tokenization_spaces=False)
        excluded = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
        texts: list[str | None] = []
        first_texts: dict[int, str | None] = {}
        for token_id in range(len(tokenizer)):
            if token_id in excluded:
                texts.append(None)
                continue
            pair = tokenizer.decode([*anchor, token_id], clean_up_tokenization_spaces=False)
            text = pair[len(head) :] if pair.startswith(head) else None
            texts.append(text)
            alone = tokenizer.decode([token_id], clean_up_tokenization_spaces=False)
            if alone != text:
                first_texts[token_id] = alone
        eos = [tokenizer.eos_token_id] if eos_token_ids is None else list(eos_token_ids)
        index = cls(texts, [i for i in eos if i is not None], first_texts)
        if eos_token_ids is None:
            _INDEXES[tokenizer] = index
        return index

    def text(self, token_id: int, first: bool = False) -> str | None:
        """The token's text (as the first generated token where ``first``), None if it is never allowed."""
        if first and token_id in self.first_texts:
            return self.first_texts[token_id]
        return self.texts[token_id] if 0 <= token_id < len(self.texts) else None

    def step(self, state: PrefixState, token_id: int, first: bool = False) -> PrefixState | None:
        """The state after a (non-EOS) token, None if the token cannot follow ``state``."""
        text = self.text(token_id, first)
        return None if text is None else grammar.advance(state, text)

    def all_allowed(self, state: PrefixState, first: bool = False) -> list[int]:
        """Every token id that can follow ``state``, EOS included when the program is complete."""
        key = (state, first)
        cached = self._allowed.get(key)
        if cached is not None:
            self._allowed.move_to_end(key)
            return cached
        found: list[int] = []
        stack = [(self.root, state)]
        while stack:  # a walk down the trie, cut where the grammar refuses a character
            node, here = stack.pop()
            found += node.ids
            for ch, child in node.next.items():
                there = grammar.advance(here, ch)
                if there is not None:
                    stack.append((child, there))
        if first:
            # Tokens that read differently at the start are judged by that text instead.
            found = [i for i in found if i not in self.first_texts]
            found += [i for i in self.first_texts if self.step(state, i, first=True) is not None]
        if grammar.is_complete(state):
            found += sorted(self.eos_token_ids)
        self._allowed[key] = found
        if len(self._allowed) > ALLOWED_CACHE_SIZE:
            self._allowed.popitem(last=False)
        return found


def allowed_tokens(
    state: PrefixState, candidate_ids: Iterable[int], index: TokenTrieIndex, first: bool = False
) -> list[int]:
    """The candidates that can follow ``state``, in their order: tokens whose text continues a valid
    program, and EOS when the program is complete. ``first``: the candidates are the first generated token.
    """
    complete = grammar.is_complete(state)
    eos = index.eos_token_ids
    return [i for i in candidate_ids if (complete if i in eos else index.step(state, i, first) is not None)]


class RobotLogitsProcessor:
    """A Hugging Face ``LogitsProcessor`` that masks every token not allowed by the robot grammar.

    For each row it keeps the allowed tokens among the ``top_k`` highest scores (tokens another
    processor set to -inf do not count); when none is allowed, the ``top_k`` highest-scoring of all
    allowed tokens; every other score becomes -inf. Rows that emitted EOS are left as they are. A row
    whose generated text left the grammar (tokens forced from outside) may only end.

    Args:
        tokenizer: the model's tokenizer (its index is built once and shared).
        prompt_lengths: where generation starts in ``input_ids``, for all rows or per row.
        top_k: how many of the best tokens to try per row and step.
        index: a prebuilt index, instead of the tokenizer's.
    """

    def __init__(
        self,
        tokenizer: Any,
        prompt_lengths: int | Sequence[int],
        top_k: int = 50,
        index: TokenTrieIndex | None = None,
    ) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        self.index = index if index is not None else TokenTrieIndex.from_tokenizer(tokenizer)
        self.prompt_lengths = prompt_lengths
        self.top_k = top_k
        # By the ids generated so far, per row: the state, and the states after the tokens allowed next.
        self._states: dict[tuple[int, ...], object] = {}
        self._successors: dict[tuple[int, ...], dict[int, PrefixState]] = {}

    def _prompt_length(self, row: int) -> int:
        lengths = self.prompt_lengths
        return lengths if isinstance(lengths, int) else int(lengths[row])

    def _state_of(self, generated: tuple[int, ...]) -> object:
        """The row's state: from the last step's caches, else read from the start."""
        if generated in self._states:
            return self._states[generated]
        parent, last = generated[:-1], generated[-1] if generated else None
        if parent in self._states:
            state = self._states[parent]
            if state is _DONE or last in self.index.eos_token_ids:
                return _DONE
            successors = self._successors.get(parent, {})
            if last in successors:
                return successors[last]
            return None if state is None else self.index.step(state, last, first=not parent)
        state: object = grammar.start()
        for i, token_id in enumerate(generated):
            if token_id in self.index.eos_token_ids:
                return _DONE
            if state is not None:
                state = self.index.step(state, token_id, first=i == 0)
        return state

    def _keep(self, state: PrefixState, top_ids: list[int], top_scores: list[float], first: bool, scores: Any):
        """The ids to keep for one row, and the states after its allowed top tokens."""
        complete = grammar.is_complete(state)
        eos = self.index.eos_token_ids
        keep: list[int] = []
        successors: dict[int, PrefixState] = {}
        for token_id, score in zip(top_ids, top_scores, strict=True):
            if score == _NEG_INF:
                break
            if token_id in eos:
                if complete:
                    keep.append(token_id)
                continue
            after = self.index.step(state, token_id, first)
            if after is not None:
                keep.append(token_id)
                successors[token_id] = after
        if not keep:
            import torch

            every = self.index.all_allowed(state, first)
            if every:
                ids = torch.tensor(every, device=scores.device)
                best = torch.topk(scores[ids], min(self.top_k, len(every))).indices
                keep = ids[best].tolist()
        return keep, successors

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        rows = input_ids.tolist()
        top = torch.topk(scores, min(self.top_k, scores.shape[-1]), dim=-1)
        top_ids, top_scores = top.indices.tolist(), top.values.tolist()
        states: dict[tuple[int, ...], object] = {}
        successors: dict[tuple[int, ...], dict[int, PrefixState]] = {}
        keep_rows: list[int] = []
        keep_cols: list[int] = []
        free_rows: list[int] = []
        for b, ids in enumerate(rows):
            generated = tuple(ids[self._prompt_length(b) :])
            if generated not in states:
                states[generated] = self._state_of(generated)
            state = states[generated]
            keep: list[int] = []
            if state is not _DONE and state is not None:
                keep, after = self._keep(state, top_ids[b], top_scores[b], not generated, scores[b])
                successors.setdefault(generated, {}).update(after)
            if state is not _DONE and not keep:
                # Out of the grammar (tokens forced from outside) or, never expected, a dead end: only end.
                keep = sorted(self.index.eos_token_ids)
            if not keep:
                free_rows.append(b)
                continue
            keep_rows += [b] * len(keep)
            keep_cols += keep
        self._states, self._successors = states, successors
        out = torch.full_like(scores, _NEG_INF)
        if keep_rows:
            r = torch.tensor(keep_rows, device=scores.device)
            c = torch.tensor(keep_cols, device=scores.device)
            out[r, c] = scores[r, c]
        if free_rows:
            f = torch.tensor(free_rows, device=scores.device)
            out[f] = scores[f]
        return out
