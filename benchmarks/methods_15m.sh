#!/usr/bin/env bash
# Each method's Fashion-MNIST recipe for a wall-clock budget, then kNN and linear evaluation; one
# JSON line per method appended to OUT/results.jsonl. Finished runs are skipped, so the script can be
# re-run after an interruption (a run stopped mid-training is resumed).
#
#   benchmarks/methods_15m.sh "mocov2 byol swav" 15m runs/bench-methods
#
# Run it alone on the machine: two torch processes on 2 cores slow each other ~10x.
set -euo pipefail
cd "$(dirname "$0")/.."
methods=${1:-"simclr byol mocov2 mocov3 nnclr instdisc swav dino barlow vicreg simsiam"}
budget=${2:-15m}
out=${3:-runs/bench-methods-$budget}
mkdir -p "$out"
for m in $methods; do
  run="$out/$m"
  if [ -f "$run/eval_linear.json" ] && [ -f "$run/eval_knn.json" ]; then
    echo "$m: done, skipped"; continue
  fi
  if [ -d "$run/checkpoints/last" ] && [ ! -f "$run/summary.json" ]; then
    .venv/bin/selfsup pretrain --resume "$run"
  elif [ ! -f "$run/summary.json" ]; then
    .venv/bin/selfsup pretrain --method "$m" --data fashion-mnist --budget "$budget" --out "$run"
  fi
  .venv/bin/selfsup eval knn "$run" --json | tail -1 > "$run/knn.json"
  .venv/bin/selfsup eval linear "$run" --json | tail -1 > "$run/linear.json"
  .venv/bin/python - "$run" "$m" >> "$out/results.jsonl" <<'PY'
import json, sys
run, m = sys.argv[1], sys.argv[2]
knn, lin = json.load(open(f"{run}/knn.json")), json.load(open(f"{run}/linear.json"))
s = json.load(open(f"{run}/summary.json"))
print(json.dumps({"method": m, "knn200": knn["top1_k200"], "knn20": knn["top1_k20"], "linear": lin["top1"],
                  "epochs": s["epochs"], "train_seconds": s["train_seconds"],
                  "embedding_rank": s.get("diag/embedding_rank"), "feature_rank": s.get("diag/feature_rank")}))
PY
  tail -1 "$out/results.jsonl"
done
