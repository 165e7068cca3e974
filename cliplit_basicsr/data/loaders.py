"""CLIP-LIT's training data loaders: BasicSR's, with the authors' last partial batch and no workers.

BasicSR builds training loaders with ``drop_last=True``. The authors keep the last partial batch (380
backlit images at batch 8: 47 batches of 8 and one of 4 in each pass), and BasicSR's own epoch count
(``ceil(images / batch)`` iterations an epoch) assumes it is kept: with it dropped, a run whose image
count is not a multiple of the batch ends before ``train.total_iter``. :func:`training_loader` keeps it.

CLIP-LIT's datasets hold their images resident on the training device and their items are indices and
augmentation draws (:mod:`cliplit_basicsr.data.unpaired_dataset`): a batch costs microseconds in this
process, so the loaders run without worker processes whatever ``num_worker_per_gpu`` says.

Each loader draws the base seed a DataLoader takes at every epoch from its own generator, seeded by
``manual_seed``, not from torch's global one, which the training step's random numbers come from.
"""

from typing import Callable, Iterator, Optional

import torch
from basicsr.data import build_dataloader
from basicsr.utils import get_root_logger
from torch.utils.data import DataLoader, Dataset, Sampler

# DataLoader arguments carried over when a loader is rebuilt (everything but the ones set here).
_CARRIED = ('dataset', 'batch_size', 'sampler', 'collate_fn')


def training_loader(loader: DataLoader, opt: dict, stop: Optional[Callable[[], bool]] = None) -> DataLoader:
    """``loader`` (built by BasicSR's ``build_dataloader``) rebuilt with the last partial batch kept, no
    worker processes and its own generator seeded by ``opt['manual_seed']``. With ``stop``, it yields no more
    batches once ``stop()`` is true (the training loop then ends: :class:`StoppingLoader`)."""
    if loader.num_workers:
        get_root_logger().info(
            f'{type(loader.dataset).__name__}: num_worker_per_gpu: {loader.num_workers} is not used (its images '
            'are resident on the training device; a batch is indexed in the training process)'
        )
    arguments = {name: getattr(loader, name) for name in _CARRIED}
    generator = torch.Generator().manual_seed(int(opt['manual_seed']))
    if stop is not None:  # never with prefetch_mode (cliplit_basicsr.options refuses it)
        return StoppingLoader(drop_last=False, generator=generator, stop=stop, **arguments)
    extra = {'num_prefetch_queue': loader.num_prefetch_queue} if hasattr(loader, 'num_prefetch_queue') else {}
    return type(loader)(drop_last=False, generator=generator, **arguments, **extra)


class StoppingLoader(DataLoader):
    """A DataLoader whose epochs end, mid-epoch included, once ``stop()`` is true.

    BasicSR's training loop runs ``while batch is not None`` inside ``for epoch in range(...)``: an epoch
    that yields nothing more ends the ``while`` at once, and the ``for`` then runs through its remaining
    epochs without a step.
    """

    def __init__(self, *args, stop: Callable[[], bool], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stop = stop

    def __iter__(self) -> Iterator:
        if self.stop():
            return
        for batch in super().__iter__():
            yield batch
            if self.stop():
                return


def build_training_loader(dataset: Dataset, dataset_opt: dict, opt: dict, sampler: Sampler) -> DataLoader:
    """A CLIP-LIT training loader of ``dataset`` with BasicSR's ``build_dataloader`` options
    (``dataset_opt``) and the run's ``opt``: :func:`training_loader`."""
    loader = build_dataloader(
        dataset, dataset_opt, num_gpu=opt['num_gpu'], dist=opt['dist'], sampler=sampler, seed=opt['manual_seed']
    )
    return training_loader(loader, opt)
