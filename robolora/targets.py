"""LoRA targets: which modules of a model LoRA adapts.

``--lora-target-modules`` names modules as PEFT matches them (:func:`matches`), or stands for the
architecture's default (``auto``) or every linear layer but the output layer (``all-linear``). The
names are checked against the model's modules (:func:`module_tree`, built without weights), so a typo
is refused before a run starts.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robolora.errors import UserError
from robolora.fileio import shown_path
from robolora.models import resolve_model

#: ``--lora-target-modules`` values that stand alone: the architecture's default, and PEFT's own
#: shorthand for every linear layer but the output layer.
AUTO_TARGETS = "auto"
ALL_LINEAR = "all-linear"
#: The training guide's targets, the default for Llama-class models (every q/k/v/o projection).
GUIDE_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
_LLAMA_LAYER = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
_LLAMA_MLP = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


@dataclass(frozen=True)
class ModuleTree:
    """The qualified names of a model's modules that LoRA can adapt (from a skeleton, no weights)."""

    model_type: str
    #: Linear layers: ``torch.nn.Linear`` and transformers' ``Conv1D`` (GPT-2).
    linear: tuple[str, ...]
    #: Every module LoRA adapts: the linear layers, embeddings and convolutions.
    adaptable: tuple[str, ...]
    #: The output layer (the LM head), which ``all-linear`` leaves out as PEFT does.
    output: str = ""

    def linear_names(self) -> list[str]:
        """Short names of the linear layers, each once, in model order."""
        return list(dict.fromkeys(name.rsplit(".", 1)[-1] for name in self.linear))


def matches(target: str, module: str) -> bool:
    """Whether a LoRA target names a module, as PEFT matches a list of names: the module's qualified
    name is the target or ends with ``.`` and the target.

    >>> matches("q_proj", "model.layers.0.self_attn.q_proj"), matches("attn.c_proj", "h.0.attn.c_proj")
    (True, True)
    >>> matches("proj", "model.layers.0.self_attn.q_proj")
    False
    """
    return module == target or module.endswith("." + target)


def llama_tree(num_layers: int) -> ModuleTree:
    """The adaptable modules of transformers' ``LlamaForCausalLM``, without building it."""
    linear = [f"model.layers.{i}.{m}" for i in range(num_layers) for m in (*_LLAMA_LAYER, *_LLAMA_MLP)]
    linear.append("lm_head")
    return ModuleTree("llama", tuple(linear), ("model.embed_tokens", *linear), "lm_head")


def module_tree(name: str, config: Any, trust_remote_code: bool = False) -> ModuleTree:
    """The adaptable modules of the model ``name`` with ``config`` (from :func:`load_config`).

    The model is built from its config on PyTorch's meta device: its modules without any weights.
    A plain Llama config (read without transformers) needs no build: its module names are fixed.

    Raises:
        UserError: the model cannot be built from its config.
    """
    if isinstance(config, types.SimpleNamespace) and config.model_type == "llama":
        return llama_tree(config.num_hidden_layers)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    source = resolve_model(name)
    try:
        if isinstance(config, types.SimpleNamespace):
            config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except Exception as e:  # an architecture transformers cannot build as a causal LM, or a config it rejects
        where = shown_path(Path(source) / "config.json") if Path(source).is_dir() else f"{name} (its config)"
        why = " ".join(f"{type(e).__name__}: {e}".split())[:240]
        raise UserError(
            f"--model-name: {where}: the model cannot be built from its config ({why}); "
            "pass a causal language model with a valid config.json"
        ) from None
    linear_types = (torch.nn.Linear, Conv1D)
    other_types = (torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.MultiheadAttention)
    named = [(n, m) for n, m in model.named_modules() if n]
    head = model.get_output_embeddings()
    return ModuleTree(
        model_type=str(getattr(config, "model_type", "") or type(model).__name__),
        linear=tuple(n for n, m in named if isinstance(m, linear_types)),
        adaptable=tuple(n for n, m in named if isinstance(m, linear_types + other_types)),
        output=next((n for n, m in named if m is head), "") if head is not None else "",
    )


def _peft_default(model_type: str) -> list[str] | None:
    """PEFT's default LoRA targets for an architecture (None where PEFT has none)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    found = DEFAULTS.get(model_type)
    return list(found) if found else None


def default_targets(tree: ModuleTree) -> list[str] | None:
    """The LoRA targets of ``--lora-target-modules auto``: the training guide's q, k, v and o projections
    where the model has all four (Llama-class models), else PEFT's default for the architecture (GPT-2's
    fused ``c_attn``, for one); None when neither applies.

    >>> default_targets(llama_tree(2))
    ['q_proj', 'k_proj', 'v_proj', 'o_proj']
    """
    names = set(tree.linear_names())
    if names.issuperset(GUIDE_TARGETS):
        return list(GUIDE_TARGETS)
    peft = _peft_default(tree.model_type)
    if peft and all(any(matches(t, m) for m in tree.adaptable) for t in peft):
        return peft
    return None


def resolve_targets(given: list[str], tree: ModuleTree, model: str) -> list[str]:
    """The LoRA target module names a run uses, checked against the model's modules.

    ``auto`` is the architecture's default (:func:`default_targets`); ``all-linear`` every linear layer
    but the output layer (as PEFT reads it), by short name; any other name must name some module
    (:func:`matches`), so a typo is refused instead of adapting only the names that exist.

    >>> tree = llama_tree(2)
    >>> resolve_targets(["auto"], tree, "m"), resolve_targets(["all-linear"], tree, "m")[-2:]
    (['q_proj', 'k_proj', 'v_proj', 'o_proj'], ['up_proj', 'down_proj'])
    >>> resolve_targets(["q_proj", "foo_proj"], tree, "m")
    Traceback (most recent call last):
    ...
    robolora.errors.ConfigError: --lora-target-modules: 'foo_proj' matches no module of m (llama); its linear \
modules are q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head (or pass all-linear, or auto)

    Raises:
        ConfigError: an unknown name, ``auto``/``all-linear`` beside other names, or ``auto`` for an
            architecture without a default.
    """
    from robolora.errors import ConfigError

    flag = "--lora-target-modules"
    listed = f"its linear modules are {', '.join(tree.linear_names())}"
    special = [t for t in given if t.lower() in (AUTO_TARGETS, ALL_LINEAR)]
    if special and len(given) > 1:
        raise ConfigError(f"{flag}: {special[0]} stands alone; pass it by itself, or module names only")
    if special and special[0].lower() == AUTO_TARGETS:
        found = default_targets(tree)
        if found is None:
            raise ConfigError(
                f"{flag}: {model} ({tree.model_type}) has no default LoRA targets; name them ({listed}), "
                f"or pass {ALL_LINEAR}"
            )
        return found
    if special:
        head = tree.output.rsplit(".", 1)[-1] if tree.output else ""
        return [n for n in tree.linear_names() if n != head]
    for target in given:
        if not any(matches(target, m) for m in tree.adaptable):
            raise ConfigError(
                f"{flag}: {target!r} matches no module of {model} ({tree.model_type}); {listed} "
                f"(or pass {ALL_LINEAR}, or {AUTO_TARGETS})"
            )
    return list(dict.fromkeys(given))
