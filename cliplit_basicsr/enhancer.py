"""``CLIPLITEnhancer``: enhance backlit images with a CLIP-LIT checkpoint, as Real-ESRGAN's ``RealESRGANer``.

Inference is the authors' test script: the reflect-padding network variant, ``clamp(I / L, 0, 1)`` (no
epsilon), integer outputs rounded as torchvision's ``save_image`` does (``x * max + 0.5``, then truncation).
The engine (:mod:`cliplit_basicsr.engine`) reads from and writes into the caller's arrays region by region,
so memory stays bounded whatever the image size.
"""

from typing import Callable, Optional, Tuple, Union

import numpy as np
import torch

from cliplit_basicsr.checkpoint import load_checkpoint, resolve_checkpoint
from cliplit_basicsr.choices import AUTO
from cliplit_basicsr.engine import ENGINES, PRECISIONS, Region, build_engine, light_to_output, quantise, run_on_tensor
from cliplit_basicsr.errors import CLIPLITError
from cliplit_basicsr.network import CLIPLITNet

Image = Union[np.ndarray, torch.Tensor]
Progress = Callable[[float], None]
ROW_BAND = 256  # rows of an image that apply_light_map computes at once: bounded memory at any size


class DeviceError(CLIPLITError, ValueError):
    """A device, precision or engine that cannot be used here."""


def resolve_device(device: str = AUTO) -> torch.device:
    """``'auto'`` (CUDA when available), ``'cpu'``, ``'cuda'`` or ``'cuda:N'`` as a usable ``torch.device``."""
    if device == AUTO:
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if device != 'cpu' and not (device == 'cuda' or (device.startswith('cuda:') and device[5:].isdigit())):
        raise DeviceError(f"device '{device}' is unknown (use auto, cpu, cuda or cuda:N)")
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise DeviceError(f"device '{device}': CUDA is not available on this machine")
    return torch.device(device)


def _check_array(image: np.ndarray) -> None:
    if image.dtype not in (np.uint8, np.uint16) or not (
        image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))
    ):
        raise ValueError(f'expected an 8- or 16-bit gray, BGR or BGRA image, got {image.dtype} {image.shape}')


def _output_like(image: np.ndarray) -> np.ndarray:
    """An empty BGR (BGRA with ``image``'s alpha) array of ``image``'s size and dtype."""
    out = np.empty(image.shape[:2] + (4 if image.ndim == 3 and image.shape[2] == 4 else 3,), image.dtype)
    if out.shape[2] == 4:
        out[:, :, 3] = image[:, :, 3]
    return out


def _read_region(image: np.ndarray, region: Region, device: torch.device) -> torch.Tensor:
    """``image`` (OpenCV layout) over ``region`` as the engine reads it: RGB float32 (1,3,h,w) in [0, 1]."""
    y0, y1, x0, x1 = region
    bgr = image[:, :, None] if image.ndim == 2 else image[:, :, :3]
    rgb = np.ascontiguousarray(bgr[y0:y1, x0:x1, ::-1])
    pixels = torch.from_numpy(rgb.astype(np.int32) if image.dtype == np.uint16 else rgb)
    pixels = pixels.to(device).permute(2, 0, 1)[None].float().div_(float(np.iinfo(image.dtype).max))
    return pixels.expand(1, 3, -1, -1)  # gray: one channel seen three times


def _write_region(out: np.ndarray, region: Region, enhanced: torch.Tensor) -> None:
    """Round ``enhanced`` (1,3,h,w) in [0, 1] into ``out`` (BGR or BGRA) over ``region``, as the outputs are."""
    y0, y1, x0, x1 = region
    values = quantise(enhanced[0].permute(1, 2, 0), float(np.iinfo(out.dtype).max))
    out[y0:y1, x0:x1, :3] = values.cpu().numpy()[:, :, ::-1]


