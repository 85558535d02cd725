"""Publishing checkpoints: a visible checkpoint folder is always whole; the newest K are kept."""

from __future__ import annotations

import pytest

from robolora import checkpoints
from robolora.checkpoints import prune, publish, remove_partials, visible_steps


def persisted(root, step, files=("adapter_model.safetensors", "trainer_state.json", "deepspeed/rank0.pt")):
    src = root / "ray" / f"checkpoint-{step}"
    for name in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(f"{name} at {step}")
    return src


def test_publish_links_the_files_under_the_final_name(tmp_path):
    out = tmp_path / "out"
    final = publish(persisted(tmp_path, 3), out, 3)
    assert final == out / "checkpoint-3"
    assert (final / "deepspeed" / "rank0.pt").read_text() == "deepspeed/rank0.pt at 3"
    src_file = tmp_path / "ray" / "checkpoint-3" / "trainer_state.json"
    assert (final / "trainer_state.json").stat().st_ino == src_file.stat().st_ino  # linked, not copied
    assert [p.name for p in out.iterdir()] == ["checkpoint-3"]


def test_an_interrupted_publish_leaves_nothing_visible_and_is_cleaned_up(tmp_path, monkeypatch):
    out = tmp_path / "out"
    publish(persisted(tmp_path, 3), out, 3)
    calls = []

    def fail_on_second_file(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        checkpoints.shutil.copy2(src, dst)

    monkeypatch.setattr(checkpoints, "_link_or_copy", fail_on_second_file)
    with pytest.raises(OSError, match="No space left"):
        publish(persisted(tmp_path, 6), out, 6)
    assert visible_steps(out) == [3]
    assert (out / ".checkpoint-6.partial").is_dir()  # hidden, and gone at the next start
    remove_partials(out)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-3"]


def test_the_same_step_published_again_replaces_the_old_folder(tmp_path):
    out = tmp_path / "out"
    publish(persisted(tmp_path, 6, files=("old.txt",)), out, 6)
    (tmp_path / "ray" / "checkpoint-6" / "old.txt").unlink()
    publish(persisted(tmp_path, 6, files=("new.txt",)), out, 6)
    assert [p.name for p in (out / "checkpoint-6").iterdir()] == ["new.txt"]
    assert [p.name for p in out.iterdir()] == ["checkpoint-6"]


def test_only_the_newest_k_are_kept(tmp_path):
    out = tmp_path / "out"
    for step in (3, 6, 9, 12):
        publish(persisted(tmp_path, step), out, step, keep=2)
    assert visible_steps(out) == [9, 12]
    prune(out, 1)
    assert visible_steps(out) == [12]


@pytest.mark.parametrize(
    ("visible", "registered", "expected"),
    [
        ([3, 6], "checkpoint-3", 6),  # stopped before Ray Train registered step 6
        ([3], None, 3),  # stopped before it registered the first one
        ([3, 6], "checkpoint-6", None),  # registered: Ray Train's own
        ([3], "checkpoint-6", None),  # the visible one pruned or removed: the registered one is newer
        ([], "checkpoint-3", None),
        ([], None, None),  # a fresh run
        ([6], "checkpoint_000001", None),  # a name this toolkit does not give: Ray Train's choice stands
    ],
)
def test_resume_takes_a_published_checkpoint_ray_train_has_not_registered(visible, registered, expected):
    assert checkpoints.newer_than_registered(visible, registered) == expected
