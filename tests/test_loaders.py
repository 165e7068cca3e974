"""CLIP-LIT's training loaders: the last partial batch kept, no worker processes, their own seeded order."""

import numpy as np
import torch
from basicsr.data import build_dataloader
from basicsr.data.data_sampler import EnlargedSampler
from torch.utils.data import Dataset

from cliplit_basicsr.data.loaders import build_training_loader, training_loader


class RandomItems(Dataset):
    """Items that draw from numpy's global stream (as the augmentation does), so a fetch during the start
    would shift every later draw of that worker."""

    def __len__(self):
        return 6

    def __getitem__(self, index):
        return {'index': index, 'draw': np.random.random()}


def _options(workers=2, persistent=True, batch=2):
    return {
        'phase': 'train',
        'num_worker_per_gpu': workers,
        'batch_size_per_gpu': batch,
        'dataset_enlarge_ratio': 1,
        'use_shuffle': True,
        'persistent_workers': persistent and workers > 0,
    }


RUN = {'num_gpu': 0, 'dist': False, 'manual_seed': 3}


def _basicsr_loader(workers=2, persistent=True):
    dataset = RandomItems()
    sampler = EnlargedSampler(dataset, 1, 0, 1)
    return build_dataloader(dataset, _options(workers, persistent), num_gpu=0, dist=False, sampler=sampler, seed=3)


def _epochs(loader, count=2):
    batches = []
    for epoch in range(count):
        loader.sampler.set_epoch(epoch)
        batches += [(b['index'].tolist(), b['draw'].tolist()) for b in loader]
    return batches


def test_the_last_partial_batch_is_kept():
    dataset = RandomItems()
    loader = build_training_loader(dataset, _options(workers=0, batch=4), RUN, EnlargedSampler(dataset, 1, 0, 1))
    assert [len(b['index']) for b in loader] == [4, 2]  # as the authors' loaders (BasicSR's: [4])
    assert len(loader) == 2


def test_workers_asked_for_are_not_started_and_the_order_is_seeded():
    """Items are indices and draws (the images are resident): the loader runs in this process, and its
    shuffle comes from its own generator seeded by manual_seed, whatever torch's global stream did."""
    loaders = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        loaders.append(training_loader(_basicsr_loader(workers=2), RUN))
    assert [loader.num_workers for loader in loaders] == [0, 0]
    first, second = ([b[0] for b in _epochs(loader)] for loader in loaders)
    assert first == second
