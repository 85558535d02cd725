"""The response-only loss and the host tensors that feed it.

Only the response tokens of an example carry a loss (``labels`` elsewhere are ``IGNORE_INDEX``).
:func:`model_inputs` turns a collated batch into the tensors the model takes, with the flat positions
of its targets found on the host (:func:`with_targets`), and :class:`TargetLogitsLM` applies the
vocabulary-sized LM head at those positions alone.

With ``--structure-weight`` W above 1 the loss is a weighted mean: the targets that shape a program (its
line breaks, which open, continue and close its blocks, and its end) count W times (:class:`Emphasis`). Most
response tokens are the API's boilerplate, learnt in the first steps; where a loop or a condition ends, or
whether one more step follows, is decided in those few tokens.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from robolora.data import IGNORE_INDEX


def _to_tensors(batch: dict[str, list[list[int]]], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.tensor(v, dtype=torch.long, device=device) for k, v in batch.items()}


@functools.lru_cache(maxsize=4)
def _id_tensor(ids: frozenset[int]) -> torch.Tensor:
    """``ids`` as a sorted tensor, built once per set of ids (not once per micro-batch)."""
    return torch.tensor(sorted(ids), dtype=torch.long)


@dataclass(frozen=True)
class Emphasis:
    """Targets whose loss counts ``weight`` times: the token ids in ``ids``."""

    ids: frozenset[int]
    weight: float

    @classmethod
    def structure(cls, tokenizer: Any, weight: float) -> Emphasis | None:
        """The tokens that shape a program in ``tokenizer``'s vocabulary (every token holding a line break, and
        the end-of-sequence token every response's labels end with, :func:`~robolora.data.build_example`),
        weighted ``weight``; None where ``weight`` is 1 (no emphasis)."""
        if weight == 1:
            return None
        vocab = tokenizer.get_vocab()
        texts = tokenizer.convert_tokens_to_string
        ids = {i for token, i in vocab.items() if "\n" in texts([token])} | {tokenizer.eos_token_id}
        return cls(frozenset(i for i in ids if i is not None and i != tokenizer.unk_token_id), weight)

    def count(self, labels: Sequence[int]) -> float:
        """The weighted number of targets of one example's labels (after the shift by one position).

        >>> Emphasis(frozenset({9}), 3.0).count([-100, 8, 9, 9])
        7.0
        """
        return float(sum(self.weight if t in self.ids else 1.0 for t in labels[1:] if t != IGNORE_INDEX))

    def weights(self, target_ids: torch.Tensor) -> torch.Tensor:
        """Each target's weight.

        >>> Emphasis(frozenset({9}), 3.0).weights(torch.tensor([8, 9, 7])).tolist()
        [1.0, 3.0, 1.0]
        """
        hit = torch.isin(target_ids, _id_tensor(self.ids).to(target_ids.device))
        return torch.where(hit, self.weight, 1.0)


def with_targets(batch: dict[str, torch.Tensor], emphasis: Emphasis | None = None) -> dict[str, torch.Tensor]:
    """``batch`` plus where its loss is: ``target_index``, the flat positions (row x width + column) whose
    next token is a target, and ``target_ids``, those targets.

    Computed on the host from the labels, so the device never waits to learn how many targets there
    are (a boolean mask on the device would make every step synchronise). With an ``emphasis``, also
    ``target_weights``, each target's weight in the loss.

    >>> labels = torch.tensor([[-100, 5, 6], [-100, -100, 7]])
    >>> t = with_targets({"labels": labels})
    >>> t["target_index"].tolist(), t["target_ids"].tolist()
    ([0, 1, 4], [5, 6, 7])
    """
    labels = batch["labels"]
    targets = labels[:, 1:]
    rows, cols = (targets != IGNORE_INDEX).nonzero(as_tuple=True)
    found = {"target_index": rows * labels.shape[1] + cols, "target_ids": targets[rows, cols]}
    if emphasis is not None:
        found["target_weights"] = emphasis.weights(found["target_ids"])
    return batch | found


def without_padding_mask(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``batch`` without its ``attention_mask`` where every row is right-padded (ones, then zeros).

    In a causal model a token attends only to the tokens before it, so padding after the last real
    token is already out of every real token's sight: the mask changes nothing the loss sees. Without
    it attention runs its causal kernels (FlashAttention on a GPU) and no mask is built or read.

    >>> mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    >>> sorted(without_padding_mask({"input_ids": mask, "attention_mask": mask}))
    ['input_ids']
    >>> sorted(without_padding_mask({"input_ids": mask, "attention_mask": mask.flip(1)}))  # left padding stays
    ['attention_mask', 'input_ids']
    """
    mask = batch.get("attention_mask")
    if mask is None or not bool((mask[:, 1:] <= mask[:, :-1]).all()):
        return batch
    return {k: v for k, v in batch.items() if k != "attention_mask"}


