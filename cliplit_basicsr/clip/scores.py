"""Image-vs-prompt scores: cosine similarity scaled by a fixed logit scale (100 in CLIP-LIT)."""

import torch
import torch.nn.functional as F

LOGIT_SCALE = 100.0  # CLIP-LIT's fixed scale, not CLIP's learned logit_scale


def prompt_logits(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: float = LOGIT_SCALE
) -> torch.Tensor:
    """``logit_scale * cos`` (B,2) between image features (B,D) (or (B,1,D)) and the pair's text features (2,D)."""
    image_features = F.normalize(image_features.reshape(-1, image_features.shape[-1]), dim=-1)
    return logit_scale * image_features @ F.normalize(text_features, dim=-1).t()


def negative_scores(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: float = LOGIT_SCALE
) -> torch.Tensor:
    """S(I) (B,): softmax probability of the negative (backlit, index 0) prompt; higher = more backlit."""
    return prompt_logits(image_features, text_features, logit_scale).softmax(dim=-1)[:, 0]
