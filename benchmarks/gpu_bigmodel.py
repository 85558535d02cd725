"""The big-model path on one GPU, beside the memory planner: a 4-bit QLoRA step, evaluation spread over the
GPU and the host (``--max-memory``), 4-bit evaluation, and the streaming export.

    python benchmarks/gpu_bigmodel.py --json-out benchmarks/results/gpu_bigmodel.json

The model has CodeLlama-7B's shape with random bf16 weights (``gpu_7b.py``'s, saved in 2 GB shards so the
export streams them) and the bundled tokenizer. Each phase runs the product's own command:

1. ``robolora train --quantization 4bit`` for ``--steps`` steps, one GPU worker: the worker's peak device
   memory (``train_summary.json``) against the planner's figure for the same run.
2. ``robolora eval`` of the adapter three ways on ``--limit`` commands: the bf16 model whole on the GPU;
   spread by accelerate over the GPU (capped at ``--gpu-cap``) and the host; and 4-bit. Peak device memory
   of each (torch's allocator) beside what the planner's inference line says.
3. ``robolora export``: the merge's peak host-memory growth against one shard plus the adapter (the bound
   the streaming merge keeps), and the whole command's peak resident memory.

``--shape tiny`` runs the same phases on a 2-layer model on the CPU (no 4-bit, no caps): a check that the
script works, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import DATA, write_json  # noqa: E402
from gpu_7b import SHAPE_7B  # noqa: E402

SHAPE_TINY = {**SHAPE_7B, "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 4}  # fmt: skip
LORA = {"lora_r": 16, "lora_alpha": 32, "lora_target_modules": "q_proj,k_proj,v_proj,o_proj"}


def build_model(dest: Path, shape: dict, device: str) -> Path:
    """A randomly initialised Llama of ``shape`` in bf16, in 2 GB safetensors shards, with the tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from robolora.models import load_tokenizer

    if (dest / "config.json").is_file():
        return dest
    tokenizer = load_tokenizer("smollm2-135m")
    config = LlamaConfig(**shape, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(dest, max_shard_size="2GB")
    tokenizer.save_pretrained(dest)
    del model
    return dest


#: Runs a robolora command in this child process, then prints the device memory it peaked at.
CHILD = (
    "import sys, torch; from robolora.cli import main; rc = main(sys.argv[1:]); "
    "print('DEVICE_PEAK', torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0); sys.exit(rc)"
)


def robolora(*args: str) -> dict:
    """A ``robolora`` command in a fresh process: its output, wall seconds, peak resident memory and, for
    what runs in that process (eval, export), its peak device memory (MiB)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    if proc.returncode:
        raise SystemExit(f"robolora {' '.join(args)} failed:\n{log[-4000:]}")
    # Children are waited for one at a time: the largest child so far is this one when it is the largest.
    peak_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    device = next((int(line.split()[1]) for line in log.splitlines() if line.startswith("DEVICE_PEAK ")), 0)
    return {"wall_s": round(wall, 1), "largest_child_rss_mb": round(peak_rss), "device_peak_mb": device / 2**20,
            "log_tail": log[-1200:]}  # fmt: skip


def planner_mb(model: Path, quantization: str | None, on_gpu: bool) -> float:
    """The planner's per-worker figure (MiB) for phase 1's run: what `robolora plan` computes for it."""
    from common import planner_estimate

    lora = {**LORA, "quantization": quantization} if quantization else LORA
    est = planner_estimate(str(model), lora, batch=8, max_length=256, workers=1, stage=2, offload="none",
                           on_gpu=on_gpu)  # fmt: skip
    return est.total / 2**20


def train_qlora(model: Path, out: Path, steps: int, on_gpu: bool) -> dict:
    """Phase 1: the QLoRA steps, the worker's peak and the planner's figure for it."""
    quant = ["--quantization", "4bit"] if on_gpu else []
    lora = [f"--{k.replace('_', '-')}={v}" for k, v in LORA.items()]
    run = robolora("train", "--model-name", str(model), "--data-json", str(DATA), "--output-dir", str(out),
                   "--max-steps", str(steps), "--batch-size", "8", "--max-length", "256", "--num-workers", "1",
                   "--save-steps", str(steps), "--eval-steps", str(steps), *quant, *lora)  # fmt: skip
    summary = json.loads((out / "train_summary.json").read_text())
    run["memory_per_worker"] = summary.get("memory_per_worker")
    run["planner_mb"] = planner_mb(model, "4bit" if on_gpu else None, on_gpu)
    return run


def evaluate(adapter: Path, limit: int, extra: list[str], label: str) -> dict:
    """Phase 2: one ``robolora eval`` way: its scores and peak memory."""
    out = adapter.parent / f"{adapter.name}-eval-{label}.json"
    run = robolora("eval", "--lora-path", str(adapter), "--limit", str(limit), "--json-out", str(out), *extra)
    run["args"] = extra
    run["scores"] = json.loads(out.read_text())
    return run


def export(adapter: Path, dest: Path, base: Path) -> dict:
    """Phase 3: the streaming export, beside its bound (the largest shard plus the adapter)."""
    run = robolora("export", "--lora-path", str(adapter), "--output", str(dest))
    shards = list(base.glob("*.safetensors"))
    adapter_bytes = (adapter / "adapter_model.safetensors").stat().st_size
    run["merge_line"] = next((x for x in run["log_tail"].splitlines() if "peak host memory of the merge" in x), "")
    run["bound_mb"] = (max(f.stat().st_size for f in shards) + adapter_bytes) / 2**20
    run["shards"] = len(shards)
    return run


def inference_line(base: Path) -> str:
    """The planner's inference line for the model on this GPU (what `robolora plan` prints)."""
    import torch
    from transformers import AutoConfig

    from robolora.placement import inference_needs
    from robolora.sizing import ModelDims

    if not torch.cuda.is_available():
        return ""
    total = torch.cuda.get_device_properties(0).total_memory
    return inference_needs(ModelDims.from_config(AutoConfig.from_pretrained(base)), total)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=("7b", "tiny"), default="7b")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--limit", type=int, default=64, help="commands each evaluation judges")
    ap.add_argument("--gpu-cap", default="6GiB", help="the GPU's cap in the spread evaluation")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/robolora-bigmodel"))
    ap.add_argument("--json-out")
    args = ap.parse_args()
    import torch

    on_gpu = torch.cuda.is_available()
    if args.shape == "7b" and not on_gpu:
        raise SystemExit("gpu_bigmodel.py: no CUDA GPU here; --shape tiny checks the script on the CPU")
    shape = SHAPE_7B if args.shape == "7b" else SHAPE_TINY
    base = build_model(args.workdir / f"base-{args.shape}", shape, "cuda" if on_gpu else "cpu")
    results: dict = {"shape": args.shape, "device": torch.cuda.get_device_name() if on_gpu else "cpu"}
    adapter = args.workdir / f"qlora-{args.shape}-{int(time.time())}"
    results["train"] = train_qlora(base, adapter, args.steps, on_gpu)
    ways = {"whole": []}
    if on_gpu:
        ways["spread"] = ["--max-memory", f"0:{args.gpu_cap},cpu:100GiB"]
        ways["4bit"] = ["--quantization", "4bit"]
    results["eval"] = {label: evaluate(adapter, args.limit, extra, label) for label, extra in ways.items()}
    results["planner_inference"] = inference_line(base)
    results["export"] = export(adapter, adapter.parent / f"{adapter.name}-merged", base)
    print(json.dumps(results, indent=2, default=str))
    write_json(args.json_out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
