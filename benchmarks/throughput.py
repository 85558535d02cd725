"""Useful tokens/s and MFU: the Robot-LoRA worker loop against Hugging Face ``Trainer`` + PEFT, side by side.

    python benchmarks/throughput.py --steps 40 --warmup 10 --json-out benchmarks/results/throughput.json

Both train the bundled SmolLM2-135M-Instruct on the shipped dataset with the same LoRA settings
(r=32, alpha=64, the 7 linear modules of the upper 15 layers), the same micro-batch of 8, bf16 mixed
precision, the same tokenized examples (response-only labels) and the same CPU threads, one process
each. ``Trainer`` keeps its own defaults otherwise (random order without length grouping, the loss over
all positions). Useful tokens are the non-padding tokens trained on; both rates are taken after the
warm-up steps, on the same machine in the same run.

MFU is the model FLOP/s (per token: 4 x parameters for LoRA on a frozen base, forward plus the
activation gradients, plus causal attention) over the peak bf16 matmul FLOP/s measured in the same run
with the same threads. It counts the model's FLOPs, not the ones executed: Robot-LoRA's backward pass
stops below the adapted layers and its LM head runs only where a response token is predicted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT / "data" / "robot_dataset.json"
MODEL = "smollm2-135m"
LORA = {
    "lora_r": 32,
    "lora_alpha": 64,
    "lora_dropout": 0.05,
    "lora_target_modules": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
    "lora_layers": "top:15",
}
BATCH, LR, MAX_LENGTH = 8, 2e-3, 256


def ours(steps: int, warmup: int, threads: int, out: Path) -> dict:
    """`robolora train` with one worker of ``threads`` CPUs; the rate of the logging intervals after warm-up."""
    from robolora.config import from_dict
    from robolora.launcher import run_training

    cfg = from_dict(
        {
            **LORA,
            "data_json": str(DATA),
            "output_dir": str(out / "ours"),
            "model_name": MODEL,
            "batch_size": BATCH,
            "learning_rate": LR,
            "max_length": MAX_LENGTH,
            "group_by_length": True,
            "num_workers": 1,
            "cpus_per_worker": threads,
            "max_steps": warmup + steps,
            "logging_steps": warmup,
            "eval_steps": 10**6,
            "save_steps": 10**6,
            "lr_scheduler_type": "constant",
            "warmup_ratio": 0.0,
        }
    )
    start = time.perf_counter()
    run_training(cfg, watch=False)
    rows = [json.loads(line) for line in (out / "ours" / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r][1:]  # the first interval is the warm-up
    return {
        "useful_tokens_per_s": sum(rates) / len(rates),
        "padding_efficiency": [r["padding_efficiency"] for r in rows if "padding_efficiency" in r][-1],
        "wall_s": time.perf_counter() - start,
    }


def hf_trainer(steps: int, warmup: int, threads: int, out: Path) -> dict:
    """Hugging Face ``Trainer`` + PEFT on the same examples; non-padding tokens of the timed steps."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from robolora.config import parse_layers
    from robolora.data import collate, load_records, split_records, tokenize_records
    from robolora.models import load_model, load_tokenizer

    torch.set_num_threads(threads)
    tokenizer = load_tokenizer(MODEL)
    train, _ = split_records(load_records(DATA), 0.1, 42)
    dataset, _ = tokenize_records(train, tokenizer, MAX_LENGTH)
    dataset = dataset.remove_columns([c for c in dataset.column_names if c not in ("input_ids", "labels")])
    model = load_model(MODEL)
    model.config.use_cache = False
    model = get_peft_model(
        model,
        LoraConfig(
            r=LORA["lora_r"],
            lora_alpha=LORA["lora_alpha"],
            lora_dropout=LORA["lora_dropout"],
            target_modules=LORA["lora_target_modules"].split(","),
            layers_to_transform=parse_layers(LORA["lora_layers"], model.config.num_hidden_layers),
            task_type="CAUSAL_LM",
        ),
    )
    batch_tokens: list[int] = []

    def collator(examples: list[dict]) -> dict:
        batch = {k: torch.tensor(v) for k, v in collate(examples, tokenizer.pad_token_id).items()}
        batch_tokens.append(int(batch["attention_mask"].sum()))
        return batch

    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marks.append(time.perf_counter())

    args = TrainingArguments(
        output_dir=str(out / "hf"),
        per_device_train_batch_size=BATCH,
        learning_rate=LR,
        max_steps=warmup + steps,
        bf16=True,
        use_cpu=True,
        logging_steps=10**6,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        lr_scheduler_type="constant",
    )
    start = time.perf_counter()
    Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator, callbacks=[Clock()]).train()
    timed = batch_tokens[warmup : warmup + steps]
    return {
        "useful_tokens_per_s": sum(timed) / (marks[warmup + steps - 1] - marks[warmup - 1]),
        "wall_s": time.perf_counter() - start,
    }


