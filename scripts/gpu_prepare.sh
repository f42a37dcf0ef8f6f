#!/usr/bin/env bash
# Fill scripts/gpu_wheels/ (git-ignored) with what scripts/gpu_check.sh needs on the GPU machine, which
# reaches no network and has PyTorch with CUDA, transformers 5.17, accelerate, peft and
# sentence-transformers, but not trl or datasets:
#   * wheels of the packages it lacks, at the versions of constraints.txt (Python 3.12, x86-64 Linux):
#     pcrm's pinned transformers/trl/datasets/peft/sentence-transformers and their missing dependencies;
#   * a pure-Python DeepSpeed wheel (built here from the sdist, DS_BUILD_OPS=0: no op is compiled; ZeRO-2
#     with the Trainer's torch AdamW needs none), for the `accelerate launch` ZeRO-2 run, and its dependencies;
#   * the bundled tokenizers (MiniLM's files, SmolLM2's extracted from its GGUF), not their weights.
# Then it prints the size that travels (the working tree + this folder; the device tool's limit is 64 MiB).
# Usage: scripts/gpu_prepare.sh            (here, with network; then carry scripts/gpu_wheels to the GPU machine)
#        PCRM_GPU_WHEELS=DIR PCRM_GPU_PYTHON_VERSION=3.11 scripts/gpu_prepare.sh   (another folder / target Python)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${PCRM_GPU_WHEELS:-scripts/gpu_wheels}
PY=${PYTHON:-.venv/bin/python}
DEEPSPEED_VERSION=0.19.8   # not in constraints.txt (an optional extra); the newest release when this was written
HJSON_VERSION=3.1.0
LIMIT_MIB=64
TARGET_PYTHON=${PCRM_GPU_PYTHON_VERSION:-3.12}   # the GPU machine's python3 (3.12.3 when last read)
mkdir -p "$OUT"

pin() {  # the version constraints.txt pins NAME to
  local v
  v=$(grep -i "^$1==" constraints.txt | head -1 | cut -d= -f3)
  [ -n "$v" ] || { echo "gpu_prepare: $1 is not pinned in constraints.txt" >&2; exit 1; }
  echo "$v"
}

download() {  # NAME==VERSION...: wheels for that CPython on x86-64 Linux, no dependencies resolved
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$TARGET_PYTHON" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$OUT" "$@"
}

# pcrm's pinned libraries the machine lacks or has at another version, and what they need that it lacks:
# trl, datasets (+ dill, multiprocess, fsspec within datasets' bound), transformers 5.24 (it has 5.17),
# peft and sentence-transformers at the tested versions. huggingface_hub, tokenizers, safetensors,
# accelerate, pyarrow, pandas and xxhash are there at versions these accept (gpu_check.py check-env says).
specs=()
for name in transformers trl datasets dill multiprocess fsspec peft sentence-transformers; do
  specs+=("$name==$(pin "$name")")
done
# DeepSpeed's dependencies the machine lacks (einops, msgpack, ninja, psutil, py-cpuinfo, nvidia-ml-py are there).
for name in pydantic pydantic_core annotated-types typing-inspection typing_extensions; do
  specs+=("$name==$(pin "$name")")
done
specs+=("hjson==$HJSON_VERSION")
download "${specs[@]}"

if ! ls "$OUT"/deepspeed-"$DEEPSPEED_VERSION"-*.whl >/dev/null 2>&1; then
  build=$(mktemp -d)
  "$PY" -m pip download -q --no-deps --no-binary :all: -d "$build" "deepspeed==$DEEPSPEED_VERSION"
  # DS_ACCELERATOR=cuda: the wheel records the CUDA accelerator (no op is prebuilt, so nothing else from here is used).
  DS_BUILD_OPS=0 DS_ACCELERATOR=cuda "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$OUT" "$build"/deepspeed-*.tar.gz
  rm -rf "$build"
fi

"$PY" scripts/gpu_check.py prepare-tokenizers "$OUT/tokenizers"

echo "carried folder $OUT:"
ls -l "$OUT"/*.whl | awk '{printf "  %8.2f MiB  %s\n", $5 / 1048576, $9}'
du -sb "$OUT" | awk '{printf "  %8.2f MiB  in all (wheels and tokenizers)\n", $1 / 1048576}'
# What travels: tracked + untracked-not-ignored files (the working tree) + the carried folder.
tree_bytes=$(git ls-files -z -co --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
carried_bytes=$(du -sb "$OUT" | cut -f1)
total=$(( tree_bytes + carried_bytes ))
awk -v t="$tree_bytes" -v c="$carried_bytes" -v l="$LIMIT_MIB" 'BEGIN {
  printf "travels: working tree %.2f MiB + carried %.2f MiB = %.2f MiB (limit %d MiB)\n", t / 1048576, c / 1048576, (t + c) / 1048576, l }'
if [ "$total" -gt $(( LIMIT_MIB * 1048576 )) ]; then
  echo "gpu_prepare: over the ${LIMIT_MIB} MiB the device tool carries" >&2
  exit 1
fi
