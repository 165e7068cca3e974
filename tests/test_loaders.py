"""CLIP-LIT's training loaders: the last partial batch kept, no worker processes, their own seeded order."""

import numpy as np
import torch
from basicsr.data import build_dataloader
from basicsr.data.data_sampler import EnlargedSampler
from torch.utils.data import Dataset

from cliplit_basicsr.data.loaders import build_training_loader, training_loader


class RandomItems(Dataset):
    """Items that draw from numpy's global stream, as the augmentation draws do."""

    def __len__(self):
        return 6

    def __getitem__(self, index):
        return {'index': index, 'draw': np.random.random()}


def _options(workers=2, batch=2):
    return {
        'phase': 'train',
        'num_worker_per_gpu': workers,
        'batch_size_per_gpu': batch,
        'dataset_enlarge_ratio': 1,
        'use_shuffle': True,
    }


RUN = {'num_gpu': 0, 'dist': False, 'manual_seed': 3}


def _basicsr_loader(workers=2):
    dataset = RandomItems()
    sampler = EnlargedSampler(dataset, 1, 0, 1)
    return build_dataloader(dataset, _options(workers), num_gpu=0, dist=False, sampler=sampler, seed=3)


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


def test_workers_asked_for_are_not_started_and_the_global_stream_is_left_alone():
    """Items are indices and draws (the images are resident): the loader runs in this process, and the seed
    a DataLoader draws at each epoch start comes from the loader's own generator, not from torch's global
    stream, which the training step's random numbers come from."""
    loader = training_loader(_basicsr_loader(workers=2), RUN)
    assert loader.num_workers == 0
    torch.manual_seed(0)
    before = torch.get_rng_state()
    _epochs(loader)
    assert torch.equal(torch.get_rng_state(), before)
    plain = _basicsr_loader(workers=0)  # BasicSR's own loader draws from the global stream
    list(plain)
    assert not torch.equal(torch.get_rng_state(), before)
