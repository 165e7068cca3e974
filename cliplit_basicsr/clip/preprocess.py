"""How images reach CLIP in CLIP-LIT: batched, differentiable, as the authors' torchvision 0.14 did it.

Each image is squashed as a whole (no crop) to the model's input size with bilinear interpolation,
``align_corners=False`` and **no antialiasing** (tensor resizing did not antialias in torchvision 0.14;
today's default does and moves the losses by percents), then normalised with CLIP's mean and std.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Callable, List, Optional

import torch
import torch.nn.functional as F

from .class_token import class_token_tower
from .fused_vit import fused_vit_tower
from .loading import fp16_weights_tower, low_precision_image_tower
from .onednn_gemm import onednn_gemms
from .precision import check_amp, clip_autocast, runs_on_bf16_weights

if TYPE_CHECKING:  # open_clip (and timm) load where CLIP is used: enhancement alone never imports them
    import open_clip


def _input_size(model: open_clip.CLIP) -> tuple:
    size = model.visual.image_size
    return tuple(size) if isinstance(size, (tuple, list)) else (size, size)


def preprocess_images(images: torch.Tensor, size: tuple = (224, 224)) -> torch.Tensor:
    """Resize a (B,3,H,W) batch in [0,1] to ``size`` (bilinear, no antialias) and normalise it for CLIP."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f'CLIP input must be a (B,3,H,W) batch, got shape {tuple(images.shape)}')
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    x = F.interpolate(images, size=size, mode='bilinear', align_corners=False, antialias=False)
    mean = torch.tensor(OPENAI_DATASET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _exact_without_autograd(amp: Optional[str]) -> bool:
    """An fp32 forward without autograd: the case oneDNN's exact-fp32 routes serve."""
    return check_amp(amp) is None and not torch.is_grad_enabled()


def _image_tower_forward(
    model: open_clip.CLIP,
    images: torch.Tensor,
    amp: Optional[str],
    forward: Callable[[torch.nn.Module, torch.Tensor], object],
):
    """``forward(image_tower, pixels)`` on the preprocessed ``images`` in the precision ``amp`` asks for.

    CPU bf16 runs a cached bf16 copy of the tower on bf16 pixels (see :func:`runs_on_bf16_weights`);
    otherwise the tower runs under :func:`clip_autocast` (a no-op in fp32). An fp32 forward without
    autograd (the identity loss's target maps) runs its GEMMs on oneDNN where that is faster (:func:`onednn_gemms`).
    """
    pixels = preprocess_images(images, _input_size(model))
    if runs_on_bf16_weights(images.device, amp):
        return forward(low_precision_image_tower(model, torch.bfloat16), pixels.to(torch.bfloat16))
    gemms = onednn_gemms(images.device) if _exact_without_autograd(amp) else contextlib.nullcontext()
    with clip_autocast(images.device, amp), gemms:
        return forward(model.visual, pixels)


def image_features(
    model: open_clip.CLIP, images: torch.Tensor, amp: Optional[str] = None, normalize: bool = False
) -> torch.Tensor:
    """CLIP image embeddings (B,D) of a batch in [0,1], in float32; differentiable w.r.t. ``images``.

    The same as ``model.encode_image`` (which is ``model.visual``) on the preprocessed batch, up to float
    rounding: a ViT's last block runs for the class token only (:func:`class_token_tower`), and an fp32
    CPU forward without autograd (prompt steps) runs on oneDNN's fused ops (:func:`fused_vit_tower`).
    """
    fused = fused_vit_tower(model.visual) if _exact_without_autograd(amp) and images.device.type == 'cpu' else None
    if fused is not None:
        features = fused(preprocess_images(images, _input_size(model)))
    else:
        features = _image_tower_forward(model, images, amp, lambda visual, pixels: class_token_tower(visual)(pixels))
    features = features.float()
    return F.normalize(features, dim=-1) if normalize else features


def resnet_feature_maps(
    model: open_clip.CLIP, images: torch.Tensor, amp: Optional[str] = None, precision: str = 'fp32'
) -> List[torch.Tensor]:
    """The five ModifiedResNet maps [stem (after its avg-pool), layer1, ..., layer4] of a batch: float32, or
    float16 from the tower in OpenAI's fp16 weights with ``precision='fp16'`` (:func:`fp16_weights_tower`)."""
    if precision == 'fp16':
        pixels = preprocess_images(images, _input_size(model)).to(torch.float16)
        return _intermediates(fp16_weights_tower(model), pixels)
    maps = _image_tower_forward(model, images, amp, _intermediates)
    return [m.float() for m in maps]


def _intermediates(visual: torch.nn.Module, pixels: torch.Tensor) -> List[torch.Tensor]:
    return visual.forward_intermediates(pixels, intermediates_only=True)['image_intermediates']
