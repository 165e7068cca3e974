"""How images reach CLIP in CLIP-LIT: batched, differentiable, as the authors' torchvision 0.14 did it.

Each image is squashed as a whole (no crop) to the model's input size with bilinear interpolation,
``align_corners=False`` and **no antialiasing** (tensor resizing did not antialias in torchvision 0.14;
today's default does and moves the losses by percents), then normalised with CLIP's mean and std.
"""
from typing import List, Optional

import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

from .precision import clip_autocast


def _input_size(model: open_clip.CLIP) -> tuple:
    size = model.visual.image_size
    return tuple(size) if isinstance(size, (tuple, list)) else (size, size)


def preprocess_images(images: torch.Tensor, size: tuple = (224, 224)) -> torch.Tensor:
    """Resize a (B,3,H,W) batch in [0,1] to ``size`` (bilinear, no antialias) and normalise it for CLIP."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f'CLIP input must be a (B,3,H,W) batch, got shape {tuple(images.shape)}')
    x = F.interpolate(images, size=size, mode='bilinear', align_corners=False, antialias=False)
    mean = torch.tensor(OPENAI_DATASET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def image_features(model: open_clip.CLIP, images: torch.Tensor, amp: Optional[str] = None,
                   normalize: bool = False) -> torch.Tensor:
    """CLIP image embeddings (B,D) of a batch in [0,1], in float32; differentiable w.r.t. ``images``."""
    with clip_autocast(images.device, amp):
        features = model.encode_image(preprocess_images(images, _input_size(model)))
    features = features.float()
    return F.normalize(features, dim=-1) if normalize else features


def resnet_feature_maps(model: open_clip.CLIP, images: torch.Tensor, amp: Optional[str] = None) -> List[torch.Tensor]:
    """The five ModifiedResNet maps [stem (after its avg-pool), layer1, ..., layer4] of a batch, in float32."""
    with clip_autocast(images.device, amp):
        maps = model.visual.forward_intermediates(preprocess_images(images, _input_size(model)),
                                                  intermediates_only=True)['image_intermediates']
    return [m.float() for m in maps]