def apply_light_map(image: np.ndarray, light: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """``clamp(I / L^strength, 0, 1)`` of ``image`` given its light map: what :meth:`CLIPLITEnhancer.enhance`
    returns for ``image`` at ``strength`` when ``light`` is the map it returned (the same reading, formula and
    rounding), without running the network.

    Args:
        image: HxW gray, HxWx3 BGR or HxWx4 BGRA, uint8 or uint16, as ``enhance`` takes it.
        light: the light map ``L`` of ``image``, float32 HxW.
        strength: the exponent ``s`` of ``L``.

    Returns BGR (BGRA with the input's alpha) of ``image``'s dtype.
    """
    _check_array(image)
    if light.shape != image.shape[:2]:
        raise ValueError(f'the light map is {light.shape}, the image {image.shape[:2]}')
    out = _output_like(image)
    height, width = image.shape[:2]
    with torch.inference_mode():
        for y0 in range(0, height, ROW_BAND):
            region = (y0, min(y0 + ROW_BAND, height), 0, width)
            light_rows = torch.from_numpy(light[region[0] : region[1]])[None, None]
            _write_region(
                out, region, light_to_output(_read_region(image, region, torch.device('cpu')), light_rows, strength)
            )
    return out


class CLIPLITEnhancer:
    """Enhance backlit images with the CLIP-LIT light-map network.

    Args:
        ckpt: ``'official'`` (the authors' released model, packaged) or the path of a checkpoint (plain,
            ``module.``-prefixed or BasicSR ``params``/``params_ema`` state dict).
        device: ``'auto'``, ``'cpu'``, ``'cuda'`` or ``'cuda:N'``.
        precision: ``'fp32'`` (exact; default), ``'bf16'`` or ``'fp16'``.
        tile: the tiled engine's core tile size in pixels (exact whatever the size); ``None``: the device's
            default; ``0``: whole images as one tile.
        engine: ``'tiled'`` (default: exact, bounded memory, fast) or ``'reference'`` (the network's own
            ``forward`` on the whole image).
    """

    def __init__(
        self,
        ckpt: str = 'official',
        device: str = AUTO,
        precision: str = 'fp32',
        tile: Optional[int] = None,
        engine: str = 'tiled',
    ):
        if precision not in PRECISIONS:
            raise DeviceError(f"precision '{precision}' is unknown (use {', '.join(PRECISIONS)})")
        if engine not in ENGINES:
            raise DeviceError(f"engine '{engine}' is unknown (use {', '.join(ENGINES)})")
        if tile is not None and tile < 0:
            raise DeviceError(f'tile must be >= 0 (0 = whole image), got {tile}')
        self.device = resolve_device(device)
        self.net = load_checkpoint(CLIPLITNet(padding='reflect'), resolve_checkpoint(ckpt)).eval()
        self.engine = build_engine(self.net, self.device, precision, tile, engine)

    def enhance(
        self, image: Image, strength: float = 1.0, return_light_map: bool = False, progress: Optional[Progress] = None
    ) -> Union[Image, Tuple[Image, Image]]:
        """Enhance one image: ``clamp(I / L^strength, 0, 1)`` (strength 1: the authors' output; 0: the input).

        * numpy, as OpenCV reads it: HxW gray, HxWx3 BGR or HxWx4 BGRA, uint8 or uint16. Returns BGR (BGRA
          with the input's alpha unchanged) of the same dtype; gray inputs are enhanced as RGB.
        * torch: RGB float in [0, 1], (3,H,W) or (B,3,H,W), on any device. Returns the same shape, float32,
          on the input's device, not quantised.

        With ``return_light_map``, also the light map ``L``: float32, HxW for numpy inputs, (1,H,W) or
        (B,1,H,W) for tensors. ``progress`` (numpy inputs) is called with the fraction of the work done, after
        each tile of each of the engine's passes.
        """
        if isinstance(image, torch.Tensor):
            output, light = self._enhance_tensor(image, strength, return_light_map)
        elif isinstance(image, np.ndarray):
            output, light = self._enhance_array(image, strength, return_light_map, progress)
        else:
            raise TypeError(f'enhance() takes a numpy array or a torch tensor, got {type(image).__name__}')
        return (output, light) if return_light_map else output

    def _enhance_tensor(
        self, image: torch.Tensor, strength: float, keep_light_map: bool
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        if image.dim() not in (3, 4) or image.shape[-3] != 3 or not image.is_floating_point():
            raise ValueError(
                f'expected an RGB float tensor (3,H,W) or (B,3,H,W), got {image.dtype} {tuple(image.shape)}'
            )
        batch = image if image.dim() == 4 else image[None]
        out, light_map = run_on_tensor(self.engine, batch, strength, keep_light_map)
        if image.dim() == 3:
            out, light_map = out[0], None if light_map is None else light_map[0]
        return out, light_map

    def _enhance_array(
        self, image: np.ndarray, strength: float, keep_light_map: bool, progress: Optional[Progress] = None
    ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        _check_array(image)
        out = _output_like(image)
        light_map = np.empty(image.shape[:2], np.float32) if keep_light_map else None

        def write(region: Region, enhanced: torch.Tensor, light: torch.Tensor) -> None:
            y0, y1, x0, x1 = region
            _write_region(out, region, enhanced)
            if light_map is not None:
                light_map[y0:y1, x0:x1] = light[0, 0].cpu().numpy()

        read = lambda region: _read_region(image, region, self.device)  # noqa: E731
        self.engine.run(read, write, 1, image.shape[0], image.shape[1], strength, progress)
        return out, light_map
