"""`robolora serve` under load: requests/s and latency of one client at a time, then of 8 concurrent ones.

    python benchmarks/serve.py --json-out benchmarks/results/serve.json

Starts `robolora serve` (the transformers engine) in its own process with one adapter of the bundled
SmolLM2-135M (the newest quickstart run in models/ by default, else `--lora-path`), sends two untimed
requests, then the validation split's commands through the `openai` client: `--sequential` of them one
after another, then `--requests` of them from `--clients` threads at once. Per phase: requests/s, the
median and 95th-percentile latency, completion tokens/s, and the share of answers that are valid robot
code and that match the reference exactly (scored as `robolora eval` scores). The server batches the
requests that wait together (`--max-batch`), which is what the concurrent phase measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, write_json


def newest_run() -> Path | None:
    """The newest finished quickstart run of the bundled model in models/, if any."""
    runs = sorted(ROOT.glob("models/quickstart-*/adapter_model.safetensors"), key=lambda p: p.stat().st_mtime)
    return runs[-1].parent if runs else None


def start_server(lora: Path, max_batch: int, logs: Path) -> tuple[subprocess.Popen, str]:
    """`robolora serve` on a free port; its process and base URL once it listens."""
    out = logs / "stdout.txt"
    command = [sys.executable, "-m", "robolora.cli", "serve", "--lora-path", f"robot={lora}", "--port", "0"]
    command += ["--max-batch", str(max_batch), "--backend", "transformers", "--no-log-requests"]
    with out.open("w") as stdout, (logs / "stderr.txt").open("w") as stderr:
        proc = subprocess.Popen(command, stdout=stdout, stderr=stderr, cwd=ROOT)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {(logs / 'stderr.txt').read_text()[-3000:]}")
        urls = [w for w in out.read_text().split() if w.startswith("http://")]
        if urls:
            return proc, urls[0]
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not start within 10 minutes")


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile, interpolated between the nearest ranks."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def phase(client, records: list[dict], clients: int, max_tokens: int) -> dict:
    """Every record's command sent once, from ``clients`` threads; rates, latencies and scores."""
    from robolora.evaluate import score

    def ask(record: dict) -> tuple[float, str, int]:
        start = time.perf_counter()
        reply = client.completions.create(model="robot", prompt=record["input"], max_tokens=max_tokens)
        return time.perf_counter() - start, reply.choices[0].text, reply.usage.completion_tokens

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(ask, records))
    wall = time.perf_counter() - start
    latencies = [r[0] for r in results]
    report = score(records, [r[1] for r in results]).overall
    return {
        "clients": clients,
        "requests": len(records),
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(records) / wall, 3),
        "latency_p50_s": round(percentile(latencies, 0.5), 2),
        "latency_p95_s": round(percentile(latencies, 0.95), 2),
        "latency_mean_s": round(statistics.mean(latencies), 2),
        "completion_tokens_per_s": round(sum(r[2] for r in results) / wall, 1),
        "api_valid": round(report.rate("api_valid"), 3),
        "exact": round(report.rate("exact"), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lora-path", type=Path, default=None, help="adapter (default: newest models/quickstart-*)")
    parser.add_argument("--requests", type=int, default=48, help="requests of the concurrent phase (default: 48)")
    parser.add_argument("--sequential", type=int, default=8, help="requests sent one at a time first (default: 8)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default: 8)")
    parser.add_argument("--max-batch", type=int, default=8, help="the server's --max-batch (default: 8)")
    parser.add_argument("--max-tokens", type=int, default=64, help="max_tokens of each request (default: 64)")
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()

    import openai

    lora = args.lora_path or newest_run()
    if lora is None:
        raise SystemExit("no adapter: train one (make quickstart) or pass --lora-path")
    val = lora / "val.jsonl"
    records = [json.loads(line) for line in val.read_text().splitlines()] if val.is_file() else []
    if len(records) < args.requests + args.sequential + 2:
        raise SystemExit(f"{val}: need {args.requests + args.sequential + 2} validation records")
    load_before = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as logs:
        started = time.perf_counter()
        proc, url = start_server(lora, args.max_batch, Path(logs))
        startup = time.perf_counter() - started
        try:
            client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=600)
            phase(client, records[:2], 1, args.max_tokens)  # warm-up, untimed
            rest = records[2:]
            one = phase(client, rest[: args.sequential], 1, args.max_tokens)
            many = phase(client, rest[args.sequential : args.sequential + args.requests], args.clients, args.max_tokens)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
    results = {
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            # other work on the machine slows every phase alike; the load says how busy it was
            "load_average_1m_before": load_before,
            "load_average_1m_after": round(os.getloadavg()[0], 2),
        },
        "adapter": str(lora.relative_to(ROOT) if lora.is_relative_to(ROOT) else lora),
        "engine": "transformers",
        "server_start_s": round(startup, 1),
        "settings": {"max_batch": args.max_batch, "max_tokens": args.max_tokens, "constrained": True},
        "sequential": one,
        "concurrent": many,
        "speedup": round(many["requests_per_s"] / one["requests_per_s"], 2),
    }
    print(json.dumps(results, indent=2))
    write_json(args.json_out, results)


if __name__ == "__main__":
    main()
