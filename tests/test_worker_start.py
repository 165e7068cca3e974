"""Persistent loader workers started before the model loads CLIP: no item is fetched meanwhile, and the
epochs that follow are what they would have been."""

import numpy as np
import psutil
from basicsr.data import build_dataloader
from basicsr.data.data_sampler import EnlargedSampler
from torch.utils.data import Dataset

from cliplit_basicsr.data.worker_start import start_workers_now, stop_workers


class RandomItems(Dataset):
    """Items that draw from numpy's global stream (as the augmentation does), so a fetch during the start
    would shift every later draw of that worker."""

    def __len__(self):
        return 6

    def __getitem__(self, index):
        return {'index': index, 'draw': np.random.random()}


def _loader(workers=2, persistent=True):
    dataset = RandomItems()
    options = {
        'phase': 'train',
        'num_worker_per_gpu': workers,
        'batch_size_per_gpu': 2,
        'dataset_enlarge_ratio': 1,
        'use_shuffle': True,
        'persistent_workers': persistent and workers > 0,
    }
    return build_dataloader(dataset, options, num_gpu=0, dist=False, sampler=EnlargedSampler(dataset, 1, 0, 1), seed=3)


def _epochs(loader, count=2):
    batches = []
    for epoch in range(count):
        loader.sampler.set_epoch(epoch)
        batches += [(b['index'].tolist(), b['draw'].tolist()) for b in loader]
    return batches


def test_workers_start_without_fetching_and_epochs_are_unchanged():
    early, late = _loader(), _loader()
    assert start_workers_now(early)
    workers = psutil.Process().children()
    assert len(workers) >= 2  # the two workers are running
    assert early._iterator._send_idx == 0  # no batch was requested
    assert len(early.sampler) == 6 and early.sampler.total_size == 6
    assert _epochs(early) == _epochs(late)


def test_loaders_without_persistent_workers_are_left_alone():
    assert not start_workers_now(_loader(workers=0))
    assert not start_workers_now(_loader(persistent=False))


def test_stop_workers_ends_the_worker_processes():
    loader = _loader()
    start_workers_now(loader)
    pids = set(w.pid for w in loader._iterator._workers)
    stop_workers(loader)
    assert loader._iterator is None
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)
