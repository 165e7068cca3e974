"""Benchmark ``CLIPLITEnhancer``: seconds per megapixel, MP/s and peak RSS, per precision path.

Workloads: the public sample photos (``cliplit_basicsr/samples``) and a synthetic 24 MP image. Each
(precision, workload) runs in a fresh subprocess so that its peak resident memory (``ru_maxrss``:
interpreter, torch and the image arrays included) is its own. Timing covers ``enhance()`` only, after a
warm-up (a small crop on a CPU, the whole image on a GPU); images are read beforehand. The bf16 error
against the fp32 path is measured on the 8-bit outputs of the samples (max and mean, in 1/255 units).
Example: ``python scripts/bench_enhance.py``. ``--device cuda`` times the GPU path (synchronised; peak GPU
memory in the last column).

The speed of a shared CPU drifts by 2x within minutes, so the measurements run in ``--rounds`` rounds,
each of which measures every (precision, workload) once; the table gives medians over rounds, and the
in-run ratio is the median of the per-round ratios to the baseline (measured beside it in time).
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES = REPO_ROOT / 'cliplit_basicsr' / 'samples'
SYNTHETIC_SIZE = (4000, 6000)  # 24 MP
AUTHORS = {
    's/MP': 6.7,
    'peak GiB': 6.0,
}  # a fixed reference: the authors' inference, measured once; --precisions authors measures it in the run
TARGET_FP32_S_PER_MP, TARGET_RSS_GB, TARGET_FAST_S_PER_MP = 2.0, 1.5, 0.67
BASELINE = 'authors'  # pseudo-precision: the authors' inference structure, measured in the same run


def synthetic_image(height: int, width: int) -> np.ndarray:
    """A backlit-looking BGR uint8 image: a bright sky over a dark, textured foreground.

    Made in bands of rows so that its float temporaries do not inflate the measured peak RSS.
    """
    image = np.empty((height, width, 3), np.uint8)
    cols = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    for start in range(0, height, 256):
        rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[start : start + 256, None]
        luminance = 0.9 - 0.8 * (rows > 0.4 + 0.1 * np.sin(12 * cols)) + 0.05 * np.sin(200 * cols + 90 * rows)
        for channel, tint in enumerate((1.0, 0.9, 0.8)):
            image[start : start + 256, :, channel] = np.clip(luminance * tint * 255, 0, 255).astype(np.uint8)
    return image


class AuthorsBaseline:
    """The authors' test script, in this process: full frame, NCHW, the plain reflect-padding network in
    fp32 (``F.pad`` copies), ``clamp(I / L, 0, 1)``."""

    def __init__(self):
        import torch

        from cliplit_basicsr.checkpoint import OFFICIAL_CHECKPOINT, load_checkpoint
        from cliplit_basicsr.network import CLIPLITNet

        self.torch = torch
        self.net = load_checkpoint(CLIPLITNet(padding='reflect'), OFFICIAL_CHECKPOINT).eval()

    def enhance(self, image: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1])).permute(2, 0, 1)[None].float() / 255
            out = torch.clamp(x / self.net(x), 0, 1)[0].permute(1, 2, 0).numpy()[:, :, ::-1]
        return (out * 255 + 0.5).astype(np.uint8)


def run_child(precision: str, workload: str, tile: int, out_dir: str, device: str = 'cpu') -> dict:
    """Enhance the workload in this process; report time, megapixels and peak RSS (peak GPU memory on CUDA)."""
    sys.path.insert(0, str(REPO_ROOT))
    import torch

    from cliplit_basicsr.enhancer import CLIPLITEnhancer
    from cliplit_basicsr.image_io import read_image, write_png

    enhancer = AuthorsBaseline() if precision == BASELINE else CLIPLITEnhancer('official', device, precision, tile)
    if workload == 'samples':
        images = {path.stem: read_image(path) for path in sorted(SAMPLES.glob('*.jpg'))}
    else:
        images = {'synthetic': synthetic_image(*SYNTHETIC_SIZE)}
    # warm-up: oneDNN's kernel creation on a CPU; on a GPU the whole image, so that lazy kernel loading,
    # cuDNN's choices for every shape and the allocator's first growth fall outside the timed call
    first = next(iter(images.values()))
    enhancer.enhance(first if device.startswith('cuda') else first[:96, :96])
    seconds, megapixels = 0.0, 0.0
    for stem, image in images.items():
        start = time.perf_counter()
        enhanced = enhancer.enhance(image)  # returns a host array: the GPU work is done
        seconds += time.perf_counter() - start
        megapixels += image.shape[0] * image.shape[1] / 1e6
        if workload == 'samples':
            write_png(Path(out_dir) / f'{stem}.png', enhanced)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    if device.startswith('cuda'):
        peak_gb = torch.cuda.max_memory_allocated() / 1e9
    return {'seconds': seconds, 'megapixels': megapixels, 'peak_gb': peak_gb}


def measure(precision: str, workload: str, tile: int, out_dir: Path, device: str) -> dict:
    command = [sys.executable, __file__, '--child', precision, workload, '--tile', str(tile), '--out', str(out_dir)]
    command += ['--device', device]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode:
        sys.exit(f'error: {precision} {workload} failed:\n{result.stderr}')
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    # as it comes, so that a run stopped before its table still shows what it measured
    figures = ', '.join(f'{name} {value:.4g}' for name, value in measured.items())
    print(f'  measured {precision} {workload}: {figures}', file=sys.stderr, flush=True)
    return measured


def output_error(fp32_dir: Path, other_dir: Path) -> tuple:
    """Max and mean absolute difference of the 8-bit outputs over all samples, in 1/255 units."""
    import cv2

    diffs = [
        np.abs(cv2.imread(str(p)).astype(np.int16) - cv2.imread(str(other_dir / p.name)).astype(np.int16))
        for p in sorted(fp32_dir.glob('*.png'))
    ]
    return max(int(d.max()) for d in diffs), float(np.concatenate([d.ravel() for d in diffs]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--precisions',
        nargs='+',
        default=[BASELINE, 'fp32', 'bf16'],
        help=f"'{BASELINE}' = the authors' inference structure (in-run baseline), fp32, bf16, fp16",
    )
    parser.add_argument('--workloads', nargs='+', default=['samples', 'synthetic24mp'])
    parser.add_argument('--tile', type=int, default=None, help='tile size (default: the enhancer default)')
    parser.add_argument('--rounds', type=int, default=3, help='rounds of measurements (medians are printed)')
    parser.add_argument('--device', default='cpu', help='cpu (default) or cuda')
    parser.add_argument('--child', nargs=2, metavar=('PRECISION', 'WORKLOAD'), help=argparse.SUPPRESS)
    parser.add_argument('--out', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tile is None:
        sys.path.insert(0, str(REPO_ROOT))
        from cliplit_basicsr.engine import DEFAULT_TILES

        args.tile = DEFAULT_TILES[args.device.split(':')[0]]
    if args.child:
        print(json.dumps(run_child(*args.child, args.tile, args.out, args.device)))
        return

    memory = 'peak GPU GB' if args.device.startswith('cuda') else 'peak RSS GB'
    print(
        f'CLIPLITEnhancer on {args.device.upper()}, tile {args.tile}, median of {args.rounds} rounds; '
        f'authors: {AUTHORS["s/MP"]} s/MP, {AUTHORS["peak GiB"]} GiB peak'
    )
    print(
        f'targets: fp32 <= {TARGET_FP32_S_PER_MP} s/MP, reduced precision <= {TARGET_FAST_S_PER_MP} s/MP, '
        f'peak RSS <= {TARGET_RSS_GB} GB\n'
    )
    header = (
        f'{"precision":<10}{"workload":<16}{"MP":>7}{"s/MP":>8}{"MP/s":>8}{"x 6.7s/MP":>11}{"x in-run":>12}{memory:>13}'
    )
    print(header)
    print('-' * len(header))
    cases = [
        (precision, workload)
        for precision in args.precisions
        for workload in args.workloads
        if precision != BASELINE or workload == 'samples'
    ]  # full frame at 24 MP needs ~10 GB
    runs = {case: [] for case in cases}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for precision, workload in cases:
                out_dir = Path(tmp) / precision
                out_dir.mkdir(exist_ok=True)
                r = measure(precision, workload, args.tile, out_dir, args.device)
                runs[precision, workload].append((r['seconds'] / r['megapixels'], r['megapixels'], r['peak_gb']))
        baseline = runs.get((BASELINE, 'samples'))
        for precision, workload in cases:
            case_runs = runs[precision, workload]
            s_per_mp = statistics.median(run[0] for run in case_runs)
            in_run = (
                f'{statistics.median(b[0] / run[0] for b, run in zip(baseline, case_runs)):.1f}x' if baseline else '-'
            )
            megapixels, peak_gb = case_runs[0][1], max(run[2] for run in case_runs)
            print(
                f'{precision:<10}{workload:<16}{megapixels:>7.1f}{s_per_mp:>8.2f}{1 / s_per_mp:>8.3f}'
                f'{AUTHORS["s/MP"] / s_per_mp:>10.1f}x{in_run:>12}{peak_gb:>13.2f}',
                flush=True,
            )
        if 'samples' in args.workloads and 'fp32' in args.precisions:
            for precision in args.precisions:
                if precision != 'fp32':
                    worst, mean = output_error(Path(tmp) / 'fp32', Path(tmp) / precision)
                    print(f'\n{precision} vs fp32 on the samples (8-bit outputs): max {worst}/255, mean {mean:.3f}/255')


if __name__ == '__main__':
    main()
