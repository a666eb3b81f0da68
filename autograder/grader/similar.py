"""``autograde similar SUBMITTED``: pairs of submissions whose code overlaps, for a human to read.

The code cells of every ``SUBMITTED/<student>/<assignment>/<assignment>.ipynb`` are compared
pairwise within each assignment by copydetect (winnowed fingerprints of the tokenised code,
Schleimer, Wilkerson and Aiken 2003, the method behind MOSS), with the release notebook's
code (``assignments/<id>/<id>.ipynb``) as boilerplate: what every student was given never
counts as overlap. Notebooks are read as JSON only: no student code runs.

Overlap is a lead, never a verdict: short exercises have few ways to be right, students may
work together where the course allows it, and a shared public source looks the same.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CAVEAT",
    "Pair",
    "code_of",
    "find_pairs",
    "render_similar",
    "summary",
    "write_similar",
]

CAVEAT = (
    "This is a lead for a human, not a verdict: overlap of code cells says where to look, "
    "not that anyone copied. Short exercises have few right answers, collaboration may be "
    "allowed, and code from the lecture or a public source looks the same. Read both "
    "notebooks before concluding anything."
)

#: Smallest matching run of tokens copydetect counts (its defaults are 25 and 30 characters
#: of filtered code; the exercises are short functions, so both a little lower).
NOISE_T, GUARANTEE_T = 20, 25
#: A notebook larger than this is skipped (said in the notes): outputs, not code, make a
#: notebook that big, and reading it whole costs memory for nothing.
MAX_NOTEBOOK_BYTES = 50 * 10**6


@dataclass
class Pair:
    """Two submissions of one assignment and how much of each one's code the other shares."""

    assignment: str
    first: str
    second: str
    first_share: float  # fraction of first's fingerprints found in second
    second_share: float
    tokens: int
    first_html: str  # copydetect's highlighted code (HTML-escaped, overlap in <span>s)
    second_html: str

    @property
    def score(self) -> float:
        return max(self.first_share, self.second_share)


