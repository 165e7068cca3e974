"""Benchmark CLIP-LIT training inside BasicSR's real training loop (CPU or GPU), per phase.

    python scripts/bench_train.py                 # 4 timed iterations per phase, default sizes
    python scripts/bench_train.py --iters 2 --images 16
    python scripts/bench_train.py --quick         # tiny sizes: checks the script, figures mean nothing

It generates random JPEG "photos" (backlit and well-lit), writes an option file from
``options/train_cliplit.yml`` with full-size **random-weight** ViT-B/32 and RN101 (``clip_pretrained: ~``,
no download), the default batch sizes, resolutions and loader workers, and a schedule of ``--iters`` + 1
iterations per phase (the first of each phase is warm-up), then runs ``basicsr.train.train_pipeline`` in
this process with timers around the model's steps and data fetches. Printed per phase:

* s/iteration and iterations/s of the whole BasicSR iteration (data fetch + step + bookkeeping);
* data wait: time the iteration spent waiting for a batch (BasicSR's loader for network phases, the
  model's prompt loader for prompt phases), as a share of the iteration;
* the one-off pass that enhances the backlit set for I_t at the start of prompt refinement;
* peak RSS of the whole process tree (this process + data-loader workers), and peak PSS (shared pages
  counted once, so forked workers are not charged for the parent's models).
"""
import argparse
import os
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import psutil
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


class TreeMemory(threading.Thread):
    """Polls RSS and PSS of this process and its children; keeps the peaks (GiB)."""

    def __init__(self, period: float = 0.2):
        super().__init__(daemon=True)
        self.period, self.peak_rss, self.peak_pss, self.running = period, 0.0, 0.0, True

    def run(self):
        me = psutil.Process()
        while self.running:
            rss = pss = 0
            for proc in [me] + me.children(recursive=True):
                try:
                    info = proc.memory_full_info()
                    rss, pss = rss + info.rss, pss + info.pss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss / 2**30), max(self.peak_pss, pss / 2**30)
            time.sleep(self.period)


def make_images(folder: Path, count: int, size: tuple, low: int, high: int, rng) -> None:
    import cv2
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        h, w = size
        base = rng.integers(low, high, (h // 8, w // 8, 3), dtype=np.uint8)  # smooth-ish content, JPEG-friendly
        img = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / f'img{i:03d}.jpg'), img, [cv2.IMWRITE_JPEG_QUALITY, 92])


def write_options(work: Path, args) -> Path:
    opt = yaml.safe_load((REPO_ROOT / 'options' / 'train_cliplit.yml').read_text())
    n = args.iters + 1
    opt.update(name='bench', num_gpu='auto', manual_seed=0)
    opt.pop('dist_params')
    opt['datasets'].pop('val')
    opt.pop('val')
    train_set, prompt_set = opt['datasets']['train'], opt['prompt_dataset']
    train_set['dataroot_backlit'] = prompt_set['dataroot_backlit'] = str(work / 'backlit')
    prompt_set['dataroot_welllit'] = str(work / 'welllit')
    if args.quick:
        train_set.update(image_size=64, batch_size_per_gpu=2)
        prompt_set.update(image_size=64, batch_size_per_gpu=4)
    if args.workers is not None:
        train_set['num_worker_per_gpu'] = prompt_set['num_worker_per_gpu'] = args.workers
    clip = {'ViT-B-32-quickgelu': args.vit, 'RN101-quickgelu': args.rn}
    opt['network_prompt'].update(clip_model=args.vit_model, clip_pretrained=clip[args.vit_model])
    train = opt['train']
    for key in ('clip_opt', 'identity_opt', 'reconstruction_opt'):
        train[key]['clip_pretrained'] = clip[train[key]['clip_model']]
    opt['path']['pretrain_network_g'] = None  # run the reconstruction stage too
    train['total_iter'] = 4 * n + 2  # round 2 starts: refinement ranks I_t (and times a full round 1)
    train['schedule'].update(prompt_init_iters=n, prompt_init_min_iters=0, reconstruction_iters=n,
                             reconstruction_min_iters=0, restart_psnr=-1e9, enhancement_iters=n,
                             enhancement_loss_threshold=1e18, prompt_refinement_iters=n, prompt_loss_threshold=1e18,
                             check_period=1, prompt_check_period=1)  # a best network every round: I_t exists
    opt['logger'].update(print_freq=1, save_checkpoint_freq=10**9, use_tb_logger=False)
    path = work / 'bench.yml'
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return path


