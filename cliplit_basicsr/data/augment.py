"""The authors' training augmentation, drawn per image and applied to whole batches in torch on the device.

CLIP-LIT augments every training image with (in this order) a horizontal flip, a vertical flip and a
transpose (p = 0.5 each), a zoom about the centre with per-axis factors uniform in a range (p = 0.3),
and a rotation uniform in +-90 degrees (p = 0.3), as the authors' ``dataloader_images.py`` /
``dataloader_prompt_margin.py`` do with ``cv2.warpAffine`` (bilinear, ``BORDER_REFLECT``, same size).

A draw (`AugmentParams`) is made per image where the batch is indexed, with numpy (BasicSR seeds its
global state); collated, the draws of a batch are a few small tensors that travel with the batch's indices,
so the host knows which images are exact flips of their source (the feature cache's keys) without reading
anything back from the device. :func:`augment_batch` then applies a batch's draws in one go: flips and the
transpose by indexing, zoom and rotation each as one ``grid_sample`` of the images drawn for it. The ranking tuple
(I_b, I_w, I_t, I_{t-1}) shares one draw per position: it is augmented as one batch with its draws repeated.

Differences that change no distribution (``docs/differences.md``): one numpy stream draws everything (the
authors mix Python's ``random`` and numpy); the warps interpolate in float32 with exact coordinates, where
the authors' warp uint8 images with OpenCV's 1/32-pixel fixed-point weights and round the result to 1/255.
"""

import math
from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from cliplit_basicsr.transfer import to_device

FLIP_PROB = 0.5
ZOOM_PROB = 0.3
ROTATE_PROB = 0.3
MAX_ANGLE = 90.0

RandomSource = Union[np.random.Generator, np.random.RandomState, None]


@dataclass(frozen=True)
class AugmentParams:
    """One augmentation draw. ``zoom_x`` scales columns, ``zoom_y`` rows; ``angle`` is in degrees,
    counter-clockwise. Zoom and rotation take effect only where their flags are set."""

    hflip: bool = False
    vflip: bool = False
    transpose: bool = False
    zoom: bool = False
    zoom_x: float = 1.0
    zoom_y: float = 1.0
    rotate: bool = False
    angle: float = 0.0

    def as_dict(self) -> dict:
        """Plain values that torch's ``default_collate`` turns into one tensor per field."""
        return asdict(self)


def draw_augmentation(zoom_range: Tuple[float, float], rng: RandomSource = None) -> AugmentParams:
    """Draw one augmentation with the authors' probabilities.

    ``rng`` is a numpy ``Generator``/``RandomState``; None uses numpy's global state, which BasicSR seeds
    (``set_random_seed``, ``manual_seed`` + rank). Every call consumes the same number of random values,
    whatever is drawn.
    """
    source = np.random if rng is None else rng
    hflip, vflip, transpose, rotate, zoom = (
        source.random(5) < [FLIP_PROB, FLIP_PROB, FLIP_PROB, ROTATE_PROB, ZOOM_PROB]
    ).tolist()
    angle = float(source.uniform(-MAX_ANGLE, MAX_ANGLE))
    zoom_x, zoom_y = source.uniform(zoom_range[0], zoom_range[1], 2).tolist()
    return AugmentParams(hflip, vflip, transpose, zoom, zoom_x, zoom_y, rotate, angle)


def repeat_draws(params: Mapping[str, torch.Tensor], times: int) -> dict:
    """A batch's collated draws repeated ``times`` over: the draws of ``times`` image sets of that batch
    concatenated along the batch, each set under the batch's draws."""
    return {name: value.repeat(times) for name, value in params.items()}


