"""The grader's pieces, without running student code: notebooks, discovery, reports, policy."""

from __future__ import annotations

import csv
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from autograder.core import CheckResult
from autograder.grader import cli, sandbox, wire
from autograder.grader.remote import probe_address
from autograder.grader.report import (
    Outcome,
    check_results_json,
    feedback_html,
    results_json,
    write_gradebook,
)
from autograder.grader.submissions import (
    NotebookError,
    find_submissions,
    read_code_cells,
    strip_magics,
)
from autograder.timelimit import time_limit
from tests.test_grader import builders as b


def test_magics_and_shell_lines_become_pass_and_time_keeps_its_statement() -> None:
    source = "%matplotlib inline\n!pip install x\nfiles = !ls\nif True:\n    %timeit f()\n%time y = 1\nnp.mean?"
    assert strip_magics(source) == "pass\npass\npass\nif True:\n    pass\ny = 1\npass"
    assert strip_magics("%%bash\necho hi") == ""
    assert strip_magics("%%time\nx = 1") == "x = 1"
    assert strip_magics("x = '%d' % 3") == "x = '%d' % 3"


def _cells(
    tmp_path: Path, cells: list, assignment: str = "01_em"
) -> list[tuple[int, str]]:
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(b.notebook(cells)))
    return read_code_cells(str(path), assignment)[0]


def test_grade_cells_are_skipped_by_metadata_or_id_and_manual_answers_run(
    tmp_path: Path,
) -> None:
    manual = (
        "answer = 42",
        {"nbgrader": {"grade": True, "solution": True, "grade_id": "q1", "points": 2}},
    )
    renamed = ("grade('e_step', e_step)", {"nbgrader": {"grade_id": "e_step_check"}})
    cells = _cells(
        tmp_path, ["x = 1", b.grade_cell("add_one"), manual, renamed, "y = 2"]
    )
    assert [source for _, source in cells] == ["x = 1", "answer = 42", "y = 2"]
    assert [number for number, _ in cells] == [1, 3, 5]


def test_a_grade_cell_stripped_of_its_metadata_is_recognised_from_the_release(
    tmp_path: Path,
) -> None:
    release = b.ROOT / "assignments" / "01_em" / "01_em.ipynb"
    if not release.exists():
        pytest.skip("01_em is not released yet")
    grade_sources = [
        "".join(c["source"])
        for c in json.loads(release.read_text())["cells"]
        if c.get("metadata", {}).get("nbgrader", {}).get("grade")
        and c["cell_type"] == "code"
    ]
    assert _cells(tmp_path, [grade_sources[0], "z = 3"]) == [(2, "z = 3")]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ('{"cells": [', "not valid JSON (Expecting value at line 1, column 12)"),
        (b"\xff\xfe\x00", "not UTF-8"),
        ('{"nbformat": 4}', "no list of cells"),
        ("[1, 2]", "no list of cells"),
    ],
)
def test_unreadable_notebooks_say_why(
    tmp_path: Path, content: str | bytes, words: str
) -> None:
    path = tmp_path / "nb.ipynb"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(
        NotebookError, match=words.replace("(", r"\(").replace(")", r"\)")
    ):
        read_code_cells(str(path), "01_em")
    with pytest.raises(NotebookError, match="no notebook found"):
        read_code_cells(None, "01_em")


def test_discovery_accepts_an_nbgrader_course_and_reports_unknown_folders(
    tmp_path: Path,
) -> None:
    course = tmp_path / "course"
    b.write_submission(course / "submitted", "s1", b.notebook(["x = 1"]), "01_em")
    (course / "submitted" / "s1" / "01_em" / "timestamp.txt").write_text(
        "2025-01-01 10:00:00"
    )
    renamed = course / "submitted" / "s2" / "02_score" / "my copy.ipynb"
    renamed.parent.mkdir(parents=True)
    renamed.write_text("{}")
    (course / "submitted" / "s3" / "99_unknown").mkdir(parents=True)
    found, problems = find_submissions(course)
    assert [(s.student, s.assignment, Path(s.notebook).name) for s in found] == [
        ("s1", "01_em", "01_em.ipynb"),
        ("s2", "02_score", "my copy.ipynb"),
    ]
    assert problems == ["s3/99_unknown: unknown assignment '99_unknown'"]


def _outcome(student: str = "s<1>") -> Outcome:
    tests = [
        CheckResult("e_step", "rows sum to one", "public", 2.0, 2.0, True, ""),
        CheckResult(
            "e_step",
            "matches the reference",
            "hidden",
            0.0,
            3.0,
            False,
            "resp differs: <b>did you</b> normalise?",
            flags=["timeout"],
        ),
        CheckResult("log_joint", "shape", "public", 1.5, 3.0, False, "half"),
    ]
    return Outcome(
        student,
        "01_em",
        "abc",
        "fp",
        tests,
        {4: "raised ValueError: <script>"},
        ["timeout"],
        ["note & more"],
        "namespace",
    )


