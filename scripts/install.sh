#!/usr/bin/env bash
# Install cliplit_basicsr and everything it needs into the current Python (README set-up, CI).
# BasicSR 1.4.2 is published only as a source archive whose setup.py imports torch, so it is built
# against the torch installed first (--no-build-isolation). The package is installed in editable mode:
# the working tree is what runs, including under `python -m basicsr.train`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python}"

"$PYTHON" -m pip install torch==2.14.1 torchvision==0.29.1
"$PYTHON" -m pip install numpy cython setuptools wheel
"$PYTHON" -m pip install --no-build-isolation basicsr==1.4.2
"$PYTHON" -m pip install -e '.[export,test,app]'

# pyiqa depends on opencv-python-headless, whose cv2 files overwrite those of BasicSR's opencv-python:
# every project of the environment would lose OpenCV's GUI (cv2.imshow). Keep one OpenCV, with its GUI,
# whichever of the two pip installed last.
if "$PYTHON" -m pip show -q opencv-python-headless 2>/dev/null; then
    opencv=$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("opencv-python"))')
    "$PYTHON" -m pip uninstall -y opencv-python-headless
    "$PYTHON" -m pip install --force-reinstall --no-deps "opencv-python==$opencv"
fi

# The web app's browser test drives the system's Chromium through Playwright (no browser download): Debian's
# package, installed here when we are root with apt-get; otherwise one line says how.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq chromium >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null; } ||
            echo "install.sh: apt-get could not install chromium; the web app's browser test needs it"
    else
        echo "install.sh: for the web app's browser test, install Chromium: sudo apt-get install chromium"
    fi
fi
