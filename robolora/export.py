"""Merge a LoRA adapter into its base model and save a plain transformers model.

The merged model loads with ``AutoModelForCausalLM.from_pretrained`` alone (no PEFT) and generates
the same tokens as base + adapter; the export checks that on a few commands before it finishes.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from robolora.errors import UserError

PROBES = ("move forward 3 meters", "pick up the red ball", "if you see a cup, pick it up")


def export_merged(lora_path: str | Path, output: str | Path) -> Path:
    """Write the merged model and tokenizer to ``output`` (a new directory), verified token for token."""
    import torch
    from transformers import AutoModelForCausalLM

    from robolora.infer import Generator

    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--output: {out} already exists and is not empty; choose a new directory")
    with_adapter = Generator.load(lora_path, merge=False, dtype=torch.float32)
    expected = [g.raw for g in with_adapter.generate(list(PROBES), max_new_tokens=64)]
    merged = with_adapter.model.merge_and_unload()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        merged.save_pretrained(tmp, safe_serialization=True)
        with_adapter.tokenizer.save_pretrained(tmp)
        reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32)
        got = [g.raw for g in Generator(reloaded, with_adapter.tokenizer).generate(list(PROBES), max_new_tokens=64)]
        if got != expected:
            raise RuntimeError(f"the merged model generates {got!r}, base + adapter {expected!r}")
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"exported {lora_path} merged into its base model to {out}; it generates the same tokens on {len(PROBES)} "
        "probe commands"
    )
    return out
