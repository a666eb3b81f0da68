"""Generate ``examples/submitted/``: a demo class for ``make grade`` (``autograde demo``).

Every submission is derived from the course's own notebooks, so the demo follows them when
they change: a student's notebook is the release (``assignments/<id>/<id>.ipynb``) with the
answer cells filled in from the source (``solutions/<id>/<id>.ipynb``, solution markers
removed), then edited:

``ada_correct``
    every answer right: full marks.
``ben_partly_wrong``
    one wrong-on-purpose implementation per assignment, named after its bug
    (:data:`WRONG`): that task loses points, the others keep theirs.
``eve_careless``
    broken ways to hand in a notebook: truncated JSON, 100 MB of printing, deleted and
    duplicated grade cells, another kernel, a stray ``sys.exit()``, the untouched release.
``mallory_hostile``
    attacks on the grader: importing the reference, reading the hidden checks,
    monkeypatching the grader and torch, ``os._exit`` inside a graded function, a memory
    bomb. Each scores zero where it applies, with a flag saying why.

Usage: ``python scripts/make_demo_class.py [--out examples/submitted]``
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = ("01_em", "02_score", "03_reparam", "04_elbo", "05_vae")
TIMESTAMP = "2025-05-20 17:00:00.000000 UTC"

Notebook = dict[str, Any]

#: assignment -> (task, bug, a wrong-on-purpose implementation with the task's signature).
WRONG: dict[str, tuple[str, str, str]] = {
    "01_em": (
        "free_energy",
        "forgets the entropy term sum q log q",
        '''def free_energy(X, resp, weights, means, covs):
    """Free energy, but the entropy of q is missing (a bug on purpose)."""
    return float(-np.sum(resp * log_joint(X, weights, means, covs)))
''',
    ),
    "02_score": (
        "gaussian_score",
        "divides by sigma once instead of sigma squared",
        '''def gaussian_score(z, mu, log_sigma):
    """Score of a diagonal Gaussian, with d/dmu divided by sigma only once (a bug on purpose)."""
    sigma = torch.exp(log_sigma)
    standardized = (z - mu) / sigma
    return standardized, standardized**2 - 1
''',
    ),
    "03_reparam": (
        "gumbel_rsample",
        "drops the minus sign of the inverse CDF",
        '''def gumbel_rsample(loc, scale, u):
    """Gumbel by inverse CDF, with the sign of the log flipped (a bug on purpose)."""
    return loc + scale * torch.log(-torch.log(u))
''',
    ),
    "04_elbo": (
        "gaussian_entropy",
        "forgets the constant 1/2 log(2 pi e) per dimension",
        '''def gaussian_entropy(log_sigma):
    """Entropy of a diagonal Gaussian, without its constant (a bug on purpose)."""
    return log_sigma.sum()
''',
    ),
    "05_vae": (
        "gaussian_kl",
        "forgets the factor 1/2",
        '''def gaussian_kl(mu, logvar):
    """KL(q || N(0, I)) without the factor 1/2 (a bug on purpose)."""
    return (torch.exp(logvar) + mu**2 - 1.0 - logvar).sum(dim=-1)
''',
    ),
}


# --------------------------------------------------------------------------- notebooks


def _load(path: Path) -> Notebook:
    return json.loads(path.read_text(encoding="utf-8"))


def _source(cell: dict[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _meta(cell: dict[str, Any]) -> dict[str, Any]:
    return cell.get("metadata", {}).get("nbgrader", {})


def _without_markers(text: str) -> str:
    """A solution as a student would write it: the nbgrader markers and mark scheme removed."""
    lines, skipping = [], False
    for line in text.splitlines():
        marker = line.strip()
        if marker in (
            "### BEGIN SOLUTION",
            "### END SOLUTION",
            "### BEGIN HIDDEN TESTS",
            "### END HIDDEN TESTS",
        ):
            skipping = marker == "### BEGIN HIDDEN TESTS"
            continue
        if marker.startswith("=== BEGIN MARK SCHEME ==="):
            skipping = True
            continue
        if marker.startswith("=== END MARK SCHEME ==="):
            skipping = False
            continue
        if not skipping:
            lines.append(line)
    return "\n".join(lines)


def _release(assignment: str) -> Notebook:
    """The released notebook; derived from the source when ``make release`` has not run."""
    released = ROOT / "assignments" / assignment / f"{assignment}.ipynb"
    if released.is_file():
        return _load(released)
    notebook = _load(ROOT / "solutions" / assignment / f"{assignment}.ipynb")
    for cell in notebook["cells"]:
        if _meta(cell).get("solution") and cell["cell_type"] == "code":
            cell["source"] = "# YOUR CODE HERE\nraise NotImplementedError()"
        elif _meta(cell).get("grade"):
            cell["source"] = _without_markers(_source(cell))
    return notebook


def correct(assignment: str) -> Notebook:
    """The release with every answer cell filled in from the source notebook."""
    notebook = copy.deepcopy(_release(assignment))
    source = _load(ROOT / "solutions" / assignment / f"{assignment}.ipynb")
    answers = {
        _meta(c).get("grade_id"): c for c in source["cells"] if _meta(c).get("solution")
    }
    for cell in notebook["cells"]:
        grade_id = _meta(cell).get("grade_id")
        if _meta(cell).get("solution") and grade_id in answers:
            cell["source"] = _without_markers(_source(answers[grade_id]))
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    return notebook


def _answer_cell(notebook: Notebook, task: str) -> dict[str, Any]:
    for cell in notebook["cells"]:
        if _meta(cell).get("solution") and _meta(cell).get("grade_id") == task:
            return cell
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code" and f"def {task}(" in _source(cell):
            return cell
    raise KeyError(f"no answer cell for {task}")


def replace_function(notebook: Notebook, task: str, new_source: str) -> Notebook:
    """Swap the definition of ``task`` in its answer cell for ``new_source`` (other code stays)."""
    notebook = copy.deepcopy(notebook)
    cell = _answer_cell(notebook, task)
    text = _source(cell)
    lines = text.splitlines()
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == task:
            start = node.lineno - 1 - len(node.decorator_list)
            lines[start : node.end_lineno] = new_source.rstrip("\n").splitlines()
            cell["source"] = "\n".join(lines)
            return notebook
    cell["source"] = text + "\n\n\n" + new_source
    return notebook


def _insert_after_first_code_cell(notebook: Notebook, source: str) -> Notebook:
    notebook = copy.deepcopy(notebook)
    index = next(i for i, c in enumerate(notebook["cells"]) if c["cell_type"] == "code")
    notebook["cells"].insert(index + 1, _code_cell(source))
    return notebook


def _code_cell(source: str) -> dict[str, Any]:
    return {
        "cell_type": "code",
        "execution_count": None,
        "metadata": {},
        "outputs": [],
        "source": source,
    }


def _prepend_to_function(notebook: Notebook, task: str, statements: str) -> Notebook:
    """Insert ``statements`` at the top of ``task``'s body (after its docstring)."""
    notebook = copy.deepcopy(notebook)
    cell = _answer_cell(notebook, task)
    text = _source(cell)
    lines = text.splitlines()
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef) and node.name == task:
            first = (
                node.body[1]
                if len(node.body) > 1 and isinstance(node.body[0], ast.Expr)
                else node.body[0]
            )
            indent = " " * first.col_offset
            lines[first.lineno - 1 : first.lineno - 1] = [
                indent + s for s in statements.splitlines()
            ]
            cell["source"] = "\n".join(lines)
            return notebook
    raise KeyError(f"no function {task}")


