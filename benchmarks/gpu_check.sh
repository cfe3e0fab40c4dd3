#!/usr/bin/env bash
# The GPU path (issue 8) in one call of a lent GPU machine, from the repository root:
#   1. benchmarks/throughput.py on CUDA: compute-only, selfsup (uint8 batch to the GPU, views made
#      there), and the per-image torchvision/PIL DataLoader (host workers, pinned copies), one run;
#   2. a 3-minute SimCLR pretraining on CUDA (bf16, channels_last from the recipe), its efficiency
#      read from the logs (images/s, time at which the online kNN-20 monitor first reached each level)
#      and the full kNN evaluation.
# The PIL pipeline makes the same views, so it needs the same number of images to reach an accuracy:
# its time to that accuracy is the selfsup run's images-to-accuracy over its measured images/s.
#
#   SELFSUP_DATA=DIR_WITH_IDX_FILES OUT=DIR [PYTHON=python3] benchmarks/gpu_check.sh
#
# On the device machine there is no .venv and no internet: its own python3 holds torch, torchvision,
# timm and scikit-learn, selfsup is imported from this checkout, and Fashion-MNIST's idx files
# travel in an ignored folder of the checkout (copy /usr/share/datasets/fashion-mnist/*.gz into it).
# Results land in $OUT (flat: the device tool brings back files two folders deep at most).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/gpu-check}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
$py -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible'; print(torch.__version__, torch.cuda.get_device_name())"
$py benchmarks/throughput.py --device cuda --batch-size 512 --workers 0,8 --steps 30 --json "$out/throughput.json"
run=$(mktemp -d)/simclr-3m
# batch 512 at the recipe's square-root learning-rate rule (0.075 * sqrt(512))
$py -m selfsup pretrain --method simclr --data fashion-mnist --budget 3m --out "$run" \
    train.device=cuda train.batch_size=512 optim.lr=1.7 > "$out/pretrain.log" 2>&1 \
    || { tail -c 3000 "$out/pretrain.log"; exit 1; }
$py -m selfsup eval efficiency "$run" --json | tail -1 > "$out/efficiency.json"
$py -m selfsup eval knn "$run" --json | tail -1 > "$out/knn.json"
cp "$run/summary.json" "$out/summary.json"
cp "$run/metrics.jsonl" "$out/metrics.jsonl"
cat "$out/efficiency.json" "$out/knn.json"
