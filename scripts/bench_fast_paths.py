"""What each fast path buys: the real training steps and inference, with that path on and off, interleaved.

Each fast path is turned off alone (everything else as shipped) in a fresh process, beside a run with
everything on, in every round; the table gives the medians over rounds and their ratio (off / on). A path
stays in the package only if it makes a step or inference at least ``KEEP_RATIO`` faster on the machine
that ran this, or acts on a GPU as well (it computes less, not differently).

* Training steps (``scripts/bench_clip_losses.py``'s ``ours`` child: this package's losses, prompt pair and
  network at the paper's batch sizes, full-size random-weight ViT-B/32 and RN101): ``enhance`` (8 x 512²,
  CLIP-Enhance + identity, backward to the network), ``refine`` (4 sets of 16 x 256², ranking losses) and
  ``init`` (16 x 256², cross-entropy), fp32; ``refine-bf16`` is ``refine`` under ``amp: bf16``.
* Inference (``CLIPLITEnhancer``, fp32, the CPU's default tile) on a synthetic backlit image of 3 MP and of
  24 MP. ``engine`` compares the tiled engine with a plain exact tiler that calls the network's own
  modules (:func:`plain_exact_tiler`): what the engine's size buys.
* ``allocator``: glibc's malloc defaults instead of the environment CPU training runs in
  (``MALLOC_MMAP_MAX_=0``...).

Writes every measurement to ``--csv`` (step, path, round, on_s, off_s) and prints the table
(step / path / on / off / ratio / verdict). Example: ``python scripts/bench_fast_paths.py --rounds 3``.
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
KEEP_RATIO = 1.3
ACTS_ON_GPU = {'class_token', 'text_blocks'}  # they compute less on every device
PATHS = {
    'enhance': ('class_token', 'allocator'),
    'refine': ('fused_vit', 'text_blocks', 'text_onednn', 'allocator'),
    'init': ('fused_vit', 'text_blocks', 'allocator'),
    'refine-bf16': ('bf16_tower',),
    'infer-3mp': ('conv_add', 'engine'),
    'infer-24mp': ('conv_add', 'engine'),
}
MEGAPIXELS = {'infer-3mp': (1500, 2000), 'infer-24mp': (4000, 6000)}


# ----------------------------------------------------------------------------------------------- child side
def plain_exact_tiler(net, image, tile: int = 384):
    """``clamp(I / net(I), 0, 1)`` of ``image`` (1,3,H,W) tile by tile with ``net``'s own modules, exactly:
    each tile's window has the halo of every 3x3 conv, and the pyramid pooling's whole-image averages are
    gathered tile by tile in a first pass, its bilinear branches evaluated on each window from them."""
    import torch

    from cliplit_basicsr.engine.geometry import crop, tiles
    from cliplit_basicsr.engine.pyramid import adaptive_bounds, indicator, interp_matrix

    layout, ppm = net.layout(), net.PPM1
    height, width = image.shape[2:]
    bins = layout.pyramid.bins

    def head(x):
        return net.ResidualBlock2(net.ResidualBlock1(net.lrelu(net.cond1(x))))

    def tail(x):
        x = net.ResidualBlock4(net.ResidualBlock3(net.condx(x)))
        return net.relu(net.cond_add1(net.ResidualBlock6(net.ResidualBlock5(net.condy(x)))))

    bounds = [(adaptive_bounds(height, b), adaptive_bounds(width, b)) for b in bins]
    sums = [0.0] * len(bins)
    for core, window, _ in tiles(height, width, tile, layout.head_halo):
        feat = crop(head(image[:, :, window[0] : window[1], window[2] : window[3]]), core, window).double()
        for i, (rows, cols) in enumerate(bounds):
            r, c = (indicator(b, lo, hi, feat.device).double() for b, lo, hi in ((rows, *core[:2]), (cols, *core[2:])))
            sums[i] = sums[i] + torch.einsum('iy,ncyx,jx->ncij', r, feat, c)
    small = []
    for (rows, cols), total, branch in zip(bounds, sums, ppm.features):
        area = torch.tensor([[(r1 - r0) * (c1 - c0) for c0, c1 in cols] for r0, r1 in rows], dtype=torch.float64)
        small.append(branch[2](branch[1]((total / area).float())))
    out = torch.empty_like(image)
    for core, window, _ in tiles(height, width, tile, layout.head_halo + layout.tail_halo):
        y0, y1, x0, x1 = window
        x = image[:, :, y0:y1, x0:x1]
        branches = [
            torch.einsum('iy,ncij,jx->ncyx', interp_matrix(b, height)[:, y0:y1], s, interp_matrix(b, width)[:, x0:x1])
            for b, s in zip(bins, small)
        ]
        light = tail(ppm.fuse(torch.cat([head(x)] + branches, 1)))
        out[:, :, core[0] : core[1], core[2] : core[3]] = crop(torch.clamp(x / light, 0, 1), core, window)
    return out


def run_inference_child(step: str, off: str) -> dict:
    """Seconds to enhance the step's synthetic image with ``off`` (``''``, ``conv_add``, ``engine``) off."""
    sys.path.insert(0, str(REPO_ROOT / 'scripts'))
    import torch
    from bench_enhance import synthetic_image

    from cliplit_basicsr import accel
    from cliplit_basicsr.enhancer import CLIPLITEnhancer

    if off == 'conv_add':
        accel.conv_add_op = lambda device, dtype, plain: plain
    enhancer = CLIPLITEnhancer('official', 'cpu', 'fp32')
    image = synthetic_image(*MEGAPIXELS[step])
    if off == 'engine':
        net = enhancer.net.eval()
        pixels = torch.from_numpy(image[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255

        def enhance(_):
            with torch.inference_mode():
                return plain_exact_tiler(net, pixels, enhancer.engine.tile)
    else:
        enhance = enhancer.enhance
    enhance(image[:96, :96].copy()) if off != 'engine' else None  # oneDNN kernel creation
    start = time.perf_counter()
    enhance(image)
    return {'sec': time.perf_counter() - start}


# ---------------------------------------------------------------------------------------------- parent side
def training_step_seconds(step: str, off: str, workdir: str, iters: int) -> float:
    """s/iter of bench_clip_losses' ``ours`` child for ``step`` with the fast path ``off`` off."""
    sys.path.insert(0, str(REPO_ROOT))
    from cliplit_basicsr.cpu_allocator import keep_freed_memory_environment

    variant, base_step = ('ours-bf16', 'refine') if step == 'refine-bf16' else ('ours', step)
    cmd = [sys.executable, str(REPO_ROOT / 'scripts' / 'bench_clip_losses.py'), '--child', variant, base_step]
    cmd += ['--grads-out', os.path.join(workdir, 'grads.pt'), '--iters', str(iters), '--warmup', '1']
    cmd += ['--micro-batch', '1'] + (['--off', off] if off and off != 'allocator' else [])
    env = dict(os.environ, HF_HUB_OFFLINE='1', PYTHONPATH=str(REPO_ROOT))
    if off != 'allocator':
        env = keep_freed_memory_environment(env) or env
    return _child(cmd, env)['sec_per_iter']


def _child(cmd: list, env: dict) -> dict:
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    line = next((out for out in proc.stdout.splitlines() if out.startswith('RESULT ')), None)
    if proc.returncode or line is None:
        sys.exit(f'bench_fast_paths: {cmd[2:6]} failed: {(proc.stderr.strip().splitlines() or ["?"])[-1]}')
    return json.loads(line[len('RESULT ') :])


def seconds(step: str, off: str, workdir: str, iters: int) -> float:
    if step.startswith('infer'):
        cmd = [sys.executable, __file__, '--child', step, off]
        return _child(cmd, dict(os.environ, PYTHONPATH=str(REPO_ROOT)))['sec']
    return training_step_seconds(step, off, workdir, iters)


def verdict(path: str, ratio: float) -> str:
    if path == 'engine':
        return 'engine kept' if ratio >= KEEP_RATIO else 'engine does not pay'
    if ratio >= KEEP_RATIO:
        return 'kept'
    return 'kept (acts on a GPU)' if path in ACTS_ON_GPU else 'deleted'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', nargs='+', default=list(PATHS), choices=list(PATHS))
    parser.add_argument('--paths', nargs='+', help='only these fast paths (default: every path of each step)')
    parser.add_argument('--rounds', type=int, default=3, help='rounds; the table gives medians')
    parser.add_argument('--iters', type=int, default=2, help='timed iterations of a prompt step (enhance: 1)')
    parser.add_argument('--csv', default='fast_paths.csv', help='where every measurement is written')
    parser.add_argument('--table', nargs='+', metavar='CSV', help='only print the table of these CSV files')
    parser.add_argument('--child', nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print('RESULT ' + json.dumps(run_inference_child(*args.child)), flush=True)
        return
    if args.table:
        rows = []
        for name in args.table:
            with open(name, newline='') as stream:
                rows += [
                    (r['step'], r['path'], r['round'], float(r['on_s']), float(r['off_s']))
                    for r in csv.DictReader(stream)
                ]
        print_table(rows)
        return
    cases = [(s, p) for s in args.steps for p in PATHS[s] if not args.paths or p in args.paths]
    rows = []
    with tempfile.TemporaryDirectory() as workdir, open(args.csv, 'w', newline='') as stream:
        writer = csv.writer(stream)
        writer.writerow(['step', 'path', 'round', 'on_s', 'off_s'])
        for round_index in range(args.rounds):
            for step in args.steps:
                paths = [p for s, p in cases if s == step]
                if not paths:
                    continue
                iters = 1 if step == 'enhance' else args.iters
                on = seconds(step, '', workdir, iters)
                for path in paths:
                    off = seconds(step, path, workdir, iters)
                    rows.append((step, path, round_index, on, off))
                    writer.writerow([step, path, round_index, f'{on:.4f}', f'{off:.4f}'])
                    stream.flush()
                    print(f'round {round_index + 1}: {step:12} {path:16} on {on:8.3f} s  off {off:8.3f} s', flush=True)
    print(f'\n{os.cpu_count()} CPUs, {args.rounds} rounds; CSV: {args.csv}\n')
    print_table(rows)


def print_table(rows: list) -> None:
    """The markdown table of (step, path, round, on, off) rows: medians over rounds, in the rows' order. A
    path's verdict is its best step's: it stays if it pays in one of them."""
    ratios = {}
    for step, path in dict.fromkeys((r[0], r[1]) for r in rows):
        mine = [r for r in rows if r[0] == step and r[1] == path]
        on, off = statistics.median(r[3] for r in mine), statistics.median(r[4] for r in mine)
        ratios[step, path] = (len(mine), on, off, statistics.median(r[4] / r[3] for r in mine))
    print('| step | path | rounds | on (s) | off (s) | ratio off/on | path verdict |')
    print('|---|---|---|---|---|---|---|')
    for (step, path), (rounds, on, off, ratio) in ratios.items():
        best = max(r[3] for (_, p), r in ratios.items() if p == path)
        print(f'| {step} | {path} | {rounds} | {on:.3f} | {off:.3f} | {ratio:.2f}x | {verdict(path, best)} |')


if __name__ == '__main__':
    main()
