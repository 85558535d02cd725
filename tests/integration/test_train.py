"""Training on real Ray Train workers with real DeepSpeed engines (CPU, gloo) and the tiny model."""

from __future__ import annotations

import json
import sys

import pytest
import ray.cloudpickle
import ray.train
import torch
from safetensors.torch import load_file, save_file

from tests.integration.conftest import SGD, SGD_ONE, SGD_TWO, TINY_REFERENCE, metric_rows, series

PROBE = [[1, 520, 2041, 288, 3702, 17, 1120, 446, 30, 2]]


def probe_loop(config):
    """The standard worker, then the trained engine's logits on a fixed input (all ranks take part:
    under ZeRO-3 the forward pass gathers the sharded weights)."""
    from robolora import dist
    from robolora.worker import run_worker

    trainer = run_worker(config)
    trainer.engine.eval()
    with torch.no_grad():
        logits = trainer.engine(input_ids=torch.tensor(PROBE)).logits.float()
    if dist.is_main():
        save_file({"logits": logits.contiguous()}, f"{trainer.out}/probe_logits.safetensors")


def assert_same_curve(out, reference, steps: int, after: int) -> None:
    """Every step logged once, and the losses after the restart point those of the unbroken run."""
    resumed, expected = series(out, "train_loss"), series(reference, "train_loss")
    assert sorted(resumed) == list(range(1, steps + 1))
    later = range(after + 1, steps + 1)
    torch.testing.assert_close(
        torch.tensor([resumed[s] for s in later]), torch.tensor([expected[s] for s in later]), rtol=1e-5, atol=1e-5
    )


# Workers cannot import this test module: ship the probe by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.mark.parametrize("stage", [2, 3])
def test_two_workers_adapter_reproduces_trained_logits(train_run, stage):
    from peft import PeftModel

    from robolora.models import load_model

    out = train_run(f"zero{stage}", train_loop=probe_loop, zero_stage=stage, max_steps=4)
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "config.yaml",
        "metrics.jsonl",
        "loss_curve.png",
        "README.md",
        "tokenizer.json",
    ):
        assert (out / name).is_file(), name
    weights = load_file(str(out / "adapter_model.safetensors"))
    assert len(weights) == 2 * 7 * 2  # A and B for 7 modules in 2 layers
    assert all(t.numel() > 0 for t in weights.values())
    assert any(k.endswith("lora_B.weight") and t.abs().sum() > 0 for k, t in weights.items())  # it trained
    model = PeftModel.from_pretrained(load_model("tiny-llama"), str(out))
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(PROBE)).logits.float()
    torch.testing.assert_close(logits, load_file(str(out / "probe_logits.safetensors"))["logits"])
    assert json.loads((out / "robolora_run.json").read_text())["finished"] is True
    # ZeRO-2 keeps the whole model on each worker; ZeRO-3 loads each weight into its shard
    full = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    workers = json.loads((out / "train_summary.json").read_text())["memory_per_worker"]
    held = [w["weights_mb"] for w in workers]
    if stage == 2:
        assert held == pytest.approx([full, full], rel=0.01)
    else:
        assert max(held) < 0.6 * full and sum(held) == pytest.approx(full, rel=0.05)
    # the model's tensors on each worker: its weights (or shard) and the adapters' fp32 states beside them
    assert all(w["weights_mb"] < w["model_tensors_mb"] < w["weights_mb"] + full for w in workers)
    assert (out / "checkpoint-4" / "adapter_model.safetensors").is_file()


