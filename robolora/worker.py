"""The per-worker training loop that Ray Train runs on every worker.

Each worker gets everything through its ``train_loop_config`` (a :class:`RunSpec` as a dict):
it tokenizes the records, loads the model, applies LoRA, builds a DeepSpeed engine from a
``ds_configs`` template, and trains on its share of each global batch from the seeded plan
(:mod:`robolora.sampler`). Rank 0 writes ``metrics.jsonl``, TensorBoard events and the final
adapter; every rank takes part in checkpoints, which are reported to Ray Train.

The loss is normalised by the number of response tokens in the whole global batch (counted across
workers before each step), so the gradient is the same however the batch is split over workers
and micro-steps: a 1-worker and a 2-worker run with the same global batch follow the same curve.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import gc
import json
import logging
import math
import os
import resource
import tempfile
import time
import types
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from robolora import dist
from robolora.checkpoints import newer_than_registered, publish, remove_partials, visible_steps
from robolora.config import TrainConfig, from_dict, parse_step_range
from robolora.data import IGNORE_INDEX, collate, pack_examples, target_count, tokenize_cached
from robolora.ds_config import load_template, resolve
from robolora.fileio import atomic_write_text
from robolora.gpu import DeviceMonitor, live_tensor_mb, process_rss_mb, summarize
from robolora.kernels import (
    training_attention,
    use_fast_dropout,
    use_fused_lora,
    use_fused_norms,
    use_shape_free_attention,
)
from robolora.profiling import StepProfiler
from robolora.progress import METRICS, PROGRESS
from robolora.sampler import plan_epoch, steps_per_epoch, total_steps
from robolora.schedule import lr_factor, warmup_steps_for
from robolora.startup import describe, phases

DS_TAG = "deepspeed"
TRAINER_STATE = "trainer_state.json"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
#: Seconds between metrics-only ``ray.train.report`` calls. Ray Train's controller collects a worker's
#: report when it polls (every 0.5 s as robolora starts Ray, 2 s by Ray's default) and holds one at a
#: time: a second report before that waits for the poll, up to a poll's length a step when logging every
#: step. Log lines and ``metrics.jsonl`` keep every ``--logging-steps``; reports (which feed a sweep's
#: progress lines) are spaced at least this far.
METRICS_REPORT_INTERVAL_S = 4.0


@dataclass
class RunSpec:
    """What the driver resolved before starting the workers (plan, paths, data)."""

    config: dict[str, Any]
    model_path: str
    output_dir: str
    num_workers: int
    zero_stage: int
    offload: str
    use_gpu: bool
    bf16: bool
    train_records: list[dict[str, str]]
    val_records: list[dict[str, str]]
    resume_weights: str | None = None
    threads_per_worker: int | None = None
    #: Ray Train's run directory: checkpoints are persisted there, then published into output_dir.
    checkpoint_root: str | None = None
    #: The driver's wall-clock start-up marks (robolora.startup); the workers add theirs.
    startup: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    #: The run's name among runs side by side (a sweep's variant): its workers' lines start with it.
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- helpers


def memory_mb(device: torch.device) -> float:
    """Peak memory of this worker: device memory on a GPU, the process's peak RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_memory_mb(device: torch.device) -> float:
    """Memory this worker holds now: allocated device memory on a GPU, the process's RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    return process_rss_mb()


def tensor_memory_mb(device: torch.device) -> float:
    """The tensors this worker holds now: on a GPU what ``current_memory_mb`` reads (the allocated device
    memory), on the CPU the live CPU tensors."""
    return current_memory_mb(device) if device.type == "cuda" else live_tensor_mb()


def held_weights_mb(model: torch.nn.Module) -> float:
    """The parameter memory this worker holds: whole tensors, or under ZeRO-3 its shard of each."""
    held = 0
    for p in model.parameters():
        shard = getattr(p, "ds_tensor", None)
        t = shard if shard is not None else p
        held += t.numel() * t.element_size()
    return held / 2**20


#: A build lock older than this was left by a killed build: DeepSpeed's ops compile in about a minute.
STALE_BUILD_LOCK_S = 600.0


def clear_stale_build_locks(root: Path | None = None, max_age_s: float = STALE_BUILD_LOCK_S) -> list[Path]:
    """Remove the lock files of torch extension builds (DeepSpeed's JIT-compiled ops) that a killed
    process left behind; returns them. Every later run would otherwise wait on such a lock forever.

    ``root`` defaults to torch's extensions folder ($TORCH_EXTENSIONS_DIR, else
    ~/.cache/torch_extensions/<python>_<accelerator>/); a lock is ``<root>/<op>/lock``.
    """
    if root is None:
        from torch.utils.cpp_extension import get_default_build_root

        custom = os.environ.get("TORCH_EXTENSIONS_DIR")
        locks = Path(custom).glob("*/lock") if custom else Path(get_default_build_root()).glob("*/*/lock")
    else:
        locks = root.glob("*/lock")
    removed = []
    for lock in locks:
        with contextlib.suppress(FileNotFoundError):  # another worker on this node removed it first
            if time.time() - lock.stat().st_mtime > max_age_s:
                lock.unlink()
                removed.append(lock)
                print(f"removed a stale build lock left by an interrupted build: {lock}", flush=True)
    return removed


#: DeepSpeed ops compiled on first use that training never calls: the shared-memory all-reduce of the
#: CPU accelerator serves tensor-parallel inference only (ZeRO reduces through torch.distributed), and
#: compiling it costs about 35 s, again whenever another environment compiled it last.
UNUSED_OPS = ("deepspeed_shm_comm",)


def skip_unused_ops() -> None:
    """Mark :data:`UNUSED_OPS` incompatible, so DeepSpeed neither compiles nor loads them."""
    import deepspeed.ops

    for name in UNUSED_OPS:
        deepspeed.ops.__compatible_ops__[name] = False


def release_freed_memory() -> None:
    """Give the heap memory freed by the model load (its full-size temporaries) back to the system:
    glibc keeps freed blocks for reuse otherwise, and a worker's resident memory would stay at its peak."""
    gc.collect()
    trim_heap()


