"""The student's ``install.py`` picks the right torch, and the Python floor is stated one way.

Offline: no test here installs anything. ``torch_install_args`` is the whole decision (which
``python -m pip`` command installs torch first, or none), so it is tested on every case a
student's machine can be in. The floor (3.11: nbgrader 0.9.6 and ipykernel 7 require it) was
checked with pip's resolver, ``pip install --dry-run --ignore-installed --only-binary=:all:
--python-version 3.10 --target DIR <the bundle's dependencies>`` (fails: "nbgrader 0.9.6
Requires-Python >=3.11") and the same with 3.11 and 3.13 (both resolve); here we check that
every place that states it says the same.
"""

from __future__ import annotations

import importlib.util
import re
import tomllib
from types import ModuleType

import pytest

from tests.test_notebooks import nbtools as nbt


def _install() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "_student_install", nbt.ROOT / "scripts" / "student" / "install.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


install = _install()
CPU = ["--index-url", install.CPU_INDEX, install.TORCH_REQUIREMENT]


def test_linux_without_nvidia_gets_the_cpu_build() -> None:
    args = install.torch_install_args("Linux", False, False, [])
    assert args == ["-m", "pip", "install", *CPU]


def test_quiet_and_verbose_flags_are_passed_on_and_nothing_else() -> None:
    args = install.torch_install_args(
        "Linux", False, False, ["-q", "--no-build-isolation"]
    )
    assert args == ["-m", "pip", "install", "-q", *CPU]


@pytest.mark.parametrize(
    ("system", "nvidia", "installed"),
    [
        ("Linux", True, False),  # a GPU: PyPI's CUDA wheel is the one wanted
        ("Darwin", False, False),  # PyPI's macOS wheel is CPU (+ MPS) already
        ("Windows", False, False),  # PyPI's Windows wheel is the CPU build
        ("Linux", False, True),  # a torch is already there: keep it
    ],
)
def test_torch_is_left_to_pip(system: str, nvidia: bool, installed: bool) -> None:
    assert install.torch_install_args(system, nvidia, installed, ["-q"]) is None


@pytest.mark.parametrize(
    "argv",
    [
        ["--index-url", "https://download.pytorch.org/whl/cu124"],
        ["--index-url=https://example.org/simple"],
        ["-i", "https://example.org/simple"],
        ["--extra-index-url", "https://example.org/simple"],
        ["--find-links", "/wheels"],
        ["-f", "/wheels"],
        ["--no-index"],
    ],
)
def test_a_student_who_chooses_the_source_is_not_overridden(argv: list[str]) -> None:
    assert install.torch_install_args("Linux", False, False, argv) is None


def test_gpu_detection_reads_nvidia_smi_and_the_driver(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(install.shutil, "which", lambda name: None)
    monkeypatch.setattr(install.os.path, "exists", lambda path: False)
    assert install.has_nvidia_gpu() is False
    monkeypatch.setattr(install.os.path, "exists", lambda p: p == "/proc/driver/nvidia")
    assert install.has_nvidia_gpu() is True
    monkeypatch.setattr(install.os.path, "exists", lambda path: False)
    monkeypatch.setattr(install.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert install.has_nvidia_gpu() is True


def test_old_python_is_refused_with_a_message(monkeypatch, capsys) -> None:
    monkeypatch.setattr(install.sys, "version_info", (3, 10, 14))
    called = []
    monkeypatch.setattr(install, "run", lambda *args: called.append(args))
    assert install.main([]) == 1
    assert called == []
    assert "Python 3.11 or newer" in capsys.readouterr().out


def test_one_floor_and_one_torch_range_everywhere() -> None:
    project = tomllib.loads((nbt.ROOT / "pyproject.toml").read_text())["project"]
    floor = ".".join(map(str, install.MIN_PYTHON))
    assert project["requires-python"] == f">={floor}"
    torch = [d for d in project["dependencies"] if re.match(r"torch\b", d)]
    assert [d.replace(" ", "").split("#")[0] for d in torch] == [
        install.TORCH_REQUIREMENT
    ]
    route = nbt._load_script("student_bundle").ROUTE
    assert f"Python {floor} or newer" in route
    readme = (nbt.ROOT / "README.md").read_text()
    assert route in readme  # the README quotes the route word for word
    assert not re.search(r"Python (≥|>=) ?3\.10|3\.10 or newer", readme)
    assert not any("mlxtend" in d for d in project["dependencies"])


KERNEL_INFO = {
    "codemirror_mode": {"name": "ipython", "version": 3},
    "file_extension": ".py",
    "mimetype": "text/x-python",
    "name": "python",
    "nbconvert_exporter": "python",
    "pygments_lexer": "ipython3",
    "version": "3.12.4",
}


def test_language_info_is_stamped_and_nothing_else(tmp_path) -> None:
    import json

    for assignment in nbt.assignment_ids():
        (tmp_path / assignment).mkdir()
        (tmp_path / assignment / f"{assignment}.ipynb").write_bytes(
            nbt.release_path(assignment).read_bytes()
        )
    changed = install.stamp_language_info(tmp_path, KERNEL_INFO)
    assert len(changed) == len(nbt.assignment_ids())
    for path in changed:
        released = json.loads(nbt.release_path(path.parent.name).read_text())
        stamped = json.loads(path.read_text())
        assert stamped["metadata"]["language_info"] == KERNEL_INFO
        assert stamped["cells"] == released["cells"]  # checksums untouched
        released["metadata"]["language_info"] = KERNEL_INFO
        assert stamped == released
    # nbformat's layout is kept, so a second pass (the same kernel) rewrites nothing.
    assert install.stamp_language_info(tmp_path, KERNEL_INFO) == []


def test_the_release_keeps_nbformats_layout() -> None:
    """What install.py writes back is byte-identical to the release apart from language_info."""
    import json

    for assignment in nbt.assignment_ids():
        text = nbt.release_path(assignment).read_text(encoding="utf-8")
        assert (
            json.dumps(json.loads(text), sort_keys=True, indent=1, ensure_ascii=False)
            + "\n"
            == text
        )