def test_profiling_start_up_phases_and_device_samples(unbroken):
    """The shared one- and two-worker runs (their curves are compared in test_equivalence.py): rank 0 of
    the two-worker run profiled steps 2-3; each run's summary says where its start-up went; every logged
    step carries each worker's device sample."""
    one, two = unbroken(**SGD_ONE), unbroken(**SGD_TWO)
    summary = (two / "profile" / "summary.txt").read_text()
    assert summary.startswith("steps 2-3: ") and "ms per step" in summary and "aten::mm" in summary
    assert (two / "profile" / "trace.json").stat().st_size > 1000
    assert not (one / "profile").exists()
    startup = json.loads((one / "train_summary.json").read_text())["startup_s"]
    assert list(startup) == ["checks", "ray", "worker", "data", "model", "engine", "first_step", "total"]
    assert all(v >= 0 for v in startup.values())
    assert startup["total"] == pytest.approx(sum(startup.values()) / 2, abs=0.01)
    # process memory here, NVML figures on GPUs
    for out, workers in ((one, 1), (two, 2)):
        logged = [r for r in metric_rows(out) if "train_loss" in r]
        assert len(logged) == SGD["max_steps"] and all(len(r["devices"]) == workers for r in logged)
        gpu = json.loads((out / "train_summary.json").read_text())["device"] == "cuda"
        key = "gpu_mem_used_mb" if gpu else "rss_mb"
        assert all(s[key] > (0 if gpu else 100) for r in logged for s in r["devices"])


class ReportLog(ray.train.UserCallback):
    """Ray Train's controller calls this after every ``ray.train.report``: one line per report in a file."""

    def __init__(self, path):
        self.path = str(path)

    def after_report(self, run_context, metrics, checkpoint):
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": metrics[0]["step"], "checkpoint": checkpoint is not None}) + "\n")


def test_logging_every_step_reports_to_ray_at_most_every_few_seconds(train_run, tmp_path):
    # Ray Train's controller holds one report per worker until it polls: a report every step waited
    # for that poll, up to 1.7 s a step.
    from robolora.worker import METRICS_REPORT_INTERVAL_S

    log = tmp_path / "reports.jsonl"
    out = train_run("spaced", callbacks=[ReportLog(log)], max_steps=12, save_steps=6, eval_steps=50)
    assert sorted(series(out, "train_loss")) == list(range(1, 13))  # every step still logged
    reports = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in reports if r["checkpoint"]] == [6, 12]
    runtime = json.loads((out / "train_summary.json").read_text())["train_runtime_s"]
    assert len([r for r in reports if not r["checkpoint"]]) <= runtime // METRICS_REPORT_INTERVAL_S


def oom_loop(config):
    """A worker that runs out of memory as PyTorch reports it on a GPU."""
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.1 GiB total)")


def test_out_of_memory_names_the_flags_that_lower_memory(train_run, capsys):
    from robolora.launcher import TrainingFailed

    with pytest.raises(TrainingFailed) as failed:
        train_run("oom", train_loop=oom_loop)
    message = str(failed.value)
    assert "CUDA out of memory" in message
    for flag in ("--batch-size", "--gradient-accumulation-steps", "--gradient-checkpointing", "--zero-stage 3",
                 "--offload", "--max-length"):  # fmt: skip
        assert flag in message


def save_fails_at_step_6_loop(config):
    """The standard worker, except that rank 1's save at step 6 fails midway (a full disk, a lost node):
    it writes part of its DeepSpeed state, then raises, while rank 0 saves and reports its part."""
    from robolora.worker import Trainer, run_worker

    save = Trainer.save_checkpoint

    def failing_save(self, metrics):
        if self.step == 6 and self.rank == 1:
            self.engine.save_checkpoint(f"{self.out}/.scratch-rank1", tag="partial", exclude_frozen_parameters=True)
            raise OSError(28, "No space left on device")
        return save(self, metrics)

    Trainer.save_checkpoint = failing_save
    run_worker(config)