def model_inputs(batch: dict[str, list[list[int]]], emphasis: Emphasis | None = None) -> dict[str, torch.Tensor]:
    """A collated batch as the host tensors the model takes: its targets located (:func:`with_targets`, weighted
    by ``emphasis``) and its padding mask left out where it changes nothing (:func:`without_padding_mask`)."""
    return without_padding_mask(with_targets(_to_tensors(batch, torch.device("cpu")), emphasis))


class TargetLogitsLM(torch.nn.Module):
    """A causal LM whose loss computes logits only where a response token is predicted.

    With response-only labels most positions (system turn, command) carry no loss, yet a plain
    ``forward(labels=...)`` runs the vocabulary-sized LM head and its softmax at every position. This
    wrapper runs the decoder, keeps the hidden states whose next token is a target, and applies the
    head to those alone: the same loss and gradients, with far less head and softmax work.
    Models with anything between the decoder and the head (logit scaling or soft-capping) keep
    the plain forward.
    """

    def __init__(self, model: Any):
        super().__init__()
        self.model = model
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        config = base.config
        simple = not any(getattr(config, k, None) for k in ("final_logit_softcapping", "logit_scale", "logits_scaling"))
        decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
        head = base.get_output_embeddings()
        # The decoder must be a module of its own whose output is what the head takes (Llama's model.model,
        # GPT-2's transformer); anything else keeps the plain forward.
        found = decoder is not None and decoder is not base and head is not None
        self._parts = (decoder, head) if simple and found else None

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        num_items_in_batch: float | torch.Tensor = 1,
        target_index: torch.Tensor | None = None,
        target_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        target_weights: torch.Tensor | None = None,
    ) -> Any:
        """``.loss`` is the summed cross-entropy of the targets (each times its ``target_weights``, where given)
        divided by ``num_items_in_batch``.

        Without labels this is the model's own forward (all the logits). ``target_index`` and
        ``target_ids`` (:func:`with_targets`) say where the targets are without the device having to
        find them in ``labels``. ``position_ids`` that restart within a row mark packed examples
        (:func:`robolora.data.pack_examples`); the model then keeps each one's attention to itself.
        """
        # No key/value cache: besides its memory, a cache turns off the packed examples' masking.
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
        inputs["use_cache"] = False
        if labels is None:
            return self.model(**inputs)
        if self._parts is None and target_weights is None:
            return self.model(**inputs, labels=labels, num_items_in_batch=num_items_in_batch)
        if target_index is None or target_ids is None:
            found = with_targets({"labels": labels})
            target_index, target_ids = found["target_index"], found["target_ids"]
        if self._parts is None:  # the model's own logits, every position
            every = self.model(**inputs).logits
            logits = every.reshape(-1, every.shape[-1]).index_select(0, target_index).float()
        else:
            decoder, head = self._parts
            hidden = decoder(**inputs).last_hidden_state
            logits = head(hidden.reshape(-1, hidden.shape[-1]).index_select(0, target_index)).float()
        if target_weights is None:
            loss = torch.nn.functional.cross_entropy(logits, target_ids, reduction="sum")
        else:
            losses = torch.nn.functional.cross_entropy(logits, target_ids, reduction="none")
            loss = (losses * target_weights.to(losses.dtype)).sum()
        return types.SimpleNamespace(loss=loss / num_items_in_batch)
