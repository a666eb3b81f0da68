"""A student's week one, in a real browser: bundle, install, JupyterLab, grade cell, figure, Validate.

Debian's ``chromium`` (installed with apt when missing and possible) is driven by the
``playwright`` package through ``executable_path``: no browser is ever downloaded. The student
bundle is built into a temporary folder and installed with its own ``install.py``, as the
README says, into a fresh virtual environment. To stay offline and fast, that environment
sees the third-party packages of this repository's environment through one path line in a
``.pth`` file (a plain path: the repository's editable install, with the reference and the
hidden checks, is not activated), and shares its Jupyter data files (JupyterLab's assets,
nbgrader's extension); ``pip install`` of the bundle then finds every dependency satisfied and
installs the bundle itself. JupyterLab is started from the bundle folder on 127.0.0.1 with a
token, exactly as ``jupyter lab assignments/``.

Screenshots are saved under ``tmp_path/screenshots`` (the test prints the folder).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autograder.grade import grade
from tests.test_notebooks import nbtools as nbt

pytestmark = [pytest.mark.browser, pytest.mark.notebook, pytest.mark.slow]

ASSIGNMENT = "02_score"
NOTEBOOK = f"{ASSIGNMENT}/{ASSIGNMENT}.ipynb"
SIGNATURE = "def gaussian_score(z, mu, log_sigma):\n"
#: Forgets to square sigma in d_mu: a classic slip; the public checks catch it.
WRONG = SIGNATURE + (
    "    sigma = torch.exp(log_sigma)\n"
    "    return (z - mu) / sigma, ((z - mu) / sigma) ** 2 - 1.0\n"
)
#: Correct, written the long way a student might.
CORRECT = SIGNATURE + (
    "    var = torch.exp(2 * log_sigma)\n"
    "    d_mu = (z - mu) / var\n"
    "    d_log_sigma = (z - mu) ** 2 / var - 1\n"
    "    return d_mu, d_log_sigma\n"
)
SETUP, SOLUTION, CHECK, FIGURE = 1, 3, 4, 6  # cell indices in the release notebook


def chromium() -> str:
    """Debian's chromium, installed with apt if missing (CI runs as root); else skip."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed and cannot be: needs root and apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
    ):
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            pytest.skip(f"apt-get could not install chromium: {done.stderr[-500:]}")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("apt-get installed chromium but no `chromium` is on PATH")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def student_env(root: Path) -> dict[str, str]:
    """A clean environment: no Agg backend, no grading mode, Jupyter's user dirs under root."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "MPLBACKEND",
            "NBGRADER_EXECUTION",
            "PYTHONPATH",
            "JUPYTER_PATH",
            "JUPYTER_CONFIG_PATH",
            "VIRTUAL_ENV",
        }
    }
    home = root / "home"
    env.update(
        HOME=str(home),
        JUPYTER_CONFIG_DIR=str(home / ".jupyter"),
        JUPYTER_DATA_DIR=str(home / ".local/share/jupyter"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(home / "lab-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "lab-workspaces"),
        PATH=f"{root / 'venv' / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        OMP_NUM_THREADS="1",
    )
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The bundle built and installed as the README says; yields paths and the environment."""
    root = tmp_path_factory.mktemp("student")
    bundle = nbt._load_script("student_bundle").build(root, nbt.ROOT, make_zip=False)
    venv = root / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True
    )
    python = venv / "bin" / "python"
    site = subprocess.run(
        [
            str(python),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    repo_site = sysconfig.get_paths()["purelib"]
    Path(site, "_course_deps.pth").write_text(repo_site + "\n")
    (venv / "share").mkdir(exist_ok=True)
    (venv / "share" / "jupyter").symlink_to(Path(sys.prefix, "share", "jupyter"))
    shutil.copytree(Path(sys.prefix, "etc", "jupyter"), venv / "etc" / "jupyter")
    env = student_env(root)
    done = subprocess.run(
        [str(python), "install.py", "-q", "--no-build-isolation"],
        cwd=bundle,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    yield {"root": root, "bundle": bundle, "python": python, "env": env}


def test_student_install_has_no_private_code(installed: dict[str, Any]) -> None:
    probe = (
        "import json, autograder, course_lib\n"
        "from autograder.tasks import hidden_available\n"
        "print(json.dumps([autograder.__file__, course_lib.__file__, hidden_available()]))\n"
    )
    done = subprocess.run(
        [str(installed["python"]), "-c", probe],
        cwd=installed["root"],
        env=installed["env"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    autograder_path, course_lib_path, hidden = json.loads(done.stdout.splitlines()[-1])
    for path in (autograder_path, course_lib_path):
        assert path.startswith(str(installed["root"] / "venv")), path
    assert hidden is False


@pytest.fixture(scope="module")
def lab(installed: dict[str, Any]) -> Iterator[str]:
    """JupyterLab started from the bundle folder as ``jupyter lab assignments/``; its base URL."""
    port, token = free_port(), secrets.token_hex(16)
    log = (installed["root"] / "lab.log").open("w")
    server = subprocess.Popen(
        [
            str(installed["python"]),
            "-m",
            "jupyterlab",
            "assignments/",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            f"--IdentityProvider.token={token}",
            "--ServerApp.port_retries=0",
            "--ServerApp.allow_root=True",  # CI runs as root; students do not need it
        ],
        cwd=installed["bundle"],
        env=installed["env"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(
                    f"{base}/api/status?token={token}", timeout=5
                ):
                    break
            except (urllib.error.URLError, ConnectionError):
                if server.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(
                        "JupyterLab did not start:\n"
                        + (installed["root"] / "lab.log").read_text()[-3000:]
                    )
                time.sleep(0.5)
        yield f"{base}|{token}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_instructor_endpoints_are_off(lab: str) -> None:
    base, token = lab.split("|")
    for endpoint in ("formgrader", "assignments", "courses"):
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"{base}/{endpoint}?token={token}", timeout=10)
        assert error.value.code == 404, endpoint


def expected_public(source: str) -> float:
    import math

    import torch

    names: dict[str, Any] = {"torch": torch, "math": math}
    exec(source, names)
    return grade("gaussian_score", names["gaussian_score"], quiet=True, namespace=names)


def test_student_journey_in_chromium(lab: str, tmp_path: Path) -> None:
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="the `browser` extra (playwright) is not installed",
    )
    executable = chromium()
    base, token = lab.split("|")
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"\nscreenshots: {shots}")
    wrong_points, correct_points = expected_public(WRONG), expected_public(CORRECT)
    assert wrong_points < correct_points

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}")
        panel = page.locator(".jp-NotebookPanel:visible")
        cells = panel.locator(".jp-Cell")
        cell_count = len(json.loads(nbt.release_path(ASSIGNMENT).read_text())["cells"])
        panel.locator(".jp-Notebook").wait_for()
        page.wait_for_function(
            "n => document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell').length >= n",
            arg=min(cell_count, FIGURE + 1),
        )
        # The kernel is ready when the toolbar's status says so.
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']")
        # Once the kernel is up, JupyterLab writes the language_info it reports into the
        # notebook (about 2 s after idle here); a notebook whose metadata changed is unsaved.
        # install.py stamped that language_info, so the untouched notebook stays clean.
        page.wait_for_timeout(6_000)
        tab = page.locator(".lm-TabBar-tab.jp-mod-current", has_text=ASSIGNMENT)
        assert tab.count() == 1
        page.screenshot(path=shots / "0_opened.png")
        assert "jp-mod-dirty" not in (tab.get_attribute("class") or ""), (
            "the notebook shows as modified right after opening"
        )
        assert page.locator(".jp-mod-dirty").count() == 0
        assert page.locator("#jp-mainmenu-nbgrader").count() == 0, "instructor menu"
        config = json.loads(page.locator("#jupyter-config-data").text_content() or "{}")
        disabled = set(config.get("disabledExtensions", []))  # a list in the page
        assert "@jupyter/nbgrader:formgrader" in disabled, config.get(
            "disabledExtensions"
        )
        assert "@jupyter/nbgrader:validate-assignment" not in disabled

        def cell(index: int) -> Any:
            return cells.nth(index)

        def run(index: int) -> Any:
            target = cell(index)
            target.scroll_into_view_if_needed()
            target.locator(".jp-InputArea-editor").click()
            page.keyboard.press("Control+Enter")
            prompt = target.locator(".jp-InputArea-prompt")
            page.wait_for_function(
                "el => /\\[\\d+\\]/.test(el.textContent)",
                arg=prompt.element_handle(),
                timeout=240_000,
            )
            return target

        def paste(index: int, source: str) -> None:
            editor = cell(index).locator(".jp-InputArea-editor")
            editor.scroll_into_view_if_needed()
            editor.click()
            page.keyboard.press("Control+A")
            page.keyboard.press("Delete")
            page.keyboard.insert_text(source)

        run(SETUP)
        paste(SOLUTION, WRONG)
        run(SOLUTION)
        report = run(CHECK).locator(".jp-OutputArea").inner_text()
        page.screenshot(path=shots / "1_wrong_feedback.png")
        assert "[FAIL]" in report, report
        assert f"public checks: {wrong_points:g} / " in report, report
        assert str(wrong_points) in report.split("Out[")[-1], report

        paste(SOLUTION, CORRECT)
        run(SOLUTION)
        report = run(CHECK).locator(".jp-OutputArea").inner_text()
        page.screenshot(path=shots / "2_correct_feedback.png")
        assert "[FAIL]" not in report and "[PASS]" in report, report
        assert (
            f"public checks: {correct_points:g} / {correct_points:g} points" in report
        )
        assert "more points from hidden checks" in report, report
        assert str(correct_points) in report.split("Out[")[-1], report

        figure = run(FIGURE).locator(".jp-OutputArea img")
        figure.wait_for()
        figure.scroll_into_view_if_needed()
        page.screenshot(path=shots / "3_figure.png")
        assert figure.get_attribute("src", timeout=5_000).startswith("data:image/png")
        assert figure.evaluate("img => img.naturalWidth") > 200

        panel.locator("jp-button.validate-button, .validate-button").first.click()
        dialog = page.locator(".jp-Dialog")
        dialog.wait_for(timeout=300_000)
        page.wait_for_function(
            "() => !/Validating/i.test(document.querySelector('.jp-Dialog').innerText)",
            timeout=300_000,
        )
        verdict = dialog.inner_text()
        page.screenshot(path=shots / "4_validate.png")
        browser.close()
    assert "Validation Results" in verdict, verdict
    # The other exercises are still stubs: Validate names them, and not the solved one.
    assert "failed" in verdict.lower(), verdict
    assert 'grade("score_function_grad"' in verdict, verdict
    assert 'grade("gaussian_score"' not in verdict, verdict