def trim_heap() -> None:
    """Return the heap's free pages to the system (glibc's ``malloc_trim``; elsewhere nothing)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def param_groups(named: list[tuple[str, torch.nn.Parameter]], cfg: TrainConfig) -> list[dict[str, Any]]:
    """The trainable parameters as optimizer groups: with LoRA+ the B matrices learn ``ratio`` times faster.

    LoRA+ (Hayou et al., 2024): A and B play different roles, and a larger step for B lets the adapter
    learn faster at the same stability. Without it there is one group.
    """
    ratio = cfg.loraplus_lr_ratio
    if not ratio:
        return [{"params": [p for _, p in named]}]
    b = [p for n, p in named if ".lora_B." in n]
    rest = [p for n, p in named if ".lora_B." not in n]
    return [{"params": rest}, {"params": b, "lr": cfg.learning_rate * ratio}]


def build_optimizer(params: list[dict[str, Any]], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The client optimizer DeepSpeed wraps (ZeRO keeps its fp32 states sharded)."""
    if cfg.optim == "sgd":
        return torch.optim.SGD(params, lr=cfg.learning_rate, momentum=0.9, weight_decay=cfg.weight_decay)
    fused = cfg.optim == "adamw_torch_fused"
    return torch.optim.AdamW(
        params,
        lr=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        fused=fused or None,
        foreach=None if fused else True,
    )


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


def conv1d_targets(model: torch.nn.Module, targets: list[str]) -> bool:
    """Whether the modules LoRA adapts are transformers' ``Conv1D`` layers (GPT-2), whose weights are
    stored as (in, out): PEFT's ``fan_in_fan_out``."""
    from transformers.pytorch_utils import Conv1D

    from robolora.models import matches

    adapted = [m for n, m in model.named_modules() if any(matches(t, n) for t in targets)]
    return bool(adapted) and all(isinstance(m, Conv1D) for m in adapted)


def lora_state_dict(model: Any, zero_stage: int) -> dict[str, torch.Tensor] | None:
    """The adapter's weights on rank 0 (None elsewhere); under ZeRO-3 they are gathered first.

    Every rank must call this: the gather is a collective.
    """
    import deepspeed
    from peft import get_peft_model_state_dict

    trainable = [p for p in model.parameters() if p.requires_grad]
    gather = deepspeed.zero.GatheredParameters(trainable, modifier_rank=None) if zero_stage == 3 else nullcontext()
    with gather:
        if not dist.is_main():
            return None
        state = get_peft_model_state_dict(model)
        return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def _checkpointing(model: Any) -> bool:
    """Whether activation checkpointing is on (the property's name changed in transformers 5)."""
    if hasattr(type(model), "is_activation_checkpointing"):
        return bool(model.is_activation_checkpointing)
    return bool(model.is_gradient_checkpointing)


