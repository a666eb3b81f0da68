"""Install what the course's notebooks need into this Python, with nbgrader's student side only.

Run it once, from this folder, with the Python of the virtual environment you use for the
course (see README.md)::

    python install.py

It pip-installs this folder (the course helpers, the public checks, JupyterLab and nbgrader
for the Validate button), then turns nbgrader's instructor tools off in this environment
only: Formgrader, Create Assignment, the Assignment and Course lists and their menu. Validate
stays. Extra arguments go to ``pip install``.

PyTorch: on Linux, PyPI's ``torch`` wheel is the CUDA build (about 3 GB of NVIDIA libraries).
Where there is no NVIDIA GPU (no ``nvidia-smi`` on the PATH and no ``/proc/driver/nvidia``),
this script first installs the CPU build from PyTorch's own index
(:data:`CPU_INDEX`); on macOS and Windows PyPI's wheel is already the CPU one (plus Apple's MPS
on macOS). A ``torch`` that is already installed is kept, and so is anything you choose
yourself: with ``--index-url``, ``--extra-index-url``, ``--find-links`` or ``--no-index`` among
the arguments this script leaves torch to pip and to you.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

#: The oldest Python every dependency installs on (nbgrader 0.9.6 requires 3.11).
MIN_PYTHON = (3, 11)
#: PyTorch's index of CPU-only wheels (Linux and Windows).
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
#: The course's torch range (the course's pyproject.toml says the same; a test ties them).
TORCH_REQUIREMENT = "torch>=2.2,<3"
#: pip options by which a student picks the package source themselves.
SOURCE_OPTIONS = (
    "--index-url",
    "-i",
    "--extra-index-url",
    "--find-links",
    "-f",
    "--no-index",
)

#: nbgrader 0.9's JupyterLab plugins that only an instructor (or a course exchange) can use,
#: and JupyterLab's news pop-up (it asks to fetch news online on the first page a student sees).
LAB_PLUGINS = (
    "@jupyter/nbgrader:formgrader",
    "@jupyter/nbgrader:create-assignment",
    "@jupyter/nbgrader:assignment-list",
    "@jupyter/nbgrader:course-list",
    "@jupyter/nbgrader:menu",
    "@jupyterlab/apputils-extension:announcements",
)
#: Their server sides; ``nbgrader.server_extensions.validate_assignment`` stays on.
SERVER_EXTENSIONS = (
    "nbgrader.server_extensions.formgrader",
    "nbgrader.server_extensions.assignment_list",
    "nbgrader.server_extensions.course_list",
)


def run(*args: str) -> None:
    """Run ``python ARGS`` with this interpreter, so every step acts on the same environment."""
    print("+ python", " ".join(args), flush=True)
    subprocess.run([sys.executable, *args], check=True)


def merge_json(path: Path, update: dict[str, dict[str, Any]]) -> None:
    """Merge ``update`` (two levels deep) into the JSON file at ``path``, creating it if needed."""
    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    for key, values in update.items():
        data.setdefault(key, {}).update(values)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"+ wrote {path}")


def student_only(prefix: Path) -> None:
    """Turn nbgrader's instructor tools off in the environment at ``prefix``.

    Writes what ``jupyter labextension disable/lock --level=sys_prefix`` and ``jupyter server
    extension disable --sys-prefix`` write (each of those takes many seconds per name): the
    environment's ``labconfig/page_config.json`` and ``jupyter_server_config.json``, which
    take precedence over the ``jupyter_server_config.d/nbgrader.json`` that enables them.
    """
    config = prefix / "etc" / "jupyter"
    off = dict.fromkeys(LAB_PLUGINS, True)
    merge_json(
        config / "labconfig" / "page_config.json",
        {"disabledExtensions": off, "lockedExtensions": off},
    )
    merge_json(
        config / "jupyter_server_config.json",
        {"ServerApp": {"jpserver_extensions": dict.fromkeys(SERVER_EXTENSIONS, False)}},
    )


def has_nvidia_gpu() -> bool:
    """An NVIDIA driver is present: ``nvidia-smi`` on the PATH or ``/proc/driver/nvidia``."""
    return shutil.which("nvidia-smi") is not None or os.path.exists(
        "/proc/driver/nvidia"
    )


def torch_install_args(
    system: str, nvidia: bool, torch_installed: bool, argv: Sequence[str]
) -> list[str] | None:
    """The ``python -m pip`` arguments that install torch first, or None to leave it to pip.

    Args:
        system: ``platform.system()``: ``"Linux"``, ``"Darwin"``, ``"Windows"``.
        nvidia: Whether an NVIDIA driver is present (:func:`has_nvidia_gpu`).
        torch_installed: Whether ``import torch`` would find a torch already.
        argv: The extra arguments the student gave for ``pip install``.
    """
    if torch_installed or nvidia or system != "Linux":
        return None  # keep it / the CUDA wheel is wanted / PyPI's wheel is the CPU one
    if any(a == o or a.startswith(o + "=") for a in argv for o in SOURCE_OPTIONS):
        return None  # the student chose where packages come from
    options = [a for a in argv if a in ("-q", "--quiet", "-v", "--verbose")]
    return [
        "-m",
        "pip",
        "install",
        *options,
        "--index-url",
        CPU_INDEX,
        TORCH_REQUIREMENT,
    ]


#: Asks this environment's ipykernel what it will report as the notebooks' ``language_info``.
LANGUAGE_INFO = (
    "import json; from ipykernel.ipkernel import IPythonKernel; "
    "print(json.dumps(IPythonKernel.language_info))"
)


def stamp_language_info(folder: Path, info: dict[str, Any]) -> list[Path]:
    """Write ``info`` as ``metadata.language_info`` of every ``folder/*/*.ipynb`` that differs.

    JupyterLab replaces a notebook's ``language_info`` by what the kernel reports (Python's
    version included) as soon as the kernel starts, and a notebook whose metadata changed is
    unsaved: without this a notebook a student has not touched shows as modified. Only that
    key changes; the file keeps nbformat's layout (sorted keys, one-space indent), and no
    cell, hence no nbgrader checksum, is touched. Returns the notebooks rewritten.
    """
    changed = []
    for path in sorted(folder.glob("*/*.ipynb")):
        notebook = json.loads(path.read_text(encoding="utf-8"))
        if notebook.get("metadata", {}).get("language_info") == info:
            continue
        notebook.setdefault("metadata", {})["language_info"] = info
        text = json.dumps(notebook, sort_keys=True, indent=1, ensure_ascii=False)
        path.write_text(text + "\n", encoding="utf-8")
        changed.append(path)
    return changed


def main(argv: list[str]) -> int:
    if sys.version_info < MIN_PYTHON:
        print(
            f"This course needs Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer (nbgrader 0.9.6 "
            f"does); this is {platform.python_version()}. Make the virtual environment with a "
            "newer python3 and run install.py again."
        )
        return 1
    torch_args = torch_install_args(
        platform.system(),
        has_nvidia_gpu(),
        importlib.util.find_spec("torch") is not None,
        argv,
    )
    if torch_args is not None:
        print("No NVIDIA GPU here: installing the CPU build of PyTorch.", flush=True)
        run(*torch_args)
    run("-m", "pip", "install", *argv, str(HERE))
    student_only(Path(sys.prefix))
    info = subprocess.run(
        [sys.executable, "-c", LANGUAGE_INFO],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    changed = stamp_language_info(HERE / "assignments", json.loads(info))
    print(
        f"+ set the kernel's language_info in {len(changed)} notebooks (they open unmodified)"
    )
    print(
        "\nInstalled. Start JupyterLab from this folder with:  jupyter lab assignments/"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
