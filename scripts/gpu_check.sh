#!/usr/bin/env bash
# The GPU checks, in one run, for a machine with CUDA and torch but no network.
#
#   scripts/gpu_check.sh --prepare   # here, with PyPI reachable: wheels of the pure-Python
#                                    # dependencies the GPU image lacks into .gpu-wheels/
#   scripts/gpu_check.sh             # on the GPU machine, from the repository root
#   scripts/gpu_check.sh --dry-run   # anywhere: the same steps on the CPU (proves the script)
#
# On the GPU machine it installs what is missing from .gpu-wheels/ (no index, no deps), makes
# the repository importable by every process, the grader's sandboxed workers included (they
# drop PYTHONPATH: pip install --no-deps -e ., else a .pth in site-packages), then runs
#   1. the `gpu`-marked tests,
#   2. benchmarks/run.py --device cuda --vae-only (DataLoader loop, eager, graphed and plain
#      CUDA-graph step side by side),
#   3. all five solution notebooks top to bottom with CUDA visible (scripts/run_notebooks.py:
#      no Jupyter kernel needed),
#   4. the CI grader on the demo class's honest students (ada_correct must get full marks),
# and writes everything to $OUT/gpu_check.txt, the benchmark table to $OUT/bench.md and the
# graded results under $OUT/grade ($OUT defaults to ./gpu-check-out). Exit status: 0 when
# every step passed, 1 when one failed, 3 when CUDA is not available (without --dry-run).
# Budget on an H100/H200: about 5 minutes (tests ~1, benchmark ~1, notebooks ~2, grading ~1).
# Device call: run(command="scripts/gpu_check.sh", carry=[".gpu-wheels"], timeout_s=480).
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=.gpu-wheels
# Pure-Python packages the gpu tests, the benchmark, the notebooks and the grader import
# beyond torch, numpy, scipy, scikit-learn and matplotlib (the GPU image has those).
PURE=(hypothesis attrs sortedcontainers pytest pluggy iniconfig packaging pygments tqdm)
DRY_RUN=0
[[ "${1:-}" == "--dry-run" ]] && DRY_RUN=1

if [[ "${1:-}" == "--prepare" ]]; then
    PIP=(.venv/bin/python -m pip)
    mkdir -p "$WHEELS"
    specs=()
    for name in "${PURE[@]}"; do
        version=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('$name'))")
        specs+=("$name==$version")
    done
    "${PIP[@]}" download --quiet --no-deps --only-binary=:all: -d "$WHEELS" "${specs[@]}"
    # hypothesis ships per-CPython wheels: bring those of the other likely interpreters too.
    for version in 3.10 3.11 3.12 3.13 3.14; do
        "${PIP[@]}" download --quiet --no-deps --only-binary=:all: -d "$WHEELS" \
            --python-version "$version" --platform manylinux2014_x86_64 \
            --platform manylinux_2_17_x86_64 --platform any "${specs[0]}" || true
    done
    ls -l "$WHEELS"
    echo "now run scripts/gpu_check.sh on the GPU machine (carry $WHEELS if git ignores it)"
    exit 0
fi

OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
REPORT=$OUT/gpu_check.txt
exec > >(tee "$REPORT") 2>&1
# A dry run prefers the repository's venv (it has torch, and the step that makes the repository
# importable writes its .pth there rather than into the system's interpreter).
if [[ -z "${PYTHON:-}" && $DRY_RUN == 1 && -x .venv/bin/python ]]; then
    PYTHON=.venv/bin/python
