"""Where a 7B-shaped LoRA step's time goes on one GPU: variants of the same step side by side in one process.

    python benchmarks/gpu_step.py

Without Ray or data loading: a CodeLlama-7B-shaped model (random bf16 weights), the product's default
LoRA (r=32 on q/k/v/o, dropout 0.05), 16 random sequences of 200-256 tokens a step, the last 40% of each
a response. Each variant runs 3 untimed steps, then 8 timed ones; "host" is the time the Python side
spends issuing a step, "step" the time until the device has run it. A host time close to the step time
means the host waits for the device (device-bound); a short one means the device waits for the host.

Variants: the step as the worker runs it (fused LoRA branch, fused RMSNorm) against Llama's own RMSNorm
and PEFT's own LoRA forward, with and without the padding mask, cuDNN attention allowed (its first pass
builds a plan for each new batch shape); forward and backward alone; SwiGLU and the rotary embeddings
compiled with ``torch.compile``, which the worker does not do; DeepSpeed ZeRO-2 as the worker builds it,
with its bf16 gradient-overflow check on and off. Then the device synchronisations of
one DeepSpeed step and a torch.profiler table of two.

On a machine without a GPU the same code runs a 4-layer, 64-wide model on the CPU: a check that the
script works, not a measurement.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from gpu_7b import LORA_DEFAULTS, SHAPE_7B  # noqa: E402

GPU = torch.cuda.is_available()
DEVICE = "cuda" if GPU else "cpu"
SHAPE_SMOKE = SHAPE_7B | dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4
)
#: micro-batch, shortest and longest sequence, untimed and timed steps
BATCH, SHORTEST, LONGEST, WARMUP, STEPS = (16, 200, 256, 3, 8) if GPU else (4, 20, 32, 1, 2)
PARAMS_7B = 6.74e9  # CodeLlama-7B's parameters, for the rough TFLOP/s column (4 x parameters per token)


def build() -> tuple[Any, list]:
    """The model with PEFT's LoRA in bf16 (the fused branch and norms installed) and its LoRA layers."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from robolora.kernels import use_fused_lora, use_fused_norms, use_shape_free_attention

    use_shape_free_attention()
    torch.manual_seed(0)
    shape = SHAPE_7B if GPU else SHAPE_SMOKE
    config = LlamaConfig(**shape, vocab_size=49152)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(DEVICE):
        model = LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    model.config.use_cache = False
    lora = LoraConfig(
        r=LORA_DEFAULTS["lora_r"],
        lora_alpha=LORA_DEFAULTS["lora_alpha"],
        lora_dropout=LORA_DEFAULTS["lora_dropout"],
        target_modules=LORA_DEFAULTS["lora_target_modules"].split(","),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.to(torch.bfloat16)
    use_fused_lora(model)
    use_fused_norms(model)
    return model, [m for m in model.modules() if getattr(m, "_robolora_fused", False)]


def batches() -> tuple[list[dict[str, torch.Tensor]], int]:
    """Collated batches of random token ids, and the real tokens of the timed ones."""
    from robolora.data import collate
    from robolora.loss import _to_tensors, with_targets

    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(WARMUP + STEPS):
        rows = []
        for n in torch.randint(SHORTEST, LONGEST + 1, (BATCH,), generator=g).tolist():
            ids = torch.randint(5, 49000, (n,), generator=g).tolist()
            cut = n * 6 // 10
            rows.append({"input_ids": ids, "labels": [-100] * cut + ids[cut:]})
        out.append(with_targets(_to_tensors(collate(rows, 0), torch.device("cpu"))))
    return out, sum(int(b["attention_mask"].sum()) for b in out[WARMUP:])


def sync() -> None:
    if GPU:
        torch.cuda.synchronize()


def to_device(batch: dict[str, torch.Tensor], mask: bool) -> dict[str, torch.Tensor]:
    from robolora.loss import without_padding_mask

    batch = batch if mask else without_padding_mask(batch)
    return {k: v.pin_memory().to(DEVICE, non_blocking=True) if GPU else v for k, v in batch.items()}


def measure(name: str, step: Callable, raw: list, tokens: int, mask: bool = False) -> None:
    data = [to_device(b, mask) for b in raw]
    for b in data[:WARMUP]:
        step(b)
    sync()
    host = 0.0
    start = time.perf_counter()
    for b in data[WARMUP:]:
        t = time.perf_counter()
        step(b)
        host += time.perf_counter() - t
    sync()
    wall = (time.perf_counter() - start) / STEPS
    rate = tokens / STEPS / wall
    flops = f"  ~{rate * 4 * PARAMS_7B / 1e12:5.0f} TFLOP/s" if GPU else ""  # the CPU check's model is not 7B
    timing = f"{wall * 1000:7.1f} ms/step  host {host / STEPS * 1000:7.1f} ms  {rate:8.0f} tok/s"
    print(f"{name:56} {timing}{flops}", flush=True)


def compiled_elementwise() -> Callable[[], None]:
    """Compile Llama's SwiGLU and rotary embeddings with ``torch.compile``; returns what undoes it."""
    from transformers.models.llama import modeling_llama as llama

    mlp_forward, rotary = llama.LlamaMLP.forward, llama.apply_rotary_pos_emb
    silu_mul = torch.compile(lambda g, u: torch.nn.functional.silu(g) * u, dynamic=True)

    def mlp(m: Any, x: torch.Tensor) -> torch.Tensor:
        return m.down_proj(silu_mul(m.gate_proj(x), m.up_proj(x)))

    llama.LlamaMLP.forward = mlp
    llama.apply_rotary_pos_emb = torch.compile(rotary, dynamic=True)

    def undo() -> None:
        llama.LlamaMLP.forward, llama.apply_rotary_pos_emb = mlp_forward, rotary

    return undo


def profile_deepspeed(step: Callable, raw: list) -> None:
    """The device synchronisations of one step (where they come from) and a profile of two."""
    from torch.profiler import ProfilerActivity, profile

    data = [to_device(b, False) for b in raw[:2]]
    torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step(data[0])
    torch.cuda.set_sync_debug_mode(0)
    where = collections.Counter(f"{Path(w.filename).name}:{w.lineno}" for w in caught if "synchroniz" in str(w.message))
    print("syncs in one deepspeed step:", sum(where.values()), dict(where))
    sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for b in data:
            step(b)
        sync()
        wall = time.perf_counter() - start
    table = prof.key_averages()
    device_ms = sum(e.self_device_time_total for e in table) / 1e3
    print(f"profiled 2 deepspeed steps: wall {wall * 1000:.0f} ms, device self time {device_ms:.0f} ms")
    print(table.table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=60))
    print(table.table(sort_by="self_device_time_total", row_limit=15, max_name_column_width=60))


