"""Useful tokens/s and MFU: the Robot-LoRA worker loop against Hugging Face ``Trainer`` + PEFT, side by side.

    python benchmarks/throughput.py --steps 40 --warmup 10 --repeats 3 --json-out benchmarks/results/throughput.json

Three sides train the bundled SmolLM2-135M-Instruct on the shipped dataset with the same LoRA settings
(r=32, alpha=64, the 7 linear modules of the upper 15 layers), the same micro-batch of 8, the same
tokenized examples (response-only labels) and the same CPU threads, one process each:

- ``robolora``: `robolora train` with one worker, micro-batches grouped by length (the training guide's
  advice), in the precision the launcher picks (bf16 where the hardware runs it natively, else fp32);
- ``hf_trainer_peft``, the fair peer and the headline: ``Trainer`` + PEFT as its best users configure it:
  micro-batches grouped by length (``train_sampling_strategy="group_by_length"`` with the precomputed
  ``length`` column; ``group_by_length=True`` in older transformers), fused AdamW where the device has
  it, and our side's precision: bf16 weights with ``bf16=True`` where ours trains in bf16, fp32 weights
  without autocast where ours trains in fp32;
- ``hf_trainer_peft_untuned``, for reference: the earlier peer, ``Trainer``'s defaults (random order
  without length grouping, its default optimizer), fp32 weights under bf16 autocast on the CPU and bf16
  weights on a GPU.

``Trainer`` runs the LM head at every position (its loss counts the response tokens, as ours does).
Useful tokens are the non-padding tokens trained on; every side also reports its padding efficiency
(non-padding over all tokens of the timed micro-batches), its precision and its optimizer. Rates are
taken after the warm-up steps, on the same machine in the same run.

``--repeats N`` (default 3) runs each side N times, interleaved (ours, fair, untuned, ours, ...), each
run in a fresh process. Per side the table gives the median useful tokens/s and its spread (min..max,
and max - min as a share of the median); the ratios are of the medians (ours over the fair peer is the
headline). ``--json-out`` keeps every run.

MFU is the model FLOP/s (per token: 4 x parameters for LoRA on a frozen base, forward plus the
activation gradients, plus causal attention) at the median rate over the peak bf16 matmul FLOP/s
measured in the same run on the same cores (on the CPU the higher of one process with every thread and
one single-thread process per thread multiplying at once). It counts the model's FLOPs, not the ones
executed: Robot-LoRA's backward pass stops below the adapted layers and its LM head runs only where a
response token is predicted.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import DATA, LORA, MODEL, TIMED, timed_rate, with_short_validation  # noqa: E402

BATCH, MAX_LENGTH = 8, TIMED["max_length"]
LR = TIMED["learning_rate"]


@dataclass(frozen=True)
class Setup:
    """What both sides train: the model, the data and the batch; on the CPU threads or on one GPU."""

    model: str = MODEL
    data: Path = DATA
    batch: int = BATCH
    max_length: int = MAX_LENGTH
    threads: int = os.cpu_count() or 1
    gpu: bool = False
    lora: dict = field(default_factory=lambda: dict(LORA))
    #: Our side's other settings (e.g. ``{"profile_steps": "12-14"}``).
    extra: dict = field(default_factory=dict)


def ours(setup: Setup, steps: int, warmup: int, out: Path) -> dict:
    """`robolora train` with one worker (``threads`` CPUs, or one GPU); the rate of the logging intervals
    after warm-up, the padding efficiency of the last, the worker's peak memory, precision and optimizer."""
    from robolora.config import from_dict
    from robolora.launcher import run_training

    values = {**TIMED, **setup.lora, "data_json": str(setup.data)}
    cfg = from_dict(
        {
            **with_short_validation(values, out / "data"),
            "output_dir": str(out / "ours"),
            "model_name": setup.model,
            "batch_size": setup.batch,
            "max_length": setup.max_length,
            "group_by_length": True,
            "num_workers": 1,
            **({"use_gpu": True, "bf16": True} if setup.gpu else {"cpus_per_worker": setup.threads}),
            "max_steps": warmup + steps,
            "logging_steps": warmup,
            **setup.extra,
        }
    )
    start = time.perf_counter()
    run_training(cfg, watch=False)
    rows = [json.loads(line) for line in (out / "ours" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "tokens_per_s" in r]
    profile = out / "ours" / "profile" / "summary.txt"
    summary_file = out / "ours" / "train_summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    return {
        "useful_tokens_per_s": timed_rate(rows),
        **({"profile": profile.read_text()} if profile.is_file() else {}),
        "padding_efficiency": logged[-1]["padding_efficiency"],
        # DeepSpeed's bf16 mode: the module in bf16, fp32 master copies of the LoRA weights in the optimizer
        "precision": summary.get("precision", "bf16" if our_bf16(setup) else "fp32"),
        "optimizer": f"{summary.get('optimizer', '?')} ({cfg.optim})",
        "sampler": "group_by_length" if cfg.group_by_length else "random",
        "peak_memory_mb": max(r["memory_mb"] for r in logged),
        "device_samples": logged[-1].get("devices", []),
        "wall_s": time.perf_counter() - start,
    }


