"""Unpaired backlit / well-lit training images for CLIP-LIT (docs/method.md, Data)."""

import weakref
from typing import Sequence

import numpy as np
import torch
from basicsr.utils import img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from cliplit_basicsr.data.augment import AugmentParams, apply_augmentation, draw_augmentation
from cliplit_basicsr.data.image_source import ImageSource
from cliplit_basicsr.errors import OptionError

# Keys BasicSR itself adds to or reads from a dataset's options (options.py, data/__init__.py).
_BASICSR_KEYS = frozenset(
    {
        'name',
        'type',
        'phase',
        'scale',
        'batch_size_per_gpu',
        'num_worker_per_gpu',
        'use_shuffle',
        'dataset_enlarge_ratio',
        'prefetch_mode',
        'num_prefetch_queue',
        'pin_memory',
        'persistent_workers',
    }
)
_OWN_KEYS = frozenset(
    {
        'dataroot_backlit',
        'dataroot_welllit',
        'use_welllit',
        'io_backend',
        'image_size',
        'augment',
        'zoom_range',
        'cache_resized',
    }
)

# Backlit-only sets of this process (``datasets.train``: what BasicSR's loop fetches every iteration).
_NETWORK_SETS = weakref.WeakSet()


def set_network_batch_loading(enabled: bool) -> None:
    """Load (True, the default) or skip (False) the images of this process's backlit-only sets, in their
    data-loader workers too.

    BasicSR's loop fetches a ``datasets.train`` batch every iteration, but the prompt phases train on
    their own loader: decoding and resizing 8 images @ 512 there would only take cores (or, on a GPU,
    time) from the step. Skipped, an item is ``{'deferred_item': i}``; the training model loads such a
    batch itself if one arrives in a network phase (the loader runs a few batches ahead).
    """
    for dataset in list(_NETWORK_SETS):
        dataset.loading.fill_(enabled)


