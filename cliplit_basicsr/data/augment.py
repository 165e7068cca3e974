"""The authors' training augmentation: one random draw applied identically to several images.

CLIP-LIT augments every training image with (in this order) a horizontal flip, a vertical flip and a
transpose (p = 0.5 each), a zoom about the centre with per-axis factors uniform in a range (p = 0.3),
and a rotation uniform in +-90 degrees (p = 0.3). Zoom and rotation are ``cv2.warpAffine`` with
bilinear interpolation and ``BORDER_REFLECT`` borders, keeping the image size, exactly as the authors'
``dataloader_images.py`` / ``dataloader_prompt_margin.py`` do. Two differences that change no
distribution: one numpy stream draws everything (the authors mix Python's ``random`` and numpy), and
the warps run on float32 images (the authors' run on uint8 and round to 1/255). The ranking tuple
(I_b, I_t, I_{t-1}, I_w) shares one draw, so a draw is an object (`AugmentParams`) that can be taken
in a data-loader worker, collated into a batch, and re-applied to other images in the model.
"""

from dataclasses import asdict, dataclass
from typing import Mapping, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

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

    @classmethod
    def from_batch(cls, batch: Mapping[str, torch.Tensor], index: int) -> 'AugmentParams':
        """The draw of sample ``index`` in a collated batch of `as_dict` outputs."""
        return cls(**{name: type(default)(batch[name][index].item()) for name, default in asdict(cls()).items()})


def draw_augmentation(zoom_range: Tuple[float, float], rng: RandomSource = None) -> AugmentParams:
    """Draw one augmentation with the authors' probabilities.

    ``rng`` is a numpy ``Generator``/``RandomState``; None uses numpy's global state, which BasicSR seeds
    (``set_random_seed`` in the main process, ``worker_init_fn`` in data-loader workers). Every call
    consumes the same number of random values, whatever is drawn.
    """
    source = np.random if rng is None else rng
    hflip, vflip, transpose, rotate, zoom = (
        source.random(5) < [FLIP_PROB, FLIP_PROB, FLIP_PROB, ROTATE_PROB, ZOOM_PROB]
    ).tolist()
    angle = float(source.uniform(-MAX_ANGLE, MAX_ANGLE))
    zoom_x, zoom_y = source.uniform(zoom_range[0], zoom_range[1], 2).tolist()
    return AugmentParams(hflip, vflip, transpose, zoom, zoom_x, zoom_y, rotate, angle)


def _zoom(img: np.ndarray, zoom_x: float, zoom_y: float) -> np.ndarray:
    """Scale about the point (w/2 + 0.5, h/2 + 0.5) (the authors' centre), keeping the size."""
    h, w = img.shape[:2]
    centre_x, centre_y = w / 2 + 0.5, h / 2 + 0.5
    matrix = np.array([[zoom_x, 0, centre_x * (1 - zoom_x)], [0, zoom_y, centre_y * (1 - zoom_y)]])
    return cv2.warpAffine(img, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _rotate(img: np.ndarray, angle: float) -> np.ndarray:
    """Rotate about (w // 2, h // 2), keeping the size, reflecting at the borders."""
    h, w = img.shape[:2]
    matrix = cv2.getRotationMatrix2D((w // 2, h // 2), angle, 1.0)
    return cv2.warpAffine(img, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _apply_one(img: np.ndarray, params: AugmentParams) -> np.ndarray:
    ndim = img.ndim
    if params.hflip:
        img = img[:, ::-1]
    if params.vflip:
        img = img[::-1]
    if params.transpose:
        img = img.transpose(1, 0, *range(2, img.ndim))
    img = np.ascontiguousarray(img)
    if params.zoom:
        img = _zoom(img, params.zoom_x, params.zoom_y)
    if params.rotate:
        img = _rotate(img, params.angle)
    return img.reshape(img.shape[:2] + (1,)) if img.ndim < ndim else img  # cv2 drops a single channel axis


def apply_augmentation(images: Sequence[np.ndarray], params: AugmentParams) -> list:
    """Apply one draw to each HWC (or HW) image; dtype and value range are kept."""
    return [_apply_one(img, params) for img in images]


def augment(images: Sequence[np.ndarray], zoom_range: Tuple[float, float], rng: RandomSource = None) -> list:
    """Draw one augmentation and apply it to all ``images`` (the authors' ``preprocess_aug``)."""
    return apply_augmentation(images, draw_augmentation(zoom_range, rng))


def augment_batch(images: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Apply a batch's collated draws (its ``aug`` entry) to a (B, C, H, W) tensor, draw ``b`` to sample ``b``.

    The warps run with OpenCV on the CPU, the same code as the data set's, so a backlit image and its
    enhanced versions are transformed identically; the result keeps ``images``' device and dtype.
    """
    hwc = images.detach().permute(0, 2, 3, 1).float().cpu().numpy()
    out = [_apply_one(img, AugmentParams.from_batch(params, b)) for b, img in enumerate(hwc)]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(device=images.device, dtype=images.dtype)