def our_bf16(setup: Setup) -> bool:
    """Whether our side trains in bf16: as :func:`ours` sets it on a GPU, elsewhere as the launcher
    resolves an unset ``bf16`` (``robolora.models.bf16_supported``: AVX512-BF16 or AMX on a CPU)."""
    if setup.extra.get("bf16") is not None:
        return bool(setup.extra["bf16"])
    if setup.gpu:
        return True
    from robolora.models import bf16_supported

    return bf16_supported(False)


def fused_adamw_supported(device: str) -> bool:
    """Whether this torch runs AdamW as one fused kernel on ``device`` (a one-step trial)."""
    import torch

    try:
        param = torch.nn.Parameter(torch.zeros(4, device=device))
        param.grad = torch.ones(4, device=device)
        torch.optim.AdamW([param], fused=True).step()
    except (RuntimeError, ValueError, NotImplementedError):
        return False
    return True


def length_grouping() -> dict:
    """``TrainingArguments`` keywords that group micro-batches by length, in this transformers' spelling."""
    from transformers import TrainingArguments

    if "train_sampling_strategy" in TrainingArguments.__dataclass_fields__:
        return {"train_sampling_strategy": "group_by_length", "length_column_name": "length"}
    return {"group_by_length": True, "length_column_name": "length"}


def hf_trainer(setup: Setup, steps: int, warmup: int, out: Path) -> dict:
    """The fair peer: ``Trainer`` + PEFT grouped by length, with fused AdamW and our side's precision."""
    return _hf_trainer(setup, steps, warmup, out, tuned=True)


def hf_trainer_untuned(setup: Setup, steps: int, warmup: int, out: Path) -> dict:
    """The earlier peer, for reference: ``Trainer``'s defaults (random order, its default optimizer), fp32
    weights under bf16 autocast on the CPU, bf16 weights on a GPU."""
    return _hf_trainer(setup, steps, warmup, out, tuned=False)


