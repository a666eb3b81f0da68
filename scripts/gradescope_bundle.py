"""Build Gradescope autograder bundles: ``dist/gradescope/<assignment>.zip`` (``make gradescope``).

One zip per assignment (Gradescope configures an autograder per programming assignment).
Each holds ``setup.sh`` (run once when Gradescope builds the image), ``run_autograder`` (run
per submission) and the course's packages, and grades with the same command as CI:
``autograde gradescope --assignment ID``, i.e. ``autograde grade`` on a one-submission tree,
whose results.json is copied to ``/autograder/results/``.

Secrets: the bundle carries the hidden checks and the references (the judge needs them).
``setup.sh`` makes them, and the bundle's sources, readable by root only; the sandboxed
worker runs as an unprivileged uid (``privdrop`` level, or ``namespace`` where the container
allows namespaces), so student code cannot read them.

Usage: ``python scripts/gradescope_bundle.py [ID ...] [--out dist/gradescope]``
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autograder.secrets import PRIVATE_SUBPACKAGES  # noqa: E402
from autograder.tasks import ASSIGNMENTS  # noqa: E402

EXCLUDE_PARTS = {"__pycache__", ".ipynb_checkpoints", ".hypothesis"}

SETUP = """#!/usr/bin/env bash
# Gradescope image build: Python, CPU torch, the course package; secrets readable by root only.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q python3 python3-venv python3-pip
python3 -m venv /autograder/venv
/autograder/venv/bin/pip install -q --upgrade pip
/autograder/venv/bin/pip install -q "torch=={torch}" --index-url https://download.pytorch.org/whl/cpu
/autograder/venv/bin/pip install -q /autograder/source
site=$(/autograder/venv/bin/python -c "import autograder, os; print(os.path.dirname(os.path.dirname(autograder.__file__)))")
chmod -R go-rwx {secret_dirs} /autograder/source
# Warm the caches a first run would otherwise build (matplotlib fonts, .pyc files).
MPLBACKEND=Agg /autograder/venv/bin/python -c "import matplotlib.pyplot, torch, autograder.checks, course_lib"
"""

RUN = """#!/usr/bin/env bash
# Gradescope runs this once per submission; results go to /autograder/results/results.json.
cd /autograder/source
export OMP_NUM_THREADS=1
exec /autograder/venv/bin/autograde gradescope --assignment {assignment} \\
    --submission /autograder/submission --results /autograder/results \\
    --timeout {timeout} --memory {memory}
"""


def _secret_dirs() -> str:
    """The secret folders of the installed packages, as setup.sh's arguments."""
    return " ".join(
        f'"$site/{package}/{sub}"'
        for package, subs in PRIVATE_SUBPACKAGES.items()
        for sub in subs
    )


def _files(root: Path, folder: str) -> list[Path]:
    return sorted(
        p
        for p in (root / folder).rglob("*")
        if p.is_file() and not EXCLUDE_PARTS & set(p.parts) and p.suffix != ".pyc"
    )


def _torch_version() -> str:
    import torch

    return torch.__version__.split("+")[0]


def build(
    assignment: str,
    out: Path,
    *,
    timeout: int = 1200,
    memory: int = 2048,
    root: Path = ROOT,
) -> Path:
    """Write ``out/<assignment>.zip`` and return its path."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{assignment}.zip"

    def add(
        archive: zipfile.ZipFile, name: str, data: bytes | str, executable: bool = False
    ) -> None:
        info = zipfile.ZipInfo(name, date_time=(2025, 1, 1, 0, 0, 0))
        info.external_attr = (0o755 if executable else 0o644) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, data)

    with zipfile.ZipFile(target, "w") as archive:
        add(
            archive,
            "setup.sh",
            SETUP.format(torch=_torch_version(), secret_dirs=_secret_dirs()),
            executable=True,
        )
        add(
            archive,
            "run_autograder",
            RUN.format(assignment=assignment, timeout=timeout, memory=memory),
            executable=True,
        )
        add(archive, "pyproject.toml", (root / "pyproject.toml").read_bytes())
        readme = root / "README.md"
        add(
            archive,
            "README.md",
            readme.read_bytes() if readme.is_file() else b"DSC190 autograder\n",
        )
        for folder in ("autograder", "course_lib"):
            for path in _files(root, folder):
                add(archive, str(path.relative_to(root)), path.read_bytes())
        release = root / "assignments" / assignment
        # The released notebook lets the grader recognise grade cells.
        if release.is_dir():
            for path in _files(root, f"assignments/{assignment}"):
                add(archive, str(path.relative_to(root)), path.read_bytes())
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ids", nargs="*", help="assignment ids (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / "gradescope")
    parser.add_argument(
        "--timeout",
        type=int,
        default=1200,
        help="seconds per submission (Gradescope allows up to 40 min)",
    )
    parser.add_argument(
        "--memory",
        type=int,
        default=2048,
        help="MB per submission on top of the libraries",
    )
    args = parser.parse_args(argv)
    ids = args.ids or list(ASSIGNMENTS)
    unknown = sorted(set(ids) - set(ASSIGNMENTS))
    if unknown:
        parser.error(f"unknown assignments: {', '.join(unknown)}")
    for assignment in ids:
        path = build(assignment, args.out, timeout=args.timeout, memory=args.memory)
        print(
            f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}  ({path.stat().st_size // 1024} KiB)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