def save_adapter(model: Any, state: dict[str, torch.Tensor], directory: Path) -> None:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` (rank 0 only)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed, so a reader (or a crash) sees the old adapter or the new one; with the
    # folder's permissions less the execute bits (safetensors makes 0600 files).
    with tempfile.TemporaryDirectory(prefix=".adapter-", dir=directory) as tmp:
        model.peft_config["default"].save_pretrained(tmp)
        save_file(state, str(Path(tmp) / "adapter_model.safetensors"), metadata={"format": "pt"})
        mode = directory.stat().st_mode & 0o666
        for name in ("adapter_model.safetensors", "adapter_config.json"):
            (Path(tmp) / name).chmod(mode)
            (Path(tmp) / name).replace(directory / name)


def load_adapter_weights(model: Any, source: str) -> None:
    """Load LoRA weights (safetensors only) from an adapter or checkpoint directory into a PEFT model."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(str(Path(source) / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(model, state)
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"--resume-from {source}: adapter does not match the model ({result.unexpected_keys[:3]})")


# ----------------------------------------------------------------------------- the loop


class Trainer:
    """One worker's view of the run; built and driven by :func:`train_loop_per_worker`."""

    def __init__(self, spec: RunSpec):
        self.spec = spec
        dist.set_label(spec.label)
        self.cfg = from_dict(spec.config)
        self.rank, self.world = dist.rank(), dist.world_size()
        self.device = torch.device(f"cuda:{torch.cuda.current_device()}") if spec.use_gpu else torch.device("cpu")
        self.out = Path(spec.output_dir)
        self.step = 0
        self.epoch = 0
        self.best_eval = math.inf
        self.evals_without_improvement = 0
        #: Seconds spent training before this attempt (restored from the checkpoint it resumes from).
        self.runtime_before = 0.0
        self.train_start = time.perf_counter()
        self.rows: list[dict[str, Any]] = []
        self.writer: Any = None
        #: The last step each TensorBoard scalar was written at (one value per scalar and step).
        self.tb_steps: dict[str, int] = {}
        self.marks = {**spec.startup, "worker": time.time()}
        # ZeRO-3 gathers and frees each module's weights between activations that live on until the
        # backward pass; on the CPU the freed blocks fragment glibc's heap, and a worker's resident
        # memory grew by about 1 GiB a step for the bundled model. Trimming after each step (some
        # 40 ms) keeps every step's peak at the first one's, where the memory planner puts it.
        self.trim_each_step = not spec.use_gpu and spec.zero_stage == 3
        self.startup: dict[str, float] = {}

    # -- setup

    def setup(self) -> None:
        from robolora.models import cache_dir, load_tokenizer

        if self.spec.threads_per_worker:
            torch.set_num_threads(self.spec.threads_per_worker)
        clear_stale_build_locks()  # before DeepSpeed compiles or loads its ops
        skip_unused_ops()
        use_shape_free_attention()
        self.monitor = DeviceMonitor(self.device.index if self.device.type == "cuda" else None)
        if self.monitor.note:
            dist.print0(f"device monitoring: {self.monitor.note}")
        torch.manual_seed(self.cfg.seed)
        self.tokenizer = load_tokenizer(self.spec.model_path, trust_remote_code=self.cfg.trust_remote_code)
        # Tokenized examples are cached: a rerun on the same data and tokenizer reads them back.
        cache = cache_dir() / "tokenized"
        self.train_ds, self.train_report = tokenize_cached(
            self.spec.train_records, self.tokenizer, self.cfg.max_length, cache
        )
        self.val_ds, self.val_report = tokenize_cached(
            self.spec.val_records, self.tokenizer, self.cfg.max_length, cache
        )
        self.marks["data"] = time.time()
        # The libraries the model load needs come first (some 45 MB of code and module state on the
        # CPU), so that the model memory measured from here counts the model alone.
        import deepspeed  # noqa: F401
        import peft  # noqa: F401
        import transformers.modeling_utils  # noqa: F401

        self.memory = {
            "before_model_mb": current_memory_mb(self.device),
            "before_model_tensors_mb": tensor_memory_mb(self.device),
        }
        dist.print0(self.train_report.describe("train", self.cfg.max_length))
        dist.print0(self.val_report.describe("validation", self.cfg.max_length))
        self.train_lengths = list(self.train_ds["length"])
        # Plain rows for the DataLoader, and the response tokens of each example (what the loss averages over).
        self.train_rows = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in self.train_ds]
        if self.cfg.packing:
            self.train_rows = pack_examples(self.train_rows, self.cfg.max_length)
            self.train_lengths = [len(r["input_ids"]) for r in self.train_rows]
            full = sum(self.train_lengths) / (len(self.train_rows) * self.cfg.max_length)
            dist.print0(
                f"packing: {len(self.train_ds)} examples into {len(self.train_rows)} rows of up to "
                f"{self.cfg.max_length} tokens ({full:.1%} full)"
            )
        self.train_label_counts = [target_count(r["labels"]) for r in self.train_rows]
        self.global_batch = self.cfg.global_batch_size(self.world)
        self.steps_per_epoch = steps_per_epoch(len(self.train_lengths), self.global_batch)
        if self.steps_per_epoch == 0:
            unit = "packed rows" if self.cfg.packing else "training examples"
            raise ValueError(f"{len(self.train_lengths)} {unit} make no global batch of {self.global_batch}")
        # --max-steps overrides --num-epochs, as in Hugging Face's Trainer: train() goes on into further epochs.
        self.total_steps = total_steps(self.steps_per_epoch, self.cfg.num_epochs, self.cfg.max_steps)
        window = parse_step_range(self.cfg.profile_steps) if dist.is_main() else None
        self.profiler = StepProfiler(window, self.out, self.device)
        self._build_engine()

    def _build_engine(self) -> None:
        import deepspeed
        from peft import LoraConfig, get_peft_model
        from transformers import AutoConfig

        from robolora.models import load_model, resolve_model

        dtype = torch.bfloat16 if self.spec.bf16 else torch.float32
        model_config = AutoConfig.from_pretrained(
            resolve_model(self.spec.model_path), trust_remote_code=self.cfg.trust_remote_code
        )
        # In bf16 mode DeepSpeed casts the module to bf16 and keeps fp32 master copies of the LoRA
        # weights in the (sharded) optimizer, so updates do not lose precision.
        ds_config = resolve(
            load_template(self.spec.zero_stage, self.spec.offload),
            micro_batch=self.cfg.batch_size,
            grad_accum=self.cfg.gradient_accumulation_steps,
            world_size=self.world,
            bf16=self.spec.bf16,
            grad_clip=self.cfg.max_grad_norm,
            hidden_size=getattr(model_config, "hidden_size", None),
            pin_memory=self.spec.use_gpu,
        )
        # Our client optimizer also serves offloaded states (DeepSpeed would insist on its CPU Adam),
        # and ZeRO shards SGD's states like Adam's (DeepSpeed only lists Adam variants as tested).
        ds_config["zero_force_ds_cpu_optimizer"] = False
        ds_config["zero_allow_untested_optimizer"] = True
        if self.spec.zero_stage == 3:
            # While this object lives, transformers builds the model inside deepspeed.zero.Init and
            # loads each weight into its shard: no worker ever holds the whole frozen model.
            from deepspeed.accelerator import get_accelerator
            from transformers.integrations import HfDeepSpeedConfig

            # DeepSpeed's view of the process group Ray Train started (deepspeed.initialize does the same)
            deepspeed.comm.init_distributed(
                dist_backend=get_accelerator().communication_backend_name(), dist_init_required=False
            )
            self._zero3_loading = HfDeepSpeedConfig(ds_config)
        model = load_model(
            self.spec.model_path,
            dtype=dtype,
            trust_remote_code=self.cfg.trust_remote_code,
            attention=training_attention(self.spec.use_gpu),
        )
        model.config.use_cache = False
        if self.cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        torch.manual_seed(self.cfg.seed)  # identical LoRA initialisation on every rank
        targets = self.cfg.target_modules()  # resolved for the model by the driver (robolora.models.resolve_targets)
        lora = LoraConfig(
            r=self.cfg.lora_r,
            lora_alpha=self.cfg.lora_alpha,
            lora_dropout=self.cfg.lora_dropout,
            target_modules=targets,
            # GPT-2's Conv1D layers keep their weight as (in, out): PEFT must know to merge and save it so.
            fan_in_fan_out=conv1d_targets(model, targets),
            layers_to_transform=self.cfg.lora_layer_indices(model.config.num_hidden_layers),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
        if self.spec.use_gpu:
            use_fused_norms(model)
        else:
            use_fast_dropout(model)
        use_fused_lora(model)
        if self.spec.resume_weights:
            load_adapter_weights(model, self.spec.resume_weights)
        self.marks["model"] = time.time()
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if self.spec.zero_stage == 3:
            # The adapters were created after the sharded load, in PEFT's float32; DeepSpeed casts a
            # module it builds whole (ZeRO-2), not one already sharded: the same dtype either way.
            for _, p in named:
                p.data = p.data.to(dtype)
        params = [p for _, p in named]
        self.trainable = sum(p.numel() for p in params)
        total = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())  # ZeRO-3 shards: their full size
        optimizer = build_optimizer(param_groups(named, self.cfg), self.cfg)
        self.optimizer_name = type(optimizer).__name__
        warmup = warmup_steps_for(self.total_steps, self.cfg.warmup_ratio)

        def schedule(opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
            def factor(step: int) -> float:
                return lr_factor(
                    step, total_steps=self.total_steps, warmup_steps=warmup, kind=self.cfg.lr_scheduler_type
                )

            return torch.optim.lr_scheduler.LambdaLR(opt, factor)

        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=TargetLogitsLM(model),
            optimizer=optimizer,
            lr_scheduler=schedule,
            config=ds_config,
            dist_init_required=False,
        )
        self.model = model
        self.marks["engine"] = time.time()
        release_freed_memory()
        # What the model costs this worker once DeepSpeed holds it (ZeRO-3 keeps a shard of the weights)
        self.memory["engine_mb"] = current_memory_mb(self.device)
        self.memory["model_mb"] = self.memory["engine_mb"] - self.memory["before_model_mb"]
        # The same without what does not shard (libraries' state, Python objects, free pages): the tensors alone
        self.memory["model_tensors_mb"] = tensor_memory_mb(self.device) - self.memory["before_model_tensors_mb"]
        self.memory["weights_mb"] = held_weights_mb(model)
        dist.print0(
            f"model: {total / 1e6:.1f}M parameters, "
            f"{self.trainable / 1e6:.2f}M trainable; ZeRO-{self.spec.zero_stage}, offload {self.spec.offload}, "
            f"{'bf16' if self.spec.bf16 else 'fp32'}, {self.world} workers x micro-batch {self.cfg.batch_size} x "
            f"accumulation {self.cfg.gradient_accumulation_steps} = global batch {self.global_batch}; "
            f"{self.total_steps} steps ({self.steps_per_epoch} per epoch)"
        )

    # -- checkpoints

    def restore(self) -> None:
        """Continue from the run's last checkpoint, if any: the newest one Ray Train registered, or a newer
        one published in the output directory (see :meth:`_published_checkpoint`)."""
        import ray.train

        if dist.is_main():
            remove_partials(self.out)
        checkpoint = ray.train.get_checkpoint()
        published = self._published_checkpoint(checkpoint)
        if published is not None:
            self._load_checkpoint(published)
            source = str(published)
        elif checkpoint is not None:
            with checkpoint.as_directory() as d:
                self._load_checkpoint(Path(d))
            source = checkpoint.path
        else:
            if dist.is_main():
                (self.out / METRICS).unlink(missing_ok=True)
            return
        if dist.is_main():
            self._truncate_metrics(self.step)
        dist.print0(f"resumed from {source} at step {self.step}")

    def _published_checkpoint(self, registered: Any) -> Path | None:
        """The newest checkpoint in the output directory if Ray Train has not registered it.

        Ray Train's controller registers a reported checkpoint when it next polls the workers (every 2 s
        by default); a run stopped in between has published the checkpoint (all of it persisted) but
        Ray Train would resume from the one before. Its files are read from Ray's storage, which every
        node reaches; if any worker cannot read them, the registered one is used.
        """
        if not self.spec.checkpoint_root:
            return None
        visible = visible_steps(self.out) if dist.is_main() else []
        name = Path(registered.path).name if registered is not None else None
        newest = dist.broadcast_object(newer_than_registered(visible, name))
        if newest is None:
            return None
        folder = Path(self.spec.checkpoint_root) / f"checkpoint-{newest}"
        (readable,) = dist.all_reduce([float((folder / DS_TAG).is_dir())], self.device)
        return folder if readable == self.world else None

    def _load_checkpoint(self, d: Path) -> None:
        """Engine, optimizer, scheduler, random state and loop counters from the checkpoint folder ``d``."""
        self.engine.load_checkpoint(
            str(d), tag=DS_TAG, load_module_strict=False, load_optimizer_states=True, load_lr_scheduler_states=True
        )
        state = json.loads((d / TRAINER_STATE).read_text())
        rng = d / f"rng_rank{self.rank}.safetensors"
        if rng.is_file():  # dropout continues where it stopped
            from safetensors.torch import load_file

            states = load_file(str(rng))
            torch.set_rng_state(states["cpu"])
            if "cuda" in states and self.device.type == "cuda":
                torch.cuda.set_rng_state(states["cuda"], self.device)
        self.step, self.epoch = state["step"], state["epoch"]
        self.best_eval = state.get("best_eval", math.inf)
        self.evals_without_improvement = state.get("evals_without_improvement", 0)
        self.runtime_before = float(state.get("train_runtime_s", 0.0))

    def _truncate_metrics(self, step: int) -> None:
        path = self.out / METRICS
        if path.is_file():
            keep = []
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if row.get("step", 0) <= step:
                    keep.append(line)
            atomic_write_text(path, "".join(k + "\n" for k in keep))

    def save_checkpoint(self, metrics: dict[str, Any]) -> None:
        """Every rank writes its DeepSpeed shard; rank 0 adds the adapter and trainer state; Ray persists
        the merged directory in its storage; once every rank has, rank 0 publishes it whole as
        ``<output_dir>/checkpoint-<step>``."""
        import ray.train
        from safetensors.torch import save_file

        adapter = lora_state_dict(self.model, self.spec.zero_stage)
        with tempfile.TemporaryDirectory(prefix="robolora-ckpt-") as tmp:
            d = Path(tmp)
            state = {
                "step": self.step,
                "epoch": self.epoch,
                "best_eval": self.best_eval,
                "evals_without_improvement": self.evals_without_improvement,
                "train_runtime_s": self.runtime_so_far(),
            }
            self.engine.save_checkpoint(tmp, tag=DS_TAG, client_state=state, exclude_frozen_parameters=True)
            rng = {"cpu": torch.get_rng_state()}
            if self.device.type == "cuda":
                rng["cuda"] = torch.cuda.get_rng_state(self.device)
            save_file(rng, str(d / f"rng_rank{self.rank}.safetensors"))
            if adapter is not None:
                save_adapter(self.model, adapter, d)
                (d / TRAINER_STATE).write_text(json.dumps(state, indent=2))
            ray.train.report(
                metrics,
                checkpoint=ray.train.Checkpoint.from_directory(tmp),
                checkpoint_dir_name=f"checkpoint-{self.step}",
            )
        dist.barrier()  # every rank's part is persisted
        if dist.is_main() and self.spec.checkpoint_root:
            publish(
                Path(self.spec.checkpoint_root) / f"checkpoint-{self.step}",
                self.out,
                self.step,
                keep=self.cfg.save_total_limit,
            )

    # -- evaluation

    def evaluate(self) -> float:
        """Mean response-token loss over the whole validation set, sharded across workers."""
        if len(self.val_ds) == 0:
            return math.nan
        self.engine.eval()
        order = sorted(range(len(self.val_ds)), key=lambda i: self.val_ds[i]["length"])
        bs = self.cfg.batch_size
        batches = [order[i : i + bs] for i in range(0, len(order), bs)]
        # Every rank runs the same number of forward passes (ZeRO-3 gathers weights collectively);
        # a rank short of batches repeats one with all labels ignored, which adds nothing.
        per_rank = math.ceil(len(batches) / self.world)
        loss_sum = tokens = 0.0
        with torch.no_grad():
            for k in range(per_rank):
                idx = k * self.world + self.rank
                rows = [self.val_ds[i] for i in batches[idx if idx < len(batches) else 0]]
                batch = collate(rows, self.tokenizer.pad_token_id)
                if idx >= len(batches):
                    batch["labels"] = [[IGNORE_INDEX] * len(r) for r in batch["labels"]]
                n = sum(target_count(r) for r in batch["labels"])
                tensors = model_inputs(batch)
                out = self.engine(**{k: v.to(self.device) for k, v in tensors.items()}, num_items_in_batch=1)
                loss_sum += out.loss.float().item() if n else 0.0
                tokens += n
        self.engine.train()
        total, count = dist.all_reduce([loss_sum, tokens], self.device)
        return total / max(count, 1)

    # -- logging

    def log(self, row: dict[str, Any]) -> None:
        """Rank 0: one row to metrics.jsonl (the driver prints it) and scalars to TensorBoard."""
        if not dist.is_main():
            return
        row = {**row, "time": round(time.time(), 3)}  # wall clock: when it was logged (runs side by side)
        self.rows.append(row)
        with open(self.out / METRICS, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # This attempt's first row: an earlier attempt (interrupted, or a worker group Ray Train restarted)
            # may have logged this step and later ones before it stopped; the new event file starts by purging
            # them, so that TensorBoard keeps one value per step, as metrics.jsonl does after its truncation.
            self.writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=row["step"])
        step = row["step"]
        scalars = {
            key: value
            for key, value in row.items()
            if key not in ("step", "time") and isinstance(value, (int, float)) and math.isfinite(value)
        }
        for rank, sample in enumerate(row.get("devices", [])):
            scalars.update({f"device/rank{rank}/{key}": value for key, value in sample.items()})
        for tag, value in scalars.items():
            if self.tb_steps.get(tag, 0) < step:  # an evaluation row repeats its step's epoch: written once
                self.writer.add_scalar(tag, value, step)
                self.tb_steps[tag] = step
        self.writer.flush()

    def progress(self) -> None:
        """Rank 0: the step counter the driver's progress bar follows (a tiny file, replaced whole)."""
        if dist.is_main():
            tmp = self.out / (PROGRESS + ".tmp")
            tmp.write_text(json.dumps({"step": self.step, "total_steps": self.total_steps, "epoch": self.epoch}))
            tmp.replace(self.out / PROGRESS)

    # -- training

    def runtime_so_far(self) -> float:
        """Seconds spent training over every attempt of the run, up to now."""
        return self.runtime_before + time.perf_counter() - self.train_start

    def train(self) -> dict[str, Any]:
        cfg = self.cfg
        self.engine.train()
        self.train_start = time.perf_counter()
        interval = {"loss": 0.0, "tokens": 0.0, "seen": 0.0, "padded": 0.0, "t": time.perf_counter()}
        self.last_report = time.perf_counter()
        last: dict[str, Any] = {}
        stop = self.step >= self.total_steps
        while not stop:
            plan = plan_epoch(
                self.train_lengths,
                micro_batch=cfg.batch_size,
                grad_accum=cfg.gradient_accumulation_steps,
                world_size=self.world,
                seed=cfg.seed,
                epoch=self.epoch,
                group_by_length=cfg.group_by_length,
            )
            steps = plan[self.step - self.epoch * self.steps_per_epoch :]
            batches = iter(self._loader([micro for step in steps for micro in step[self.rank]]))
            for step_plan in steps:
                self.profiler.before(self.step + 1)
                mine = [i for micro in step_plan[self.rank] for i in micro]
                local_items = sum(self.train_label_counts[i] for i in mine)
                local_seen = sum(self.train_lengths[i] for i in mine)
                local_padded = sum(max(self.train_lengths[i] for i in m) * len(m) for m in step_plan[self.rank])
                # Every rank holds the whole plan and every example's target count: the global batch's
                # count needs no collective (which would make each step wait for the slowest rank twice).
                global_items = sum(self.train_label_counts[i] for rank in step_plan for m in rank for i in m)
                scale = global_items / (self.world * cfg.gradient_accumulation_steps)
                for _ in range(cfg.gradient_accumulation_steps):
                    batch = next(batches)
                    out = self.engine(
                        **{k: v.to(self.device, non_blocking=True) for k, v in batch.items()}, num_items_in_batch=scale
                    )
                    self.engine.backward(out.loss)
                    self.engine.step()
                    # out.loss is this micro-batch's summed token loss / scale; kept as a tensor so
                    # the hot loop does not wait on the device until the next log line.
                    interval["loss"] = interval["loss"] + out.loss.detach().float() * scale
                self.step += 1
                if self.trim_each_step:
                    trim_heap()
                self.profiler.after(self.step)
                if not self.startup and "start" in self.marks:
                    self.marks["first_step"] = time.time()
                    self.startup = phases(self.marks)
                    dist.print0(describe(self.marks))
                self.progress()
                interval["tokens"] += local_items
                interval["seen"] += local_seen
                interval["padded"] += local_padded
                row, report = self._maybe_log(interval)
                if row:
                    last.update(row)
                stop, paused = self._after_step(last, report)
                # tokens/s measures training alone: evaluation and checkpoint time are left out
                interval["t"] += paused
                if stop:
                    break
            else:
                self.epoch += 1
        return last

    def _loader(self, micro_batches: list[list[int]]) -> torch.utils.data.DataLoader:
        """This rank's micro-batches, in order, collated to tensors by --dataloader-num-workers processes."""
        pad_id = self.tokenizer.pad_token_id

        def collate_tensors(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
            return model_inputs(collate(rows, pad_id))  # to the device in the loop

        return torch.utils.data.DataLoader(
            self.train_rows,
            batch_sampler=micro_batches,
            collate_fn=collate_tensors,
            num_workers=self.cfg.dataloader_num_workers,
            # Pinned batches copy asynchronously; from pageable memory each copy first waits for the device.
            pin_memory=self.device.type == "cuda" and self.cfg.dataloader_pin_memory is not False,
            # Each new iterator draws a seed for the loader's processes: from the default generator, that
            # draw would shift dropout's random numbers, and a resumed run (whose loader starts mid-epoch,
            # after the random state is restored) would leave the unbroken run's curve.
            generator=torch.Generator().manual_seed(self.cfg.seed),
        )

    def _epoch_float(self) -> float:
        return round(self.step / max(1, self.steps_per_epoch), 4)

    def _maybe_log(self, interval: dict[str, float]) -> tuple[dict[str, Any] | None, bool]:
        """The log row if this step logs one (None otherwise), and whether a metrics report to Ray is due."""
        if self.step % self.cfg.logging_steps and self.step != self.total_steps:
            return None, False
        loss = float(interval["loss"])
        loss_sum, tokens, seen, padded = dist.all_reduce(
            [loss, interval["tokens"], interval["seen"], interval["padded"]], self.device
        )
        # The largest time since a rank's last report: every rank decides alike (a report is a barrier).
        mem, since_report = dist.all_reduce(
            [memory_mb(self.device), time.perf_counter() - self.last_report], self.device, op="max"
        )
        elapsed = time.perf_counter() - interval["t"]
        row = {
            "step": self.step,
            "epoch": self._epoch_float(),
            "train_loss": loss_sum / max(tokens, 1),
            "learning_rate": self.scheduler.get_last_lr()[0],
            "tokens_per_s": seen / max(elapsed, 1e-9),
            "padding_efficiency": seen / max(padded, 1),
            "memory_mb": mem,
            **summarize(dist.gather_objects(self.monitor.sample())),
        }
        self.log(row)
        interval.update(loss=0.0, tokens=0.0, seen=0.0, padded=0.0, t=time.perf_counter())
        return row, since_report >= METRICS_REPORT_INTERVAL_S

    def _after_step(self, last: dict[str, Any], report: bool) -> tuple[bool, float]:
        """Evaluate, checkpoint, report metrics if ``report``; returns whether to stop and the seconds spent
        evaluating and checkpointing."""
        import ray.train

        done = self.step >= self.total_steps
        stop_early = False
        start = time.perf_counter()
        if (self.step % self.cfg.eval_steps == 0 or done) and len(self.val_ds):
            eval_loss = self.evaluate()
            last["eval_loss"] = eval_loss
            self.log({"step": self.step, "epoch": self._epoch_float(), "eval_loss": eval_loss})
            if eval_loss < self.best_eval - 1e-4:
                self.best_eval, self.evals_without_improvement = eval_loss, 0
            else:
                self.evals_without_improvement += 1
            patience = self.cfg.early_stopping_patience
            stop_early = bool(patience) and self.evals_without_improvement >= patience
            if stop_early and not done:
                dist.print0(
                    f"early stopping: no eval improvement in {patience} evaluations (best {self.best_eval:.4f})"
                )
        metrics = {k: v for k, v in last.items() if isinstance(v, (int, float))} | {"step": self.step}
        checkpoint = self.step % self.cfg.save_steps == 0 or done or stop_early
        if checkpoint:
            self.save_checkpoint(metrics)  # reports the metrics with the checkpoint
        paused = time.perf_counter() - start
        if report and not checkpoint:
            ray.train.report(metrics)
        if report or checkpoint:
            self.last_report = time.perf_counter()
        return done or stop_early, paused

    def finish(self, last: dict[str, Any]) -> None:
        """Rank 0 writes the final adapter, the tokenizer and the run's summary into the output directory.

        The summary's losses and steps come from the whole ``metrics.jsonl`` (every attempt of a resumed
        run), its runtime from every attempt's training time, never from this attempt's last log row alone.
        """
        from robolora.report import read_metrics, run_summary

        memory = dist.gather_objects({**self.memory, "peak_mb": memory_mb(self.device)})
        adapter = lora_state_dict(self.model, self.spec.zero_stage)
        if adapter is not None:
            save_adapter(self.model, adapter, self.out)
            self.tokenizer.save_pretrained(str(self.out))
            summary = {
                **run_summary(read_metrics(self.out / METRICS)),
                "train_runtime_s": round(self.runtime_so_far(), 3),
                "steps": self.step,
                "total_steps": self.total_steps,
                "trainable_params": self.trainable,
                "optimizer": self.optimizer_name,
                "precision": "bf16" if self.spec.bf16 else "fp32",
                "device": self.device.type,
                "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
                "gradient_checkpointing": _checkpointing(self.model.get_base_model()),
                "train_examples": len(self.train_ds),
                "packed_rows": len(self.train_rows) if self.cfg.packing else None,
                "max_tokens": self.train_report.max_tokens,
                "truncated_prompts": self.train_report.truncated,
                "dropped_records": self.train_report.dropped,
                "startup_s": self.startup,
                "memory_per_worker": memory,
            }
            atomic_write_text(self.out / "train_summary.json", json.dumps(summary, indent=2))
        if self.writer is not None:
            self.writer.close()
        dist.barrier()


def _quiet_ray_train_reports() -> None:
    """Ray Train logs every report at INFO, under a logger named after its source file; the driver
    already shows progress from metrics.jsonl, so keep only its warnings."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray layout: its report lines stay
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def run_worker(config: dict[str, Any]) -> Trainer:
    """Set up, resume, train and save on this worker; returns the trainer (its engine still live)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _quiet_ray_train_reports()
    trainer = Trainer(RunSpec(**config))
    trainer.setup()
    trainer.restore()
    last = trainer.train()
    trainer.finish(last)
    return trainer


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: ``config`` is a :class:`RunSpec` as a dict."""
    run_worker(config)
