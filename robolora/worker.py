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

import dataclasses
import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from robolora import dist
from robolora.checkpoints import (
    DS_TAG,
    lora_state_dict,
    newer_than_registered,
    publish,
    read_checkpoint,
    remove_partials,
    save_adapter,
    visible_steps,
    write_checkpoint,
)
from robolora.config import TrainConfig, from_dict, parse_step_range
from robolora.data import IGNORE_INDEX, collate, pack_examples, target_count, tokenize_cached
from robolora.engine import (
    activation_checkpointing,
    apply_lora,
    deepspeed_config,
    initialize_engine,
    load_base_model,
    total_params,
    trainable_params,
)
from robolora.fileio import atomic_write_text
from robolora.gpu import (
    DeviceMonitor,
    current_memory_mb,
    held_weights_mb,
    memory_mb,
    release_freed_memory,
    summarize,
    tensor_memory_mb,
    trim_heap,
)
from robolora.loss import Emphasis, model_inputs
from robolora.metrics_log import MetricsLog
from robolora.profiling import StepProfiler
from robolora.progress import METRICS
from robolora.sampler import plan_epoch, steps_per_epoch, total_steps
from robolora.startup import describe, phases
from robolora.storage import filesystem, is_dir, is_uri, join, location

#: Seconds between metrics-only ``ray.train.report`` calls. Ray Train's controller collects a worker's
#: report when it polls (every 0.5 s as robolora starts Ray, 2 s by Ray's default) and holds one at a
#: time: a second report before that waits for the poll, up to a poll's length a step when logging every
#: step. Log lines and ``metrics.jsonl`` keep every ``--logging-steps``; reports (which feed a sweep's
#: progress lines) are spaced at least this far.
METRICS_REPORT_INTERVAL_S = 4.0
#: The settings the driver resolves before the workers start (``launcher.run_training`` writes the plan's
#: choices into the config); a worker never guesses them.
RESOLVED_FIELDS = ("use_gpu", "bf16", "zero_stage", "offload")


