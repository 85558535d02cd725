"""What ``robolora plan`` does: size the model, find the GPUs and print the memory plan; a model it could only
size by a download that cannot happen is refused at once."""

from __future__ import annotations

import argparse
import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from robolora.memplan import GpuInventory
    from robolora.sizing import ModelDims

#: Seconds a hub reachability probe waits for a connection (name lookup included).
HUB_PROBE_TIMEOUT_S = 2.0


def _hub_unreachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """Why the Hugging Face hub cannot be reached from here, or None when a connection opens in time.

    Offline mode (``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``) answers at once; otherwise one TCP
    connection to the hub (``HF_ENDPOINT``), or to the HTTPS proxy the environment names, is tried
    in a thread, so that a slow name lookup cannot hold the command either.
    """
    import socket
    import urllib.parse
    import urllib.request

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE"):
            return f"{name} is set"
    endpoint = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)
    proxy = urllib.request.getproxies().get(endpoint.scheme or "https")
    if proxy and not urllib.request.proxy_bypass(host):
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = parts.hostname or host, parts.port or 8080
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as e:
            outcome.append(e.strerror or str(e) or type(e).__name__)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if outcome and outcome[0] is None:
        return None
    return f"{host}:{port}: {outcome[0] if outcome else f'no answer in {timeout:g} s'}"


def _check_plan_model(name: str) -> str | None:
    """Refuse at once a --model the planner could only size by a download that cannot happen.

    Sizes, CodeLlama names and aliases need nothing; a local path is read as it is. Anything that looks
    like a size but is not one (70B) is refused without the network; a hub name where the hub is
    unreachable and the name's config is not in the local hub cache (``transformers`` would retry the
    hub for half a minute before it failed). Returns the cached snapshot folder to read instead of
    the hub when the hub is unreachable but the cache holds the model's config, else None.
    """
    from robolora.errors import ConfigError
    from robolora.models import ALIASES
    from robolora.sizing import SIZES, known_model, looks_like_size

    if known_model(name) or name in ALIASES:
        return None
    try:
        if Path(name).expanduser().exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
            return None  # a local path: the model check reads it, or says what is missing
    except OSError:
        return None
    known = (
        f"use a size ({', '.join(SIZES)}), an alias ({', '.join(ALIASES)}), a CodeLlama hub name such as "
        "codellama/CodeLlama-7b-Python-hf, a local model directory, or a hub name on a machine that reaches the hub"
    )
    shown = name if len(name) <= 80 else name[:80] + "..."
    if looks_like_size(name):
        raise ConfigError(f"--model: {shown!r} is not a size the planner knows; {known}")
    why = _hub_unreachable()
    if why is None:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
    except Exception:  # not a valid hub name either
        cached = None
    if not isinstance(cached, str):
        raise ConfigError(f"--model: {shown!r} is not in the local hub cache and cannot be fetched ({why}); {known}")
    return str(Path(cached).parent)


def cmd_plan(args: argparse.Namespace) -> int:
    from robolora.errors import ConfigError
    from robolora.flags import config_from_namespace
    from robolora.memplan import (
        check_nodes,
        guide_table,
        parse_gpus,
        plan_memory,
    )
    from robolora.placement import inference_needs
    from robolora.preflight import model_dims, workload

    check_nodes(args.nodes)
    if args.gpus is not None:
        parse_gpus(args.gpus, args.nodes)  # a malformed --gpus is refused before the model is looked up
    keys = (
        "model_name",
        "max_length",
        "batch_size",
        "lora_r",
        "lora_target_modules",
        "gradient_checkpointing",
        "quantization",
    )
    given = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    cfg = config_from_namespace(argparse.Namespace(config=args.config, **given))
    cached = _check_plan_model(cfg.model_name)
    dims, label = model_dims(cfg.replace(model_name=cached) if cached else cfg)
    if cached:
        label = f"{cfg.model_name} (the local hub cache's copy; the hub is out of reach)"
    work = workload(cfg, dims)
    unknown = [t for t in work.targets if not dims.targeted([t])]
    if unknown:
        style = "GPT-2" if dims.arch == "gpt2" else "Llama-style"
        raise ConfigError(
            f"--lora-target-modules: none of {','.join(unknown)!r} is a linear module of a {style} layer; "
            f"use names from {','.join(dims.linear_names())}"
        )
    gpus = _gpus_to_plan(args, dims)
    plan = plan_memory(work, gpus, zero_stage=cfg.zero_stage, offload=cfg.offload)
    print(plan.report(label))
    print(inference_needs(dims, gpus.memory))
    print()
    print(guide_table(work))
    return 0 if plan.fits else 1


def _gpus_to_plan(args: argparse.Namespace, dims: ModelDims) -> GpuInventory:
    """--gpus as given, else this machine's GPUs, else the training guide's recommended card for the model's
    size; with the host memory of each node (--host-memory, else this machine's when planning its own GPUs)."""
    from robolora.gpu import available_memory, local_gpus
    from robolora.memplan import GpuInventory, card_memory, closest_guide_row, parse_gpus
    from robolora.placement import parse_size

    gpus = parse_gpus(args.gpus, args.nodes) if args.gpus is not None else local_gpus(args.nodes)
    if gpus is None:
        row = closest_guide_row(dims)
        memory, note = card_memory(row.recommended_gb)
        gpus = GpuInventory(
            args.nodes,
            memory,
            args.nodes,
            source=f"no GPU visible here, so the training guide's recommended {row.recommended_gb} GB for {row.size}: "
            f"{note}; pass --gpus NxSIZE for yours",
        )
    host = parse_size(args.host_memory, "--host-memory") if args.host_memory else None
    if host is None and args.gpus is None and gpus.source.startswith("this machine"):
        host = available_memory(False)[0]  # planning this machine's own GPUs: its own host memory
    return replace(gpus, host_memory=host)
