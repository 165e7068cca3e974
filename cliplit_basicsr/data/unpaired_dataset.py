"""Unpaired backlit / well-lit training images for CLIP-LIT (docs/method.md, Data)."""

from typing import Dict, Sequence

import numpy as np
import torch
from basicsr.utils import get_root_logger
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from cliplit_basicsr.data.augment import AugmentParams, draw_augmentation
from cliplit_basicsr.data.image_source import ImageSource
from cliplit_basicsr.data.resident import ResidentImages
from cliplit_basicsr.errors import OptionError, require_flag, require_positive_int

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
    }
)
RETIRED_KEYS = {'cache_resized': 'every image is decoded once and kept resident'}


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

    The length is the longer list's, the shorter one cycled to that length, as the authors pad their lists.
    Item ``i`` pairs backlit ``i % n_backlit`` with well-lit ``i % n_welllit`` until :meth:`redraw_pairing`
    shuffles both padded lists independently, as the authors' ranking loader does each time it is built
    (every prompt-refinement phase).

    The images are decoded once, resized, and kept on the training device (:meth:`resident`); an item holds
    no pixels, only what selects and augments them: ``index`` (backlit), ``backlit_path``, ``welllit_index``
    and ``welllit_path`` (with well-lit images), and ``aug`` (this item's augmentation draw,
    `AugmentParams.as_dict`; identity draws when ``augment`` is off). The training model gathers a batch's
    images and applies its draws on the device (:func:`~cliplit_basicsr.data.augment.augment_batch`), the
    backlit and well-lit image of an item (and the enhanced versions of the backlit one) under one draw.
    """

    def __init__(self, opt: dict) -> None:
        super().__init__()
        for key in sorted(set(opt) & set(RETIRED_KEYS)):
            get_root_logger().warning(f'{type(self).__name__}: option {key} is no longer needed ({RETIRED_KEYS[key]})')
        unknown = sorted(set(opt) - _BASICSR_KEYS - _OWN_KEYS - set(RETIRED_KEYS))
        if unknown:
            raise OptionError(
                f'{type(self).__name__}: unknown option(s) {", ".join(unknown)} (known: {", ".join(sorted(_OWN_KEYS))})'
            )
        self.image_size = require_positive_int(opt.get('image_size'), 'image_size')
        self.use_welllit = require_flag(opt.get('use_welllit', True), 'use_welllit')
        self.augment = require_flag(opt.get('augment', True), 'augment')
        self.zoom_range = _zoom_range(opt.get('zoom_range')) if self.augment else None
        io_backend = opt.get('io_backend', {'type': 'disk'})
        if not isinstance(io_backend, dict):
            raise OptionError(f'io_backend: expected a mapping such as {{type: disk}}, got {io_backend!r}')
        self.backlit = ImageSource(_root(opt, 'dataroot_backlit'), io_backend, 'dataroot_backlit')
        self.welllit = (
            ImageSource(_root(opt, 'dataroot_welllit'), io_backend, 'dataroot_welllit') if self.use_welllit else None
        )
        self.pairing = self._cycled()  # (2, len): backlit and well-lit index of each item
        self._resident: Dict[str, ResidentImages] = {}

    def _cycled(self) -> torch.Tensor:
        """Both lists cycled to the dataset's length, in order: (2, len) image indices."""
        items = torch.arange(len(self))
        return torch.stack([items % len(self.backlit), items % (len(self.welllit) if self.use_welllit else 1)])

    def redraw_pairing(self, seed: Sequence[int]) -> None:
        """Shuffle the cycled backlit and well-lit lists independently (a numpy generator seeded by ``seed``),
        so that item ``i`` pairs their ``i``-th entries. Call it before the loader's next epoch starts.
        """
        rng = np.random.default_rng(list(seed))
        cycled = self._cycled().numpy()
        self.pairing.copy_(torch.from_numpy(np.stack([rng.permutation(row) for row in cycled])))

    def __len__(self) -> int:
        return max(len(self.backlit), len(self.welllit)) if self.use_welllit else len(self.backlit)

    def resident(self, device: torch.device) -> Dict[str, ResidentImages]:
        """The ``backlit`` (and ``welllit``) images, resized, decoded on the first call and kept for ``device``
        (:class:`ResidentImages`: on it, or in pinned host memory when too large); later calls return them."""
        if not self._resident:
            self._resident['backlit'] = ResidentImages(self.backlit, self.image_size, device, 'dataroot_backlit')
            if self.use_welllit:
                self._resident['welllit'] = ResidentImages(self.welllit, self.image_size, device, 'dataroot_welllit')
        return self._resident

    def draw(self) -> dict:
        """One item's augmentation draw, collatable (`AugmentParams.as_dict`)."""
        return (draw_augmentation(self.zoom_range) if self.augment else AugmentParams()).as_dict()

    def __getitem__(self, item: int) -> dict:
        index, welllit_index = self.pairing[:, item].tolist()
        sample = {'index': index, 'backlit_path': self.backlit.names[index]}
        if self.use_welllit:
            sample['welllit_index'], sample['welllit_path'] = welllit_index, self.welllit.names[welllit_index]
        sample['aug'] = self.draw()
        return sample


def _root(opt: dict, key: str) -> str:
    root = opt.get(key)
    if not root:
        raise OptionError(f'{key}: missing (a folder of images, or an .lmdb made by scripts/create_lmdb.py)')
    return str(root)


def _zoom_range(value) -> tuple:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise OptionError(f'zoom_range: expected [low, high], got {value!r}') from None
    if not 0 < low <= high:
        raise OptionError(f'zoom_range: expected 0 < low <= high, got {value!r}')
    return low, high
