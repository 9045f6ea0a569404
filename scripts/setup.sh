#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine (Python 3.11): the system libraries Qt and OpenGL need, Xvfb and
# python3-venv (apt, scripts/apt-packages.txt), then a virtual environment .venv in the repository holding a CPU
# build of torch and this package with napari and the test tools.
#
#   bash scripts/setup.sh
#
# A virtual environment because Debian 12's (and Ubuntu 23.04+'s) own Python refuses `pip install` outside one
# (PEP 668: error: externally-managed-environment). Without --system-site-packages: .venv then holds what this
# script installs and nothing else, whatever the system Python carries (apt's python3-* packages, or another
# torch/napari), so the demo and the tests see the same versions on every machine. Run the installed tools as
# .venv/bin/napari-landmarks and .venv/bin/python, or `. .venv/bin/activate` first. pip's own configuration
# (/etc/pip.conf, ~/.config/pip/pip.conf, PIP_* variables) applies inside the venv as well.
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

python3 -m venv .venv
.venv/bin/python -m pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.13.0
.venv/bin/python -m pip install -e ".[all,testing]"
