"""CLIP core of CLIP-LIT: frozen open_clip models, the image path into them, text features of learnable
token embeddings, and prompt scores. The prompt pair module lives in ``archs/prompt_arch.py`` and the
losses in ``losses/cliplit_loss.py``."""

from .errors import CLIPLoadError, PrecisionError, PromptFileError
from .loading import (
    DEFAULT_PRETRAINED,
    RN_MODEL,
    VIT_MODEL,
    check_clip_weights,
    clear_clip_cache,
    load_clip,
    require_resnet,
)
from .precision import check_amp, clip_autocast
from .preprocess import image_features, preprocess_images, resnet_feature_maps
from .scores import LOGIT_SCALE, negative_scores, prompt_logits
from .text import encode_token_embeddings, eot_index, token_embeddings, tokenize

__all__ = [
    'CLIPLoadError',
    'PrecisionError',
    'PromptFileError',
    'DEFAULT_PRETRAINED',
    'RN_MODEL',
    'VIT_MODEL',
    'check_clip_weights',
    'clear_clip_cache',
    'load_clip',
    'require_resnet',
    'check_amp',
    'clip_autocast',
    'image_features',
    'preprocess_images',
    'resnet_feature_maps',
    'LOGIT_SCALE',
    'negative_scores',
    'prompt_logits',
    'encode_token_embeddings',
    'eot_index',
    'token_embeddings',
    'tokenize',
]
