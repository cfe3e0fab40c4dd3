#!/usr/bin/env bash
# Same behaviour before and after a change of structure: one recipe trained by two commits for the same number
# of epochs (so the same schedule, whatever each commit's speed), each from a clean git worktree of its commit,
# then both encoders judged by the current checkout's kNN and linear probe on test. A budget in minutes would
# give the faster commit more steps; fixed epochs compare the code, and each run's training seconds show speed.
# Run it alone on the machine. EPOCHS "recipe": the recipe's own number (digits recipes fix theirs).
#   benchmarks/before_after.sh BEFORE AFTER [EPOCHS|recipe] [METHOD] [OUT] [DATA]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
before=$1
after=$2
epochs=${3:-13}
method=${4:-simclr}
out=$(realpath -m "${5:-runs/before-after-$method-$(date +%Y%m%d-%H%M%S)}")
data=${6:-fashion-mnist}
length=()
[ "$epochs" = recipe ] || length=(--epochs "$epochs")
mkdir -p "$out"
for rev in "$before" "$after"; do
    sha=$(git rev-parse --short "$rev")
    wt=$(mktemp -d)/$sha
    git worktree add --detach "$wt" "$rev" >/dev/null
    # the worktree's package comes first on the path: that commit's code trains
    (cd "$wt" && PYTHONPATH="$wt" "$root/.venv/bin/python" -m selfsup pretrain --method "$method" \
        --data "$data" "${length[@]}" --out "$out/$sha") 2>&1 | tr '\r' '\n' | grep -av "step/s" | tail -n 3
    git worktree remove --force "$wt"
    for protocol in knn linear; do  # each writes eval_<protocol>.json into the run
        "$root/.venv/bin/selfsup" eval "$protocol" "$out/$sha" >/dev/null
    done
done
"$root/.venv/bin/python" - "$out" "$before" "$after" <<'EOF'
import json
import subprocess
import sys
from pathlib import Path

import yaml

out = Path(sys.argv[1])
print(f"{'commit':<10}{'method':<10}{'data':<15}{'train s':>10}{'steps':>8}{'kNN-200':>10}{'kNN-20':>9}{'linear':>9}")
for rev in sys.argv[2:]:
    sha = subprocess.run(["git", "rev-parse", "--short", rev], capture_output=True, text=True).stdout.strip()
    run = out / sha
    s = json.loads((run / "summary.json").read_text())
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    knn = json.loads((run / "eval_knn.json").read_text())
    lin = json.loads((run / "eval_linear.json").read_text())
    print(
        f"{sha:<10}{cfg['method']['name']:<10}{cfg['data']['name']:<15}{s['train_seconds']:>10.0f}{s['steps']:>8}"
        f"{100 * knn['top1_k200']:>10.2f}{100 * knn['top1_k20']:>9.2f}{100 * lin['top1']:>9.2f}"
    )
EOF
