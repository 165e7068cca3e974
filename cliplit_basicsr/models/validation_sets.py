"""Validation sets decoded once per training run and kept in host memory as 8-bit tensors.

A training run validates every ``val.val_freq`` iterations (14 times in the authors' run) on full-resolution
images, and BasicSR's validation loader decodes every image again each time, in the training process. The
first validation of a set keeps what the loader gave, as uint8 where the values are whole 8-bit levels
(exactly: they are restored bit for bit), and later validations read those. A set that would take more than
``HOST_SHARE`` of the free memory is not kept (logged), and is read by its loader every time.
"""

import os
from typing import Dict, Iterable, Iterator, List, Optional

import torch
from basicsr.utils import get_root_logger

HOST_SHARE = 0.25
IMAGE_KEYS = ('lq', 'gt')


def free_memory_bytes() -> int:
    """The host's free physical memory."""
    return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')


def _pack(batch: dict) -> dict:
    """``batch`` with its images as uint8 where that is exact (8-bit sources), as given otherwise."""
    packed = dict(batch)
    for key in IMAGE_KEYS:
        image = batch.get(key)
        if torch.is_tensor(image) and image.is_floating_point():
            levels = torch.round(image * 255).to(torch.uint8)
            if torch.equal(levels.float() / 255, image):
                packed[key] = levels
    return packed


def _unpack(packed: dict) -> dict:
    batch = dict(packed)
    for key in IMAGE_KEYS:
        if torch.is_tensor(batch.get(key)) and batch[key].dtype == torch.uint8:
            batch[key] = batch[key].float() / 255
    return batch


def _bytes(batch: dict) -> int:
    return sum(v.numel() * v.element_size() for v in batch.values() if torch.is_tensor(v))


class DecodedValidationSets:
    """The validation sets of a run, each kept after its first pass when it fits (see the module docstring)."""

    def __init__(self) -> None:
        self._kept: Dict[str, List[dict]] = {}

    def batches(self, name: str, loader: Iterable[dict]) -> Iterator[dict]:
        """The batches of validation set ``name``: from memory once kept, else from ``loader`` (keeping them)."""
        if name in self._kept:
            yield from (_unpack(packed) for packed in self._kept[name])
            return
        kept: Optional[List[dict]] = []
        size, budget = 0, HOST_SHARE * free_memory_bytes()
        for batch in loader:
            yield batch
            if kept is not None:
                kept.append(_pack(batch))
                size += _bytes(kept[-1])
                if size > budget:
                    get_root_logger().info(
                        f'Validation set {name} is read from disk at each validation: decoded, it would take more '
                        f'than {budget / 2**30:.1f} GiB ({HOST_SHARE:.0%} of the free memory)'
                    )
                    kept = None
        if kept is not None:
            self._kept[name] = kept
            get_root_logger().info(
                f'Validation set {name}: {len(kept)} images kept decoded in memory ({size / 2**20:.0f} MB)'
            )
