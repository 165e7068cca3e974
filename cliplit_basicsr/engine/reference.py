"""The reference engine: the network's own ``forward`` on the whole image, as the authors' test script runs it.

Plain PyTorch, no tiling: memory grows with the image (about 1 GB per megapixel in fp32). It is what the
tiled engine is tested against, and a way to run any network with the same interface.
"""

import copy

import torch
from torch import nn

from cliplit_basicsr.choices import torch_dtype

from .maths import exact_math, light_to_output


class ReferenceEngine:
    """A copy of ``net`` (either padding variant) on ``device`` in ``precision``; ``net`` is left as it is.

    ``'fp32'`` runs the network as it is; ``'bf16'`` / ``'fp16'`` under autocast, the division in fp32.
    """

    def __init__(self, net: nn.Module, device: torch.device, precision: str = 'fp32', tile=None):
        self.device, self.precision, self.dtype = torch.device(device), precision, torch_dtype(precision)
        self.net = copy.deepcopy(net).to(self.device).eval()

    def run(self, read, write, batch: int, height: int, width: int, strength: float = 1.0, progress=None) -> None:
        """Enhance the whole image at once (:class:`cliplit_basicsr.engine.Engine`); ``progress`` gets 1.0 at
        the end."""
        if height < 2 or width < 2:
            raise ValueError(f'image is {height}x{width}; CLIP-LIT needs at least 2x2 pixels')
        region = (0, height, 0, width)
        with exact_math(self.device, self.precision):
            image = read(region)
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not torch.float32):
                light = self.net(image).float()
            write(region, light_to_output(image, light, strength), light)
        if progress is not None:
            progress(1.0)
