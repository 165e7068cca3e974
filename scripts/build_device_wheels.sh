#!/usr/bin/env bash
# Wheels for scripts/device_check.sh: what a bare GPU machine (its own PyTorch, Python 3.12, no network) lacks,
# built or downloaded here into .device/wheels, with the reference material copied to .device/reference.
# Both folders are ignored by git; the device tool carries them (carry: [".device"]).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python}"
out=.device/wheels
rm -rf "$out" && mkdir -p "$out"
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
binary=(--only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}")

"$PYTHON" -m pip wheel --no-deps --no-build-isolation -w "$out" basicsr==1.4.2  # pure Python, from its sdist
"$PYTHON" -m pip wheel --no-deps --no-build-isolation -w "$out" .              # this package (and its hook)
# the versions tested here, so that the device runs what CI ran
pinned() { "$PYTHON" -c "import importlib.metadata as m, sys; print(f'{sys.argv[1]}=={m.version(sys.argv[1])}')" "$1"; }
"$PYTHON" -m pip download --no-deps -d "$out" "${binary[@]}" "$(pinned lmdb)"  # compiled: the device's Python
for pure in open_clip_torch ftfy wcwidth; do
    "$PYTHON" -m pip download --no-deps -d "$out" --only-binary=:all: "$(pinned "$pure")"
done
rm -rf .device/reference && cp -r ../shared/reference .device/reference
du -sh .device
