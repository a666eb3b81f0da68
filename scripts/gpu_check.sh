#!/usr/bin/env bash
# The GPU checks of issue 13, in one run, for a machine with CUDA and torch but no network.
#
#   scripts/gpu_check.sh --prepare   # here, with PyPI reachable: wheels of the pure-Python
#                                    # test dependencies into .gpu-wheels/ (versions of .venv)
#   scripts/gpu_check.sh             # on the GPU machine, from the repository root
#
# On the GPU machine it installs what is missing from .gpu-wheels/ (no index, no deps), makes
# the repository importable (pip install --no-deps -e ., else a .pth, else PYTHONPATH), then
# runs the `gpu`-marked tests and `benchmarks/run.py --device cuda --vae-only`, and writes
# everything (versions, nvidia-smi, test output, the benchmark table) to $OUT/gpu_check.txt
# ($OUT defaults to ./gpu-check-out). Exit status: the tests' (the benchmark never fails it),
# 3 when CUDA is not available (everything would skip).
# Budget: about 3 minutes on an H200 (tests ~1 min, benchmark ~1 min, imports and setup).
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=.gpu-wheels
# Pure-Python packages the gpu tests and the benchmark import beyond torch and numpy.
PURE=(hypothesis attrs sortedcontainers pytest pluggy iniconfig packaging)

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
PY=${PYTHON:-$(command -v python3 || command -v python)}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
section() { printf '\n===== %s (%s) =====\n' "$1" "$(date -u +%H:%M:%S)"; }

section "machine"
nvidia-smi || true
"$PY" -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available()); print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'NO CUDA')"

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "CUDA is not available to $PY: nothing to check (the gpu tests would all skip)"
    exit 3
fi

section "dependencies"
missing=()
for module in hypothesis attr sortedcontainers pytest numpy; do
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
"$PY" -c "import course_lib, hypothesis; print('imports ok:', course_lib.__file__)"

section "gpu tests"
"$PY" -m pytest -p no:cacheprovider -m gpu -v -o addopts="-ra --strict-markers" \
    tests/test_course_lib/test_train_speed_paths.py tests/test_course_lib/test_vae.py
tests=$?

section "gpu benchmark"
timeout 400 "$PY" benchmarks/run.py --device cuda --vae-only --repeats 3 --out "$OUT/bench.md" ||
    echo "benchmark exited $?"

section "done"
echo "gpu tests exit status: $tests; report in $REPORT"
exit $tests
