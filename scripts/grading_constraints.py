"""Write or check ``constraints/grading.txt``: the versions of the packages that decide grades.

The grader's fingerprint records Python's version and the versions of
:data:`autograder.grader.fingerprint.GRADING_PACKAGES`; a Dask worker or a resumed run in another
environment is refused or regrades. Every grading machine installs with this file
(``pip install -c constraints/grading.txt -e ".[cluster]"``; ``make install`` does), so all of
them grade alike. torch is pinned without its build label (``2.13.0`` for ``2.13.0+cpu``), so
a CUDA build of the same release satisfies it too (the fingerprint still tells them apart).

Usage: python scripts/grading_constraints.py            (write it from this environment)
       python scripts/grading_constraints.py --check    (exit 1 when it differs)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autograder.grader.fingerprint import GRADING_PACKAGES, grading_environment

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints" / "grading.txt"


def expected() -> str:
    """The file's text for this environment."""
    found = grading_environment()
    python = found["python"].split()[-1]
    lines = [
        "# The grading environment: what CI installs (make install) and every grading machine",
        "# (Dask workers included) must match. Regenerate: python scripts/grading_constraints.py",
        f"# python {'.'.join(python.split('.')[:2])}",
    ]
    for name in GRADING_PACKAGES:
        if found[name] != "absent":
            lines.append(f"{name}=={found[name].split('+')[0]}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    text = expected()
    if args.check:
        current = CONSTRAINTS.read_text() if CONSTRAINTS.is_file() else ""
        if current != text:
            print(
                f"{CONSTRAINTS} differs from this environment:\n{text}", file=sys.stderr
            )
            return 1
        return 0
    CONSTRAINTS.parent.mkdir(exist_ok=True)
    CONSTRAINTS.write_text(text)
    print(f"wrote {CONSTRAINTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
