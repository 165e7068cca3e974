"""``CLIPLITEnhancer``: enhance backlit images with a CLIP-LIT checkpoint, as Real-ESRGAN's ``RealESRGANer``.

Inference is the authors' test script: the reflect-padding network variant, ``clamp(I / L, 0, 1)`` (no
epsilon), integer outputs rounded as torchvision's ``save_image`` does (``x * max + 0.5``, then truncation).
The work is done tile by tile (:mod:`cliplit_basicsr.inference`), reading from and writing into the
caller's arrays, so memory stays bounded whatever the image size.
"""

from typing import Optional, Union

import numpy as np
import torch

from cliplit_basicsr.archs.checkpoint import load_checkpoint, resolve_checkpoint
from cliplit_basicsr.archs.cliplit_arch import CLIPLITNet
from cliplit_basicsr.errors import CLIPLITError
from cliplit_basicsr.inference import PRECISIONS, FastCLIPLIT, Region


class DeviceError(CLIPLITError, ValueError):
    """A device or precision that cannot be used here."""


def resolve_device(device: str = 'auto') -> torch.device:
    """``'auto'`` (CUDA when available), ``'cpu'``, ``'cuda'`` or ``'cuda:N'`` as a usable ``torch.device``."""
    if device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if device != 'cpu' and not (device == 'cuda' or (device.startswith('cuda:') and device[5:].isdigit())):
        raise DeviceError(f"device '{device}' is unknown (use auto, cpu, cuda or cuda:N)")
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise DeviceError(f"device '{device}': CUDA is not available on this machine")
    return torch.device(device)


class CLIPLITEnhancer:
    """Enhance backlit images with the CLIP-LIT light-map network.

    Args:
        ckpt: ``'official'`` (the authors' released model, packaged) or the path of a checkpoint (plain,
            ``module.``-prefixed or BasicSR ``params``/``params_ema`` state dict).
        device: ``'auto'``, ``'cpu'``, ``'cuda'`` or ``'cuda:N'``.
        precision: ``'fp32'`` (exact; default), ``'bf16'`` (CPUs with AMX, CUDA) or ``'fp16'`` (CUDA).
        tile: core tile size in pixels (exact whatever the size); ``None``: 256 on CPU, 1024 on CUDA; ``0``
            processes whole images at once.
    """

    def __init__(
        self, ckpt: str = 'official', device: str = 'auto', precision: str = 'fp32', tile: Optional[int] = None
    ):
        if precision not in PRECISIONS:
            raise DeviceError(f"precision '{precision}' is unknown (use {', '.join(PRECISIONS)})")
        if tile is not None and tile < 0:
            raise DeviceError(f'tile must be >= 0 (0 = whole image), got {tile}')
        self.device = resolve_device(device)
        self.net = load_checkpoint(CLIPLITNet(padding='reflect'), resolve_checkpoint(ckpt)).eval()
        self.engine = FastCLIPLIT(self.net, self.device, precision, tile)

    def enhance(self, image: Union[np.ndarray, torch.Tensor]) -> Union[np.ndarray, torch.Tensor]:
        """Enhance one image.

        * numpy, as OpenCV reads it: HxW gray, HxWx3 BGR or HxWx4 BGRA, uint8 or uint16. Returns BGR (BGRA
          with the input's alpha unchanged) of the same dtype; gray inputs are enhanced as RGB.
        * torch: RGB float in [0, 1], (3,H,W) or (B,3,H,W), on any device. Returns the same shape, float32,
          on the input's device, not quantised.
        """
        if isinstance(image, torch.Tensor):
            return self._enhance_tensor(image)
        if isinstance(image, np.ndarray):
            return self._enhance_array(image)
        raise TypeError(f'enhance() takes a numpy array or a torch tensor, got {type(image).__name__}')

    def _enhance_tensor(self, image: torch.Tensor) -> torch.Tensor:
        if image.dim() not in (3, 4) or image.shape[-3] != 3 or not image.is_floating_point():
            raise ValueError(
                f'expected an RGB float tensor (3,H,W) or (B,3,H,W), got {image.dtype} {tuple(image.shape)}'
            )
        batch = image if image.dim() == 4 else image[None]
        out = torch.empty(batch.shape, dtype=torch.float32, device=image.device)

        def read(region: Region) -> torch.Tensor:
            y0, y1, x0, x1 = region
            return batch[:, :, y0:y1, x0:x1].to(self.device, torch.float32)

        def write(region: Region, enhanced: torch.Tensor) -> None:
            y0, y1, x0, x1 = region
            out[:, :, y0:y1, x0:x1] = enhanced

        self.engine.run(read, write, *batch.shape[:1], *batch.shape[2:])
        return out if image.dim() == 4 else out[0]

    def _enhance_array(self, image: np.ndarray) -> np.ndarray:
        if image.dtype not in (np.uint8, np.uint16) or not (
            image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))
        ):
            raise ValueError(f'expected an 8- or 16-bit gray, BGR or BGRA image, got {image.dtype} {image.shape}')
        peak = float(np.iinfo(image.dtype).max)
        bgr = image[:, :, None] if image.ndim == 2 else image[:, :, :3]
        out = np.empty(image.shape[:2] + (4 if image.ndim == 3 and image.shape[2] == 4 else 3,), image.dtype)
        if out.shape[2] == 4:
            out[:, :, 3] = image[:, :, 3]

        def read(region: Region) -> torch.Tensor:
            y0, y1, x0, x1 = region
            rgb = np.ascontiguousarray(bgr[y0:y1, x0:x1, ::-1])
            pixels = torch.from_numpy(rgb.astype(np.int32) if image.dtype == np.uint16 else rgb)
            pixels = pixels.to(self.device).permute(2, 0, 1)[None].float().div_(peak)
            return pixels.expand(1, 3, -1, -1)  # gray: one channel seen three times

        def write(region: Region, enhanced: torch.Tensor) -> None:
            y0, y1, x0, x1 = region
            rounded = enhanced[0].permute(1, 2, 0).mul(peak).add_(0.5).clamp_(0, peak).to(torch.int32)
            out[y0:y1, x0:x1, :3] = rounded.cpu().numpy()[:, :, ::-1]

        self.engine.run(read, write, 1, image.shape[0], image.shape[1])
        return out
