#!/usr/bin/env bash
# The one command for a lent GPU machine (bench/gpu_run.py says what it measures and trains).
#
#   bash bench/gpu_run.sh --prepare   # here, once per checkout: copies the CASIA-B tarball into data/
#                                     # and downloads into .whl/ the wheels the GPU image lacks
#                                     # (pydantic & co., ultralytics); both are ignored by git
#   bash bench/gpu_run.sh --dry-run   # here and in CI: every step on the CPU, tiny sizes, < 2 minutes
#   bash bench/gpu_run.sh             # on the GPU machine; results in ${OUT:-bench/out/gpu}
#
# Launch it with the device tool, after --prepare and a passing --dry-run (the run stops itself after
# ~520 s; 15 minutes of device time also pay for the machine's start and the transfers):
#
#   run(command="bash bench/gpu_run.sh", carry=["data/casia-b-sil-001-074.tar.xz", ".whl"], timeout_s=560)
#
# What travels: the working tree (~5 MB) + the tarball (55 MB) + .whl (~4 MB) < 64 MiB; ../shared does
# not travel, hence the copy. What comes back ($OUT, at most 8 files of at most 16 MiB): summary.json,
# summary.md, the checkpoint and the ONNX file in parts (summary.md gives the command that joins them).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s.%N)
mode=run
case "${1:-}" in
  --prepare) mode=prepare ;;
  --dry-run) mode=dry ;;
  "") ;;
  *) echo "usage: bash bench/gpu_run.sh [--prepare | --dry-run]" >&2; exit 2 ;;
esac

if [ -n "${PYTHON:-}" ]; then py=$PYTHON
elif [ -x .venv/bin/python ]; then py=.venv/bin/python
else py=python3
fi

if [ "$mode" = prepare ]; then
  mkdir -p data
  [ -f data/casia-b-sil-001-074.tar.xz ] || cp ../shared/data/casia-b-sil-001-074.tar.xz data/
  # The GPU image (Python 3.12, torch 2.11) has no pydantic, pydantic-settings or ultralytics: bring the
  # dev environment's versions as wheels (no dependencies pulled: each needed one is named).
  pins=$("$py" - <<'EOF'
from importlib.metadata import PackageNotFoundError, version
for name in ("pydantic", "pydantic_core", "annotated-types", "typing-inspection", "typing_extensions",
             "pydantic-settings", "python-dotenv"):
    print(f"{name}=={version(name)}")
EOF
)
  ultra=""
  if [ -x .venv-ultra/bin/python ]; then
    ultra=$(.venv-ultra/bin/python -c 'from importlib.metadata import version as v; print(f"ultralytics=={v(\"ultralytics\")} ultralytics-thop=={v(\"ultralytics-thop\")}")' 2>/dev/null || true)
  fi
  [ -n "$ultra" ] || ultra="ultralytics ultralytics-thop"
  rm -rf .whl && mkdir -p .whl
  # shellcheck disable=SC2086
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl $pins $ultra
  ls -l .whl data/casia-b-sil-001-074.tar.xz
  carried=$(du -cb data/casia-b-sil-001-074.tar.xz .whl | tail -1 | cut -f1)
  tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
  awk -v c="$carried" -v t="$tree" 'BEGIN { total = (c + t) / 1048576;
    printf "travels: %.1f MiB (carried %.1f + working tree %.1f) of 64 MiB\n", total, c / 1048576, t / 1048576;
    exit (total > 63.5) }' || { echo "too much would travel: drop .whl/ultralytics* (YOLO is then skipped)" >&2; exit 1; }
  exit 0
fi

export OUT=${OUT:-bench/out/gpu}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
if [ "$mode" = run ] && [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  site=${TMPDIR:-/tmp}/gaitid-site
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  export GAITID_WHEELS=yes
fi
if ! "$py" -c "import pydantic, yaml, torch" 2>/dev/null; then
  echo "gpu_run: $py cannot import pydantic/yaml/torch. Run 'bash bench/gpu_run.sh --prepare' on the dev machine and" \
       "carry .whl (see this script's header)." >&2
  exit 3
fi
args=(--out "$OUT" --started "$started")
[ "$mode" = dry ] && args+=(--dry-run)
# The script keeps its own deadline; this only catches a hang (SIGTERM lets it write its summary).
limit=$([ "$mode" = dry ] && echo 300 || echo 548)
exec timeout -k 10 "$limit" "$py" bench/gpu_run.py "${args[@]}"
