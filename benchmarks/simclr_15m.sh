#!/usr/bin/env bash
# The foundation's quality target: SimCLR on Fashion-MNIST, 15 minutes of CPU training with the
# default recipe, then weighted kNN and the linear probe, next to raw pixels.
# Run it on a quiet machine: the budget is wall-clock, so other load means fewer steps.
#   benchmarks/simclr_15m.sh [BUDGET] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
budget=${1:-15m}
out=${2:-runs/bench-simclr-fmnist-$budget-$(date +%Y%m%d-%H%M%S)}
.venv/bin/selfsup demo --method simclr --data fashion-mnist --budget "$budget" --out "$out"
cat "$out/summary.json"
