"""How images reach CLIP in CLIP-LIT: batched, differentiable, as the authors' torchvision 0.14 did it.

Each image is squashed as a whole (no crop) to the model's input size with bilinear interpolation,
``align_corners=False`` and **no antialiasing** (tensor resizing did not antialias in torchvision 0.14;
today's default does and moves the losses by percents), then normalised with CLIP's mean and std.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F

from cliplit_basicsr import accel

from .loading import fp16_weights_tower
from .precision import check_amp, clip_autocast

if TYPE_CHECKING:  # open_clip (and timm) load where CLIP is used: enhancement alone never imports them
    import open_clip


def _input_size(model: open_clip.CLIP) -> tuple:
    size = model.visual.image_size
    return tuple(size) if isinstance(size, (tuple, list)) else (size, size)


@functools.lru_cache(maxsize=None)
def _normalisation(device: torch.device, dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    """CLIP's mean and std (1,3,1,1) on ``device``, made once: a step copies nothing from the host."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    mean = torch.tensor(OPENAI_DATASET_MEAN, dtype=dtype, device=device).view(1, 3, 1, 1)
    return mean, torch.tensor(OPENAI_DATASET_STD, dtype=dtype, device=device).view(1, 3, 1, 1)


def preprocess_images(images: torch.Tensor, size: tuple = (224, 224)) -> torch.Tensor:
    """Resize a (B,3,H,W) batch in [0,1] to ``size`` (bilinear, no antialias) and normalise it for CLIP."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f'CLIP input must be a (B,3,H,W) batch, got shape {tuple(images.shape)}')
    x = F.interpolate(images, size=size, mode='bilinear', align_corners=False, antialias=False)
    mean, std = _normalisation(x.device, x.dtype)
    return (x - mean) / std


def _image_tower_forward(
    model: open_clip.CLIP,
    images: torch.Tensor,
    amp: Optional[str],
    forward: Callable[[torch.nn.Module, torch.Tensor], object],
):
    """``forward(image_tower, pixels)`` on the preprocessed ``images`` in the precision ``amp`` asks for:
    under :func:`clip_autocast` (a no-op in fp32), or, for CPU bf16 with the fast paths on, on a bf16 copy
    of the tower (:func:`cliplit_basicsr.accel.bf16_image_tower`)."""
    pixels = preprocess_images(images, _input_size(model))
    bf16_tower = accel.bf16_image_tower(model.visual, images.device, check_amp(amp))
    if bf16_tower is not None:
        return forward(bf16_tower, pixels.to(torch.bfloat16))
    with clip_autocast(images.device, amp):
        return forward(model.visual, pixels)


def image_features(
    model: open_clip.CLIP, images: torch.Tensor, amp: Optional[str] = None, normalize: bool = False
) -> torch.Tensor:
    """CLIP image embeddings (B,D) of a batch in [0,1], in float32; differentiable w.r.t. ``images``.

    ``model.encode_image`` (which is ``model.visual``) on the preprocessed batch; with the fast paths on, the
    same up to float rounding (:func:`cliplit_basicsr.accel.vit_image_features`).
    """

    def forward(visual: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        fast = accel.vit_image_features(visual, pixels, check_amp(amp))
        return visual(pixels) if fast is None else fast

    features = _image_tower_forward(model, images, amp, forward).float()
    return F.normalize(features, dim=-1) if normalize else features


def resnet_feature_maps(
    model: open_clip.CLIP, images: torch.Tensor, amp: Optional[str] = None, precision: str = 'fp32'
) -> List[torch.Tensor]:
    """The five ModifiedResNet maps [stem (after its avg-pool), layer1, ..., layer4] of a batch: float32, or
    float16 from the tower in OpenAI's fp16 weights with ``precision='fp16'`` (:func:`fp16_weights_tower`)."""
    if precision == 'fp16':
        pixels = preprocess_images(images, _input_size(model)).to(torch.float16)
        return _intermediates(fp16_weights_tower(model), pixels)

    return [m.float() for m in _image_tower_forward(model, images, amp, _intermediates)]


def _intermediates(visual: torch.nn.Module, pixels: torch.Tensor) -> List[torch.Tensor]:
    return visual.forward_intermediates(pixels, intermediates_only=True)['image_intermediates']
