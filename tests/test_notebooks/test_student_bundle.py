"""The student bundle holds the releases and the public packages, and no reference code.

Three independent proofs: no private path is in the folder or the zip; no distinctive
statement of ``course_lib/reference`` or ``autograder/hidden`` appears in any file of the
bundle (notebooks included); and a Python that sees only the bundle cannot import them.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.test_notebooks import nbtools as nbt

pytestmark = [pytest.mark.notebook, pytest.mark.slow]

PRIVATE = ("course_lib/reference", "autograder/hidden")
MIN_LENGTH = 30  # shorter statements (``return out``) are not distinctive


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    script = nbt._load_script("student_bundle")
    return script.build(tmp_path_factory.mktemp("bundle"), nbt.ROOT)


#: Generic torch idioms that also occur in the reference but answer nothing.
IDIOMS = {
    "return q.sample((num_samples,))",
    "leaves = tuple(p.detach().clone().requires_grad_(True) for p in params)",
}


def statements(path: Path) -> set[str]:
    """First lines of the simple statements of a module (docstrings, imports, short ones left out).

    Statements are taken from function bodies and module level, whitespace-normalised, so a
    copied implementation is caught whatever its surrounding formatting.
    """
    compound = (
        ast.FunctionDef,
        ast.AsyncFunctionDef,
        ast.ClassDef,
        ast.If,
        ast.For,
        ast.While,
        ast.With,
        ast.Try,
    )
    text = path.read_text()
    # Offsets are in UTF-8 bytes (what ast.get_source_segment reads, re-splitting the whole
    # text per call: 140 s for the package, here well under a second).
    lines = [line.encode() for line in text.splitlines()]
    found = set()
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.stmt) or isinstance(
            node, (*compound, ast.Import, ast.ImportFrom)
        ):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # docstrings
        line = lines[node.lineno - 1]
        end = node.end_col_offset if node.end_lineno == node.lineno else None
        first_line = " ".join(line[node.col_offset : end].decode().split())
        if len(first_line) >= MIN_LENGTH:
            found.add(first_line)
    return found


def private_statements() -> dict[str, set[str]]:
    """Distinctive statements of the reference (all) and of the hidden checks.

    A hidden-check statement that also occurs in the public checks (a shared helper call) is
    public by design and left out; reference statements are all kept, minus IDIOMS.
    """
    public = set().union(
        *(
            statements(p)
            for p in (nbt.ROOT / "autograder").rglob("*.py")
            if "hidden" not in p.parts
        )
    )
    reference = (
        set().union(*(statements(p) for p in (nbt.ROOT / PRIVATE[0]).rglob("*.py")))
        - IDIOMS
    )
    hidden = (
        set().union(*(statements(p) for p in (nbt.ROOT / PRIVATE[1]).rglob("*.py")))
        - public
    )
    return {PRIVATE[0]: reference, PRIVATE[1]: hidden}


def public_text(bundle: Path) -> dict[str, str]:
    texts = {}
    for path in bundle.rglob("*"):
        if path.is_file() and path.suffix in {
            ".py",
            ".ipynb",
            ".md",
            ".toml",
            ".txt",
            ".json",
            ".cfg",
        }:
            texts[str(path.relative_to(bundle))] = " ".join(path.read_text().split())
    return texts


def test_bundle_layout(bundle: Path) -> None:
    for assignment in nbt.assignment_ids():
        shipped = bundle / "assignments" / assignment / f"{assignment}.ipynb"
        assert shipped.read_bytes() == nbt.release_path(assignment).read_bytes()
    assert (bundle / "pyproject.toml").exists()
    assert (bundle / "course_lib" / "__init__.py").exists() and (
        bundle / "autograder" / "grade.py"
    ).exists()
    assert not list(bundle.rglob("solutions")), "no source notebooks"


def test_no_private_paths_in_folder_or_zip(bundle: Path) -> None:
    names = [str(p.relative_to(bundle)) for p in bundle.rglob("*")]
    with zipfile.ZipFile(f"{bundle}.zip") as archive:
        names += archive.namelist()
    leaked = [n for n in names if any(private in n for private in PRIVATE)]
    assert not leaked, leaked


def test_no_reference_statement_in_any_file(bundle: Path) -> None:
    private = private_statements()
    assert len(private[PRIVATE[0]]) > 20, "the reference modules were found and parsed"
    texts = public_text(bundle)
    leaks = sorted(
        f"{name}: {statement!r} (from {origin})"
        for origin, found in private.items()
        for statement in found
        for name, text in texts.items()
        if statement in text
    )
    assert not leaks, (
        "reference or hidden-check code in the student bundle:\n" + "\n".join(leaks)
    )


def test_bundle_cannot_import_the_private_packages(bundle: Path) -> None:
    probe = textwrap.dedent(
        """
        import sys
        # Drop the editable install of the full repository: see only the bundle.
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
        sys.path.insert(0, sys.argv[1])
        import autograder, course_lib
        from autograder import grade
        from autograder.tasks import hidden_available
        assert autograder.__file__.startswith(sys.argv[1]), autograder.__file__
        assert not hidden_available()
        for name in ("course_lib.reference", "autograder.hidden"):
            try:
                __import__(name)
            except ModuleNotFoundError:
                continue
            raise SystemExit(f"{name} is importable from the bundle")
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(bundle)],
        capture_output=True,
        text=True,
        cwd=bundle,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", (
        done.stdout + done.stderr
    )


