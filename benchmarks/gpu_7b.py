"""7B-shaped LoRA on one GPU: useful tokens/s and MFU against Hugging Face ``Trainer`` + PEFT, and the
memory planner's prediction against the worker's measured peak.

    python benchmarks/gpu_7b.py --repeats 3 --json-out benchmarks/results/gpu_7b.json

The model has CodeLlama-7B's shape (32 layers, hidden 4096, MLP 11008, 32 heads) with random bf16
weights and the bundled tokenizer's vocabulary (no download). The records are the shipped dataset's
commands joined five at a time into multi-step programs, so most sequences come close to
``--max-length`` (256). Every side trains the product's default LoRA (r=32, alpha=64, dropout 0.05,
q/k/v/o in every layer) with the same micro-batch on bf16 weights; our side runs the real path: Ray
Train, one GPU worker, NCCL, a DeepSpeed ZeRO-2 engine and NVML sampling, grouped by length.

The peers are ``throughput.py``'s: the fair peer (the headline: ``Trainer`` grouped by length, fused
AdamW, bf16 weights with ``bf16=True``) and, unless ``--no-untuned``, the untuned one for reference
(``Trainer``'s random order and default optimizer). ``--repeats N`` (default 3) runs each side N times,
interleaved, each in a fresh process; the table gives each side's median, spread and MFU and the
ratios of the medians, and ``--json-out`` keeps every run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import long_records, planner_estimate  # noqa: E402
from throughput import SIDES, UNTUNED, Setup, compare, print_table  # noqa: E402

SHAPE_7B = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 4096,
    "rope_theta": 1_000_000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}
LORA_DEFAULTS = {
    "lora_r": 32,
    "lora_alpha": 64,
    "lora_dropout": 0.05,
    "lora_target_modules": "q_proj,k_proj,v_proj,o_proj",
    "lora_layers": "all",
}


def build_model(tokenizer_source: str, dest: Path, shape: dict = SHAPE_7B, device: str = "cuda") -> Path:
    """A randomly initialised Llama of ``shape`` (7B's) in bf16, saved with the tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from robolora.models import load_tokenizer

    if (dest / "config.json").is_file():
        return dest
    tokenizer = load_tokenizer(tokenizer_source)
    config = LlamaConfig(
        **shape,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    start = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    params = sum(p.numel() for p in model.parameters())
    print(f"built {params / 1e9:.2f}B parameters in {time.perf_counter() - start:.0f} s")
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return dest


def planner_memory(setup: Setup) -> dict:
    """What the memory planner predicts for our side's worker (ZeRO-2, one GPU, no checkpointing)."""
    est = planner_estimate(
        setup.model,
        setup.lora,
        batch=setup.batch,
        max_length=setup.max_length,
        workers=1,
        stage=2,
        offload="none",
        on_gpu=True,
    )
    parts = {k: v / 2**20 for k, v in dataclasses.asdict(est).items()}
    return {"total_mb": est.total / 2**20, "without_margin_mb": (est.total - est.margin) / 2**20, "parts_mb": parts}


def ours_variants(setup: Setup, variants: list[dict], args: argparse.Namespace) -> int:
    """Our side alone under each variant's extra settings: tokens/s, MFU and any profile."""
    import tempfile

    from throughput import matmul_peak, mean_length, model_flops_per_token, ours

    flops = model_flops_per_token(setup.model, mean_length(setup))
    peak = matmul_peak("bfloat16", setup)
    results = []
    for extra in variants:
        with tempfile.TemporaryDirectory(prefix="robolora-bench-") as tmp:
            r = ours(dataclasses.replace(setup, extra=extra), args.steps, args.warmup, Path(tmp))
        r |= {"extra": extra, "mfu_bf16": r["useful_tokens_per_s"] * flops / peak}
        results.append(r)
        print(r.pop("profile", ""))
        print(f"{json.dumps(extra)}: {r['useful_tokens_per_s']:.1f} useful tokens/s, MFU {r['mfu_bf16']:.1%}")
    for r in results:
        print(f"{json.dumps(r['extra']):60} {r['useful_tokens_per_s']:>10.1f} tokens/s  MFU {r['mfu_bf16']:.1%}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2, default=str))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", default="smollm2-135m", help="tokenizer source (default: the bundled one)")
    parser.add_argument("--work-dir", default="/tmp/robolora-gpu-7b", help="where the model and records are built")
    parser.add_argument("--batch", type=int, default=16, help="micro-batch (default: 16)")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps per run (default: 30)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (default: 10)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side, interleaved (default: 3)")
    parser.add_argument(
        "--no-untuned", action="store_true", help="leave out the untuned Trainer + PEFT reference (the fair peer stays)"
    )
    parser.add_argument("--json-out", default=None, help="also write the results here, every run included")
    parser.add_argument(
        "--ours-only",
        action="append",
        metavar="JSON",
        help='only our side, with these extra settings (repeatable: one run each), e.g. \'{"profile_steps": "12-14"}\'',
    )
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    import torch

    if not torch.cuda.is_available():  # before writing 13 GB of weights that only a GPU can train
        raise SystemExit("gpu_7b.py: no CUDA GPU here; it trains a 7B-shaped model on one (the CPU's: throughput.py)")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    model = build_model(args.tokenizer, work / "model")
    data = long_records(work / "records.json", per_record=5)
    setup = Setup(
        model=str(model), data=data, batch=args.batch, max_length=args.max_length, gpu=True, lora=LORA_DEFAULTS
    )
    if args.ours_only:
        return ours_variants(setup, [json.loads(v) for v in args.ours_only], args)
    sides = tuple(name for name in SIDES if not (args.no_untuned and name == UNTUNED))
    results = compare(setup, args.steps, args.warmup, args.repeats, sides)
    results["planner"] = planner_memory(setup)
    print_table(results)
    measured = results["robolora"]["peak_memory_mb"]
    planner = results["planner"]
    nvml = [s.get("gpu_mem_used_mb") for s in results["robolora"]["device_samples"]]
    print(
        f"worker peak memory (highest of {args.repeats} runs): {measured:.0f} MiB allocated by torch, NVML used "
        f"{nvml} MiB (last run); planner "
        f"{planner['without_margin_mb']:.0f} MiB before its margin "
        f"({planner['without_margin_mb'] / measured - 1:+.1%}), "
        f"{planner['total_mb']:.0f} MiB with it"
    )
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
