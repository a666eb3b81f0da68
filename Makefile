# The one entry point. Every target installs what it needs into .venv itself.
SHELL := /bin/bash
PY_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-8)
# CPU torch from the machine's disk; the package itself only asks for a range.
TORCH_PIN ?= torch==2.13.0
export OMP_NUM_THREADS ?= 1
# No MPLBACKEND here: JupyterLab's kernels must draw inline (tests/conftest.py and the CI
# grader's workers choose Agg themselves).
export PYTHONDONTWRITEBYTECODE := 1
# nbgrader shells out to `alembic` and tests call `nbgrader`/`autograde`: the venv's bin first.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install test test-fast test-gpu grade lab lint format typecheck release student-bundle \
        calibrate bench gradescope clean

$(STAMP): pyproject.toml constraints/grading.txt
	test -x $(PY) || $(PY_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	@# The versions that decide grades are pinned (the grader's fingerprint records them).
	$(PY) -m pip install -q -c constraints/grading.txt -e ".[notebooks,dev,browser,cluster,instructor]"
	@# The browser test drives Debian's chromium (never a downloaded browser); CI runs as root.
	command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	    && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	        --no-install-recommends chromium) ; } || echo "chromium not installed: tests/test_notebooks/test_browser.py will skip"
	rm -f $(VENV)/.installed-*; touch $(STAMP)

install: $(STAMP)

## The README's second command: the whole suite (GPU tests auto-skip without CUDA).
# Two pytest-xdist workers (one per core here); files that share session state run on one
# worker together (tests/conftest.py). TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -m "not gpu" -p no:cacheprovider -n $(TEST_WORKERS) --dist loadscope

test-fast: $(STAMP)
	$(PY) -m pytest -m "not gpu and not slow" -p no:cacheprovider

test-gpu: $(STAMP)
	$(PY) -m pytest -m gpu -p no:cacheprovider

## The README's first command: release the assignments and grade the demo class.
grade: $(STAMP)
	@# The console script, not `python -m`: the judges' fork server re-imports __main__, and a
	@# module run with -m that the server preloaded makes runpy warn on every judge start.
	$(VENV)/bin/autograde demo

release: $(STAMP)
	$(PY) scripts/release.py

student-bundle: $(STAMP)
	$(PY) scripts/student_bundle.py

gradescope: $(STAMP)
	$(PY) scripts/gradescope_bundle.py

calibrate: $(STAMP)
	$(PY) scripts/calibrate.py

bench: $(STAMP)
	$(PY) benchmarks/run.py

## Students' route (README), taken from the built bundle in its own environment: no reference
## solutions, no hidden checks, no instructor tools of nbgrader.
STUDENT_DIR := dist/dsc190-vi-student
STUDENT_VENV := $(CURDIR)/dist/student-venv
LAB_ARGS ?=  # e.g. LAB_ARGS="--no-browser --port 8899"
lab: $(STAMP)
	$(PY) scripts/student_bundle.py --no-zip
	test -x $(STUDENT_VENV)/bin/python || $(PY_SYS) -m venv $(STUDENT_VENV)
	$(STUDENT_VENV)/bin/python -m pip install -q "$(TORCH_PIN)"
	cd $(STUDENT_DIR) && $(STUDENT_VENV)/bin/python install.py -q
	cd $(STUDENT_DIR) && env -u MPLBACKEND PATH="$(STUDENT_VENV)/bin:$$PATH" \
	    $(STUDENT_VENV)/bin/jupyter lab assignments/ $(LAB_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix . ; $(VENV)/bin/ruff format .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

clean:
	rm -rf out grading course build dist *.egg-info
