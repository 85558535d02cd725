"""The pre-training checklist: each refusal is one clear message, and nothing is written."""

from __future__ import annotations

import json

import pytest
import torch

from robolora.config import from_dict
from robolora.data import load_datasets
from robolora.errors import UserError
from robolora.preflight import check_batches, check_output_dir, check_resume_from, plan_run
from robolora.runrecord import RUN_MARKER


def _cfg(tmp_path, **kw):
    return from_dict({"data_json": "d.json", "output_dir": str(tmp_path / "out"), **kw})


def _refusal(call, *args) -> str:
    """The message of the user error ``call(*args)`` raises; the command would exit with code 2."""
    with pytest.raises(UserError) as e:
        call(*args)
    assert e.value.exit_code == 2
    return str(e.value)


def test_new_and_empty_directories_are_fine(tmp_path):
    check, resuming = check_output_dir(_cfg(tmp_path))
    assert check.ok and not resuming and "new, writable" in check.detail
    (tmp_path / "out").mkdir()
    assert check_output_dir(_cfg(tmp_path))[1] is False


def test_foreign_directory_is_refused_and_untouched(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    assert _refusal(check_output_dir, _cfg(tmp_path)) == (
        f"--output-dir: {out} is not empty and holds no robolora run; choose a new or empty directory"
    )
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]


def _marker(tmp_path, finished, **resolved):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    given = _cfg(tmp_path).to_dict()
    (out / RUN_MARKER).write_text(json.dumps({"given": given, "resolved": {**given, **resolved}, "finished": finished}))


def test_finished_run_is_refused(tmp_path):
    _marker(tmp_path, finished=True)
    assert _refusal(check_output_dir, _cfg(tmp_path)) == (
        f"--output-dir: {tmp_path / 'out'} already holds a finished run; choose another directory "
        "(or --resume-from it to start a new stage from its adapter)"
    )


def test_unfinished_run_resumes_with_same_or_resolved_settings(tmp_path):
    _marker(tmp_path, finished=False, num_workers=2, zero_stage=2)
    assert check_output_dir(_cfg(tmp_path))[1] is True
    assert check_output_dir(_cfg(tmp_path, num_workers=2, zero_stage=2))[1] is True
    assert check_output_dir(_cfg(tmp_path, ray_address="auto"))[1] is True  # where it runs may change


def test_unfinished_run_with_other_settings_is_refused(tmp_path):
    _marker(tmp_path, finished=False)
    assert _refusal(check_output_dir, _cfg(tmp_path, lora_r=8)) == (
        f"--output-dir: {tmp_path / 'out'} holds an unfinished run with other settings (lora_r 32 -> 8); "
        "start it again with the same flags and inputs to resume, or choose another directory"
    )


def test_output_dir_that_is_a_file(tmp_path):
    (tmp_path / "out").write_text("x")
    message = _refusal(check_output_dir, _cfg(tmp_path))
    assert message == f"--output-dir: {tmp_path / 'out'} is a file; choose a directory"
    assert (tmp_path / "out").read_text() == "x"


def test_datasets_split_or_pair(tmp_path, write_json):
    recs = [
        {"input": f"wait {i} seconds", "output": f"robot.wait(seconds={i}.0)", "category": "movement"}
        for i in range(1, 21)
    ]
    data = write_json("d.json", recs)
    train, val, how = load_datasets(from_dict({"data_json": str(data), "val_ratio": 0.25}))
    assert (len(train), len(val)) == (15, 5) and "split 15 train / 5 validation" in how
    val_file = write_json("v.json", recs[:3])
    train, val, _ = load_datasets(from_dict({"train_json": str(data), "val_json": str(val_file)}))
    assert (len(train), len(val)) == (20, 3)
    assert _refusal(load_datasets, from_dict({})) == (
        "no dataset: pass --data-json FILE, or --train-json FILE [--val-json FILE]"
    )


def test_plan_fills_what_was_left_out():
    plan = plan_run(from_dict({}), cluster_cpus=2, cluster_gpus=0).config
    assert (plan.num_workers, plan.use_gpu, plan.cpus_per_worker, plan.zero_stage, plan.offload) == (
        2,
        False,
        1,
        2,
        "none",
    )
    plan = plan_run(from_dict({"zero_stage": 3, "num_workers": 1}), cluster_cpus=2, cluster_gpus=0).config
    assert (plan.num_workers, plan.cpus_per_worker, plan.zero_stage) == (1, 2, 3)
    gpu = plan_run(from_dict({}), cluster_cpus=32, cluster_gpus=8).config
    assert (gpu.num_workers, gpu.use_gpu) == (8, True)


def test_plan_refuses_what_the_cluster_cannot_give():
    assert _refusal(lambda: plan_run(from_dict({"num_workers": 4}), cluster_cpus=2, cluster_gpus=0)) == (
        "--num-workers 4: the Ray cluster has only 2 CPUs; use at most 2"
    )
    assert _refusal(lambda: plan_run(from_dict({"use_gpu": True}), cluster_cpus=2, cluster_gpus=0)) == (
        "--use-gpu: the Ray cluster has no GPUs; leave the flag out to train on CPU workers"
    )


def test_resume_from_needs_a_matching_adapter(tmp_path):
    src = tmp_path / "stage1"
    src.mkdir()
    assert _refusal(check_resume_from, from_dict({"resume_from": str(src)})) == (
        f"--resume-from: {src} holds no adapter (adapter_config.json and adapter_model.safetensors); "
        "pass a training run's output directory or one of its checkpoint-<step> folders"
    )
    from safetensors.torch import save_file

    (src / "adapter_model.safetensors").write_bytes(b"")
    (src / "adapter_config.json").write_text(json.dumps({"r": 16, "target_modules": ["q_proj", "v_proj"]}))
    assert _refusal(check_resume_from, from_dict({"resume_from": str(src)})) == (
        f"--resume-from: {src / 'adapter_model.safetensors'}: not a safetensors file (no valid header); "
        "the adapter is damaged: pass another checkpoint-<step> folder, or train it again"
    )
    save_file({"w": torch.zeros(2)}, str(src / "adapter_model.safetensors"))
    assert _refusal(check_resume_from, from_dict({"resume_from": str(src)})) == (
        f"--resume-from: {src} has LoRA r=16 on ['q_proj', 'v_proj']; pass the same --lora-r and --lora-target-modules"
    )
    ok = check_resume_from(from_dict({"resume_from": str(src), "lora_r": 16, "lora_target_modules": "v_proj,q_proj"}))
    assert ok.ok and str(src) in ok.detail


def test_dataset_must_fill_a_global_batch():
    cfg = plan_run(
        from_dict({"batch_size": 4, "gradient_accumulation_steps": 2}), cluster_cpus=2, cluster_gpus=0
    ).config
    assert check_batches(cfg, 40).detail == ("global batch 16, 2 optimizer steps per epoch")
    assert _refusal(check_batches, cfg, 10) == (
        "dataset: 10 training records cannot fill one global batch of 16 (--batch-size 4 x "
        "--gradient-accumulation-steps 2 x 2 workers); lower those or add records"
    )