def _hf_trainer(setup: Setup, steps: int, warmup: int, out: Path, tuned: bool) -> dict:
    """Hugging Face ``Trainer`` + PEFT on the same examples; non-padding tokens of the timed steps."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from robolora.config import parse_layers
    from robolora.data import collate, load_records, split_records, tokenize_records
    from robolora.models import load_model, load_tokenizer

    torch.set_num_threads(setup.threads)
    tokenizer = load_tokenizer(setup.model)
    train, _ = split_records(load_records(setup.data), 0.1, 42)
    dataset, _ = tokenize_records(train, tokenizer, setup.max_length)
    # The fair peer keeps the precomputed lengths for its length-grouped sampler (the collator ignores them).
    keep = ("input_ids", "labels", "length") if tuned else ("input_ids", "labels")
    dataset = dataset.remove_columns([c for c in dataset.column_names if c not in keep])
    if tuned:
        bf16 = our_bf16(setup)
        device = "cuda" if setup.gpu else "cpu"
        optim = "adamw_torch_fused" if fused_adamw_supported(device) else "adamw_torch"
        extra = {**length_grouping(), "optim": optim, "remove_unused_columns": False}
    else:  # the previous settings: bf16 autocast on fp32 weights on the CPU, bf16 weights on a GPU
        bf16, extra = True, {}
    # bf16 weights where the run trains in bf16 (PEFT keeps the adapters in fp32, under bf16 autocast).
    weights_bf16 = bf16 and (tuned or setup.gpu)
    model = load_model(setup.model, **({"dtype": torch.bfloat16} if weights_bf16 else {}))
    model.config.use_cache = False
    lora = setup.lora
    model = get_peft_model(
        model,
        LoraConfig(
            r=lora["lora_r"],
            lora_alpha=lora["lora_alpha"],
            lora_dropout=lora["lora_dropout"],
            target_modules=lora["lora_target_modules"].split(","),
            layers_to_transform=parse_layers(lora["lora_layers"], model.config.num_hidden_layers),
            task_type="CAUSAL_LM",
        ),
    )
    # (real tokens, all tokens) of each micro-batch, in the order the data loader collates them
    batch_tokens: list[tuple[int, int]] = []

    def collator(examples: list[dict]) -> dict:
        batch = {k: torch.tensor(v) for k, v in collate(examples, tokenizer.pad_token_id).items()}
        mask = batch["attention_mask"]
        batch_tokens.append((int(mask.sum()), mask.numel()))
        return batch

    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if setup.gpu:
                torch.cuda.synchronize()
            marks.append(time.perf_counter())

    args = TrainingArguments(
        output_dir=str(out / "hf"),
        per_device_train_batch_size=setup.batch,
        learning_rate=LR,
        max_steps=warmup + steps,
        bf16=bf16,
        use_cpu=not setup.gpu,
        logging_steps=10**6,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        lr_scheduler_type="constant",
        **extra,
    )
    start = time.perf_counter()
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator, callbacks=[Clock()])
    trainer.train()
    timed = batch_tokens[warmup : warmup + steps]
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # inside accelerate's wrapper
    frozen = next(p for p in model.parameters() if not p.requires_grad)
    adapter = next(p for p in model.parameters() if p.requires_grad)
    short = {torch.bfloat16: "bf16", torch.float32: "fp32"}
    result = {
        "useful_tokens_per_s": sum(real for real, _ in timed) / (marks[warmup + steps - 1] - marks[warmup - 1]),
        "padding_efficiency": sum(real for real, _ in timed) / sum(total for _, total in timed),
        "precision": f"{short.get(frozen.dtype, frozen.dtype)} weights, {short.get(adapter.dtype, adapter.dtype)} "
        f"LoRA{', bf16 autocast' if args.bf16 else ', no autocast'}",
        "optimizer": f"{type(optimizer).__name__} ({getattr(args.optim, 'value', args.optim)}, "
        f"fused={optimizer.defaults.get('fused')})",
        "sampler": getattr(args, "train_sampling_strategy", None)
        or ("group_by_length" if getattr(args, "group_by_length", False) else "random"),
        "wall_s": time.perf_counter() - start,
    }
    if setup.gpu:
        result["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    del trainer, model, optimizer
    gc.collect()  # the Trainer's reference cycles hold the model until collected
    if setup.gpu:
        torch.cuda.empty_cache()
    return result


def matmul_peak(dtype_name: str, setup: Setup, repeats: int = 8) -> float:
    """The peak matmul FLOP/s in ``dtype`` (fp32 without TF32 on a GPU): on a GPU the best of ``repeats``
    square matmuls; on the CPU the higher of that in one process with every thread and of one
    single-thread process per thread, all multiplying at once (the layout two workers with one core
    each run in, some 5% faster on a 2-core AMD EPYC than one process with both threads)."""
    one = _square_matmuls(dtype_name, setup.threads, setup.gpu, repeats)
    if setup.gpu or setup.threads < 2:
        return one
    return max(one, _per_thread_peak(dtype_name, setup.threads, repeats))


def _square_matmuls(dtype_name: str, threads: int, gpu: bool, repeats: int, barrier: Any = None) -> float:
    """FLOP/s of the best of ``repeats`` square matmuls (after ``barrier``, when given: the rate of all of
    them together, so that processes started together are measured while all of them multiply)."""
    import torch

    torch.set_num_threads(threads)
    dtype = getattr(torch, dtype_name)
    n, device = (8192, "cuda") if gpu else (2048, "cpu")
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = False
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)

    def sync() -> None:
        if gpu:
            torch.cuda.synchronize()

    for _ in range(3):  # warm-up
        torch.matmul(a, b)
    sync()
    if barrier is not None:
        barrier.wait()
        start = time.perf_counter()
        for _ in range(repeats):
            torch.matmul(a, b)
        return 2 * n**3 * repeats / (time.perf_counter() - start)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def _per_thread_peak(dtype_name: str, threads: int, repeats: int) -> float:
    """The summed FLOP/s of ``threads`` single-thread processes multiplying square matrices at once."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barrier, rates = context.Barrier(threads), context.Queue()
    procs = [context.Process(target=_report_rate, args=(rates, dtype_name, repeats, barrier)) for _ in range(threads)]
    for proc in procs:
        proc.start()
    total = sum(rates.get(timeout=300) for _ in procs)
    for proc in procs:
        proc.join()
    return total