def _normalised_theta(inverse: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``affine_grid``'s theta (B, 2, 3) for inverse maps given in pixel coordinates (output -> source pixel,
    OpenCV's convention: pixel centres at integers), with ``align_corners=False`` (x_n = (2x + 1) / W - 1)."""
    scale = torch.tensor([2.0 / width, 2.0 / height], dtype=torch.float64)
    offset = torch.tensor([1.0 / width - 1, 1.0 / height - 1], dtype=torch.float64)
    linear = inverse[:, :, :2] * scale[None, :, None] / scale[None, None, :]  # A M A^-1
    shift = inverse[:, :, 2] * scale + offset - (linear @ offset[:, None])[:, :, 0]
    return torch.cat([linear, shift[:, :, None]], dim=2)


def _warp(images: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """``cv2.warpAffine(image, M, (w, h), INTER_LINEAR, BORDER_REFLECT)`` of each image, given each ``M``'s
    inverse (B, 2, 3) on the host (output pixel -> source pixel).

    ``grid_sample`` with ``align_corners=False`` places pixel centres as OpenCV does, and its reflection
    padding (reflecting coordinates about the outer pixel edges) reads the same neighbours, with the same
    weights, as OpenCV's ``BORDER_REFLECT`` (edge pixels repeated: ``fedcba|abcdef``).
    """
    theta = _normalised_theta(inverse, images.shape[-2], images.shape[-1]).to(images.dtype)
    grid = F.affine_grid(to_device(theta, images.device), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode='bilinear', padding_mode='reflection', align_corners=False)


def _zoom_inverse(zoom_x: torch.Tensor, zoom_y: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of the authors' zoom ``diag(zx, zy)`` about (w/2 + 0.5, h/2 + 0.5): (B, 2, 3)."""
    centre_x, centre_y = width / 2 + 0.5, height / 2 + 0.5
    zero = torch.zeros_like(zoom_x)
    return torch.stack(
        [
            torch.stack([1 / zoom_x, zero, centre_x - centre_x / zoom_x], 1),
            torch.stack([zero, 1 / zoom_y, centre_y - centre_y / zoom_y], 1),
        ],
        1,
    )


def _rotation_inverse(angle: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of ``cv2.getRotationMatrix2D((w // 2, h // 2), angle, 1)``: the rotation by -angle about
    the same centre, (B, 2, 3)."""
    centre_x, centre_y = float(width // 2), float(height // 2)
    radians = angle * (math.pi / 180)
    cos, sin = torch.cos(radians), torch.sin(radians)
    return torch.stack(
        [
            torch.stack([cos, -sin, centre_x - cos * centre_x + sin * centre_y], 1),
            torch.stack([sin, cos, centre_y - sin * centre_x - cos * centre_y], 1),
        ],
        1,
    )


def _apply(images: torch.Tensor, flags: torch.Tensor, transform: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
    """Replace, in place, the ``images`` whose host ``flags`` are set by ``transform(those images, their batch
    indices)``: only they are read and written, and their number is known without a device read."""
    chosen = flags.nonzero().flatten()
    if len(chosen):
        on_device = to_device(chosen, images.device)
        images.index_copy_(0, on_device, transform(images.index_select(0, on_device), chosen))


def augment_batch(images: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Apply a batch's collated draws (its ``aug`` entry) to square images (B, C, S, S), draw ``b`` to image ``b``.

    ``images``: float in [0, 1], on any device; ``params``: the collated draws, on the host (as the loader
    yields them), so that which images each transform touches is known without reading the device. Only
    those images are transformed; index and warp parameters go to the device without a synchronisation
    (pinned, non-blocking, on a GPU). Returns float32 on ``images``' device, leaving ``images`` as they
    are. Images whose draw has no zoom or rotation are exact flips/transposes of their input.
    """
    return augment_batch_(images.to(torch.float32, copy=True), params)


def augment_batch_(images: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """:func:`augment_batch` written into ``images`` (float32), which it returns: for a batch the caller has
    just gathered, which saves copying it once more."""
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f'augment_batch: square images expected, got {tuple(images.shape)}')
    if images.dtype != torch.float32:
        raise ValueError(f'augment_batch_: float32 images expected, got {images.dtype}')
    size = images.shape[-1]
    draws = {name: value.cpu() for name, value in params.items()}
    _apply(images, draws['hflip'], lambda chosen, _: chosen.flip(-1))
    _apply(images, draws['vflip'], lambda chosen, _: chosen.flip(-2))
    _apply(images, draws['transpose'], lambda chosen, _: chosen.transpose(-1, -2))
    zoom_x, zoom_y, angle = (draws[name].to(torch.float64) for name in ('zoom_x', 'zoom_y', 'angle'))
    _apply(images, draws['zoom'], lambda chosen, i: _warp(chosen, _zoom_inverse(zoom_x[i], zoom_y[i], size, size)))
    _apply(images, draws['rotate'], lambda chosen, i: _warp(chosen, _rotation_inverse(angle[i], size, size)))
    return images
