"""Benchmark the training data path per batch: resident images + batched torch augmentation against the
data path before it (decode, resize and OpenCV warps per image in loader workers, issue 25).

    git worktree add ../before ee1868a   # any checkout from before resident data, beside the repository
    python scripts/bench_data_path.py --before ../before [--rounds 5] [--device cpu]

Per batch at the paper's sizes, interleaved in fresh processes round after round (this CPU drifts):

* enhancement batch: 8 backlit images at 512² (``datasets.train``). Before: 8 items of the dataset as its
  workers made them (JPEG decode, Lanczos to 512, float warps), collated. Now: 8 indices and draws, a gather
  from the resident set and one ``augment_batch_`` (in place, as the model runs it);
* ranking tuple batch: 16 (I_b, I_w, I_t, I_{t-1}) tuples at 256². Before: 16 dataset items with
  ``cache_resized`` warm (two warps each) and ``augment_batch`` of I_t and I_{t-1} with OpenCV on the host.
  Now: gathers and one ``augment_batch_`` of the 64 images.

Also printed: the one-off decoding of a resident set, per image. Photos are random 900x1200 JPEGs.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ENHANCE_BATCH, ENHANCE_SIZE = 8, 512
RANK_BATCH, RANK_SIZE = 16, 256


def make_photos(folder: Path, count: int, seed: int) -> None:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
        photo = cv2.resize(small, (1200, 900), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / f'{i:03d}.jpg'), photo, [cv2.IMWRITE_JPEG_QUALITY, 92])


def dataset_options(data: Path, size: int, welllit: bool, zoom: list) -> dict:
    opt = {
        'name': 'bench',
        'type': 'CLIPLITUnpairedDataset',
        'phase': 'train',
        'dataroot_backlit': str(data / 'backlit'),
        'use_welllit': welllit,
        'image_size': size,
        'augment': True,
        'zoom_range': zoom,
    }
    if welllit:
        opt['dataroot_welllit'] = str(data / 'welllit')
    return opt


def child(mode: str, data: Path, batches: int, device: str) -> dict:
    """Seconds per batch of each data path in this process's version of the package."""
    import torch
    from basicsr.data import build_dataset
    from torch.utils.data import default_collate

    import cliplit_basicsr  # noqa: F401  (registers the dataset)
    from cliplit_basicsr.data import augment

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    np.random.seed(0)
    device = torch.device(device)
    network_opt = dataset_options(data, ENHANCE_SIZE, False, [0.7, 1.3])
    prompt_opt = dataset_options(data, RANK_SIZE, True, [0.5, 1.5])
    rng = np.random.default_rng(1)
    result = {}

    def timed(make_batch) -> float:
        make_batch()  # warm-up
        if device.type == 'cuda':
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(batches):
            make_batch()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        return (time.perf_counter() - started) / batches

    if mode == 'before':
        network_set = build_dataset(network_opt)
        prompt_set = build_dataset(dict(prompt_opt, cache_resized=True))
        for item in range(len(prompt_set)):  # a long run's steady state: every resized image cached
            prompt_set[item]
        outputs = torch.randint(0, 256, (len(prompt_set.backlit), 3, RANK_SIZE, RANK_SIZE), dtype=torch.uint8)

        def enhancement_batch():
            items = rng.choice(len(network_set), ENHANCE_BATCH, replace=False)
            return default_collate([network_set[int(i)] for i in items])['backlit'].to(device)

        def ranking_batch():
            items = rng.choice(len(prompt_set), RANK_BATCH, replace=False)
            batch = default_collate([prompt_set[int(i)] for i in items])
            sets = [batch['backlit'].to(device), batch['welllit'].to(device)]
            for _ in range(2):  # I_t and I_{t-1}
                sets.append(augment.augment_batch(outputs[batch['index']].float() / 255, batch['aug']).to(device))
            return sets
    else:
        started = time.perf_counter()
        network_set = build_dataset(network_opt)
        network_images = network_set.resident(device)['backlit']
        result['decode once (s/image)'] = (time.perf_counter() - started) / len(network_set)
        prompt_set = build_dataset(prompt_opt)
        resident = prompt_set.resident(device)
        outputs = torch.randint(0, 256, (len(prompt_set.backlit), 3, RANK_SIZE, RANK_SIZE), dtype=torch.uint8)
        outputs = outputs.to(device)

        def enhancement_batch():
            items = rng.choice(len(network_set), ENHANCE_BATCH, replace=False)
            batch = default_collate([network_set[int(i)] for i in items])
            return augment.augment_batch_(network_images.take(batch['index']), batch['aug'])  # as the model does

        def ranking_batch():
            items = rng.choice(len(prompt_set), RANK_BATCH, replace=False)
            batch = default_collate([prompt_set[int(i)] for i in items])
            index = batch['index'].to(device)
            sets = [resident['backlit'].take(batch['index']), resident['welllit'].take(batch['welllit_index'])]
            sets += [outputs[index].float() / 255] * 2
            return augment.augment_batch_(torch.cat(sets), augment.repeat_draws(batch['aug'], 4)).split(RANK_BATCH)

    result['enhancement batch 8x512² (s)'] = timed(enhancement_batch)
    result['ranking tuple batch 16x4x256² (s)'] = timed(ranking_batch)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--before', required=False, help='a checkout from before resident data (its root)')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--batches', type=int, default=5, help='timed batches per measurement')
    parser.add_argument('--images', type=int, default=48, help='backlit and well-lit photos generated')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--child', nargs=2, metavar=('MODE', 'DATA'), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]), args.batches, args.device)))
        return
    root = Path(__file__).resolve().parents[1]
    trees = {'now': root} if not args.before else {'before': Path(args.before).resolve(), 'now': root}
    with tempfile.TemporaryDirectory() as work:
        data = Path(work)
        make_photos(data / 'backlit', args.images, 0)
        make_photos(data / 'welllit', args.images, 1)
        rows = {}
        for _ in range(args.rounds):
            for mode, tree in trees.items():
                env = dict(os.environ, PYTHONPATH=str(tree))
                command = [sys.executable, __file__, '--child', mode, str(data), '--batches', str(args.batches)]
                output = subprocess.run(
                    command + ['--device', args.device], env=env, check=True, capture_output=True, text=True
                )
                for name, seconds in json.loads(output.stdout.strip().splitlines()[-1]).items():
                    rows.setdefault(name, {}).setdefault(mode, []).append(seconds)
    print(f'data path per batch on {args.device}, medians of {args.rounds} rounds, {args.batches} batches each')
    print(f'{"measure":<36}' + ''.join(f'{mode:>12}' for mode in trees) + ('     before/now' if args.before else ''))
    for name, by_mode in rows.items():
        medians = {mode: statistics.median(values) for mode, values in by_mode.items()}
        line = f'{name:<36}' + ''.join(f'{medians[m]:>12.4f}' if m in medians else f'{"":>12}' for m in trees)
        if args.before and 'before' in medians:
            line += f'{medians["before"] / medians["now"]:>14.1f}x'
        print(line)


if __name__ == '__main__':
    main()
