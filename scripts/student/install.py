"""Install what the course's notebooks need into this Python, with nbgrader's student side only.

Run it once, from this folder, with the Python of the virtual environment you use for the
course (see README.md)::

    python install.py

It pip-installs this folder (the course helpers, the public checks, JupyterLab and nbgrader
for the Validate button), then turns nbgrader's instructor tools off in this environment
only: Formgrader, Create Assignment, the Assignment and Course lists and their menu. Validate
stays. Extra arguments go to ``pip install`` (e.g. ``--index-url`` for a CUDA build of torch).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

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


def main(argv: list[str]) -> int:
    run("-m", "pip", "install", *argv, str(HERE))
    student_only(Path(sys.prefix))
    print(
        "\nInstalled. Start JupyterLab from this folder with:  jupyter lab assignments/"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
