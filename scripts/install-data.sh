#!/usr/bin/env bash
# Makes sure Fashion-MNIST is on this machine: Debian's package dataset-fashion-mnist puts the
# idx files under /usr/share/datasets/fashion-mnist. Never fatal: selfsup also reads
# --data-dir / $SELFSUP_DATA, and scikit-learn's digits always exist offline.
set -u
dir=/usr/share/datasets/fashion-mnist
if [ -e "$dir/train-images-idx3-ubyte.gz" ] || [ -e "$dir/train-images-idx3-ubyte" ]; then
  exit 0
fi
if [ -n "${SELFSUP_DATA:-}" ]; then
  echo "install-data: Fashion-MNIST not under $dir; using SELFSUP_DATA=$SELFSUP_DATA"
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
    echo "install-data: not root: run 'sudo apt-get install dataset-fashion-mnist', or pass --data-dir DIR" >&2
    exit 0
  fi
fi
if command -v apt-get >/dev/null; then
  echo "install-data: installing Debian's dataset-fashion-mnist"
  $sudo apt-get update -qq >/dev/null 2>&1 || true
  $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
    || echo "install-data: apt-get could not install dataset-fashion-mnist; pass --data-dir DIR or export SELFSUP_DATA=DIR" >&2
else
  echo "install-data: no apt-get here; pass --data-dir DIR with the idx files or export SELFSUP_DATA=DIR" >&2
fi
exit 0
