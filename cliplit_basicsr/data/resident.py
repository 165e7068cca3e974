"""Training images decoded once and kept where the step runs: the training device, or pinned host memory.

CLIP-LIT trains on a few hundred images (the paper: 380 backlit, 384 well-lit) for tens of thousands of
iterations, at 512² (network phases) or 256² (prompt phases): decoded and resized once, they take 300 MB and
150 MB as uint8, where decoding, resizing and warping them again in loader workers at every pass kept a GPU
waiting. A batch is then a gather of indices and one batched augmentation on the device
(:func:`~cliplit_basicsr.data.augment.augment_batch`).
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from basicsr.utils import get_root_logger

from cliplit_basicsr.data.image_source import ImageSource
from cliplit_basicsr.transfer import to_device

# Share of the device's free memory a resident set may take; a larger set stays in pinned host memory.
DEVICE_SHARE = 0.25


class ResidentImages:
    """Every image of ``source``, Lanczos-resized to ``size`` (as :meth:`ImageSource.load`), in one tensor.

    8-bit sets are kept as uint8 (N, 3, S, S), exactly their resized pixels; a set with any 16-bit image as
    float32 in [0, 1]. On a CUDA device the set lives in device memory when it takes at most
    ``DEVICE_SHARE`` of the free memory, otherwise in pinned host memory (logged either way).
    """

    def __init__(self, source: ImageSource, size: int, device: torch.device, name: str) -> None:
        self.device = torch.device(device)
        images = _decode_all(source, size)
        if any(img.dtype != np.uint8 for img in images):
            images = [img.astype(np.float32) / 255 if img.dtype == np.uint8 else img for img in images]
        pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        self.images = self._place(pixels)
        self.on_device = not self.images.is_pinned()  # else gathered on the host and sent per batch
        megabytes = pixels.numel() * pixels.element_size() / 2**20
        where = self.images.device if not self.images.is_pinned() else 'pinned host memory (too large for the device)'
        get_root_logger().info(
            f'{name}: {len(pixels)} images at {size}x{size} ({megabytes:.0f} MB, {pixels.dtype}) resident on {where}'
        )

    def _place(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.device.type != 'cuda':
            return pixels.to(self.device)
        free, _ = torch.cuda.mem_get_info(self.device)
        if pixels.numel() * pixels.element_size() <= DEVICE_SHARE * free:
            return pixels.to(self.device)
        return pixels.pin_memory()

    def __len__(self) -> int:
        return len(self.images)

    def take(self, indices: torch.Tensor) -> torch.Tensor:
        """The images at ``indices`` (a host or device tensor) on the training device, float32 in [0, 1]."""
        if self.on_device:
            picked = self.images[to_device(indices, self.images.device)]
        else:
            picked = self.images[indices.cpu()].pin_memory().to(self.device, non_blocking=True)
        return as_float(picked)


def as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 levels or floats as float32 in [0, 1]."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images.float()


def _decode(source: ImageSource, index: int, size: int) -> np.ndarray:
    """Image ``index`` resized: HWC RGB uint8 where its resized pixels are whole 8-bit levels (8-bit
    sources), else float32 in [0, 1]."""
    img = source.load(index, size)
    levels = np.rint(img * 255)
    return levels.astype(np.uint8) if np.array_equal(levels / 255, img) else img


def _decode_all(source: ImageSource, size: int) -> list:
    """Every image of ``source`` (:func:`_decode`), by a few threads (Pillow's decoder and resize release
    the GIL)."""
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda index: _decode(source, index, size), range(len(source))))