def instrument(records):
    """Timers around the model's step, its prompt-batch fetches and BasicSR's batch fetches."""
    from basicsr.data.prefetch_dataloader import CPUPrefetcher

    from cliplit_basicsr.models.cliplit_model import CLIPLITModel

    state = {'phase': None, 'start': None, 'stepped': False, 'fetch': 0.0, 'outputs': 0.0}
    step, fetch_prompt, enhance = (CLIPLITModel.optimize_parameters, CLIPLITModel._next_prompt_batch,
                                   CLIPLITModel._enhanced_outputs)
    prefetch_next = CPUPrefetcher.next

    def timed_next(self):
        """An iteration runs from the fetch of its BasicSR batch to the next fetch."""
        t = time.perf_counter()
        if state['stepped']:
            records[state['phase']].append((t - state['start'], state['fetch'], state['outputs']))
        batch = prefetch_next(self)
        state.update(start=t, stepped=False, fetch=time.perf_counter() - t, outputs=0.0)
        return batch

    def timed_step(self, current_iter):
        state.update(phase=self.schedule.phase.value, stepped=True)
        return step(self, current_iter)

    def timed_fetch(self, name):
        t = time.perf_counter()
        batch = fetch_prompt(self, name)
        state['fetch'] += time.perf_counter() - t
        return batch

    def timed_outputs(self, slot):
        cached = self._outputs.get(slot)
        t = time.perf_counter()
        out = enhance(self, slot)
        if self._outputs.get(slot) is not cached:  # the pass ran (not a cache hit)
            state['outputs'] += time.perf_counter() - t
        return out

    CPUPrefetcher.next = timed_next
    CLIPLITModel.optimize_parameters = timed_step
    CLIPLITModel._next_prompt_batch = timed_fetch
    CLIPLITModel._enhanced_outputs = timed_outputs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--iters', type=int, default=4, help='timed iterations per phase (after 1 warm-up)')
    parser.add_argument('--images', type=int, default=24, help='backlit and well-lit images generated')
    parser.add_argument('--photo-size', type=int, nargs=2, default=[900, 1200], help='H W of generated photos')
    parser.add_argument('--workers', type=int, default=None, help='override num_worker_per_gpu of both loaders')
    parser.add_argument('--vit', default=None, help="ViT weights (default: random, 'openai', or a file)")
    parser.add_argument('--rn', default=None, help="RN weights (default: random, 'openai', or a file)")
    parser.add_argument('--vit-model', default='ViT-B-32-quickgelu', help=argparse.SUPPRESS)
    parser.add_argument('--quick', action='store_true', help='tiny sizes (smoke test of this script)')
    args = parser.parse_args()
    if args.quick:
        args.photo_size, args.images = [96, 128], 8

    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    import basicsr.train  # noqa: F401  (the hook imports cliplit_basicsr right after basicsr)
    import torch

    work = Path(tempfile.mkdtemp(prefix='cliplit_bench_'))
    rng = np.random.default_rng(0)
    make_images(work / 'backlit', args.images, tuple(args.photo_size), 0, 110, rng)
    make_images(work / 'welllit', args.images, tuple(args.photo_size), 90, 256, rng)
    option_file = write_options(work, args)

    records = defaultdict(list)
    instrument(records)
    memory = TreeMemory()
    memory.start()
    os.chdir(work)
    sys.argv = ['basicsr.train', '-opt', str(option_file)]
    started = time.perf_counter()
    basicsr.train.train_pipeline(str(work))
    wall = time.perf_counter() - started
    memory.running = False
    memory.join()

    device = 'cuda' if torch.cuda.is_available() else f'cpu ({torch.get_num_threads()} threads)'
    print(f'\nCLIP-LIT training bench on {device}; photos {args.photo_size[0]}x{args.photo_size[1]} JPEG, '
          f'{args.images} backlit + {args.images} well-lit; random-weight CLIP; wall {wall:.0f} s')
    print(f'{"phase":<20}{"iters":>6}{"s/iter":>9}{"iter/s":>9}{"data wait":>11}{"I_t pass (s)":>14}')
    for phase in ('prompt_init', 'reconstruction', 'enhancement', 'prompt_refinement'):
        rows = records.get(phase, [])
        outputs = sum(r[2] for r in rows)
        timed = [r for r in rows[1:] if r[2] == 0.0]  # skip warm-up and the I_t pass
        if not timed:
            continue
        total, wait = sum(r[0] for r in timed), sum(r[1] for r in timed)
        print(f'{phase:<20}{len(timed):>6}{total / len(timed):>9.2f}{len(timed) / total:>9.3f}'
              f'{100 * wait / total:>10.1f}%{outputs:>14.1f}')
    print(f'peak RSS of the process tree: {memory.peak_rss:.2f} GiB; peak PSS: {memory.peak_pss:.2f} GiB')
    print(f'loading one datasets.train batch (fetched and unused in every prompt iteration): '
          f'{train_batch_seconds(option_file):.2f} CPU-s')


def train_batch_seconds(option_file: Path) -> float:
    """Single-process time to load one batch of ``datasets.train`` (what BasicSR's loader prepares)."""
    from basicsr.data import build_dataset
    dataset_opt = dict(yaml.safe_load(option_file.read_text())['datasets']['train'], phase='train')
    dataset = build_dataset(dataset_opt)
    batch = dataset_opt['batch_size_per_gpu']
    dataset[0]  # open files / warm caches
    t = time.process_time()
    for i in range(batch):
        dataset[i % len(dataset)]
    return time.process_time() - t


if __name__ == '__main__':
    main()