def test_results_json_is_valid_and_the_validator_catches_mistakes() -> None:
    data = results_json(_outcome())
    assert check_results_json(data) == []
    assert data["score"] == 3.5 and data["extra_data"]["max_score"] == 8
    assert [t["name"] for t in data["tests"]] == [
        "e_step: rows sum to one",
        "e_step: matches the reference",
        "log_joint: shape",
    ]
    broken = json.loads(json.dumps(data))
    broken["score"] = 4
    broken["tests"][0]["name"] = "no task prefix"
    broken["tests"][1]["output"] = ""
    problems = check_results_json(broken)
    assert len(problems) == 3, problems


def test_feedback_html_escapes_every_field() -> None:
    page = feedback_html(results_json(_outcome()))
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<b>did you</b>" not in page and "&lt;b&gt;did you&lt;/b&gt;" in page
    assert "s&lt;1&gt;" in page and "note &amp; more" in page


def test_gradebook_has_per_task_columns(tmp_path: Path) -> None:
    rows = [results_json(_outcome("b")), results_json(_outcome("a"))]
    write_gradebook(tmp_path / "g.csv", rows, ["log_joint", "e_step", "free_energy"])
    with open(tmp_path / "g.csv", newline="") as handle:
        table = list(csv.reader(handle))
    assert table[0] == [
        "student_id",
        "assignment_id",
        "score",
        "max_score",
        "flags",
        "log_joint",
        "e_step",
    ]
    assert table[1] == ["a", "01_em", "3.5", "8", "timeout", "1.5", "2"]
    assert len(table) == 3


def _closure():
    def inner(student):
        return None

    return inner


def test_probes_must_be_public_module_level_functions() -> None:
    from autograder import probes

    assert probe_address(probes.invoke_probe) == ("autograder.probes", "invoke_probe")
    for bad in (lambda student: None, _closure()):
        with pytest.raises(TypeError):
            probe_address(bad)


def test_the_policy_hides_the_secrets_and_keeps_the_interpreter(tmp_path: Path) -> None:
    policy = sandbox.plan("namespace", str(tmp_path), secret_paths=["/srv/out"])
    assert str(b.ROOT / "autograder" / "hidden") in policy.deny_paths
    assert str(b.ROOT / "course_lib" / "reference") in policy.deny_paths
    assert "/srv/out" in policy.deny_paths
    assert str(b.ROOT / "autograder" / "hidden") in policy.hide_paths
    if sandbox.repo_root() is not None:
        # The checkout, or the folder holding it where the sandbox uid cannot traverse that
        # folder (a clone in mktemp -d's /tmp/tmp.XXXX, mode 700): wherever the checkout lives.
        assert sandbox._under(str(b.ROOT), policy.whitelist_roots), (
            b.ROOT,
            policy.whitelist_roots,
        )
        assert str(b.ROOT / "autograder") in policy.keep_paths
    assert policy.uid is not None and policy.uid >= 100_000
    assert "course_lib.reference" in policy.deny_modules


def test_messages_round_trip_and_garbage_is_refused() -> None:
    packed = wire.pack({"op": "result"}, b"payload")
    head, payload = wire.unpack_header(packed[: wire.PREFIX_SIZE])
    assert (
        packed[wire.PREFIX_SIZE : wire.PREFIX_SIZE + head] == b'{"op":"result"}'
        and payload == 7
    )
    with pytest.raises(wire.ProtocolError):
        wire.unpack_header(b"XXXX" + packed[4 : wire.PREFIX_SIZE])
    with pytest.raises(ValueError, match=r"not a wire\.Op"):
        wire.pack({"op": "reslut"})  # a sender's typo fails where it is made


def test_exit_status_two_for_a_missing_folder_and_one_for_an_unknown_assignment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        cli.main(
            [
                "grade",
                str(tmp_path / "nope"),
                "--out",
                str(tmp_path / "out"),
                "--no-progress",
            ]
        )
        == 2
    )
    (tmp_path / "submitted" / "s1" / "99_unknown").mkdir(parents=True)
    assert (
        cli.main(
            [
                "grade",
                str(tmp_path / "submitted"),
                "--out",
                str(tmp_path / "out"),
                "--no-progress",
            ]
        )
        == 1
    )
    assert "unknown assignment" in capsys.readouterr().err