fi
PY=${PYTHON:-$(command -v python3 || command -v python)}
# Absolute (steps run from other folders), without resolving links (a venv's python is one).
[[ "$PY" == */* ]] && PY=$(realpath -s "$PY")
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
section() { printf '\n===== %s (%s) =====\n' "$1" "$(date -u +%H:%M:%S)"; }

section "machine"
nvidia-smi || true
"$PY" -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available()); print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'NO CUDA')"

DEVICE=cuda
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    if ((DRY_RUN)); then
        DEVICE=cpu
        echo "dry run: CUDA is not available, every step runs on the CPU (gpu tests skip)"
    else
        echo "CUDA is not available to $PY: nothing to check (the gpu tests would all skip)"
        exit 3
    fi
fi
failed=()

section "dependencies"
missing=()
for module in hypothesis attr sortedcontainers pytest tqdm numpy scipy sklearn matplotlib; do
    "$PY" -c "import $module" 2>/dev/null || missing+=("$module")
done
echo "missing before install: ${missing[*]:-none}"
if ((${#missing[@]})) && compgen -G "$WHEELS/*.whl" >/dev/null; then
    # by name: pip picks each package's wheel that fits this interpreter
    "$PY" -m pip install --quiet --no-index --no-deps --find-links "$WHEELS" "${PURE[@]}" ||
        "$PY" -m pip install --quiet --user --no-index --no-deps --find-links "$WHEELS" "${PURE[@]}" ||
        true
fi

section "install the repository"
if ! "$PY" -m pip install --quiet --no-deps --no-build-isolation -e . 2>/dev/null; then
    site=$("$PY" -c "import site; print(site.getsitepackages()[0])" 2>/dev/null)
    if [[ -n "$site" ]] && echo "$PWD" >"$site/course-repo.pth" 2>/dev/null; then
        echo "added $site/course-repo.pth"
    else
        export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
        echo "PYTHONPATH=$PYTHONPATH"
    fi
fi
# From another folder, so that only the installed repository (not the cwd) can be found.
(cd / && "$PY" -c "import course_lib, autograder.grader.worker, hypothesis; print('imports ok:', course_lib.__file__)") ||
    failed+=("imports")

section "gpu tests"
"$PY" -m pytest -p no:cacheprovider -m gpu -v -o addopts="-ra --strict-markers" \
    tests/test_course_lib/test_train_speed_paths.py tests/test_course_lib/test_vae.py \
    tests/test_course_lib/test_plotting_vae.py tests/test_autograder/test_holds_graph.py
status=$?
# 5: no test ran, which is what a CPU dry run expects (every gpu test skips or is deselected)
((status == 0 || (DRY_RUN && status == 5))) || failed+=("gpu tests (exit $status)")

section "benchmark ($DEVICE)"
if ((DRY_RUN)); then bench_args=(--device cpu --quick --repeats 1); else bench_args=(--device cuda --repeats 3); fi
timeout 400 "$PY" benchmarks/run.py "${bench_args[@]}" --vae-only --out "$OUT/bench.md" ||
    failed+=("benchmark (exit $?)")

section "solution notebooks ($DEVICE)"
# A CPU dry run takes the graders' small budgets; on the GPU the notebooks run as students do.
((DRY_RUN)) && export NBGRADER_EXECUTION=autograde
"$PY" scripts/run_notebooks.py --timeout 600 solutions/*/*.ipynb || failed+=("notebooks")
unset NBGRADER_EXECUTION

section "CI grader on the demo class's honest students ($DEVICE)"
class=$(mktemp -d)
cp -r examples/submitted/ada_correct examples/submitted/ben_partly_wrong "$class/"
rm -rf "$OUT/grade"
grade=("$PY" -m autograder.grader.cli grade "$class" --out "$OUT/grade" --jobs 2)
if ! "${grade[@]}"; then
    # gVisor and other kernels without namespaces for the sandbox: these two notebooks are
    # the course's own, so the limits-only level is acceptable here (never for a class).
    echo "the sandbox refused this machine; grading the two known notebooks with --insecure"
    "${grade[@]}" --insecure || failed+=("grading (exit $?)")
fi
"$PY" - "$OUT/grade" <<'PYEOF' || failed+=("grading results")
import json, sys
from pathlib import Path
out, bad = Path(sys.argv[1]), []
for results in sorted(out.glob("*/*/results.json")):
    data = json.loads(results.read_text())
    top = sum(t["max_score"] for t in data["tests"])
    sandbox = data.get("extra_data", {}).get("sandbox")
    print(f"{results.parent.parent.name}/{results.parent.name}: {data['score']:g} / {top:g} (sandbox {sandbox})")
    if results.parent.parent.name == "ada_correct" and abs(data["score"] - top) > 1e-9:
        bad.append(results.parent.name)
print("ada_correct full marks everywhere" if not bad else f"ada_correct lost points on {bad}")
sys.exit(1 if bad else 0)
PYEOF
rm -rf "$class"

section "done"
if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]}; report in $REPORT"
    exit 1
fi
echo "every step passed ($DEVICE); report in $REPORT"
exit 0