def _report_rate(rates: Any, dtype_name: str, repeats: int, barrier: Any) -> None:
    rates.put(_square_matmuls(dtype_name, 1, False, repeats, barrier))


def model_flops_per_token(model: str, mean_tokens: float) -> float:
    """4 x parameters (forward 2N, activation gradients 2N; the frozen base has no weight gradients),
    plus causal attention: QK^T and AV over half the sequence on average, forward and backward (3x)."""
    from transformers import AutoConfig

    from robolora.models import resolve_model

    c = AutoConfig.from_pretrained(resolve_model(model))
    d, layers, ffn, vocab = c.hidden_size, c.num_hidden_layers, c.intermediate_size, c.vocab_size
    kv = d * c.num_key_value_heads // c.num_attention_heads
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * ffn  # q, o; k, v; gate, up, down
    params = layers * per_layer + vocab * d  # the LM head (tied to the embeddings)
    attention = 3 * layers * 2 * 2 * d * (mean_tokens / 2)
    return 4 * params + attention


def mean_length(setup: Setup) -> float:
    from robolora.data import load_records, split_records, tokenize_records
    from robolora.models import load_tokenizer

    train, _ = split_records(load_records(setup.data), 0.1, 42)
    dataset, _ = tokenize_records(train, load_tokenizer(setup.model), setup.max_length)
    return sum(dataset["length"]) / len(dataset)


#: The sides in the order each repeat runs them: ours, the fair peer (the headline), the untuned peer.
SIDES = {"robolora": ours, "hf_trainer_peft": hf_trainer, "hf_trainer_peft_untuned": hf_trainer_untuned}
OURS, FAIR, UNTUNED = SIDES
RESULT = "benchmark result: "


def run_side(name: str, setup: Setup, steps: int, warmup: int) -> dict:
    """One side in a fresh Python process, so neither inherits the other's threads, caches or device state;
    its output passes through, its result comes back on a marked line."""
    spec = json.dumps({**dataclasses.asdict(setup), "data": str(setup.data), "steps": steps, "warmup": warmup})
    cmd = [sys.executable, __file__, "--side", name, "--side-spec", spec]
    result = None
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        for line in proc.stdout:
            if line.startswith(RESULT):
                result = json.loads(line[len(RESULT) :])
            else:
                print(line, end="", flush=True)
    if proc.returncode or result is None:
        raise SystemExit(f"benchmark side {name} failed (exit status {proc.returncode})")
    return result


def _side_main(name: str, spec_text: str) -> int:
    spec = json.loads(spec_text)
    steps, warmup = spec.pop("steps"), spec.pop("warmup")
    setup = Setup(**{**spec, "data": Path(spec["data"])})
    with tempfile.TemporaryDirectory(prefix="robolora-bench-") as tmp:
        result = SIDES[name](setup, steps, warmup, Path(tmp))
    print(RESULT + json.dumps(result, default=str), flush=True)
    return 0


