#!/usr/bin/env bash
# Set up napari-voxrecon on a fresh Debian/Ubuntu machine: system libraries for a headless or
# desktop napari (Xvfb, Qt's xcb libraries), a virtual environment in .venv, PyTorch (the CPU
# build pinned where there is no NVIDIA GPU), and the package with its napari/Qt and test extras.
# Safe to run again: steps already done are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
APT_PACKAGES=(xvfb xauth libgl1 libegl1 libglib2.0-0 libfontconfig1 libdbus-1-3 libxkbcommon-x11-0
  libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0
  libxcb-xinerama0 libxcb-xfixes0 libxcb-cursor0)

if command -v apt-get >/dev/null 2>&1; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "setup: installing system packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
# pip -q still prints one warning per missing local mirror folder on some machines: drop those.
pip_install() { "$VPY" -m pip install -q "$@" 2>&1 | { grep -vE "^WARNING: Location|^\s*$" || true; }; return "${PIPESTATUS[0]}"; }
pip_install --upgrade pip

if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found: installing PyTorch with CUDA"
    pip_install "torch>=2.2,<=2.14.1"
  else
    # Without a GPU, the CPU build: an unpinned torch would pull a multi-GB CUDA build.
    echo "setup: no NVIDIA GPU: installing the CPU build torch==2.13.0"
    pip_install "torch==2.13.0"
  fi
fi

echo "setup: installing napari-voxrecon with napari (PyQt5) and test extras"
pip_install -e ".[all,test]"
"$VPY" -c "import napari_voxrecon, napari, torch; print('setup: ok: napari', napari.__version__, '| torch', torch.__version__)"
