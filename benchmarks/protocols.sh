#!/usr/bin/env bash
# Every evaluation protocol of `selfsup eval` on one run (issue 7's table in docs/benchmarks.md), sized for a
# 2-core CPU: each result goes to RUN_DIR/eval_<protocol>*.json (and its pictures next to it), and its JSON
# line to RUN_DIR/protocols.jsonl. Fine-tuning runs a fixed number of steps at every label fraction (the same
# compute for 1 %, 10 % and 100 %, and for the from-scratch baseline), not the paper's epochs.
#   benchmarks/protocols.sh RUN_DIR [FINETUNE_STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
run=$1
steps=${2:-1000}
s=.venv/bin/selfsup
out=$run/protocols.jsonl
: > "$out"
for p in knn linear cluster diagnostics embed2d robustness efficiency; do
  echo "== $p" >&2
  $s eval $p "$run" --json | tail -1 >> "$out"
done
echo "== transfer -> digits" >&2
$s eval transfer "$run" --target digits --json | tail -1 >> "$out"
echo "== finetune (10 % of the labels, $steps steps) and from scratch" >&2
$s eval finetune "$run" --fraction 0.1 --steps "$steps" --json | tail -1 >> "$out"
$s eval finetune "$run" --fraction 0.1 --steps "$steps" --from-scratch --json | tail -1 >> "$out"
echo "== semi (1, 10, 100 % of the labels, $steps steps each)" >&2
$s eval semi "$run" --fractions 0.01,0.1,1 --steps "$steps" --json | tail -1 >> "$out"
echo "results: $out" >&2
