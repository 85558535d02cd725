"""`pip install .` (not editable) gives a working package, console command and DeepSpeed templates."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_non_editable_install(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", target, ROOT],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    assert (target / "bin" / "robolora").is_file()
    env = {**os.environ, "PYTHONPATH": str(target)}
    probe = (
        "import robolora, robolora.ds_config as d; "
        "print(robolora.__file__); print(d.load_template(3, 'all')['zero_optimization']['stage'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path, check=True
    ).stdout.split()
    assert out[0].startswith(str(target)) and out[1] == "3"
    cli = subprocess.run(
        [sys.executable, target / "bin" / "robolora", "robot", "check", "robot.stop()"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert cli.returncode == 0 and "robot.stop()" in cli.stdout
