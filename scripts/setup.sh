#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine (Python 3.11 with pip): the system libraries Qt and OpenGL need and
# Xvfb (apt, scripts/apt-packages.txt), a CPU build of torch, and this package with napari and the test tools.
#
#   bash scripts/setup.sh
#
# torch is installed first and pinned: an unpinned torch (or one from an index that serves CUDA builds, such
# as PyPI on Linux x86-64) pulls several GB of CUDA libraries. To take the CPU-only build from PyTorch's own
# index instead, run:  TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
packages=$(grep -v '^#' scripts/apt-packages.txt | tr '\n' ' ')
$sudo apt-get update
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends $packages

python3 -m pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.13.0
python3 -m pip install -e ".[all,testing]"
