"""The memory planner: the simplest DeepSpeed layout that fits a training config on a GPU inventory.

:func:`plan_memory` tries each ZeRO stage and offload mode (:data:`STRATEGIES`, simplest first) at the
config's batch split, then at smaller micro-batches and with gradient checkpointing, sizing each with
the per-worker estimate of :mod:`robolora.sizing`; when nothing fits it says what would. The training
guide's 7B/13B/34B VRAM table (:data:`GUIDE_VRAM`) is checked against the same math.

Example:
    >>> from robolora.config import TrainConfig
    >>> dims = SIZES["7B"]  # CodeLlama-7B
    >>> work = Workload.from_config(TrainConfig(max_length=256, batch_size=4), dims, dims.default_targets())
    >>> plan = plan_memory(work, parse_gpus("4x24GB"))
    >>> plan.fits, plan.choice.zero_stage, plan.choice.offload, plan.choice.micro_batch
    (True, 2, 'none', 4)
    >>> work = Workload.from_config(TrainConfig(), SIZES["13B"], SIZES["13B"].default_targets())
    >>> plan_memory(work, parse_gpus("1x24GB")).choice.label
    'ZeRO-3 + full offload'
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from robolora.config import NUMBER_BOUNDS, TrainConfig
from robolora.errors import ConfigError
from robolora.sizing import (
    COMPONENTS,
    GIB,
    QUANT_BYTES,
    SIZES,
    MemoryEstimate,
    ModelDims,
    estimate_worker_memory,
    quantized_weight_bytes,
)

# ----------------------------------------------------------------------------- GPU inventory


@dataclass(frozen=True)
class GpuInventory:
    """The GPUs a run may use: ``count`` in all (across ``nodes``), each with ``memory`` bytes."""

    count: int
    memory: int
    nodes: int = 1
    source: str = ""
    #: Host memory each node can give offloaded states and weights (None: not known, not checked).
    host_memory: int | None = None

    @property
    def per_node(self) -> int:
        return math.ceil(self.count / self.nodes)

    def describe(self) -> str:
        where = f"{self.nodes} nodes x {self.per_node}" if self.nodes > 1 else f"{self.count}"
        host = f", {self.host_memory / GIB:.1f} GiB of host memory per node" if self.host_memory is not None else ""
        return f"{where} GPU{'s' if self.count > 1 else ''} of {self.memory / GIB:.1f} GiB{host}"


#: What CUDA sees of a card sold as N GB, in GiB, with the smallest common card of that size: the
#: total that PyTorch reports (``torch.cuda.mem_get_info``), which ECC and the driver's reservations
#: keep below the nominal size. These are the lowest figures seen for those cards (an H100 80GB shows
#: 79.1-79.2 GiB, an A100 80GB up to 79.3, an RTX 4090 23.6, an A10G 22.0-22.2, an L40S 44.4-44.5).
#: A nominal size outside this table is taken as that many GiB, and a size written in GiB as it stands.
CARD_MEMORY: dict[int, tuple[float, str]] = {
    16: (14.7, "T4"),
    24: (22.0, "A10G, L4"),
    32: (31.7, "V100 32GB"),
    40: (39.4, "A100 40GB"),
    48: (44.3, "A40, L40S"),
    80: (79.1, "H100, A100 80GB"),
    94: (93.0, "H100 NVL"),
}
#: Bounds of a GPU inventory, far beyond any real one, so that nonsense is refused rather than planned.
MAX_GPUS_PER_NODE = 256
MAX_GPU_GB = 1024
MAX_NODES = 10_000

_GPUS = re.compile(r"([0-9]+)\s*[x×*]\s*([0-9]+(?:\.[0-9]+)?)\s*(gib|gb|g)?", re.IGNORECASE)
_GPUS_FORM = "write the GPUs of one node as e.g. 8x80GB or 4x24GB"


def card_memory(nominal_gb: float) -> tuple[int, str]:
    """Bytes CUDA sees of a card sold as ``nominal_gb`` GB, and where that figure comes from.

    >>> memory, note = card_memory(80)
    >>> round(memory / GIB, 1), note
    (79.1, '80 GB cards planned at 79.1 GiB, what CUDA sees on the smallest (H100, A100 80GB)')
    >>> card_memory(12)
    (12884901888, '12 GB, not a usual card size, taken as 12 GiB')
    """
    if nominal_gb in CARD_MEMORY:
        gib, cards = CARD_MEMORY[int(nominal_gb)]
        note = f"{nominal_gb:g} GB cards planned at {gib:.1f} GiB, what CUDA sees on the smallest ({cards})"
        return int(gib * GIB), note
    return int(nominal_gb * GIB), f"{nominal_gb:g} GB, not a usual card size, taken as {nominal_gb:g} GiB"


def check_nodes(nodes: int) -> int:
    """``nodes`` if it is a sensible node count, else a one-line error naming --nodes."""
    if isinstance(nodes, bool) or not isinstance(nodes, int) or not 1 <= nodes <= MAX_NODES:
        raise ConfigError(f"--nodes: must be a whole number from 1 to {MAX_NODES:,}, got {nodes!r:.40}")
    return nodes


def parse_gpus(text: str, nodes: int = 1) -> GpuInventory:
    """``COUNTxSIZE`` per node times ``nodes``: ``8x80GB`` is 8 cards sold as 80 GB, each planned with what
    such a card shows CUDA (:data:`CARD_MEMORY`); ``8x79.5GiB`` states that memory exactly.

    >>> parse_gpus("8x80GB", nodes=2).describe()
    '2 nodes x 8 GPUs of 79.1 GiB'
    >>> parse_gpus("4x24GiB").describe()
    '4 GPUs of 24.0 GiB'
    """
    check_nodes(nodes)
    shown = repr(text if len(text) <= 40 else text[:40] + "...")
    match = _GPUS.fullmatch(text.strip())
    digits = match[1].lstrip("0") if match else ""
    if not digits or not float(match[2]):
        raise ConfigError(f"--gpus: {shown} is not COUNTxSIZE; {_GPUS_FORM}")
    # A count of more than a few digits is out of range whatever it is (and int() refuses 4,300 digits).
    count = int(digits) if len(digits) <= 6 else MAX_GPUS_PER_NODE + 1
    size = float(match[2])
    if count > MAX_GPUS_PER_NODE or not 1 <= size <= MAX_GPU_GB:
        raise ConfigError(
            f"--gpus: {shown} is out of range: COUNT must be 1 to {MAX_GPUS_PER_NODE} GPUs per node and SIZE "
            f"1 to {MAX_GPU_GB} GB per GPU; {_GPUS_FORM}"
        )
    if (match[3] or "").lower() == "gib":
        return GpuInventory(count * nodes, int(size * GIB), nodes, source="as given")
    memory, note = card_memory(size)
    return GpuInventory(count * nodes, memory, nodes, source=f"{note}; a size in GiB, e.g. 8x79.5GiB, is kept as given")


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Workload:
    """What one run trains, apart from the hardware: the model, LoRA, sequence length and batch.

    Built from a training config (:meth:`from_config`), whose fields it keeps under their names, so the
    config alone states each default. ``gradient_checkpointing`` is what was asked for; the planner turns
    it on when nothing fits without.
    """

    dims: ModelDims
    max_length: int
    batch_size: int
    gradient_accumulation_steps: int
    lora_r: int
    #: The LoRA targets as module names of a model of ``dims`` (``auto`` and ``all-linear`` read already).
    targets: tuple[str, ...]
    #: The adapted layers' indices; None for every layer.
    lora_layers: tuple[int, ...] | None
    lora_dropout: float
    gradient_checkpointing: bool
    bf16: bool
    #: ``--quantization`` (QLoRA): "4bit", "8bit" or None.
    quantization: str | None = None

    @classmethod
    def from_config(cls, cfg: TrainConfig, dims: ModelDims, targets: Sequence[str]) -> Workload:
        """What the memory planner needs from ``cfg`` for a model of ``dims`` with LoRA on ``targets``
        (bf16 unless the config turns it off: a GPU the planner sizes supports it)."""
        layers = cfg.lora_layer_indices(dims.layers)
        return cls(
            dims,
            max_length=cfg.max_length,
            batch_size=cfg.batch_size,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            lora_r=cfg.lora_r,
            targets=tuple(targets),
            lora_layers=tuple(layers) if layers else None,
            lora_dropout=cfg.lora_dropout,
            gradient_checkpointing=cfg.gradient_checkpointing,
            bf16=cfg.bf16 is not False,
            quantization=cfg.quantization,
        )

    def estimate(
        self, workers: int, zero_stage: int, offload: str, micro_batch: int, checkpointing: bool, on_gpu: bool = True
    ) -> MemoryEstimate:
        """The per-worker estimate of one layout (per GPU, or per CPU worker's host share)."""
        return estimate_worker_memory(
            self.dims,
            lora_r=self.lora_r,
            targets=self.targets,
            micro_batch=micro_batch,
            seq_len=self.max_length,
            workers=workers,
            zero_stage=zero_stage,
            offload=offload,
            bf16=self.bf16,
            gradient_checkpointing=checkpointing,
            on_gpu=on_gpu,
            lora_layers=self.lora_layers,
            lora_dropout=self.lora_dropout > 0,
            quantization=self.quantization,
        )


#: Layouts from the fewest moving parts to the most. Offload comes last: every step then moves states
#: (and with "all", every weight) across PCIe. ZeRO-2 comes before ZeRO-3: under LoRA a step's
#: compute is small next to ZeRO-3's all-gathers of the frozen weights in every forward and backward
#: pass, so a smaller micro-batch or recomputation costs less than sharding the weights. ZeRO-2 with
#: optimizer offload moves only the small LoRA states but keeps every weight on every GPU, so it helps
#: where ZeRO-3 has nothing to shard: a single GPU.
STRATEGIES: tuple[tuple[int, str], ...] = ((2, "none"), (3, "none"), (2, "optimizer"), (3, "optimizer"), (3, "all"))
_LABELS = {"none": "", "optimizer": " + optimizer offload", "all": " + full offload"}


@dataclass(frozen=True)
class Option:
    """One layout with its batch split, its per-GPU estimate and the memory it must fit in."""

    zero_stage: int
    offload: str
    micro_batch: int
    grad_accum: int
    gradient_checkpointing: bool
    estimate: MemoryEstimate
    budget: int
    #: Workers per node, whose offloaded states and weights share its host memory.
    per_node: int = 1
    #: The host memory of a node (None: not known, not checked).
    host_budget: int | None = None

    @property
    def host_needed(self) -> int:
        """Host memory a node gives its workers' offloaded states and weights."""
        return self.estimate.host * self.per_node

    @property
    def fits_host(self) -> bool:
        return self.host_budget is None or self.host_needed <= self.host_budget

    @property
    def fits(self) -> bool:
        return self.estimate.total <= self.budget and self.fits_host

    @property
    def label(self) -> str:
        return f"ZeRO-{self.zero_stage}{_LABELS[self.offload]}"

    def describe(self) -> str:
        ckpt = "on" if self.gradient_checkpointing else "off"
        return (
            f"{self.label}, micro-batch {self.micro_batch} x accumulation {self.grad_accum}, "
            f"gradient checkpointing {ckpt}"
        )


def micro_batches(batch_size: int, grad_accum: int) -> list[int]:
    """Micro-batches that keep ``batch_size * grad_accum`` examples per worker and step, largest first.

    >>> micro_batches(8, 1), micro_batches(6, 2)
    ([8, 4, 2, 1], [6, 4, 3, 2, 1])
    """
    per_step = batch_size * grad_accum
    return [m for m in range(batch_size, 0, -1) if per_step % m == 0]


def strategies_for(
    zero_stage: int | None, offload: str | None, quantization: str | None = None
) -> list[tuple[int, str]]:
    """The layouts left open by a ZeRO stage and an offload mode that were given (None: open).

    With ``quantization`` the planner picks no offload (it keeps the quantized base on the GPU; under
    ZeRO-3 offloading a 4-bit model costs GPU memory) and no ZeRO-3 for 8-bit (its loss is ~10x off).
    """
    allowed = [(s, o) for s, o in STRATEGIES if zero_stage in (None, s) and offload in (None, o)]
    if quantization and allowed:
        kept = [
            (s, o)
            for s, o in allowed
            if (offload is not None or o == "none") and (zero_stage is not None or quantization != "8bit" or s == 2)
        ]
        allowed = kept or allowed
    if not allowed:
        raise ConfigError(
            f"--offload {offload} needs --zero-stage 3: ZeRO-{zero_stage} cannot offload parameters "
            "(use --offload optimizer)"
        )
    return allowed


@dataclass(frozen=True)
class MemoryPlan:
    """The chosen layout, the best option of every layout considered, why, and what to change if none fits."""

    work: Workload
    gpus: GpuInventory
    choice: Option
    alternatives: tuple[Option, ...]
    reason: str
    fixes: tuple[str, ...] = ()

    @property
    def fits(self) -> bool:
        return self.choice.fits

    def flags(self) -> str:
        """The training flags that reproduce this plan."""
        c = self.choice
        ckpt = " --gradient-checkpointing" if c.gradient_checkpointing else ""
        quant = f" --quantization {self.work.quantization}" if self.work.quantization else ""
        return (
            f"--num-workers {self.gpus.count} --zero-stage {c.zero_stage} --offload {c.offload} "
            f"--batch-size {c.micro_batch} --gradient-accumulation-steps {c.grad_accum}{ckpt}{quant}"
        )

    def refusal(self) -> str:
        """One line saying that nothing fits, what it would take, and which flags to change."""
        c, e = self.choice, self.choice.estimate
        parts = sorted(((getattr(e, k), label) for k, label in COMPONENTS), reverse=True)[:2]
        biggest = ", ".join(f"{label} {b / GIB:.1f}" for b, label in parts)
        needs = f"{e.total / GIB:.1f} GiB per GPU ({biggest})"
        if e.total <= c.budget and not c.fits_host:
            needs = f"{c.host_needed / GIB:.1f} GiB of host memory per node for what it offloads"
        return f"memory: nothing fits {self.gpus.describe()}: even {c.describe()} needs {needs}; try " + ", or ".join(
            self.fixes
        )

    def report(self, model: str) -> str:
        """The plan as ``robolora plan`` prints it: the inputs, the component table, the choice and why."""
        work, gpus, dims = self.work, self.gpus, self.work.dims
        lora = dims.lora_params(work.lora_r, work.targets, work.lora_layers)
        adapted = len(work.lora_layers) if work.lora_layers else dims.layers
        global_batch = work.batch_size * work.gradient_accumulation_steps * gpus.count
        lines = [
            f"Model: {model}: {dims.params() / 1e9:.2f}B parameters, {dims.layers} layers, hidden {dims.hidden}, "
            f"vocab {dims.vocab}",
            f"LoRA: r={work.lora_r} on {','.join(work.targets)} in {adapted} of {dims.layers} layers: "
            f"{lora / 1e6:.1f}M trainable parameters ({lora / dims.params():.2%})",
            f"GPUs: {gpus.describe()}" + (f" ({gpus.source})" if gpus.source else ""),
            f"Batch: max length {work.max_length}, {work.batch_size} per GPU x accumulation "
            f"{work.gradient_accumulation_steps} x {gpus.count} GPU{'s' if gpus.count > 1 else ''} = global batch "
            f"{global_batch}, {'bf16' if work.bf16 else 'fp32'}",
            *_quantization_lines(work),
            "",
            self.table(),
            "(* chosen; +opt: optimizer states on the host; +all: weights too; "
            "each layout at its best batch split that fits, else its most frugal one)",
            "",
        ]
        if self.fits:
            nodes = f"{gpus.nodes} node{'s' if gpus.nodes > 1 else ''}"
            lines += [
                f"Plan: {gpus.count} worker{'s' if gpus.count > 1 else ''} on {nodes}: {self.choice.describe()}",
                f"Why: {self.reason}",
                f"Flags: {self.flags()}",
            ]
        else:
            lines += [f"Plan: {self.refusal()}"]
        return "\n".join(lines)

    def table(self) -> str:
        """The per-GPU components of every layout considered, in GiB; the chosen one starred."""
        short = {"none": "", "optimizer": "+opt", "all": "+all"}
        star = {True: "*", False: ""}
        cols = [(f"ZeRO-{o.zero_stage}{short[o.offload]}{star[o is self.choice]}", o) for o in self.alternatives]
        width = max(11, *(len(n) + 1 for n, _ in cols))
        rows = [("per GPU, GiB", [n for n, _ in cols])]
        rows.append(("micro-batch x accum.", [f"{o.micro_batch} x {o.grad_accum}" for _, o in cols]))
        rows.append(("gradient checkpointing", ["on" if o.gradient_checkpointing else "off" for _, o in cols]))
        for key, label in COMPONENTS:
            rows.append((label, [f"{getattr(o.estimate, key) / GIB:.2f}" for _, o in cols]))
        rows.append(("total", [f"{o.estimate.total / GIB:.2f}" for _, o in cols]))
        rows.append((f"fits {self.gpus.memory / GIB:.1f}", ["yes" if o.fits else "no" for _, o in cols]))
        rows.append(("host per node (offload)", [f"{o.host_needed / GIB:.2f}" for _, o in cols]))
        if self.gpus.host_memory is not None:
            host = f"host fits {self.gpus.host_memory / GIB:.1f}"
            rows.append((host, ["yes" if o.fits_host else "no" for _, o in cols]))
        return "\n".join(f"{label:<24}" + "".join(f"{v:>{width}}" for v in values) for label, values in rows)


def _quantization_lines(work: Workload) -> list[str]:
    """The report's line on a quantized base: its bytes and why ZeRO-3 does not shard it."""
    if not work.quantization:
        return []
    dims, w = work.dims, 2 if work.bf16 else 4
    base = quantized_weight_bytes(dims, work.quantization, w)
    kind = "NF4 + double quantization" if work.quantization == "4bit" else "LLM.int8"
    return [
        f"Quantization: {work.quantization} ({kind}) on {dims.linear_params() / 1e9:.2f}B linear weights at "
        f"{QUANT_BYTES[work.quantization]:.3f} byte each, the rest in {'bf16' if work.bf16 else 'fp32'}: "
        f"{base / GIB:.2f} GiB on every GPU (ZeRO-3 does not shard a quantized base at load)"
    ]


def _option(work: Workload, gpus: GpuInventory, stage: int, offload: str, micro: int, ckpt: bool) -> Option:
    accum = work.batch_size * work.gradient_accumulation_steps // micro
    estimate = work.estimate(gpus.count, stage, offload, micro, ckpt)
    return Option(stage, offload, micro, accum, ckpt, estimate, gpus.memory, gpus.per_node, gpus.host_memory)


def _candidates(work: Workload, gpus: GpuInventory, stage: int, offload: str) -> Iterator[Option]:
    """One layout's batch splits in order of preference: checkpointing off first, larger micro-batches first."""
    for ckpt in (True,) if work.gradient_checkpointing else (False, True):
        for micro in micro_batches(work.batch_size, work.gradient_accumulation_steps):
            yield _option(work, gpus, stage, offload, micro, ckpt)


def plan_memory(
    work: Workload,
    gpus: GpuInventory,
    *,
    zero_stage: int | None = None,
    offload: str | None = None,
    suggest: bool = True,
) -> MemoryPlan:
    """Pick the simplest layout that fits every GPU of ``gpus``, all of them used as workers.

    A ZeRO stage or offload mode that was given is kept. Within a layout the micro-batch is lowered
    (with accumulation raised, so the global batch stays) and then gradient checkpointing turned on,
    only as far as needed. When nothing fits, the plan's ``choice`` is the most frugal option and
    ``fixes`` lists the flags that would make it fit (``suggest=False`` skips working those out).
    """
    best: list[Option] = []
    for stage, off in strategies_for(zero_stage, offload, work.quantization):
        options = list(_candidates(work, gpus, stage, off))
        best.append(next((o for o in options if o.fits), options[-1]))
    choice = next((o for o in best if o.fits), None)
    if choice is None:
        choice = min(best, key=lambda o: o.estimate.total)
        fixes = _fixes(work, gpus, zero_stage, offload) if suggest else ()
        return MemoryPlan(work, gpus, choice, tuple(best), "nothing fits", tuple(fixes))
    reason = _reason(work, choice, best)
    if zero_stage is not None or offload is not None:
        given = [f for f, v in (("--zero-stage", zero_stage), ("--offload", offload)) if v is not None]
        reason += f"; {' and '.join(given)} as given"
    return MemoryPlan(work, gpus, choice, tuple(best), reason)


def _reason(work: Workload, choice: Option, best: list[Option]) -> str:
    spare = (choice.budget - choice.estimate.total) / GIB
    text = (
        f"{choice.label} is the simplest layout that fits: {choice.estimate.total / GIB:.1f} of "
        f"{choice.budget / GIB:.1f} GiB per GPU ({spare:.1f} spare)"
    )
    before = best[: best.index(choice)]
    if before:
        text += "; " + ", ".join(_short_of(o) for o in before)
    if choice.micro_batch < work.batch_size:
        text += (
            f"; micro-batch lowered from {work.batch_size} to {choice.micro_batch} with accumulation "
            f"{work.gradient_accumulation_steps} -> {choice.grad_accum}, which keeps the global batch"
        )
    if choice.gradient_checkpointing and not work.gradient_checkpointing:
        text += "; gradient checkpointing turned on to keep only each layer's input"
    return text


def _short_of(o: Option) -> str:
    """What keeps a layout out: the GPU memory it needs at best, or the host memory its offload needs."""
    if o.estimate.total <= o.budget and not o.fits_host:
        return (
            f"{o.label} needs {o.host_needed / GIB:.1f} GiB of host memory per node for what it offloads, "
            f"{o.host_budget / GIB:.1f} GiB there"
        )
    return f"{o.label} needs {o.estimate.total / GIB:.1f} GiB at best"


def _fixes(work: Workload, gpus: GpuInventory, zero_stage: int | None, offload: str | None) -> list[str]:
    """Flags that would make a plan fit: an open layout, a shorter sequence, more GPUs, a smaller model."""

    def fits(w: Workload, g: GpuInventory, stage: int | None = zero_stage, off: str | None = offload) -> bool:
        return plan_memory(w, g, zero_stage=stage, offload=off, suggest=False).fits

    fixes = []
    if zero_stage is not None or offload is not None:
        free = plan_memory(work, gpus, suggest=False)
        if free.fits:
            c = free.choice
            fixes.append(f"--zero-stage {c.zero_stage} --offload {c.offload} (or leave both out for the planner)")
    # The longest sequence that fits, no shorter than the config accepts: the largest lo with fits(lo).
    lo, hi = int(NUMBER_BOUNDS["max_length"].low), work.max_length - 1
    if hi >= lo and fits(replace(work, max_length=lo), gpus):
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(replace(work, max_length=mid), gpus) else (lo, mid - 1)
        fixes.append(f"--max-length {lo}")
    # The fewest GPUs of this size that fit (more GPUs only help where ZeRO-3 may shard the weights).
    low, count = gpus.count, gpus.count * 2
    while count <= 4096 and not fits(work, replace(gpus, count=count)):
        low, count = count, count * 2
    if count <= 4096:
        while count - low > 1:
            mid = (low + count) // 2
            low, count = (low, mid) if fits(work, replace(gpus, count=mid)) else (mid, count)
        fixes.append(f"{count} GPUs of {gpus.memory / GIB:.1f} GiB")
    if not work.quantization and fits(replace(work, quantization="4bit"), gpus, None, None):
        fixes.append("--quantization 4bit (QLoRA)")
    if gpus.host_memory is not None and fits(work, replace(gpus, host_memory=None)):
        fixes.append("nodes with more host memory")
    fixes.append("a smaller --model-name")
    return fixes


# ----------------------------------------------------------------------------- the training guide's table


@dataclass(frozen=True)
class GuideRow:
    """One row of the training guide's GPU memory table (its GB read as GiB, as cards are sized)."""

    size: str
    minimum_gb: int
    recommended_gb: int
    batch: tuple[int, int]


#: The training guide's table, section "Hardware Requirements" > "GPU Memory Requirements".
GUIDE_VRAM: tuple[GuideRow, ...] = (
    GuideRow("7B", 16, 24, (4, 8)),
    GuideRow("13B", 24, 40, (2, 4)),
    GuideRow("34B", 48, 80, (1, 2)),
)


@dataclass(frozen=True)
class GuideCheck:
    """The planner beside one guide row: its smallest batch with checkpointing on the minimum VRAM,
    its largest batch without checkpointing on the recommended VRAM, one GPU, no offload."""

    row: GuideRow
    low: MemoryEstimate
    high: MemoryEstimate
    verdict: str


def check_guide(row: GuideRow, work: Workload) -> GuideCheck:
    """How the guide's figures for ``row`` compare with this planner for ``work``'s LoRA and length."""
    dims = SIZES[row.size]

    def at(batch: int) -> Workload:  # the row's model and batch, one micro-batch a step
        # The guide's figures are for LoRA on a bf16 base: compare them unquantized.
        return replace(work, dims=dims, batch_size=batch, gradient_accumulation_steps=1, quantization=None)

    low = at(row.batch[0]).estimate(1, 2, "none", row.batch[0], True)
    high = at(row.batch[1]).estimate(1, 2, "none", row.batch[1], False)
    notes = []
    for name, gb, est, batch, ckpt in (
        ("minimum", row.minimum_gb, low, row.batch[0], True),
        ("recommended", row.recommended_gb, high, row.batch[1], False),
    ):
        if est.total <= gb * GIB:
            continue
        one = GpuInventory(1, gb * GIB)
        fit = plan_memory(replace(at(batch), gradient_checkpointing=ckpt), one, suggest=False)
        how = f"one {gb} GB GPU needs {fit.choice.describe()}" if fit.fits else f"it does not fit one {gb} GB GPU"
        notes.append(f"{name} optimistic by {(est.total - gb * GIB) / GIB:.1f} GiB ({how})")
    return GuideCheck(row, low, high, "; ".join(notes) or "holds")


def guide_table(work: Workload) -> str:
    """The guide's 7B/13B/34B table beside the planner's figures for the same settings."""
    lines = [
        'The training guide\'s "GPU Memory Requirements" beside this planner: one GPU, no offload, '
        f"{'bf16' if work.bf16 else 'fp32'}{', unquantized base' if work.quantization else ''}, "
        f"max length {work.max_length}, "
        f"LoRA r={work.lora_r} on {','.join(work.targets)}",
        "(guide minimum vs the planner at the row's smallest batch with gradient checkpointing, guide recommended "
        "vs its largest batch without; the guide's GB read as GiB)",
        f"{'size':<6}{'guide min':>10}{'planner':>22}{'guide rec':>11}{'planner':>22}",
    ]
    verdicts = []
    for row in GUIDE_VRAM:
        c = check_guide(row, work)
        low = f"{c.low.total / GIB:.1f} GiB (batch {row.batch[0]})"
        high = f"{c.high.total / GIB:.1f} GiB (batch {row.batch[1]})"
        lines.append(f"{row.size:<6}{row.minimum_gb:>7} GB{low:>22}{row.recommended_gb:>8} GB{high:>22}")
        verdicts.append(f"  {row.size}: {c.verdict}")
    return "\n".join(lines + verdicts)


def closest_guide_row(dims: ModelDims) -> GuideRow:
    """The guide row whose model size is nearest (in parameters) to ``dims``."""
    return min(GUIDE_VRAM, key=lambda r: abs(math.log(SIZES[r.size].params() / dims.params())))