def main() -> int:
    argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog="It takes no options: the variants are fixed."
    ).parse_args()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29561", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    import deepspeed
    import torch.distributed as tdist

    from robolora.config import TrainConfig
    from robolora.ds_config import load_template, resolve
    from robolora.loss import TargetLogitsLM
    from robolora.optim import build_optimizer, param_groups

    tdist.init_process_group("nccl" if GPU else "gloo")
    start = time.perf_counter()
    model, lora_layers = build()
    print(f"attention: {model.config._attn_implementation}, built in {time.perf_counter() - start:.0f} s", flush=True)
    # What robolora.kernels routed: each forward is a partial holding the module's own as its second argument.
    routed = {m: vars(m)["forward"] for m in model.modules() if "forward" in vars(m)}
    lora_forward = {m: f for m, f in routed.items() if m in lora_layers}
    norm_forward = {m: f for m, f in routed.items() if m not in lora_layers}
    print(f"routed: {len(lora_forward)} LoRA layers, {len(norm_forward)} norms", flush=True)

    def toggle(forwards: dict, on: bool) -> None:
        for m, forward in forwards.items():
            m.forward = forward if on else forward.args[1]

    def fused(on: bool) -> None:
        toggle(lora_forward, on)

    def fused_norms(on: bool) -> None:
        toggle(norm_forward, on)

    wrapped = TargetLogitsLM(model)
    raw, tokens = batches()
    cfg = TrainConfig()

    def optimizer() -> torch.optim.Optimizer:
        return build_optimizer(param_groups([(n, p) for n, p in model.named_parameters() if p.requires_grad], cfg), cfg)

    opt = optimizer()

    def plain(b: dict) -> None:
        wrapped(**b, num_items_in_batch=100.0).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def forward_backward(b: dict) -> None:
        wrapped(**b, num_items_in_batch=100.0).loss.backward()
        opt.zero_grad(set_to_none=True)

    measure("plain: as the worker (fused LoRA, fused norms), no mask", plain, raw, tokens)
    fused_norms(False)
    measure("plain: fused LoRA, Llama's RMSNorm, no mask", plain, raw, tokens)
    fused_norms(True)
    measure("plain: fused LoRA, mask", plain, raw, tokens, mask=True)
    fused(False)
    measure("plain: PEFT LoRA, no mask", plain, raw, tokens)
    measure("plain: PEFT LoRA, mask", plain, raw, tokens, mask=True)
    if GPU:
        torch.backends.cuda.enable_cudnn_sdp(True)
        measure("plain: PEFT LoRA, mask, cuDNN attention allowed", plain, raw, tokens, mask=True)
        measure("plain: PEFT LoRA, mask, cuDNN attention, again", plain, raw, tokens, mask=True)
        torch.backends.cuda.enable_cudnn_sdp(False)
    fused(True)
    first = to_device(raw[0], False)

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            loss = wrapped(**first, num_items_in_batch=100.0).loss.float().item()
        model.train()
        return loss

    reference = eval_loss()  # the weights move with every measured step
    fused_norms(False)
    print(f"fused RMSNorm: loss {reference:.5f} against Llama's RMSNorm {eval_loss():.5f}", flush=True)
    fused_norms(True)
    undo = compiled_elementwise()
    print(f"compiled SwiGLU and rotary: loss {eval_loss():.5f} against {reference:.5f}", flush=True)
    measure("plain: as the worker, SwiGLU and rotary compiled", plain, raw, tokens)
    undo()
    measure("fwd+bwd only: fused, no mask", forward_backward, raw, tokens)
    with torch.no_grad():
        measure("forward only (no grad): fused, no mask", lambda b: wrapped(**b, num_items_in_batch=100.0), raw, tokens)

    ds = resolve(
        load_template(2, "none"),
        micro_batch=BATCH,
        grad_accum=1,
        world_size=1,
        bf16=True,
        grad_clip=1.0,
        hidden_size=model.config.hidden_size,
        pin_memory=GPU,
    )
    ds["zero_force_ds_cpu_optimizer"] = False
    ds["zero_allow_untested_optimizer"] = True
    ds["bf16"]["check_grad_overflow"] = True  # as DeepSpeed defaults; turned off below, as the templates do
    engine, _, _, _ = deepspeed.initialize(model=wrapped, optimizer=optimizer(), config=ds, dist_init_required=False)

    def deepspeed_step(b: dict) -> None:
        out = engine(**b, num_items_in_batch=100.0)
        engine.backward(out.loss)
        engine.step()

    measure("deepspeed ZeRO-2: fused, no mask", deepspeed_step, raw, tokens)
    engine.optimizer.check_grad_overflow = False
    measure("deepspeed, check_grad_overflow off", deepspeed_step, raw, tokens)
    engine.optimizer.check_grad_overflow = True
    engine.optimizer.clip_grad = 0.0
    measure("deepspeed, no clipping", deepspeed_step, raw, tokens)
    engine.optimizer.clip_grad = 1.0
    if GPU:
        profile_deepspeed(deepspeed_step, raw)
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