def test_the_workers_time_limit_is_wall_clock_and_restores_the_signal() -> None:
    """The worker's soft limit (a sleep spends no CPU, yet it must end) from the one helper."""

    class Late(BaseException):
        pass

    before = signal.getsignal(signal.SIGALRM)
    with pytest.raises(Late), time_limit(0.05, Late, cpu=False):
        time.sleep(60)
    assert signal.getsignal(signal.SIGALRM) is before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_student_ids_and_folders_are_one_to_one() -> None:
    """Every folder name has one printable id (no control character, valid UTF-8) and one
    output folder, never another student's nor one of OUT's own files (issue 19 item 5)."""
    import os

    from autograder.grader.report import OUTPUT_NAMES, student_folder
    from autograder.grader.submissions import printable

    raw = [
        b"alice",
        b"caf\xe9",  # Latin-1
        "café".encode(),  # U+00E9: UTF-8 C3 A9
        b"\xc2\x85",  # U+0085, a C1 control character
        b"\x85",  # the lone byte 0x85
        b"\\x85",  # a literal backslash-x
        b"\x1b[31mred",
        b"\\x1b[31mred",
        b"gradebook.csv",
        b"Gradebook.CSV",
        b"\\x67radebook.csv",
        b"grading.log",
        b"shard.json",
        b"rtl\xe2\x80\xaeevil",  # U+202E right-to-left override
    ]
    ids = [printable(os.fsdecode(name)) for name in raw]
    assert len(set(ids)) == len(raw), ids
    assert printable("alice") == "alice" and printable("café") == "café"
    for shown in ids:
        shown.encode("utf-8")  # no lone surrogate left
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in shown), shown
        assert "\u202e" not in shown
    folders = [student_folder(i) for i in ids]
    assert len(set(folders)) == len(raw), folders
    assert not {f.casefold() for f in folders} & {n.casefold() for n in OUTPUT_NAMES}
    assert student_folder("alice") == "alice"


def test_the_tamper_check_finds_what_the_probes_reach_and_undoes_edits_in_place() -> (
    None
):
    """The content check's set is derived by walking the probes' code, not listed: it reaches
    a library the probes call (copy), numpy's own modules and a probe's keyword defaults,
    reports an edit in place by name and puts the original back."""
    import copy

    import numpy._core.numeric as numeric

    from autograder.checks import em
    from autograder.grader.worker import Snapshot

    snapshot = Snapshot(("autograder", "course_lib"))
    assert snapshot.changes() == []  # nothing changed: nothing reported
    deepcopy, asarray = copy.deepcopy, numeric.asarray
    keywords = em.em_probe.__kwdefaults__
    held = keywords["held"]
    try:
        copy.deepcopy = lambda value, memo=None: value
        numeric.asarray = lambda *a, **k: asarray(*a, **k)
        keywords["held"] = {"log_joint": abs}
        changed = snapshot.changes()
        assert "copy.deepcopy" in changed, changed
        assert "numpy._core.numeric.asarray" in changed, changed
        assert any("em_probe.__kwdefaults__" in c for c in changed), changed
        assert copy.deepcopy is deepcopy and numeric.asarray is asarray
        assert keywords["held"] is held
        assert snapshot.changes() == []
    finally:
        copy.deepcopy, numeric.asarray, keywords["held"] = deepcopy, asarray, held


def _eventually(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_judges_fork_their_zygotes_from_the_batch_s_mother() -> None:
    """One clean interpreter per batch (``remote.Mother``) imports the workers' modules; each
    judge's zygote is a fork of it, serves that judge alone and exits with it (its socket
    closed). A judge whose mother is gone starts a zygote of its own, as before."""
    import os

    from autograder.grader import remote

    preload = ["json"]  # what the zygotes import does not matter here
    env = remote._worker_env()
    mother = remote.Mother(preload)
    try:
        remote.use_mother(mother.socket, preload)
        first, second = remote._Zygote(preload, env), remote._Zygote(preload, env)
        first.wait_ready()
        second.wait_ready()
        assert first.process is None and second.process is None  # forks: no interpreter
        assert _eventually(lambda: len(b.processes(1, mother.process.pid)) == 2)
        # A worker forked by one of them: the zygote reports its pid and its exit.
        to_worker, from_worker, output = os.pipe(), os.pipe(), os.pipe()
        handle = first.spawn((to_worker[0], from_worker[1], output[1]), "/")
        for fd in (to_worker[0], from_worker[1], output[1], to_worker[1]):
            os.close(fd)  # the worker reads end-of-file instead of its set-up: it exits
        assert handle.wait(30) is not None
        for fd in (from_worker[0], output[0]):
            os.close(fd)
        first.close()  # the judge is gone: its zygote exits, the mother reaps it
        assert _eventually(lambda: len(b.processes(1, mother.process.pid)) == 1)
        mother.close()
        fallback = remote._Zygote(preload, env)
        assert fallback.process is not None  # its own interpreter
        fallback.wait_ready()
        fallback.close()
        second.close()
    finally:
        remote.use_mother(None, preload)
        if mother.process.poll() is None:
            mother.close()
