"""Download progress for hub weights on remote nodes (robolora.download): the bytes a partial download holds
and the lines a watch prints while files grow."""

from __future__ import annotations

import time

from robolora.download import DownloadWatch, bytes_on_disk, progress_line, repo_cache_folder


def test_bytes_on_disk_counts_partial_blobs_once_and_not_the_snapshot_links(tmp_path):
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    (blobs / "aa").write_bytes(b"x" * 1000)
    (blobs / "bb.incomplete").write_bytes(b"x" * 250)
    snapshot = tmp_path / "snapshots" / "0123"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to(blobs / "aa")
    assert bytes_on_disk(tmp_path) == 1250
    assert bytes_on_disk(tmp_path / "missing") == 0


def test_a_watch_prints_growing_progress_until_stopped(tmp_path, capsys):
    folder = tmp_path / "models--org--big"
    with DownloadWatch(folder, total=4000, every_s=0.05, prefix="org/big on 10.0.0.2: ") as watch:
        folder.mkdir()
        for i in range(4):
            (folder / f"part{i}.incomplete").write_bytes(b"x" * 1000)
            time.sleep(0.12)
    seen = len(watch.lines)
    time.sleep(0.15)
    assert len(watch.lines) == seen, "the watch stops with its block"
    assert seen >= 3
    percents = [int(line.split("(")[1].split("%")[0]) for line in watch.lines]
    assert percents == sorted(percents) and percents[-1] == 100 and percents[0] < 100
    assert all(line.startswith("org/big on 10.0.0.2: 0.0 of 0.0 GiB") for line in watch.lines)
    assert capsys.readouterr().out.splitlines() == watch.lines


def test_progress_line_caps_at_100_percent_and_leaves_out_an_unknown_total():
    assert progress_line(5 * 2**30, 4 * 2**30, 0.0) == "5.0 of 4.0 GiB (100%)"
    assert progress_line(0, None, 10.0) == "0.0 GiB, 0.0 MiB/s"


def test_the_cache_folder_is_the_hub_clients(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert repo_cache_folder("codellama/CodeLlama-34b-hf") == tmp_path / "models--codellama--CodeLlama-34b-hf"
