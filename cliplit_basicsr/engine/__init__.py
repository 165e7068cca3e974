"""Inference engines: what turns a CLIP-LIT network and an image into ``clamp(I / L, 0, 1)``.

Two engines share one interface (:class:`Engine`), so the enhancer API, the command line and the BasicSR
test model can take either:

* ``tiled`` (default): :class:`~.tiled.TiledEngine`, the network's layers run tile by tile, exact (the
  whole image's pyramid pooling included), in bounded memory and fast;
* ``reference``: :class:`~.reference.ReferenceEngine`, the network's own ``forward`` on the whole image.
"""

from typing import Callable, Optional, Protocol, Tuple

import torch
from torch import nn

from cliplit_basicsr.choices import DEFAULT_TILES, PRECISIONS

from .geometry import Region
from .maths import light_to_output, quantise
from .reference import ReferenceEngine
from .tiled import TiledEngine

ENGINES = {'tiled': TiledEngine, 'reference': ReferenceEngine}  # the names of choices.ENGINES
Reader = Callable[[Region], torch.Tensor]
Writer = Callable[[Region, torch.Tensor, torch.Tensor], None]

__all__ = [
    'DEFAULT_TILES',
    'ENGINES',
    'PRECISIONS',
    'Engine',
    'ReferenceEngine',
    'Region',
    'TiledEngine',
    'build_engine',
    'enhance_tensor',
    'light_to_output',
    'quantise',
    'run_on_tensor',
]


class Engine(Protocol):
    """Enhances an image given by region access (a caller's arrays, tensors or files) on ``device``."""

    device: torch.device

    def run(
        self,
        read: Reader,
        write: Writer,
        batch: int,
        height: int,
        width: int,
        strength: float = 1.0,
        progress: Optional[Callable[[float], None]] = None,
    ) -> None:
        """Enhance an image of ``batch`` x 3 x ``height`` x ``width``.

        ``read(region)`` returns the input over ``region`` (``(y0, y1, x0, x1)``) as float32 (B,3,h,w) in
        [0,1] on the engine's device; ``write(region, enhanced, light)`` receives ``clamp(I / L^strength, 0,
        1)`` and the light map ``L`` (B,1,h,w), float32, over regions that partition the image, each once.
        ``progress``, if given, is called with the fraction of the work done, ending with 1.0.
        """


def build_engine(
    net: nn.Module, device: torch.device, precision: str = 'fp32', tile: Optional[int] = None, engine: str = 'tiled'
) -> Engine:
    """The ``engine`` (``'tiled'`` or ``'reference'``) for ``net`` on ``device`` in ``precision``; ``tile``
    is the tiled engine's core tile size (``None``: the device's default, 0: one tile)."""
    if engine not in ENGINES:
        raise ValueError(f"engine '{engine}' is unknown (use {', '.join(ENGINES)})")
    return ENGINES[engine](net, device, precision, tile)


def run_on_tensor(
    engine: Engine, img: torch.Tensor, strength: float = 1.0, keep_light_map: bool = False
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``engine`` on ``img`` (B,3,H,W) in [0,1] on any device: the output, float32 on ``img.device``, and
    with ``keep_light_map`` the light map (B,1,H,W) too (else None: a whole-image plane is allocated only
    when asked for). Regions travel to the engine's device as it reads them, so a CPU image on a GPU
    engine is never copied whole."""
    out = torch.empty(img.shape, dtype=torch.float32, device=img.device)
    light_map = None
    if keep_light_map:
        light_map = torch.empty((img.shape[0], 1) + img.shape[2:], dtype=torch.float32, device=img.device)

    def read(region: Region) -> torch.Tensor:
        y0, y1, x0, x1 = region
        return img[:, :, y0:y1, x0:x1].to(engine.device, torch.float32)

    def write(region: Region, enhanced: torch.Tensor, light: torch.Tensor) -> None:
        y0, y1, x0, x1 = region
        out[:, :, y0:y1, x0:x1] = enhanced
        if light_map is not None:
            light_map[:, :, y0:y1, x0:x1] = light

    engine.run(read, write, img.shape[0], img.shape[2], img.shape[3], strength)
    return out, light_map


def enhance_tensor(
    net: nn.Module,
    img: torch.Tensor,
    tile: Optional[int] = None,
    precision: str = 'fp32',
    engine: str = 'tiled',
    strength: float = 1.0,
) -> torch.Tensor:
    """``clamp(img / net(img)^strength, 0, 1)`` of ``img`` (B,3,H,W) in [0,1], on ``img.device`` with ``net``'s
    current weights and padding variant (the tiled engine: exact, memory bounded whatever the size). Use it
    for validation and test of a model being trained."""
    return run_on_tensor(build_engine(net, img.device, precision, tile, engine), img, strength)[0]