@pytest.fixture
def s3_storage():
    """A real S3-compatible server (moto's, on 127.0.0.1) with an empty bucket: the ``--storage-path`` URI
    and a client that lists the bucket. The credentials ride in the URI because the session's Ray workers
    started before this test and do not see environment variables set now."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://{host}:{port}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket="runs")
    yield f"s3://testing:testing@runs/robolora?endpoint_override={host}:{port}&scheme=http&region=us-east-1", s3
    server.stop()


def bucket_checkpoints(s3, run: str) -> dict[str, set[str]]:
    """The checkpoint folders of ``run`` in the bucket, with the files in each."""
    found: dict[str, set[str]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="runs", Prefix=f"robolora/{run}/"):
        for key in (o["Key"] for o in page.get("Contents", [])):
            parts = key.split("/")
            if len(parts) > 3 and parts[2].startswith("checkpoint-"):
                found.setdefault(parts[2], set()).add("/".join(parts[3:]))
    return found


def test_an_interrupted_save_leaves_no_visible_checkpoint_and_resume_uses_the_previous_one(
    train_run, tiny_reference, tmp_path, s3_storage
):
    """Checkpoints in a bucket (--storage-path s3://...): a save that fails midway leaves no checkpoint there
    or in the output directory, and the same command again resumes from the bucket's last complete one."""
    import shutil

    from robolora.config import load_config_file
    from robolora.launcher import TrainingFailed

    uri, s3 = s3_storage
    assert TINY_REFERENCE == {"save_steps": 3}  # the same settings as the runs below
    reference = tiny_reference
    out = tmp_path / "broken-save"
    with pytest.raises(TrainingFailed, match="No space left on device"):
        train_run("broken-save", save_steps=3, storage_path=uri, train_loop=save_fails_at_step_6_loop)
    shutil.rmtree(out / ".scratch-rank1", ignore_errors=True)
    # Only complete checkpoints are visible: step 3 with every rank's state; nothing of step 6.
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3"]
    three = out / "checkpoint-3"
    saved = {"trainer_state.json", "adapter_model.safetensors", "rng_rank0.safetensors", "rng_rank1.safetensors"}
    assert saved <= {p.name for p in three.iterdir()}
    in_bucket = bucket_checkpoints(s3, "broken-save")
    assert sorted(in_bucket) == ["checkpoint-3"] and saved <= in_bucket["checkpoint-3"]
    assert any(f.startswith("deepspeed/") for f in in_bucket["checkpoint-3"])
    assert not (out / ".ray").exists()  # Ray Train kept the run in the bucket, not beside the output
    assert load_config_file(out / "config.yaml")["storage_path"] == uri  # a URI is never made a local path
    train_run("broken-save", save_steps=3, storage_path=uri)  # the same command again: resumes from step 3
    assert_same_curve(out, reference, steps=8, after=3)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6", "checkpoint-8"]
    assert sorted(bucket_checkpoints(s3, "broken-save")) == ["checkpoint-3", "checkpoint-6", "checkpoint-8"]
    assert not list(out.glob(".checkpoint-*"))


def test_packed_examples_fill_their_rows_and_train(train_run):
    """--packing: several examples per row (positions restarting at each), fewer and fuller rows per epoch; with
    --structure-weight, each example's line breaks and end weigh more wherever it lies in its row."""
    out = train_run("packed", packing=True, group_by_length=True, structure_weight=3.0)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["packed_rows"] < summary["train_examples"] / 1.5
    rows = [r for r in metric_rows(out) if "train_loss" in r]
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert all(r["padding_efficiency"] > 0.9 for r in rows)
    # an epoch is its packed rows, 2 workers x 4 a step
    assert round(rows[0]["step"] / rows[0]["epoch"]) == summary["packed_rows"] // 8
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] - 0.15
    assert "eval_loss" in summary


def test_max_steps_beyond_the_epochs_runs_exactly_that_many_steps(train_run):
    """--max-steps overrides --num-epochs as in Hugging Face's Trainer: 7 steps at 3 per epoch go on into the
    third epoch of the seeded plan; the schedule (total_steps, which the progress bar shows), the summary and the
    model card agree."""
    out = train_run(
        "past-epochs",
        batch_size=16,
        num_epochs=1,
        max_steps=7,
        eval_steps=50,
        save_steps=50,
        lr_scheduler_type="linear",
    )
    summary = json.loads((out / "train_summary.json").read_text())
    assert (summary["steps"], summary["total_steps"]) == (7, 7)
    rows = [r for r in metric_rows(out) if "train_loss" in r]
    assert [r["step"] for r in rows] == list(range(1, 8))
    # the linear decay spans the 7 steps, not the 3 of the one epoch asked for
    assert [r["learning_rate"] for r in rows] == pytest.approx([5e-3 * (1 - s / 7) for s in range(1, 8)])
    per_epoch = round(rows[0]["step"] / rows[0]["epoch"])
    assert per_epoch == 3 and rows[-1]["epoch"] == round(7 / 3, 4)  # global batch 32 of ~108 training examples
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-7"]
    assert (
        "| length | 7 optimizer steps (--max-steps, which overrides --num-epochs) |" in (out / "README.md").read_text()
    )
