"""Hostile submissions: each one is contained, graded, and flagged with a reason, in one batch
with an honest submission that keeps its points.

One ``autograde grade --jobs 2`` run (a subprocess, as in CI) over a class of the fake
assignment ``00_fake`` (tasks ``add_one`` and ``double``, 2 points each); each test then reads
one student's results.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.test_grader import builders as b

pytestmark = pytest.mark.slow

HIDDEN_EM = b.ROOT / "autograder" / "hidden" / "em.py"

LOOP = "def add_one(x):\n    while True:\n        pass"
MEMORY_BOMB = "def add_one(x):\n    hog = bytearray(8 * 2**30)\n    return x + 1"
OS_EXIT = "def add_one(x):\n    import os\n    os._exit(1)"
SYS_EXIT = "def double(t):\n    import sys\n    sys.exit(1)"
FORK_BOMB = "def add_one(x):\n    import os\n    while True:\n        os.fork()\n    return x + 1"
PATCH_DURING_CALL = "def double(t):\n    import torch\n    torch.allclose = lambda *a, **k: True\n    return t"
MONKEYPATCH = """import autograder.core, autograder.probes, hypothesis, numpy, torch
autograder.core.run_property = lambda *a, **k: None
autograder.probes.invoke_probe = lambda student, name, *a, **k: {"value": a[0] + 1, "mutated": [], "grad_left": []}
hypothesis.given = lambda *a, **k: (lambda f: f)
numpy.allclose = lambda *a, **k: True
torch.allclose = lambda *a, **k: True"""
IGNORES_INTERRUPT = """import time
while True:
    try:
        time.sleep(0.05)
    except BaseException:
        pass"""


#: Tampering by editing in place, which raises no audit event (issue 19.1): one student per
#: kind of object the probes or the codec run with, each caught by content, restored, and
#: named in the feedback. student: (cell run at the top of the notebook, words expected)
IN_PLACE = {
    # a probe's keyword defaults: swap in a held-correct map of one's own
    "tamper_kwdefaults": (
        "import autograder.checks.em as em\nem.em_probe.__kwdefaults__['held'] = {'log_joint': abs}",
        "em_probe.__kwdefaults__",
    ),
    # a module global of a library the probes call
    "tamper_module_global": (
        "import copy\ncopy.deepcopy = lambda value, memo=None: value",
        "copy.deepcopy",
    ),
    # a class attribute of the transport encoder
    "tamper_class_attribute": (
        "import autograder.transport as t\nskeleton = t._Encoder.skeleton\n"
        "t._Encoder.skeleton = lambda self, value, path: skeleton(self, value, path)",
        "_Encoder.skeleton",
    ),
    # a table in the codec's globals
    "tamper_container": (
        "import autograder.transport as t\nt._RAW_DTYPES['float64'] = t._RAW_DTYPES['float32']",
        "_RAW_DTYPES",
    ),
    # a function's __dict__
    "tamper_function_dict": (
        "import autograder.probes as p\np.invoke_probe.__wrapped__ = abs",
        "invoke_probe.__dict__",
    ),
    # a closure cell of a function the probes call (the wrapper torch._dynamo puts around
    # torch.manual_seed holds the real one in a cell)
    "tamper_closure_cell": (
        "import torch\ncell = torch.manual_seed.__closure__[0]\noriginal = cell.cell_contents\n"
        "cell.cell_contents = lambda *a, **k: original(*a, **k)",
        "manual_seed.__closure__",
    ),
    # where numpy's functions look their helpers up
    "tamper_numpy": (
        "import numpy._core.numeric as n\nasarray = n.asarray\n"
        "n.asarray = lambda *a, **k: asarray(*a, **k)",
        "numpy._core.numeric.asarray",
    ),
    # where torch's tensor methods look theirs up
    "tamper_torch": (
        "import torch._tensor as tt\ntt.deepcopy = lambda value, memo=None: value",
        "torch._tensor.deepcopy",
    ),
}
#: copy.deepcopy made a no-op inside the graded function hides its mutation of the input
#: (issue 19.1 b): caught during the call, so only that task loses its points.
HIDES_MUTATION = """def add_one(x):
    import copy
    copy.deepcopy = lambda value, memo=None: value
    x += 1
    return x"""


def read_hidden() -> str:
    return f"""def add_one(x):
    leaked = []
    for path in [{str(HIDDEN_EM)!r}, {str(b.HIDDEN_FAKE)!r}]:
        try:
            leaked.append(open(path).read())
        except Exception:
            pass
    print(leaked)
    return x + 1"""


def exfiltrate() -> str:
    """Read the hidden checks two ways and raise with what was read: the message is feedback."""
    path = str(b.HIDDEN_FAKE)
    return f"""def double(t):
    import subprocess
    found = ""
    for attempt in (lambda: open({path!r}).read(),
                    lambda: subprocess.run(["cat", {path!r}], capture_output=True, text=True).stdout):
        try:
            found += attempt()
        except Exception as error:
            found += repr(error)
    raise ValueError(found)"""


def write_out(out: Path) -> str:
    targets = [
        out / "gradebook.csv",
        out / "honest" / b.ASSIGNMENT / "results.json",
        out / "pwned.txt",
    ]
    return f"""for target in {[str(t) for t in targets]!r}:
    try:
        with open(target, "w") as handle:
            handle.write("pwned")
    except Exception:
        pass"""


def students(out: Path) -> dict[str, Any]:
    honest = b.honest_cells()
    return {
        "honest": b.notebook(honest),
        "wrong": b.notebook(
            b.honest_cells(add_one="def add_one(x):\n    return x + 2")
        ),
        "loop_in_function": b.notebook(b.honest_cells(add_one=LOOP)),
        "loop_at_top": b.notebook(["while True:\n    pass", *honest]),
        "loop_ignoring_interrupt": b.notebook([IGNORES_INTERRUPT, *honest]),
        "memory_bomb": b.notebook(
            [
                "import numpy as np\nhuge = np.ones(2**31)",
                *b.honest_cells(add_one=MEMORY_BOMB),
            ]
        ),
        "os_exit": b.notebook(b.honest_cells(add_one=OS_EXIT)),
        "os_exit_at_top": b.notebook(["import os\nos._exit(0)", *honest]),
        "sys_exit": b.notebook(
            ["import sys\nsys.exit('bye')", *b.honest_cells(double=SYS_EXIT)]
        ),
        "fork_bomb": b.notebook(b.honest_cells(add_one=FORK_BOMB)),
        "monkeypatch": b.notebook([*honest, MONKEYPATCH]),
        "monkeypatch_during_call": b.notebook(b.honest_cells(double=PATCH_DURING_CALL)),
        "import_reference": b.notebook(
            ["from course_lib.reference import em", *honest]
        ),
        "read_hidden": b.notebook(b.honest_cells(add_one=read_hidden())),
        "exfiltrate": b.notebook(b.honest_cells(double=exfiltrate())),
        "write_out": b.notebook([*honest, write_out(out)]),
        "print_flood": b.notebook(['print("x" * 100_000_000)', *honest]),
        "invalid_json": '{"cells": [{"cell_type": "code", "source": "def add_one(x): return x + 1"',
        "no_grade_cells": b.notebook(
            [
                c
                for c in honest
                if not (isinstance(c, tuple) and c[1]["nbgrader"]["grade"])
            ]
        ),
        "duplicated_grade_cells": b.notebook(
            [*honest, b.grade_cell("add_one"), b.grade_cell("double")]
        ),
        "kernel_name": b.notebook(honest, kernel="ir"),
        "tamper_during_call": b.notebook(b.honest_cells(add_one=HIDES_MUTATION)),
        **{name: b.notebook([cell, *honest]) for name, (cell, _) in IN_PLACE.items()},
    }


# student: (add_one points, double points, flag expected or None, words expected in the feedback)
EXPECTED: dict[str, tuple[float, float, str | None, str]] = {
    "honest": (2, 2, None, ""),
    "wrong": (0, 2, None, "x + 1"),
    "loop_in_function": (0, 2, "timeout", "did not finish"),
    "loop_at_top": (2, 2, None, "did not finish within"),
    "loop_ignoring_interrupt": (2, 2, None, "ignored the interruption"),
    "memory_bomb": (0, 2, "memory", "ran out of memory"),
    "os_exit": (0, 2, "crashed", "exited with status 1"),
    "os_exit_at_top": (2, 2, None, "exited with status 0"),
    "sys_exit": (2, 0, None, "SystemExit"),
    "fork_bomb": (0, 2, "processes", "Resource temporarily unavailable"),
    "monkeypatch": (0, 0, "forbidden", "autograder.core.run_property"),
    "monkeypatch_during_call": (2, 0, "forbidden", "torch.allclose"),
    "import_reference": (0, 0, "forbidden", "course_lib.reference"),
    "read_hidden": (0, 2, "forbidden", "hidden"),
    "exfiltrate": (2, 0, "forbidden", "tried to open"),
    "write_out": (0, 0, "forbidden", "open"),
    "print_flood": (2, 2, None, ""),
    "invalid_json": (0, 0, "invalid_notebook", "not valid JSON"),
    "no_grade_cells": (2, 2, None, ""),
    "duplicated_grade_cells": (2, 2, None, "duplicated"),
    "kernel_name": (2, 2, None, "kernel 'ir' ignored"),
    "tamper_during_call": (0, 2, "forbidden", "copy.deepcopy"),
    **{name: (0, 0, "forbidden", words) for name, (_, words) in IN_PLACE.items()},
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    base = tmp_path_factory.mktemp("hostile")
    submitted, out = base / "submitted", base / "out"
    for student, content in students(out).items():
        b.write_submission(submitted, student, content)
    done = b.run_autograde(
        submitted,
        out,
        "--jobs",
        "2",
        "--timeout",
        "90",
        "--cell-timeout",
        "4",
        "--memory",
        "768",
    )
    return out, done


def test_the_batch_is_graded_and_exits_zero(graded: tuple[Path, Any]) -> None:
    out, done = graded
    assert done.returncode == 0, done.stderr[-3000:]
    rows = (out / "gradebook.csv").read_text().splitlines()
    assert len(rows) == 1 + len(EXPECTED)


@pytest.mark.parametrize("student", list(EXPECTED))
def test_each_submission_is_contained_and_explained(
    graded: tuple[Path, Any], student: str
) -> None:
    out, _done = graded
    data = b.results(out, student)
    add_one, double, flag, words = EXPECTED[student]
    b.assert_contained(
        data, student, {"add_one": add_one, "double": double}, flag, words
    )
    assert data["score"] == add_one + double
    assert data["extra_data"]["sandbox"] in ("namespace", "privdrop", "rlimits", None)


def test_the_secrets_never_reach_the_outputs(graded: tuple[Path, Any]) -> None:
    out, _ = graded
    hidden_source = HIDDEN_EM.read_text()
    for path in out.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert b.SECRET not in text, path
            if len(hidden_source) > 200:
                assert hidden_source[:200] not in text, path


def test_no_submission_wrote_into_the_output(graded: tuple[Path, Any]) -> None:
    out, _ = graded
    assert not (out / "pwned.txt").exists()
    assert "pwned" not in (out / "gradebook.csv").read_text()
    assert b.results(out, "honest")["score"] == 4


def test_hostile_attempts_are_recorded_with_the_place(graded: tuple[Path, Any]) -> None:
    out, _ = graded
    notes = b.results(out, "read_hidden")["extra_data"]["notes"]
    assert any("forbidden" in n and "while checking add_one" in n for n in notes), notes
    notes = b.results(out, "import_reference")["extra_data"]["notes"]
    assert any("import course_lib.reference" in n and "(cell 1)" in n for n in notes), (
        notes
    )
    feedback = b.results(out, "monkeypatch")["tests"][0]["output"]
    assert "Not graded" in feedback and "replace" in feedback


WEAKER = [
    "honest",
    "read_hidden",
    "exfiltrate",
    "import_reference",
    "write_out",
    "monkeypatch",
]


def test_without_namespaces_the_audit_hook_still_guards_the_secrets(
    tmp_path: Path,
) -> None:
    """The rlimits level (no namespaces, no uid change): same grades, nothing leaks."""
    submitted, out = tmp_path / "submitted", tmp_path / "out"
    everyone = students(out)
    for student in WEAKER:
        b.write_submission(submitted, student, everyone[student])
    done = b.run_autograde(
        submitted,
        out,
        "--insecure",
        "--sandbox",
        "rlimits",
        "--timeout",
        "60",
        "--cell-timeout",
        "4",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for student in WEAKER:
        data = b.results(out, student)
        add_one, double, flag, _ = EXPECTED[student]
        assert b.task_scores(data) == {"add_one": add_one, "double": double}, student
        assert data["extra_data"]["sandbox"] == "rlimits"
        if flag:
            assert flag in data["extra_data"]["flags"], student
    for path in out.rglob("*"):
        if path.is_file():
            assert b.SECRET not in path.read_text(errors="replace"), path
    assert not (out / "pwned.txt").exists()