def test_bundle_builds_a_wheel_without_private_code(
    bundle: Path, tmp_path: Path
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(bundle),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert any(n.startswith("course_lib/") for n in names) and any(
        n.startswith("autograder/checks/") for n in names
    )
    assert not [n for n in names if any(private in n for private in PRIVATE)]


# --------------------------------------------------------------------------- the student route


def test_one_route_in_both_readmes(bundle: Path) -> None:
    """The repository's README quotes the bundle's route word for word, and the route is real."""
    script = nbt._load_script("student_bundle")
    assert script.ROUTE in (bundle / "README.md").read_text()
    assert script.ROUTE in (nbt.ROOT / "README.md").read_text(), (
        "README.md's student section must quote scripts/student_bundle.py's ROUTE verbatim"
    )
    for name in script.STUDENT_FILES:
        assert (bundle / name).is_file(), name
    assert "python install.py" in script.ROUTE
    assert "jupyter lab assignments/" in script.ROUTE
    pyproject = (bundle / "pyproject.toml").read_text()
    assert '"nbgrader==0.9.6"' in pyproject, "Validate needs nbgrader in the bundle"


def test_install_turns_off_the_instructor_tools_only(
    bundle: Path, tmp_path: Path
) -> None:
    """install.py's config step: Formgrader & co. off and locked, Validate untouched."""
    spec = importlib.util.spec_from_file_location(
        "_bundle_install", bundle / "install.py"
    )
    assert spec is not None and spec.loader is not None
    install = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(install)
    config = tmp_path / "etc" / "jupyter"
    (config / "labconfig").mkdir(parents=True)
    (config / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"some-other:plugin": True}})
    )
    install.student_only(tmp_path)
    install.student_only(tmp_path)  # idempotent: a second install changes nothing
    page = json.loads((config / "labconfig" / "page_config.json").read_text())
    server = json.loads((config / "jupyter_server_config.json").read_text())
    assert page["disabledExtensions"] == {
        "some-other:plugin": True,
        **dict.fromkeys(install.LAB_PLUGINS, True),
    }
    assert page["lockedExtensions"] == dict.fromkeys(install.LAB_PLUGINS, True)
    assert "@jupyter/nbgrader:formgrader" in install.LAB_PLUGINS
    assert not any("validate" in p for p in install.LAB_PLUGINS)
    extensions = server["ServerApp"]["jpserver_extensions"]
    assert extensions == dict.fromkeys(install.SERVER_EXTENSIONS, False)
    assert "nbgrader.server_extensions.formgrader" in extensions
    assert "nbgrader.server_extensions.validate_assignment" not in extensions


def test_makefile_lab_runs_the_student_route_with_inline_figures() -> None:
    makefile = (nbt.ROOT / "Makefile").read_text()
    lab = makefile[makefile.index("\nlab:") :].split("\n\n")[0]
    assert "student_bundle.py" in lab and "install.py" in lab, lab
    assert "env -u MPLBACKEND" in lab, (
        "the kernel must not inherit a non-inline backend"
    )
    assert "jupyter lab assignments/" in lab, lab
    assert "export MPLBACKEND" not in makefile