def code_of(notebook: Path) -> str | None:
    """The code cells of a notebook joined into one Python text (magics and shell lines
    commented out), or None when it is not a readable notebook."""
    try:
        data = json.loads(notebook.read_text(encoding="utf-8"))
        cells = data["cells"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    parts = []
    for cell in cells if isinstance(cells, list) else []:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        text = "".join(source) if isinstance(source, list) else str(source)
        lines = [
            "# " + line if line.lstrip().startswith(("%", "!")) else line
            for line in text.splitlines()
        ]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _release(root: Path, assignment: str) -> Path | None:
    path = root / "assignments" / assignment / f"{assignment}.ipynb"
    return path if path.is_file() else None


def find_pairs(
    submitted: Path,
    *,
    release_root: Path,
    threshold: float = 0.0,
    assignments: Sequence[str] | None = None,
) -> tuple[list[Pair], list[str]]:
    """Every pair of submissions of an assignment with overlap above ``threshold``, highest
    first, and notes on what was skipped (unreadable notebooks, no release to subtract)."""
    from copydetect import CopyDetector

    from autograder.grader.submissions import submissions_root

    root = submissions_root(Path(submitted))
    notes: list[str] = []
    pairs: list[Pair] = []
    by_assignment: dict[str, dict[str, str]] = {}
    for student_dir in sorted(
        p for p in root.iterdir() if p.is_dir() and not p.is_symlink()
    ):
        for assignment_dir in sorted(
            p for p in student_dir.iterdir() if p.is_dir() and not p.is_symlink()
        ):
            assignment = assignment_dir.name
            if assignments and assignment not in assignments:
                continue
            notebook = assignment_dir / f"{assignment}.ipynb"
            if not notebook.is_file() or notebook.is_symlink():
                continue
            if notebook.stat().st_size > MAX_NOTEBOOK_BYTES:
                notes.append(
                    f"{student_dir.name}/{assignment}: notebook over "
                    f"{MAX_NOTEBOOK_BYTES // 10**6} MB, skipped"
                )
                continue
            code = code_of(notebook)
            if code is None:
                notes.append(
                    f"{student_dir.name}/{assignment}: not a readable notebook, skipped"
                )
                continue
            by_assignment.setdefault(assignment, {})[student_dir.name] = code
    with tempfile.TemporaryDirectory(prefix="autograde-similar-") as tmp:
        for assignment, codes in sorted(by_assignment.items()):
            if len(codes) < 2:
                continue
            base = Path(tmp) / assignment
            names = {}
            for index, (student, code) in enumerate(sorted(codes.items())):
                # Folder names are indices: a student id never becomes a path here.
                folder = base / "class" / f"s{index:05d}"
                folder.mkdir(parents=True)
                (folder / "code.py").write_text(code, encoding="utf-8")
                names[str(folder / "code.py")] = student
            boilerplate = []
            release = _release(release_root, assignment)
            if release is not None and (given := code_of(release)) is not None:
                (base / "release").mkdir()
                (base / "release" / "release.py").write_text(given, encoding="utf-8")
                boilerplate = [str(base / "release")]
            else:
                notes.append(
                    f"{assignment}: no release notebook at assignments/{assignment}/: the code "
                    "every student was given counts as overlap"
                )
            detector = CopyDetector(
                test_dirs=[str(base / "class")],
                ref_dirs=[str(base / "class")],
                boilerplate_dirs=boilerplate,
                extensions=["py"],
                noise_t=NOISE_T,
                guarantee_t=GUARANTEE_T,
                display_t=threshold,
                ignore_leaf=True,
                autoopen=False,
                silent=True,
                truncate=True,
            )
            # copydetect lists the files through a set (an order that changes with the
            # process's hash salt, and with it which of a pair is compared to which).
            detector.test_files = sorted(detector.test_files)
            detector.ref_files = sorted(detector.ref_files)
            detector.boilerplate_files = sorted(detector.boilerplate_files)
            with _stable_hashes():
                detector.run()
            seen = set()
            for (
                sim1,
                sim2,
                file1,
                file2,
                html1,
                html2,
                tokens,
            ) in detector.get_copied_code_list():
                a, b = names[str(file1)], names[str(file2)]
                if a == b or (b, a) in seen:
                    continue
                seen.add((a, b))
                if b < a:  # a stable order within the pair: by student id
                    a, b, sim1, sim2, html1, html2 = b, a, sim2, sim1, html2, html1
                pairs.append(
                    Pair(
                        assignment,
                        a,
                        b,
                        float(sim1),
                        float(sim2),
                        int(tokens),
                        html1,
                        html2,
                    )
                )
    pairs.sort(key=lambda p: (-p.score, -p.tokens, p.assignment, p.first, p.second))
    return pairs, notes


def _stable_kgram_hashes(string: str, k: int) -> Any:
    """copydetect's k-gram fingerprints with a hash that is the same in every process
    (copydetect uses Python's ``hash``, salted per process: two runs on the same class
    then differ in which k-grams winnowing keeps, and so in the overlaps reported)."""
    import numpy as np

    blake = hashlib.blake2b
    return np.array(
        [
            int.from_bytes(
                blake(string[i : i + k].encode(), digest_size=8).digest(),
                "little",
                signed=True,
            )
            for i in range(len(string) - k + 1)
        ],
        dtype=np.int64,
    )


@contextlib.contextmanager
def _stable_hashes() -> Iterator[None]:
    from copydetect import utils

    original = utils.hashed_kgrams
    utils.hashed_kgrams = _stable_kgram_hashes
    try:
        yield
    finally:
        utils.hashed_kgrams = original


_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Similar submissions</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 90rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
.caveat { background: #fff4ce; border: 1px solid #e0b000; padding: .6rem 1rem; font-weight: 600; }
table { border-collapse: collapse; width: 100%; } td, th { padding: .25rem .5rem; border-bottom: 1px solid #ddd; text-align: left; vertical-align: top; }
.code { display: grid; grid-template-columns: 1fr 1fr; gap: .5rem; }
pre { white-space: pre-wrap; background: #f6f8fa; padding: .4rem; font-size: .8rem; overflow-x: auto; }
.highlight-red { background: #ffd1d1; } .highlight-green { background: #d1f5d1; }
</style></head><body>
<h1>Similar submissions</h1>
<p class="caveat" id="caveat">{{ caveat }}</p>
<p>{{ pairs|length }} pair(s) above {{ "%.0f"|format(100 * threshold) }}% overlap, compared within each assignment
with the release notebook's code as boilerplate (copydetect {{ version }}).</p>
{% for n in notes %}<p><small>{{ n }}</small></p>{% endfor %}
<table class="pairs"><tr><th>#</th><th>assignment</th><th>first</th><th>second</th><th>first's code in second</th><th>second's code in first</th><th>tokens</th></tr>
{% for p in pairs[:listed] %}<tr><td><a href="#pair-{{ loop.index }}">{{ loop.index }}</a></td><td>{{ p.assignment }}</td><td>{{ p.first }}</td><td>{{ p.second }}</td>
<td>{{ "%.0f"|format(100 * p.first_share) }}%</td><td>{{ "%.0f"|format(100 * p.second_share) }}%</td><td>{{ p.tokens }}</td></tr>{% endfor %}</table>
{% if pairs|length > listed %}<p>The first {{ listed }} pairs are listed here; similar.csv has all {{ pairs|length }}.</p>{% endif %}
{% for p in pairs[:shown] %}
<h2 id="pair-{{ loop.index }}">{{ loop.index }}. {{ p.assignment }}: {{ p.first }} and {{ p.second }}</h2>
<div class="code"><div><strong>{{ p.first }}</strong><pre>{{ p.first_html|safe }}</pre></div>
<div><strong>{{ p.second }}</strong><pre>{{ p.second_html|safe }}</pre></div></div>
{% endfor %}
<p class="caveat">{{ caveat }}</p>
</body></html>
"""


def render_similar(
    pairs: Sequence[Pair],
    notes: Sequence[str],
    threshold: float,
    shown: int = 50,
    listed: int = 500,
) -> str:
    """The HTML view: the caveat, the ranked pairs, the overlapping code of the top ``shown``
    side by side (copydetect escapes the code; only its highlight spans are markup); the table
    lists the first ``listed`` pairs (the CSV has all)."""
    from importlib.metadata import version

    import jinja2

    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return environment.from_string(_TEMPLATE).render(
        pairs=list(pairs),
        notes=list(notes),
        threshold=threshold,
        shown=shown,
        listed=listed,
        caveat=CAVEAT,
        version=version("copydetect"),
    )


def write_similar(
    submitted: Path,
    to: Path,
    *,
    release_root: Path,
    threshold: float = 0.5,
    assignments: Sequence[str] | None = None,
) -> tuple[Path, list[Pair], list[str]]:
    """Write ``to/similar.html`` and ``to/similar.csv``; return the page, pairs and notes."""
    import csv
    import io

    from autograder.grader.report import csv_cell, write_atomic

    pairs, notes = find_pairs(
        submitted,
        release_root=release_root,
        threshold=threshold,
        assignments=assignments,
    )
    page = Path(to) / "similar.html"
    write_atomic(page, render_similar(pairs, notes, threshold))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["assignment", "first", "second", "first_share", "second_share", "tokens"]
    )
    for p in pairs:
        writer.writerow(
            [
                csv_cell(p.assignment),
                csv_cell(p.first),
                csv_cell(p.second),
                round(p.first_share, 4),
                round(p.second_share, 4),
                p.tokens,
            ]
        )
    write_atomic(Path(to) / "similar.csv", buffer.getvalue())
    return page, pairs, notes


def summary(pairs: Sequence[Pair], notes: Sequence[str], top: int = 10) -> list[str]:
    """Lines to print: the caveat first, then the top pairs."""
    lines = [f"NOTE: {CAVEAT}"]
    lines += [f"  {n}" for n in notes]
    if not pairs:
        lines.append("No pair of submissions above the threshold.")
    for p in pairs[:top]:
        lines.append(
            f"  {p.assignment}: {p.first} / {p.second}: {100 * p.first_share:.0f}% / "
            f"{100 * p.second_share:.0f}% shared ({p.tokens} tokens)"
        )
    return lines
