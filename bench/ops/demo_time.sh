#!/usr/bin/env bash
# Wall time of the README's first command (`make demo`, setup included) on a fresh clone
# of the committed repository, in a fresh shell environment.
#   bash bench/ops/demo_time.sh            # prints "make demo on a fresh clone: <s> s"
#   bash bench/ops/demo_time.sh COMMIT     # the same for an earlier commit (before/after on one machine)
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
git clone -q "$repo" "$scratch/protoviz"
cd "$scratch/protoviz"
if [ $# -gt 0 ]; then git checkout -q "$1"; fi
start=$(date +%s)
env -u VIRTUAL_ENV -u MLFLOW_TRACKING_URI -u DVC_ROOT -u DVC_EXP_NAME bash -c "$(grep -m1 '^make demo' README.md | cut -d'#' -f1)" \
  > "$scratch/demo.log" 2>&1 || { tail -30 "$scratch/demo.log"; exit 1; }
echo "make demo on a fresh clone of $(git rev-parse --short HEAD): $(( $(date +%s) - start )) s ($(nproc) cores)"
grep -E "^Running stage|100%\|" "$scratch/demo.log" | grep -o "^Running stage '[a-z]*'\|[a-z ]*: 100%[^]]*]" || true