@DATASET_REGISTRY.register()
class CLIPLITUnpairedDataset(data.Dataset):
    """Backlit images, optionally paired index-wise with well-lit ones, resized and augmented.

    Options (besides BasicSR's loader keys; an unknown key is an error):
        dataroot_backlit (str): folder, or ``.lmdb`` made by ``scripts/create_lmdb.py``.
        dataroot_welllit (str): the same for well-lit references; needed when ``use_welllit``.
        use_welllit (bool): return well-lit images too (prompt phases). Default: True.
        io_backend (dict): ``{type: disk}`` or ``{type: lmdb}`` for both roots. Default: disk.
        image_size (int): square side after Lanczos resize (authors: 512 enhancement, 256 prompts).
        augment (bool): apply the authors' augmentation. Default: True.
        zoom_range ([float, float]): per-axis zoom factors (authors: [0.7, 1.3] enhancement,
            [0.5, 1.5] prompts). Required when ``augment``.
        cache_resized (bool): keep every image once decoded and resized (8-bit ones as uint8), so that
            later epochs only augment; costs N x S² x 3 bytes in each data-loader worker (0.2 MB an
            image at 256). Default: False.

    The length is the longer list's, the shorter one cycled to that length, as the authors pad their lists.
    Item ``i`` pairs backlit ``i % n_backlit`` with well-lit ``i % n_welllit`` until :meth:`redraw_pairing`
    shuffles both padded lists independently, as the authors' ranking loader does each time it is built
    (every prompt-refinement phase). An item holds ``backlit`` (and ``welllit``): (3, S, S) RGB
    float32 tensors in [0, 1] sharing one augmentation draw, ``backlit_path`` and ``index`` (and
    ``welllit_path``, ``welllit_index``), and ``aug`` (the draw, `AugmentParams.as_dict`). While loading is
    off (`set_network_batch_loading`, backlit-only sets), an item is ``{'deferred_item': i}`` and
    `load_item` gives the real one.

    Enhanced versions of the backlit images (I_t, I_{t-1}) are made by the model, so they cannot live
    in data-loader workers; instead the model enhances `load_backlit` (the un-augmented resized image
    of a backlit index) and, for a batch, applies the batch's draws with
    ``augment.augment_batch(enhanced[batch['index']], batch['aug'])``: the same OpenCV warps as here.
    """

    def __init__(self, opt: dict) -> None:
        super().__init__()
        unknown = sorted(set(opt) - _BASICSR_KEYS - _OWN_KEYS)
        if unknown:
            raise OptionError(
                f'{type(self).__name__}: unknown option(s) {", ".join(unknown)} (known: {", ".join(sorted(_OWN_KEYS))})'
            )
        if opt.get('persistent_workers') and not opt.get('num_worker_per_gpu'):
            raise OptionError('persistent_workers: true needs num_worker_per_gpu > 0 (no workers to keep)')
        self.image_size = _positive_int(opt.get('image_size'), 'image_size')
        self.use_welllit = _flag(opt.get('use_welllit', True), 'use_welllit')
        self.augment = _flag(opt.get('augment', True), 'augment')
        self.zoom_range = _zoom_range(opt.get('zoom_range')) if self.augment else None
        self._resized = {} if _flag(opt.get('cache_resized', False), 'cache_resized') else None
        io_backend = opt.get('io_backend', {'type': 'disk'})
        if not isinstance(io_backend, dict):
            raise OptionError(f'io_backend: expected a mapping such as {{type: disk}}, got {io_backend!r}')
        self.backlit = ImageSource(_root(opt, 'dataroot_backlit'), io_backend, 'dataroot_backlit')
        self.welllit = (
            ImageSource(_root(opt, 'dataroot_welllit'), io_backend, 'dataroot_welllit') if self.use_welllit else None
        )
        # In shared memory, so that data-loader workers (forked or spawned) see the switch and the pairing.
        self.loading = torch.ones((), dtype=torch.bool).share_memory_()
        self.pairing = self._cycled().share_memory_()  # (2, len): backlit and well-lit index of each item
        if not self.use_welllit:
            _NETWORK_SETS.add(self)

    def _cycled(self) -> torch.Tensor:
        """Both lists cycled to the dataset's length, in order: (2, len) image indices."""
        items = torch.arange(len(self))
        return torch.stack([items % len(self.backlit), items % (len(self.welllit) if self.use_welllit else 1)])

    def redraw_pairing(self, seed: Sequence[int]) -> None:
        """Shuffle the cycled backlit and well-lit lists independently (a numpy generator seeded by ``seed``),
        so that item ``i`` pairs their ``i``-th entries, in this process and in its data-loader workers.

        Call it before the loader's next epoch starts: items already loaded keep their pairs.
        """
        rng = np.random.default_rng(list(seed))
        cycled = self._cycled().numpy()
        self.pairing.copy_(torch.from_numpy(np.stack([rng.permutation(row) for row in cycled])))

    @property
    def num_backlit(self) -> int:
        """Number of distinct backlit images (the range of ``index``)."""
        return len(self.backlit)

    def __len__(self) -> int:
        return max(len(self.backlit), len(self.welllit)) if self.use_welllit else len(self.backlit)

    def load_backlit(self, index: int) -> np.ndarray:
        """Backlit image ``index`` resized to ``image_size``, not augmented: HWC RGB float32 in [0, 1]."""
        return self.load(self.backlit, index)

    def load(self, source: ImageSource, index: int) -> np.ndarray:
        """Image ``index`` of ``source`` resized, float32 in [0, 1]; kept when ``cache_resized``."""
        if self._resized is None:
            return source.load(index, self.image_size)
        key = (source is self.backlit, index)
        kept = self._resized.get(key)
        if kept is None:
            img = source.load(index, self.image_size)
            as_uint8 = np.rint(img * 255).astype(np.uint8)
            exact = np.array_equal(as_uint8.astype(np.float32) / 255.0, img)  # true for 8-bit sources
            kept = self._resized[key] = as_uint8 if exact else img
        return kept.astype(np.float32) / 255.0 if kept.dtype == np.uint8 else kept.copy()

    def __getitem__(self, item: int) -> dict:
        return self.load_item(item) if self.loading else {'deferred_item': item}

    def load_item(self, item: int) -> dict:
        """Item ``item``, loaded whatever `set_network_batch_loading` says."""
        index, welllit_index = self.pairing[:, item].tolist()
        images = [self.load_backlit(index)]
        sample = {'backlit_path': self.backlit.names[index], 'index': index}
        if self.use_welllit:
            images.append(self.load(self.welllit, welllit_index))
            sample['welllit_path'], sample['welllit_index'] = self.welllit.names[welllit_index], welllit_index
        params = draw_augmentation(self.zoom_range) if self.augment else AugmentParams()
        tensors = [img2tensor(img, bgr2rgb=False) for img in apply_augmentation(images, params)]
        sample['backlit'] = tensors[0]
        if self.use_welllit:
            sample['welllit'] = tensors[1]
        sample['aug'] = params.as_dict()
        return sample


def _root(opt: dict, key: str) -> str:
    root = opt.get(key)
    if not root:
        raise OptionError(f'{key}: missing (a folder of images, or an .lmdb made by scripts/create_lmdb.py)')
    return str(root)


def _positive_int(value, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise OptionError(f'{key}: expected a positive integer, got {value!r}')
    return value


def _flag(value, key: str) -> bool:
    if not isinstance(value, bool):
        raise OptionError(f'{key}: expected true or false, got {value!r}')
    return value


def _zoom_range(value) -> tuple:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise OptionError(f'zoom_range: expected [low, high], got {value!r}') from None
    if not 0 < low <= high:
        raise OptionError(f'zoom_range: expected 0 < low <= high, got {value!r}')
    return low, high
