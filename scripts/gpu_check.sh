#!/usr/bin/env bash
# Measure pcrm on one GPU and write one JSON of figures (scripts/gpu_check.py says what it runs).
#
#   scripts/gpu_check.sh --dry-run [--output FILE]   here, on the CPU: tiny models, the same steps (tests/test_gpu_check.py)
#   scripts/gpu_check.sh [--output FILE]             on the GPU machine, after scripts/gpu_prepare.sh here, with
#                                                    scripts/gpu_wheels carried. With the device tool:
#       run(command='scripts/gpu_check.sh --output "$OUT/gpu_check.json"', carry=["scripts/gpu_wheels"], timeout_s=600)
#   (FILE and FILE's stem + -logs.tar.gz, every command's output, come back; --budget-s 450 keeps it under 8 minutes)
#
# The GPU machine reaches no network: when pcrm's pinned libraries are not importable there (trl and datasets
# are missing, transformers is 5.17), the carried wheels are installed into $PCRM_GPU_SITE (default
# /tmp/pcrm-gpu-site) and put first on PYTHONPATH. pcrm runs from this working tree: each command through
# pcrm.cli.main (what `python -m pcrm.cli` and the `pcrm` script, pcrm.cli:main_entry, run), in a small wrapper
# that records its peak memory. Exit status 0 when every step produced its figures, 1 when one failed or was
# skipped (the JSON says which), 2 when the environment is unusable.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3
fi
WHEELS=${PCRM_GPU_WHEELS:-scripts/gpu_wheels}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # pcrm from the working tree, installed or not

if ! "$PY" scripts/gpu_check.py check-env 2>/dev/null; then
  if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    "$PY" scripts/gpu_check.py check-env || true
    echo "gpu_check: pcrm's pinned libraries are not importable and $WHEELS has no wheels:" \
         "run scripts/gpu_prepare.sh where pip reaches PyPI and carry $WHEELS" >&2
    exit 2
  fi
  SITE=${PCRM_GPU_SITE:-/tmp/pcrm-gpu-site}
  echo "gpu_check: installing the carried wheels into $SITE"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH="$PWD:$SITE${PYTHONPATH#"$PWD"}"
  if ! "$PY" scripts/gpu_check.py check-env; then
    echo "gpu_check: still unusable after installing $WHEELS (above: what is missing)" >&2
    exit 2
  fi
fi
exec "$PY" scripts/gpu_check.py run "$@"