def matmul_peak(dtype_name: str, threads: int, n: int = 2048, repeats: int = 8) -> float:
    """FLOP/s of the best of ``repeats`` square matmuls of size ``n`` in ``dtype``."""
    import torch

    torch.set_num_threads(threads)
    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def model_flops_per_token(mean_tokens: float) -> float:
    """4 x parameters (forward 2N, activation gradients 2N; the frozen base has no weight gradients),
    plus causal attention: QK^T and AV over half the sequence on average, forward and backward (3x)."""
    from transformers import AutoConfig

    from robolora.models import resolve_model

    c = AutoConfig.from_pretrained(resolve_model(MODEL))
    d, layers, ffn, vocab = c.hidden_size, c.num_hidden_layers, c.intermediate_size, c.vocab_size
    kv = d * c.num_key_value_heads // c.num_attention_heads
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * ffn  # q, o; k, v; gate, up, down
    params = layers * per_layer + vocab * d  # the LM head (tied to the embeddings)
    attention = 3 * layers * 2 * 2 * d * (mean_tokens / 2)
    return 4 * params + attention


def mean_length() -> float:
    from robolora.data import load_records, split_records, tokenize_records
    from robolora.models import load_tokenizer

    train, _ = split_records(load_records(DATA), 0.1, 42)
    dataset, _ = tokenize_records(train, load_tokenizer(MODEL), MAX_LENGTH)
    return sum(dataset["length"]) / len(dataset)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="timed optimizer steps per side (default: 40)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (default: 10)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads (default: all)")
    parser.add_argument("--json-out", default=None, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="robolora-bench-") as tmp:
        results = {
            "hf_trainer_peft": hf_trainer(args.steps, args.warmup, args.threads, Path(tmp)),
            "robolora": ours(args.steps, args.warmup, args.threads, Path(tmp)),
        }
    ratio = results["robolora"]["useful_tokens_per_s"] / results["hf_trainer_peft"]["useful_tokens_per_s"]
    results["ratio"] = ratio
    peaks = {name: matmul_peak(name, args.threads) for name in ("bfloat16", "float32")}
    flops = model_flops_per_token(mean_length())
    results["peak_flops"] = peaks
    results["model_flops_per_token"] = flops
    for name in ("hf_trainer_peft", "robolora"):
        achieved = results[name]["useful_tokens_per_s"] * flops
        results[name] |= {"model_flops_per_s": achieved, "mfu_bf16": achieved / peaks["bfloat16"]}
    results["settings"] = {"steps": args.steps, "warmup": args.warmup, "threads": args.threads, "batch": BATCH, **LORA}
    print(f"{'':18}{'useful tokens/s':>16}{'model GFLOP/s':>15}{'MFU (bf16 peak)':>17}")
    for name in ("hf_trainer_peft", "robolora"):
        r = results[name]
        print(f"{name:18}{r['useful_tokens_per_s']:>16.1f}{r['model_flops_per_s'] / 1e9:>15.1f}{r['mfu_bf16']:>17.1%}")
    print(f"ratio (robolora / Trainer + PEFT): {ratio:.2f}x")
    print(
        f"measured matmul peak: bf16 {peaks['bfloat16'] / 1e9:.1f} GFLOP/s, fp32 {peaks['float32'] / 1e9:.1f} GFLOP/s"
    )
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
