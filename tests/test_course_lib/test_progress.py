"""``course_lib.progress`` draws a widget only where the notebook's own stdout would show it."""

from __future__ import annotations

import contextlib
import importlib
import io
import sys
import types

import pytest

progress_module = importlib.import_module(
    "course_lib.progress"
)  # the package exports the function


class ZMQInteractiveShell:  # the name is what ``_in_notebook`` looks at
    pass


class OutStream(io.StringIO):  # ipykernel's stdout class, by name
    pass


@pytest.fixture
def fake_notebook(monkeypatch: pytest.MonkeyPatch) -> None:
    shell = ZMQInteractiveShell()
    fake_ipython = types.SimpleNamespace(get_ipython=lambda: shell)
    monkeypatch.setitem(sys.modules, "IPython", fake_ipython)


def test_a_notebook_cell_gets_a_widget(
    fake_notebook: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # set here, not in the fixture: pytest swaps sys.stdout between setup and call
    monkeypatch.setattr(sys, "stdout", OutStream())
    assert progress_module._in_notebook()


def test_captured_stdout_gets_text_into_the_capture(
    fake_notebook: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a grade cell does: checks run under redirect_stdout, so no bar reaches the page."""
    sink = io.StringIO()
    monkeypatch.setattr(sys, "stdout", OutStream())
    with contextlib.redirect_stdout(sink):
        assert not progress_module._in_notebook()
        assert list(progress_module.progress(range(3), desc="epochs")) == [0, 1, 2]
    assert "epochs" in sink.getvalue()
