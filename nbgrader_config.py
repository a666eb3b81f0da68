"""nbgrader configuration of the course (nbgrader 0.9.6).

The repository is itself an nbgrader course directory whose source and release folders have
our names: ``solutions/`` holds the instructor notebooks, ``assignments/`` the student
release. ``scripts/release.py`` runs ``generate_assignment`` in a temporary copy of the course
with this same file, so the release never depends on a stray ``gradebook.db``.
"""

import importlib.util
import sys

from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import (
    CheckCellMetadata,
    ClearHiddenTests,
    ClearOutput,
    DeduplicateIds,
    GetGrades,
    OverwriteKernelspec,
)


def _nbgrader_cells():  # type: ignore[no-untyped-def]
    """``autograder/nbgrader_cells.py`` loaded by itself: importing it as
    ``autograder.nbgrader_cells`` first runs ``autograder/__init__.py``, which imports torch and
    the checks (about 3 s of every nbgrader command, none of which the preprocessor uses). The
    package is located, not imported, so this works from a copy of this file elsewhere too."""
    name = "autograder.nbgrader_cells"
    # Already imported (nbgrader's API in a process that grades): that very class.
    if name in sys.modules:
        return sys.modules[name]
    package = importlib.util.find_spec("autograder")
    if package is None or not package.submodule_search_locations:
        raise ImportError("nbgrader_config.py: the autograder package is not installed")
    path = f"{next(iter(package.submodule_search_locations))}/nbgrader_cells.py"
    spec = importlib.util.spec_from_file_location("_dsc190_nbgrader_cells", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


OverwriteCellsQuietOnHiddenTests = _nbgrader_cells().OverwriteCellsQuietOnHiddenTests

c = get_config()  # noqa: F821  (injected by traitlets when nbgrader loads this file)

c.CourseDirectory.course_id = "dsc190-vi"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "assignments"
c.CourseDirectory.ignore = [
    ".ipynb_checkpoints",
    "*.pyc",
    "__pycache__",
    "feedback",
    ".DS_Store",
    ".hypothesis",  # hypothesis caches in the notebook's folder when a notebook runs
]

# Execute.timeout is per cell (seconds). Graded runs set NBGRADER_EXECUTION, so every cell is
# small then; the limits are a safety net against a submission that hangs, not a budget.
# The VAE's training cell is the one slow cell of the course (one short epoch on a CPU).
_DEFAULT_TIMEOUT = 120
_TIMEOUTS = {"05_vae": 600}


def _timeout_from_command_line(argv: list[str]) -> int:
    """The timeout of the assignment named on the command line (``nbgrader autograde 05_vae``).

    When no single assignment is named (formgrader, the Python API), the largest applies.
    """
    named = {arg.split("=")[-1] for arg in argv[1:]}
    chosen = [
        seconds for assignment, seconds in _TIMEOUTS.items() if assignment in named
    ]
    if chosen:
        return max(chosen)
    if named & {"01_em", "02_score", "03_reparam", "04_elbo"}:
        return _DEFAULT_TIMEOUT
    return max([_DEFAULT_TIMEOUT, *_TIMEOUTS.values()])


c.Execute.timeout = _timeout_from_command_line(sys.argv)
c.Execute.kernel_name = "python3"
c.Execute.interrupt_on_timeout = True

# No IgnorePattern: ipykernel 7's "Kernel is running over TCP without encryption" goes to the
# kernel process's log, not into any cell's outputs (checked with nbclient and with
# `nbgrader autograde`: tests/test_notebooks checks that no cell of a graded solution has
# stderr output). Were it ever to reach a cell, it would be the setup cell, which is not scored.

# nbgrader 0.9's OverwriteCells reports every released grade cell with hidden tests as
# "checksum has changed" (jupyter/nbgrader#1961): ours restores those silently and still
# reports a grade cell whose visible part was edited. The rest is nbgrader's default list.
c.Autograde.sanitize_preprocessors = [
    ClearOutput,
    DeduplicateIds,
    OverwriteKernelspec,
    OverwriteCellsQuietOnHiddenTests,
    CheckCellMetadata,
]

# Keep grading feedback readable when a submission prints in a loop.
c.LimitOutput.max_lines = 400
c.LimitOutput.max_traceback = 60

# Feedback is rendered from the autograded notebook, whose grade cells nbgrader restored from
# the gradebook *with* their hidden tests; nbgrader 0.9's GenerateFeedback does not strip them.
# Strip them before rendering, so students see what their checks said, never their code.
c.GenerateFeedback.preprocessors = [
    GetGrades,
    ClearHiddenTests,
    CSSHTMLHeaderPreprocessor,
]
