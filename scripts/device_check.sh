#!/usr/bin/env bash
# The GPU check, in one command, on a bare GPU machine (its own PyTorch, no network), in under 8 minutes:
# installs the wheels of scripts/build_device_wheels.sh, runs the tests marked cuda, then the GPU benches
# (inference per precision at 24 MP; each CLIP-side step against the authors' structure, with CUDA graphs,
# channels-last and bf16 towers; every phase in BasicSR's loop with its data wait, peak GPU memory and the
# projected default run, in the authors' numerics and in the opt-in GPU modes), and prints one table. Writes its
# logs to $OUT (or ./device_check) when that is set.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${OUT:-device_check}"
mkdir -p "$out"
export HF_HUB_OFFLINE=1 CLIPLIT_REQUIRE_REFERENCE=1 CLIPLIT_REFERENCE_DIR="$PWD/.device/reference" PYTHONUNBUFFERED=1
# into site-packages (or the user's, where it is not writable): the start-up hook is a .pth file, which
# PYTHONPATH folders do not run
wheels=(.device/wheels/*.whl)
python3 -m pip install -q --no-index --no-deps --no-compile --force-reinstall "${wheels[@]}" \
    || python3 -m pip install -q --user --no-index --no-deps --no-compile --force-reinstall "${wheels[@]}" || exit 1
# the package is imported from this tree, whatever wheel of it a warm machine still has installed
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c 'import torch, basicsr, cliplit_basicsr; print("torch", torch.__version__, "cuda", torch.version.cuda)' || exit 1

status=() failed=()
step() {  # name, timeout in seconds, command...
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    local rc=$?
    [ $rc -eq 0 ] || failed+=("$name")
    status+=("$(printf '%-34s %-6s %5ss' "$name" "$([ $rc -eq 0 ] && echo ok || echo "rc=$rc")" $((SECONDS - start)))")
    tail -25 "$out/$name.log"
}
# time-outs add up to 7.3 minutes: with the install, the whole check stays under 8
step tests_cuda 140 python3 -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py \
    tests/test_network_precision.py tests/test_augment.py tests/test_unpaired_dataset.py
step bench_enhance_cuda 40 python3 scripts/bench_enhance.py --device cuda --precisions fp32 fp16 bf16 \
    --workloads synthetic24mp --rounds 1
step bench_clip_losses_cuda 60 python3 scripts/bench_clip_losses.py --device cuda --iters 3 --warmup 1 \
    --steps refine,init
# the enhancement step, the authors' structure and ours, then the opt-in modes: replayed as a CUDA graph,
# channels-last towers, bf16 towers
step bench_clip_modes_cuda 70 python3 scripts/bench_clip_losses.py --device cuda --iters 3 --warmup 1 \
    --steps enhance --cuda-graphs --channels-last --bf16
# the authors' numerics (the default), then the opt-in GPU modes: CUDA graphs and a bf16 network
step bench_train_cuda 75 python3 scripts/bench_train.py --images 16 --warmup-epochs 1 --prompt-iters 4 --no-loss-only
step bench_train_modes_cuda 55 python3 scripts/bench_train.py --images 16 --warmup-epochs 1 --prompt-iters 2 \
    --no-loss-only --cuda-graphs --network-amp bf16
echo; echo "device check on $(cat "$out/gpu.txt")"
printf '%s\n' "${status[@]}" | tee "$out/summary.txt"
for log in "$out"/bench_*.log; do  # each bench's table; a step stopped early: the figures it measured
    grep -v '^  measured ' "$log" | grep -A12 '^precision \|^phase \|^step '
    if [[ " ${failed[*]} " == *" $(basename "$log" .log) "* ]]; then grep '^  measured ' "$log"; fi
done | tee -a "$out/summary.txt"
