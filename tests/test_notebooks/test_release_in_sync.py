"""``assignments/`` is exactly what ``nbgrader generate_assignment`` makes of ``solutions/`` today.

The fresh release comes from the ``generated`` fixture (a temporary course with our config).
Sources, cell types and all cell metadata (nbgrader's checksums included) must match;
outputs and cell ids are ignored.
"""

from __future__ import annotations

import pytest

from tests.test_notebooks import nbtools as nbt

pytestmark = [pytest.mark.notebook, pytest.mark.slow]


def _comparable(nb) -> list[tuple[str, str, dict]]:
    return [(c.cell_type, c.source, dict(c.metadata)) for c in nb.cells]


def test_committed_release_equals_a_fresh_one(generated: nbt.Course) -> None:
    (assignment,) = generated.ids
    committed = nbt.release_path(assignment)
    assert committed.exists(), f"{committed} missing: run `make release`"
    fresh, ours = nbt.read(generated.release(assignment)), nbt.read(committed)
    assert ours.metadata == fresh.metadata
    assert len(ours.cells) == len(fresh.cells), "cell count differs: run `make release`"
    for index, (mine, theirs) in enumerate(zip(_comparable(ours), _comparable(fresh))):
        assert mine == theirs, (
            f"cell {index} differs from a fresh release: run `make release`"
        )


def test_release_holds_no_solutions_nor_hidden_tests(generated: nbt.Course) -> None:
    (assignment,) = generated.ids
    release = nbt.read(nbt.release_path(assignment))
    text = "\n".join(c.source for c in release.cells)
    for marker in (
        nbt.BEGIN_SOLUTION,
        nbt.END_SOLUTION,
        nbt.BEGIN_HIDDEN,
        'tier="hidden"',
    ):
        assert marker not in text
    for cell in filter(nbt.is_solution_code, release.cells):
        assert "raise NotImplementedError()" in cell.source
