"""CLIP-LIT's training data loaders: BasicSR's, with the authors' last partial batch and early workers.

BasicSR builds training loaders with ``drop_last=True``. The authors keep the last partial batch (380
backlit images at batch 8: 47 batches of 8 and one of 4 in each pass), and BasicSR's own epoch count
(``ceil(images / batch)`` iterations an epoch) assumes it is kept: with it dropped, a run whose image
count is not a multiple of the batch ends before ``train.total_iter``. :func:`training_loader` keeps it.

Workers start before the model loads CLIP. A data-loader worker is a fork of the training process: its
RSS counts every page the process held when it forked. Forked once CLIP is loaded, each worker maps the
ViT-B/32 and RN101 weights; forked first, it does not (``docs/benchmarks.md``). Workers of a persistent
loader live through the whole run, so starting them first is enough (:func:`start_workers_now`).

Each loader draws its workers' base seed from its own generator, seeded by ``manual_seed``, not from
torch's global one: starting workers early (or not) then changes no random stream of the run.
"""

from typing import Callable, Iterator, Optional

import torch
from basicsr.data import build_dataloader
from basicsr.data.data_sampler import EnlargedSampler
from torch.utils.data import DataLoader, Dataset, Sampler

# DataLoader arguments carried over when a loader is rebuilt (everything but the ones set here).
_CARRIED = (
    'dataset',
    'batch_size',
    'sampler',
    'num_workers',
    'collate_fn',
    'pin_memory',
    'timeout',
    'worker_init_fn',
    'multiprocessing_context',
    'prefetch_factor',
    'persistent_workers',
)


def training_loader(
    loader: DataLoader, opt: dict, start_workers: bool = True, stop: Optional[Callable[[], bool]] = None
) -> DataLoader:
    """``loader`` (built by BasicSR's ``build_dataloader``) rebuilt with the last partial batch kept and
    its own generator seeded by ``opt['manual_seed']``; its persistent workers are started at once unless
    ``start_workers`` is false. With ``stop``, it yields no more batches once ``stop()`` is true (the
    training loop then ends: :class:`StoppingLoader`)."""
    arguments = {name: getattr(loader, name) for name in _CARRIED}
    if not loader.num_workers:
        arguments.pop('prefetch_factor')  # DataLoader refuses one without workers
    extra = {'num_prefetch_queue': loader.num_prefetch_queue} if hasattr(loader, 'num_prefetch_queue') else {}
    generator = torch.Generator().manual_seed(int(opt['manual_seed']))
    if stop is not None:  # never with prefetch_mode (cliplit_basicsr.options refuses it)
        rebuilt = StoppingLoader(drop_last=False, generator=generator, stop=stop, **arguments)
    else:
        rebuilt = type(loader)(drop_last=False, generator=generator, **arguments, **extra)
    if start_workers:
        start_workers_now(rebuilt)
    return rebuilt


class StoppingLoader(DataLoader):
    """A DataLoader whose epochs end, mid-epoch included, once ``stop()`` is true.

    BasicSR's training loop runs ``while batch is not None`` inside ``for epoch in range(...)``: an epoch
    that yields nothing more ends the ``while`` at once, and the ``for`` then runs through its remaining
    epochs without a step. Batches the workers have already loaded are not yielded.
    """

    def __init__(self, *args, stop: Callable[[], bool], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stop = stop

    def __iter__(self) -> Iterator:
        if self.stop():
            return iter(())
        return _Stopping(super().__iter__(), self.stop)


class _Stopping:
    def __init__(self, batches: Iterator, stop: Callable[[], bool]) -> None:
        self.batches, self.stop = batches, stop

    def __iter__(self) -> '_Stopping':
        return self

    def __next__(self):
        if self.stop():
            raise StopIteration
        return next(self.batches)


def build_training_loader(dataset: Dataset, dataset_opt: dict, opt: dict, sampler: Sampler) -> DataLoader:
    """A CLIP-LIT training loader of ``dataset`` with BasicSR's ``build_dataloader`` options
    (``dataset_opt``) and the run's ``opt``: :func:`training_loader`."""
    loader = build_dataloader(
        dataset, dataset_opt, num_gpu=opt['num_gpu'], dist=opt['dist'], sampler=sampler, seed=opt['manual_seed']
    )
    return training_loader(loader, opt)


def start_workers_now(loader: DataLoader) -> bool:
    """Fork ``loader``'s workers now, requesting no batch; returns whether it did.

    Only for loaders whose workers persist (``persistent_workers``) and whose sampler is BasicSR's
    ``EnlargedSampler`` (the training loaders): the sampler is emptied while the workers start, so no
    item is loaded and no augmentation is drawn, and the next ``iter(loader)`` starts the epoch as usual.
    """
    sampler = getattr(loader, 'sampler', None)
    if not (loader.num_workers and loader.persistent_workers and isinstance(sampler, EnlargedSampler)):
        return False
    sizes = sampler.num_samples, sampler.total_size
    sampler.num_samples = sampler.total_size = 0
    try:
        iter(loader)
    finally:
        sampler.num_samples, sampler.total_size = sizes
    return True


def stop_workers(loader: DataLoader) -> None:
    """End ``loader``'s worker processes now, e.g. persistent workers of a loader no phase uses any more
    (they would otherwise live as long as the loader)."""
    iterator = getattr(loader, '_iterator', None)
    if iterator is not None:
        iterator._shutdown_workers()
        loader._iterator = None