@dataclass
class RunSpec:
    """What a worker gets besides the resolved config: where to write, the data, and the run's context."""

    #: The resolved TrainConfig as a dict: the plan's choices written in, every local path absolute.
    config: dict[str, Any]
    output_dir: str
    train_records: list[dict[str, str]]
    val_records: list[dict[str, str]]
    #: Ray Train's run directory: checkpoints are persisted there, then published into output_dir.
    checkpoint_root: str | None = None
    #: The driver's wall-clock start-up marks (robolora.startup); the workers add theirs.
    startup: dict[str, float] = field(default_factory=dict)
    #: The run's name among runs side by side (a sweep's variant): its workers' lines start with it.
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def resolved(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` if the driver resolved every setting of :data:`RESOLVED_FIELDS`; else a ValueError naming them.

    >>> resolved(TrainConfig(use_gpu=False, bf16=False, zero_stage=2, offload="none")).zero_stage
    2
    >>> resolved(TrainConfig(use_gpu=False, zero_stage=2))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: the worker's config leaves bf16, offload unresolved: ...
    """
    missing = [name for name in RESOLVED_FIELDS if getattr(cfg, name) is None]
    if missing:
        raise ValueError(
            f"the worker's config leaves {', '.join(missing)} unresolved: the driver "
            "(robolora.launcher.run_training) writes the plan's choices into it"
        )
    return cfg


# ----------------------------------------------------------------------------- the loop


class Trainer:
    """One worker's view of the run; built and driven by :func:`train_loop_per_worker`."""

    def __init__(self, spec: RunSpec):
        self.spec = spec
        self.cfg = resolved(from_dict(spec.config))
        self.rank, self.world = dist.rank(), dist.world_size()
        self.device = torch.device(f"cuda:{torch.cuda.current_device()}") if self.cfg.use_gpu else torch.device("cpu")
        self.out = Path(spec.output_dir)
        self.step = 0
        self.epoch = 0
        self.best_eval = math.inf
        self.evals_without_improvement = 0
        #: Seconds spent training before this attempt (restored from the checkpoint it resumes from).
        self.runtime_before = 0.0
        self.train_start = time.perf_counter()
        self.metrics = MetricsLog(self.out)
        self.marks = {**spec.startup, "worker": time.time()}
        # ZeRO-3 gathers and frees each module's weights between activations that live on until the
        # backward pass; on the CPU the freed blocks fragment glibc's heap, and a worker's resident
        # memory grew by about 1 GiB a step for the bundled model. Trimming after each step (some
        # 40 ms) keeps every step's peak at the first one's, where the memory planner puts it.
        self.trim_each_step = not self.cfg.use_gpu and self.cfg.zero_stage == 3
        self.startup: dict[str, float] = {}

    # -- setup

    def setup(self) -> None:
        """The worker's process set-up, its data, its step plan and its DeepSpeed engine."""
        # A CPU worker uses the CPUs reserved for it; a GPU worker keeps torch's default threads.
        threads = None if self.cfg.use_gpu else self.cfg.cpus_per_worker
        dist.init_worker(self.spec.label, seed=self.cfg.seed, threads=threads)
        self.monitor = DeviceMonitor(self.device.index if self.device.type == "cuda" else None)
        if self.monitor.note:
            dist.print0(f"device monitoring: {self.monitor.note}")
        self._tokenize()
        self._measure_before_model()
        self._prepare_rows()
        self._count_steps()
        window = parse_step_range(self.cfg.profile_steps) if dist.is_main() else None
        self.profiler = StepProfiler(window, self.out, self.device)
        self._build_engine()

    def _tokenize(self) -> None:
        """The tokenizer and the tokenized training and validation examples."""
        from robolora.models import cache_dir, load_tokenizer

        self.tokenizer = load_tokenizer(self.cfg.model_name, trust_remote_code=self.cfg.trust_remote_code)
        # Tokenized examples are cached: a rerun on the same data and tokenizer reads them back.
        cache = cache_dir() / "tokenized"
        self.train_ds, self.train_report = tokenize_cached(
            self.spec.train_records, self.tokenizer, self.cfg.max_length, cache
        )
        self.val_ds, self.val_report = tokenize_cached(
            self.spec.val_records, self.tokenizer, self.cfg.max_length, cache
        )
        self.marks["data"] = time.time()

    def _measure_before_model(self) -> None:
        """The memory this worker holds before the model: what the model then adds is measured from here."""
        # The libraries the model load needs come first (some 45 MB of code and module state on the
        # CPU), so that the model memory measured from here counts the model alone.
        import deepspeed  # noqa: F401
        import peft  # noqa: F401
        import transformers.modeling_utils  # noqa: F401

        self.memory = {
            "before_model_mb": current_memory_mb(self.device),
            "before_model_tensors_mb": tensor_memory_mb(self.device),
        }

    def _prepare_rows(self) -> None:
        """The training rows the DataLoader serves (packed if --packing), their lengths and target counts."""
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
        # What the loss divides by: the targets, the structure's counted --structure-weight times.
        self.emphasis = Emphasis.structure(self.tokenizer, self.cfg.structure_weight)
        self.train_label_weights = (
            [self.emphasis.count(r["labels"]) for r in self.train_rows] if self.emphasis else self.train_label_counts
        )

    def _count_steps(self) -> None:
        """The global batch, the steps per epoch and the run's steps."""
        self.global_batch = self.cfg.global_batch_size(self.world)
        self.steps_per_epoch = steps_per_epoch(len(self.train_lengths), self.global_batch)
        if self.steps_per_epoch == 0:
            unit = "packed rows" if self.cfg.packing else "training examples"
            raise ValueError(f"{len(self.train_lengths)} {unit} make no global batch of {self.global_batch}")
        # --max-steps overrides --num-epochs, as in Hugging Face's Trainer: train() goes on into further epochs.
        self.total_steps = total_steps(self.steps_per_epoch, self.cfg.num_epochs, self.cfg.max_steps)

    def _build_engine(self) -> None:
        """The model loaded (sharded under ZeRO-3), LoRA applied, and the DeepSpeed engine built around it."""
        from transformers import AutoConfig

        from robolora.models import resolve_model

        dtype = torch.bfloat16 if self.cfg.bf16 else torch.float32
        model_config = AutoConfig.from_pretrained(
            resolve_model(self.cfg.model_name), trust_remote_code=self.cfg.trust_remote_code
        )
        ds_config = deepspeed_config(self.cfg, self.world, getattr(model_config, "hidden_size", None))
        if self.rank == 0:  # what DeepSpeed runs with: the template (or --deepspeed file) resolved
            atomic_write_text(self.out / "ds_config.json", json.dumps(ds_config, indent=2))
        model, self._zero3_loading = load_base_model(self.cfg, ds_config, dtype)
        model = apply_lora(model, self.cfg)
        self.marks["model"] = time.time()
        self.trainable, total = trainable_params(model), total_params(model)
        self.engine, self.scheduler, optimizer = initialize_engine(model, self.cfg, ds_config, dtype, self.total_steps)
        self.optimizer_name = type(optimizer).__name__
        self.model = model
        self.marks["engine"] = time.time()
        self._measure_model(model)
        dist.print0(
            f"model: {total / 1e6:.1f}M parameters, "
            f"{self.trainable / 1e6:.2f}M trainable; ZeRO-{self.cfg.zero_stage}, offload {self.cfg.offload}, "
            f"{'bf16' if self.cfg.bf16 else 'fp32'}, {self.world} workers x micro-batch {self.cfg.batch_size} x "
            f"accumulation {self.cfg.gradient_accumulation_steps} = global batch {self.global_batch}; "
            f"{self.total_steps} steps ({self.steps_per_epoch} per epoch)"
        )

    def _measure_model(self, model: Any) -> None:
        """What the model costs this worker once DeepSpeed holds it (ZeRO-3 keeps a shard of the weights)."""
        release_freed_memory()
        self.memory["engine_mb"] = current_memory_mb(self.device)
        self.memory["model_mb"] = self.memory["engine_mb"] - self.memory["before_model_mb"]
        # The same without what does not shard (libraries' state, Python objects, free pages): the tensors alone
        self.memory["model_tensors_mb"] = tensor_memory_mb(self.device) - self.memory["before_model_tensors_mb"]
        self.memory["weights_mb"] = held_weights_mb(model)

    # -- checkpoints

    def restore(self) -> None:
        """Continue from the run's last checkpoint, if any: the newest one Ray Train registered, or a newer
        one published in the output directory (see :meth:`_published_checkpoint`)."""
        import ray.train

        if dist.is_main():
            remove_partials(self.out)
        registered = ray.train.get_checkpoint()
        checkpoint = self._published_checkpoint(registered) or registered
        if checkpoint is None:
            if dist.is_main():
                self.metrics.clear()
            return
        # A local folder is read in place; one in a bucket is downloaded first (each rank reads its shard).
        with checkpoint.as_directory() as d:
            self._load_checkpoint(Path(d))
        source = location(checkpoint.filesystem, checkpoint.path)
        if dist.is_main():
            self.metrics.truncate(self.step)
        dist.print0(f"resumed from {source} at step {self.step}")

    def _published_checkpoint(self, registered: Any) -> Any:
        """The newest checkpoint in the output directory if Ray Train has not registered it.

        Ray Train's controller registers a reported checkpoint when it next polls the workers (every 2 s
        by default); a run stopped in between has published the checkpoint (all of it persisted) but
        Ray Train would resume from the one before. Its files are read from Ray's storage (a shared folder
        or a bucket), which every node reaches; if any worker cannot read them, the registered one is used.
        """
        import ray.train

        root = self.spec.checkpoint_root
        if not root:
            return None
        visible = visible_steps(self.out) if dist.is_main() else []
        name = Path(registered.path).name if registered is not None else None
        newest = dist.broadcast_object(newer_than_registered(visible, name))
        if newest is None:
            return None
        folder = join(root, f"checkpoint-{newest}")
        (readable,) = dist.all_reduce([float(is_dir(join(folder, DS_TAG)))], self.device)
        if readable < self.world:
            return None
        if not is_uri(folder):
            return ray.train.Checkpoint(folder)
        fs, path = filesystem(folder)
        return ray.train.Checkpoint(path, filesystem=fs)

    def _load_checkpoint(self, d: Path) -> None:
        """Engine, optimizer, scheduler, random state and loop counters from the checkpoint folder ``d``."""
        state = read_checkpoint(d, self.engine, self.rank, self.device)
        self.step, self.epoch = state["step"], state["epoch"]
        self.best_eval = state.get("best_eval", math.inf)
        self.evals_without_improvement = state.get("evals_without_improvement", 0)
        self.runtime_before = float(state.get("train_runtime_s", 0.0))

    def save_checkpoint(self, metrics: dict[str, Any]) -> None:
        """Every rank writes its DeepSpeed shard; rank 0 adds the adapter and trainer state; Ray persists
        the merged directory in its storage; once every rank has, rank 0 publishes it whole as
        ``<output_dir>/checkpoint-<step>``."""
        import ray.train

        adapter = lora_state_dict(self.model, self.cfg.zero_stage)
        state = {
            "step": self.step,
            "epoch": self.epoch,
            "best_eval": self.best_eval,
            "evals_without_improvement": self.evals_without_improvement,
            "train_runtime_s": self.runtime_so_far(),
        }
        with tempfile.TemporaryDirectory(prefix="robolora-ckpt-") as tmp:
            saved = (self.model, adapter) if adapter is not None else None
            write_checkpoint(Path(tmp), self.engine, state, saved, self.rank, self.device)
            ray.train.report(
                metrics,
                checkpoint=ray.train.Checkpoint.from_directory(tmp),
                checkpoint_dir_name=f"checkpoint-{self.step}",
            )
        dist.barrier()  # every rank's part is persisted
        if dist.is_main() and self.spec.checkpoint_root:
            publish(
                join(self.spec.checkpoint_root, f"checkpoint-{self.step}"),
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
        if dist.is_main():
            self.metrics.write(row)

    def progress(self) -> None:
        """Rank 0: the step counter the driver's progress bar follows."""
        if dist.is_main():
            self.metrics.progress(self.step, self.total_steps, self.epoch)

    # -- training

    def runtime_so_far(self) -> float:
        """Seconds spent training over every attempt of the run, up to now."""
        return self.runtime_before + time.perf_counter() - self.train_start

    def train(self) -> dict[str, Any]:
        """Train from the current step to the last (or an early stop); returns the last log row's values."""
        self.engine.train()
        self.train_start = time.perf_counter()
        interval = {"loss": 0.0, "tokens": 0.0, "seen": 0.0, "padded": 0.0, "t": time.perf_counter()}
        self.last_report = time.perf_counter()
        last: dict[str, Any] = {}
        stop = self.step >= self.total_steps
        while not stop:
            steps = self._epoch_plan()[self.step - self.epoch * self.steps_per_epoch :]
            batches = iter(self._loader([micro for step in steps for micro in step[self.rank]]))
            for step_plan in steps:
                self._train_step(step_plan, batches, interval)
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

    def _epoch_plan(self) -> list[list[list[list[int]]]]:
        """The seeded plan of this epoch: per step, per rank, the micro-batches' example indices."""
        return plan_epoch(
            self.train_lengths,
            micro_batch=self.cfg.batch_size,
            grad_accum=self.cfg.gradient_accumulation_steps,
            world_size=self.world,
            seed=self.cfg.seed,
            epoch=self.epoch,
            group_by_length=self.cfg.group_by_length,
        )

    def _train_step(self, step_plan: list[list[list[int]]], batches: Any, interval: dict[str, Any]) -> None:
        """One optimizer step over this rank's micro-batches of ``step_plan``, added up into ``interval``."""
        self.profiler.before(self.step + 1)
        mine = [i for micro in step_plan[self.rank] for i in micro]
        # Every rank holds the whole plan and every example's target count: the global batch's
        # count needs no collective (which would make each step wait for the slowest rank twice).
        global_items = sum(self.train_label_weights[i] for rank in step_plan for m in rank for i in m)
        scale = global_items / (self.world * self.cfg.gradient_accumulation_steps)
        for _ in range(self.cfg.gradient_accumulation_steps):
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
        interval["tokens"] += sum(self.train_label_weights[i] for i in mine)
        interval["seen"] += sum(self.train_lengths[i] for i in mine)
        interval["padded"] += sum(max(self.train_lengths[i] for i in m) * len(m) for m in step_plan[self.rank])

    def _loader(self, micro_batches: list[list[int]]) -> torch.utils.data.DataLoader:
        """This rank's micro-batches, in order, collated to tensors by --dataloader-num-workers processes."""
        pad_id, emphasis = self.tokenizer.pad_token_id, self.emphasis

        def collate_tensors(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
            return model_inputs(collate(rows, pad_id), emphasis)  # to the device in the loop

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
        adapter = lora_state_dict(self.model, self.cfg.zero_stage)
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
                "precision": "bf16" if self.cfg.bf16 else "fp32",
                "device": self.device.type,
                "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
                "gradient_checkpointing": activation_checkpointing(self.model.get_base_model()),
                "train_examples": len(self.train_ds),
                "packed_rows": len(self.train_rows) if self.cfg.packing else None,
                "max_tokens": self.train_report.max_tokens,
                "truncated_prompts": self.train_report.truncated,
                "dropped_records": self.train_report.dropped,
                "startup_s": self.startup,
                "memory_per_worker": memory,
            }
            atomic_write_text(self.out / "train_summary.json", json.dumps(summary, indent=2))
        self.metrics.close()
        dist.barrier()


def run_worker(config: dict[str, Any]) -> Trainer:
    """Set up, resume, train and save on this worker; returns the trainer (its engine still live)."""
    trainer = Trainer(RunSpec(**config))
    trainer.setup()
    trainer.restore()
    last = trainer.train()
    trainer.finish(last)
    return trainer


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: ``config`` is a :class:`RunSpec` as a dict."""
    run_worker(config)
