"""The environment check behind ``scripts/setup.sh``: it looks at what is installed now, and each kind of
stale or broken install is a problem it names. Also: the suite's per-test timeout stops a hung test."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("check_env", ROOT / "scripts" / "check_env.py")
check_env = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_env)


def test_versions_are_read_from_the_installed_packages():
    assert check_env.version_problems(["pytest>=1", "pyyaml>=1"]) == []
    (old,) = check_env.version_problems(["pytest>=999"])
    assert old.startswith("pytest ") and "does not satisfy pytest>=999" in old
    (missing,) = check_env.version_problems(["no-such-package-robolora>=1"])
    assert missing == "no-such-package-robolora: not installed (needs no-such-package-robolora>=1)"


def test_the_project_requirements_include_the_dev_extra():
    names = check_env.requirements(ROOT / "pyproject.toml")
    assert any(r.startswith("deepspeed") for r in names) and any(r.startswith("pytest-timeout") for r in names)


def test_the_main_job_asks_for_no_extra_and_the_tests_for_the_dev_one():
    """`make quickstart` sets up without the tests' packages (EXTRAS=), `make test` with them."""
    runtime = check_env.requirements(ROOT / "pyproject.toml", extras=())
    assert any(r.startswith("deepspeed") for r in runtime)
    assert not any(r.startswith(("pytest", "wandb", "xgrammar", "moto")) for r in runtime)
    makefile = (ROOT / "Makefile").read_text()
    quickstart = makefile.split("\nquickstart:", 1)[1].split("\n\n", 1)[0]
    assert "EXTRAS= bash scripts/setup.sh" in quickstart
    assert "EXTRAS=${EXTRAS-dev}" in (ROOT / "scripts" / "setup.sh").read_text()


def test_the_torch_build_must_match_the_machine():
    import torch

    assert check_env.torch_problems("", gpu=torch.cuda.is_available()) == []
    (wrong,) = check_env.torch_problems("0.0.1", gpu=torch.cuda.is_available())
    assert "setup installs 0.0.1" in wrong
    if not torch.cuda.is_available():
        (cpu_on_gpu,) = check_env.torch_problems("", gpu=True)
        assert "torch cannot use it" in cpu_on_gpu


def test_a_module_that_does_not_import_is_named():
    (line,) = check_env.import_problems(("robolora_no_such_module",))
    assert line.startswith("robolora_no_such_module: does not import (ModuleNotFoundError")


def test_robolora_must_come_from_this_checkout(tmp_path):
    assert check_env.robolora_problems() == []
    (line,) = check_env.robolora_problems(tmp_path)
    assert f"not from this checkout {tmp_path}" in line


def test_the_check_passes_on_this_environment_and_reports_its_torch():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_env.py")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith("check: environment ready (torch ")


def test_setup_checks_the_environment_instead_of_trusting_a_stamp():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "check_env.py" in setup and "STAMP" not in setup and "touch" not in setup


def test_a_hung_test_is_stopped_by_the_per_test_timeout(tmp_path):
    test = tmp_path / "test_hangs.py"
    test.write_text("import time\n\n\ndef test_hangs():\n    time.sleep(60)\n\n\ndef test_after():\n    pass\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "timeout=2", str(test)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stdout[-2000:]
    assert "Timeout (>2.0s)" in done.stdout and "1 failed, 1 passed" in done.stdout, done.stdout[-2000:]