def compare(setup: Setup, steps: int, warmup: int, repeats: int = 3, sides: tuple[str, ...] = tuple(SIDES)) -> dict:
    """Each of ``sides`` ``repeats`` times, interleaved, every run in its own process; then the matmul
    peaks, each side's median rate, spread and MFU, and the ratios of our median to each peer's."""
    # The peaks are measured before and after the sides; the best counts. (A process still exiting,
    # such as a Ray cluster shutting down, can hold a core for a moment and halve one measurement.)
    before = {name: matmul_peak(name, setup) for name in ("bfloat16", "float32")}
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    for repeat in range(repeats):
        for name in sides:
            run = run_side(name, setup, steps, warmup)
            runs[name].append(run)
            print(
                f"[run {repeat + 1}/{repeats}] {name}: {run['useful_tokens_per_s']:.1f} useful tokens/s, "
                f"padding efficiency {run['padding_efficiency']:.1%}",
                flush=True,
            )
    peaks = {name: max(before[name], matmul_peak(name, setup)) for name in before}
    flops = model_flops_per_token(setup.model, mean_length(setup))
    results: dict[str, Any] = {"sides": list(sides), "repeats": repeats}
    for name in sides:
        summary = summarize(runs[name])
        achieved = summary["useful_tokens_per_s"] * flops
        results[name] = summary | {"model_flops_per_s": achieved, "mfu_bf16": achieved / peaks["bfloat16"]}
    results["ratios"] = {
        f"{OURS}/{peer}": results[OURS]["useful_tokens_per_s"] / results[peer]["useful_tokens_per_s"]
        for peer in sides
        if OURS in sides and peer != OURS
    }
    results["ratio"] = results["ratios"].get(f"{OURS}/{FAIR}")  # the headline: ours over the fair peer
    results["peak_flops"] = peaks
    results["model_flops_per_token"] = flops
    results["settings"] = {
        "steps": steps,
        "warmup": warmup,
        "repeats": repeats,
        "threads": setup.threads,
        "gpu": setup.gpu,
        "model": setup.model,
        "data": str(setup.data),
        "batch": setup.batch,
        "max_length": setup.max_length,
        **setup.lora,
    }
    return results


def summarize(runs: list[dict]) -> dict:
    """One side's runs: the median useful tokens/s, min, max and spread ((max - min) / median), the median
    padding efficiency, the peak memory of the worst run, and every run."""
    rates = [r["useful_tokens_per_s"] for r in runs]
    median = statistics.median(rates)
    summary = {
        "useful_tokens_per_s": median,
        "min_tokens_per_s": min(rates),
        "max_tokens_per_s": max(rates),
        "spread": (max(rates) - min(rates)) / median,
        "padding_efficiency": statistics.median(r["padding_efficiency"] for r in runs),
        "precision": "; ".join(dict.fromkeys(r["precision"] for r in runs)),
        "optimizer": "; ".join(dict.fromkeys(r["optimizer"] for r in runs)),
    }
    memory = [r["peak_memory_mb"] for r in runs if "peak_memory_mb" in r]
    if memory:
        summary["peak_memory_mb"] = max(memory)
    if "device_samples" in runs[-1]:
        summary["device_samples"] = runs[-1]["device_samples"]
    return summary | {"runs": runs}


def print_table(results: dict) -> None:
    peaks, sides = results["peak_flops"], results["sides"]
    print(
        f"{'':25}{'median tokens/s':>16}{'min..max':>19}{'spread':>8}{'padding':>9}"
        f"{'model GFLOP/s':>15}{'MFU (bf16 peak)':>17}"
    )
    for name in sides:
        r = results[name]
        span = f"{r['min_tokens_per_s']:.1f}..{r['max_tokens_per_s']:.1f}"
        print(
            f"{name:25}{r['useful_tokens_per_s']:>16.1f}{span:>19}{r['spread']:>8.1%}{r['padding_efficiency']:>9.1%}"
            f"{r['model_flops_per_s'] / 1e9:>15.1f}{r['mfu_bf16']:>17.1%}"
        )
    label = {FAIR: "the fair peer, headline", UNTUNED: "the untuned peer, reference"}
    for key, ratio in results["ratios"].items():
        peer = key.split("/", 1)[1]
        print(f"ratio of medians {OURS} / {peer} ({label.get(peer, peer)}): {ratio:.2f}x")
    for name in sides:
        print(f"{name:25}precision {results[name]['precision']}; optimizer {results[name]['optimizer']}")
    print(
        f"{results['repeats']} run(s) per side, interleaved, each in a fresh process; spread = (max - min) / median; "
        "padding = non-padding share of the timed micro-batches' tokens (median)"
    )
    print(
        f"measured matmul peak: bf16 {peaks['bfloat16'] / 1e9:.1f} GFLOP/s, fp32 {peaks['float32'] / 1e9:.1f} GFLOP/s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="timed optimizer steps per run (default: 40)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (default: 10)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side, interleaved (default: 3)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads (default: all)")
    parser.add_argument("--json-out", default=None, help="also write the results here, every run included")
    parser.add_argument("--side", choices=sorted(SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--side-spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return _side_main(args.side, args.side_spec)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    results = compare(Setup(threads=args.threads), args.steps, args.warmup, args.repeats)
    print_table(results)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