def _grade_cells(notebook: Notebook) -> list[dict[str, Any]]:
    return [
        c
        for c in notebook["cells"]
        if _meta(c).get("grade") and not _meta(c).get("solution")
    ]


# --------------------------------------------------------------------------- the students


def partly_wrong(assignment: str) -> Notebook:
    task, _, source = WRONG[assignment]
    return replace_function(correct(assignment), task, source)


def careless(assignment: str) -> Notebook | str:
    notebook = correct(assignment)
    if assignment == "01_em":  # the upload was cut short
        text = json.dumps(notebook, indent=1)
        return text[: len(text) // 2]
    if assignment == "02_score":  # a 100 MB print, and the grade cells deleted
        notebook = _insert_after_first_code_cell(
            notebook, 'print("debug " * 17_000_000)'
        )
        notebook["cells"] = [
            c for c in notebook["cells"] if c not in _grade_cells(notebook)
        ]
        return notebook
    if assignment == "03_reparam":  # another kernel, and every grade cell pasted twice
        notebook["metadata"]["kernelspec"] = {
            "name": "ir",
            "display_name": "R",
            "language": "R",
        }
        for cell in _grade_cells(notebook):
            notebook["cells"].append(copy.deepcopy(cell))
        return notebook
    if assignment == "04_elbo":  # a leftover sys.exit() in a scratch cell
        return _insert_after_first_code_cell(
            notebook, "import sys\nsys.exit('stop here while I debug')"
        )
    return copy.deepcopy(_release(assignment))  # 05_vae: handed in untouched


def hostile(assignment: str) -> Notebook:
    notebook = correct(assignment)
    if assignment == "01_em":  # copy the answers from the reference
        return _insert_after_first_code_cell(
            notebook, "from course_lib.reference.em import e_step as reference_e_step"
        )
    if assignment == "02_score":  # read the hidden checks while being graded
        reader = (
            "import os, autograder\n"
            "_hidden = os.path.join(os.path.dirname(autograder.__file__), 'hidden', 'score.py')\n"
            "try:\n    print(open(_hidden).read()[:200])\nexcept Exception:\n    pass"
        )
        return _prepend_to_function(notebook, "gaussian_score", reader)
    if assignment == "03_reparam":  # make every check pass
        patch = (
            "import autograder.grade, torch\n"
            "autograder.grade.grade = lambda task_id, *args, **kwargs: 100.0\n"
            "torch.allclose = lambda *args, **kwargs: True"
        )
        return _insert_after_first_code_cell(notebook, patch)
    if assignment == "04_elbo":  # kill the process that grades it
        return _prepend_to_function(
            notebook, "gaussian_entropy", "import os\nos._exit(1)"
        )
    # 05_vae
    return _prepend_to_function(notebook, "gaussian_kl", "hog = bytearray(64 * 2**30)")


STUDENTS: dict[str, Callable[[str], Notebook | str]] = {
    "ada_correct": correct,
    "ben_partly_wrong": partly_wrong,
    "eve_careless": careless,
    "mallory_hostile": hostile,
}


def available() -> list[str]:
    """Assignments whose source notebook exists."""
    return [a for a in ASSIGNMENTS if (ROOT / "solutions" / a / f"{a}.ipynb").is_file()]


def write(out: Path) -> list[Path]:
    """(Re)create the demo class under ``out``; return the notebooks written."""
    if out.exists():
        shutil.rmtree(out)
    written = []
    for student, make in STUDENTS.items():
        for assignment in available():
            folder = out / student / assignment
            folder.mkdir(parents=True)
            content = make(assignment)
            path = folder / f"{assignment}.ipynb"
            text = (
                content
                if isinstance(content, str)
                else json.dumps(content, indent=1, ensure_ascii=False) + "\n"
            )
            path.write_text(text, encoding="utf-8")
            (folder / "timestamp.txt").write_text(TIMESTAMP + "\n")
            written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "examples" / "submitted")
    args = parser.parse_args()
    written = write(args.out)
    print(
        f"wrote {len(written)} submissions for {len(STUDENTS)} students under {args.out}"
    )


if __name__ == "__main__":
    main()
