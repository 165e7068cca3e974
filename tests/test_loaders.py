"""CLIP-LIT's training loaders: the last partial batch kept, workers started early without fetching, and
the same random streams whether the workers started early or not."""

import numpy as np
import psutil
import torch
from basicsr.data import build_dataloader
from basicsr.data.data_sampler import EnlargedSampler
from torch.utils.data import Dataset

from cliplit_basicsr.data.loaders import build_training_loader, start_workers_now, stop_workers, training_loader


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


def test_workers_start_without_fetching_and_epochs_are_unchanged():
    early, late = _basicsr_loader(), _basicsr_loader()
    assert start_workers_now(early)
    workers = psutil.Process().children()
    assert len(workers) >= 2  # the two workers are running
    assert early._iterator._send_idx == 0  # no batch was requested
    assert len(early.sampler) == 6 and early.sampler.total_size == 6
    assert _epochs(early) == _epochs(late)


def test_loaders_without_persistent_workers_are_left_alone():
    assert not start_workers_now(_basicsr_loader(workers=0))
    assert not start_workers_now(_basicsr_loader(persistent=False))


def test_stop_workers_ends_the_worker_processes():
    loader = _basicsr_loader()
    start_workers_now(loader)
    pids = set(w.pid for w in loader._iterator._workers)
    stop_workers(loader)
    assert loader._iterator is None
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)


def test_the_last_partial_batch_is_kept():
    dataset = RandomItems()
    loader = build_training_loader(dataset, _options(workers=0, batch=4), RUN, EnlargedSampler(dataset, 1, 0, 1))
    assert [len(b['index']) for b in loader] == [4, 2]  # as the authors' loaders (BasicSR's: [4])
    assert len(loader) == 2


def _run(early: bool):
    """A stand-in run: seed, build the loader (workers started early or not), build a 'model' from the global
    stream, train two epochs drawing from the global stream too."""
    torch.manual_seed(0)
    dataset = RandomItems()
    loader = build_dataloader(
        dataset, _options(), num_gpu=0, dist=False, sampler=EnlargedSampler(dataset, 1, 0, 1), seed=3
    )
    loader = training_loader(loader, RUN, start_workers=early)
    model = torch.rand(3)
    batches, draws = [], []
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            batches.append(batch['draw'].tolist())
            draws.append(torch.rand(()).item())
    return model, batches, draws


def test_starting_workers_early_changes_no_random_stream():
    early, late = _run(early=True), _run(early=False)
    assert torch.equal(early[0], late[0])
    assert early[1:] == late[1:]
