"""The response-only loss and the host tensors that feed it.

Only the response tokens of an example carry a loss (``labels`` elsewhere are ``IGNORE_INDEX``).
:func:`model_inputs` turns a collated batch into the tensors the model takes, with the flat positions
of its targets found on the host (:func:`with_targets`), and :class:`TargetLogitsLM` applies the
vocabulary-sized LM head at those positions alone.
"""

from __future__ import annotations

import types
from typing import Any

import torch

from robolora.data import IGNORE_INDEX


def _to_tensors(batch: dict[str, list[list[int]]], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.tensor(v, dtype=torch.long, device=device) for k, v in batch.items()}


def with_targets(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``batch`` plus where its loss is: ``target_index``, the flat positions (row x width + column) whose
    next token is a target, and ``target_ids``, those targets.

    Computed on the host from the labels, so the device never waits to learn how many targets there
    are (a boolean mask on the device would make every step synchronise).

    >>> labels = torch.tensor([[-100, 5, 6], [-100, -100, 7]])
    >>> t = with_targets({"labels": labels})
    >>> t["target_index"].tolist(), t["target_ids"].tolist()
    ([0, 1, 4], [5, 6, 7])
    """
    labels = batch["labels"]
    targets = labels[:, 1:]
    rows, cols = (targets != IGNORE_INDEX).nonzero(as_tuple=True)
    return batch | {"target_index": rows * labels.shape[1] + cols, "target_ids": targets[rows, cols]}


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


def model_inputs(batch: dict[str, list[list[int]]]) -> dict[str, torch.Tensor]:
    """A collated batch as the host tensors the model takes: its targets located (:func:`with_targets`)
    and its padding mask left out where it changes nothing (:func:`without_padding_mask`)."""
    return without_padding_mask(with_targets(_to_tensors(batch, torch.device("cpu"))))


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
    ) -> Any:
        """``.loss`` is the summed cross-entropy of the targets divided by ``num_items_in_batch``.

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
        if self._parts is None:
            return self.model(**inputs, labels=labels, num_items_in_batch=num_items_in_batch)
        if target_index is None or target_ids is None:
            found = with_targets({"labels": labels})
            target_index, target_ids = found["target_index"], found["target_ids"]
        decoder, head = self._parts
        hidden = decoder(**inputs).last_hidden_state
        logits = head(hidden.reshape(-1, hidden.shape[-1]).index_select(0, target_index)).float()
        loss = torch.nn.functional.cross_entropy(logits, target_ids, reduction="sum") / num_items_in_batch
        return types.SimpleNamespace(loss=loss)
