"""Build what students receive: the released notebooks and the public packages, pip-installable.

The bundle is ``dist/dsc190-vi-student/`` (and the same tree zipped next to it)::

    pyproject.toml  README.md
    install.py                       pip-installs the bundle, keeps only nbgrader's Validate
    nbgrader_config.py               Validate's per-cell time limit
    assignments/<id>/<id>.ipynb      the nbgrader release, as committed
    course_lib/                      without course_lib/reference (the answers)
    autograder/                      without autograder/hidden (the hidden checks)

Students follow :data:`ROUTE` (the bundle's README; the repository's README quotes it word for
word): a virtual environment, ``python install.py``, ``jupyter lab assignments/``. That gives
them the helpers, the public checks that the notebooks' grade cells call, and nbgrader's
Validate button, and none of nbgrader's instructor tools. ``make lab`` takes the same route
from ``dist/``. ``tests/test_notebooks/test_student_bundle.py`` proves that no
reference or hidden-check code is inside.

Usage: python scripts/student_bundle.py [--out DIR] [--no-zip]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autograder.secrets import PRIVATE_SUBPACKAGES  # noqa: E402 - the one secret rule

NAME = "dsc190-vi-student"
#: Files copied to the bundle's top level from scripts/student/.
STUDENT_FILES = ("install.py", "nbgrader_config.py")

JUNK = (
    "__pycache__",
    "*.pyc",
    ".ipynb_checkpoints",
    ".DS_Store",
    "*.egg-info",
    ".hypothesis",
)


def _project_table(root: Path) -> dict:
    """``[project]`` of the course's pyproject (installed metadata on Python 3.10, no tomllib)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        dist = metadata.distribution("dsc190-vi")
        deps = [r for r in dist.requires or [] if "extra ==" not in r]
        return {
            "dependencies": deps,
            "version": dist.version,
            "requires-python": dist.metadata["Requires-Python"],
        }
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]


def _pyproject(root: Path) -> str:
    """A minimal pyproject: the course's runtime dependencies and the two public packages."""
    project = _project_table(root)
    deps = [
        *project["dependencies"],
        "jupyterlab>=4.2,<5",
        "ipykernel>=6",
        "ipywidgets>=8",
        "nbgrader==0.9.6",  # the Validate button; install.py turns its instructor tools off
    ]
    dep_lines = "".join(f'    "{d}",\n' for d in deps)
    return (
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "{NAME}"\nversion = "{project["version"]}"\n'
        'description = "DSC190 lecture 17 (variational inference): assignments, helpers and public checks"\n'
        f'requires-python = "{project.get("requires-python", ">=3.11")}"\n'
        f"dependencies = [\n{dep_lines}]\n\n"
        '[tool.setuptools.packages.find]\ninclude = ["course_lib*", "autograder*"]\n\n'
        '[tool.setuptools.package-data]\ncourse_lib = ["py.typed", "mnist_5k.npz"]\nautograder = ["py.typed"]\n'
    )


#: The one student route, in the bundle's README and (verbatim) in the repository's README.
ROUTE = """Once, in the course folder (the unzipped `dsc190-vi-student/`), with Python 3.11 or newer:

    python3 -m venv .venv
    source .venv/bin/activate        # Windows: .venv\\Scripts\\activate
    python install.py

`install.py` fills `.venv` with about 1.6 GB: the CPU build of PyTorch, unless the machine has
an NVIDIA GPU (then PyPI's CUDA build, about 6 GB in all). Then, each time you work, from the same folder:

    source .venv/bin/activate        # Windows: .venv\\Scripts\\activate
    jupyter lab assignments/

Work in `assignments/<id>/<id>.ipynb`, in the cells marked `# YOUR CODE HERE`, and run the
grade cell under each exercise: it prints which checks pass, what to look at, and your points
on the public checks. More checks (the hidden ones) run when your notebook is graded.
Before you submit, click **Validate** in the notebook's toolbar: it reruns the notebook and
names every grade cell whose public checks do not all pass."""

_README = """# DSC190 lecture 17: variational inference (student bundle)

{route}
"""


def _copy_package(src: Path, dest: Path, private: tuple[str, ...]) -> None:
    def ignore(directory: str, names: list[str]) -> set[str]:
        skipped = set(shutil.ignore_patterns(*JUNK)(directory, names))
        if Path(directory) == src:
            skipped |= {n for n in names if n in private}
        return skipped

    shutil.copytree(src, dest, ignore=ignore)


def build(out: Path, root: Path = ROOT, make_zip: bool = True) -> Path:
    """Write the bundle to ``out/dsc190-vi-student`` (replacing it); returns that folder."""
    bundle = out / NAME
    if bundle.exists():
        shutil.rmtree(bundle)
    bundle.mkdir(parents=True)
    shutil.copytree(
        root / "assignments",
        bundle / "assignments",
        ignore=shutil.ignore_patterns(*JUNK),
    )
    for package, private in PRIVATE_SUBPACKAGES.items():
        _copy_package(root / package, bundle / package, private)
    (bundle / "pyproject.toml").write_text(_pyproject(root))
    (bundle / "README.md").write_text(_README.format(route=ROUTE))
    for name in STUDENT_FILES:
        shutil.copy2(root / "scripts" / "student" / name, bundle / name)
    if make_zip:
        shutil.make_archive(str(out / NAME), "zip", root_dir=out, base_dir=NAME)
    return bundle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=ROOT / "dist", help="output folder (default: dist/)"
    )
    parser.add_argument("--no-zip", action="store_true", help="write the folder only")
    args = parser.parse_args(argv)
    if not any((ROOT / "assignments").glob("*/*.ipynb")):
        print("assignments/ is empty: run `make release` first")
        return 1
    bundle = build(args.out, make_zip=not args.no_zip)
    files = sum(1 for p in bundle.rglob("*") if p.is_file())
    print(f"{bundle} ({files} files)" + ("" if args.no_zip else f" and {bundle}.zip"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
