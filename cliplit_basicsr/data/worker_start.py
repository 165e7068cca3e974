"""Start a loader's persistent workers before the training process loads CLIP; stop them when done.

A data-loader worker is a fork of the training process: its RSS counts every page the process held
when it forked, shared or not. Forked once CLIP is loaded, each worker maps the ViT-B/32 and RN101
weights (~1.5-2 GiB RSS per worker on CPU); forked first, ~0.5 GiB (measured). Workers of a
persistent loader live through the whole run, so starting them first is enough; they then fetch only
what the training loop asks for, exactly as if started later.
"""

from basicsr.data.data_sampler import EnlargedSampler
from torch.utils.data import DataLoader


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
