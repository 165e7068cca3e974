"""Frozen open_clip models for CLIP-LIT, built once per process and shared by every user.

CLIP-LIT uses two OpenAI CLIPs: ``ViT-B-32-quickgelu`` (CLIP-Enhance loss, prompt learning) and
``RN101-quickgelu`` (identity loss). ``pretrained`` is an open_clip tag (``'openai'``, fetched from the
Hugging Face hub into its cache) or a local file:

* OpenAI's original ``.pt`` (TorchScript archive or state dict), or any state dict in OpenAI's key
  layout, goes through :func:`open_clip.load_openai_model`: the architecture is read off the file
  (QuickGELU), and conv/linear weights pass through fp16 exactly as OpenAI's loader does (lossless for
  OpenAI's own weights);
* an open_clip checkpoint (``.safetensors`` or another layout) is loaded into ``model_name``'s config by
  :func:`open_clip.create_model`.

``pretrained=None`` builds random weights (benchmarks only). When the weights are neither cached nor
downloadable (``HF_HUB_OFFLINE=1``, or the hub unreachable), :class:`CLIPLoadError` says so at once
instead of letting the hub client retry for a minute.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
import weakref
import zipfile
from typing import TYPE_CHECKING, Dict, Optional, Tuple, Union

import torch

from cliplit_basicsr.errors import one_line_message

from .errors import CLIPLoadError

if TYPE_CHECKING:  # open_clip (and timm) load where CLIP is used: enhancement alone never imports them
    import open_clip

VIT_MODEL = 'ViT-B-32-quickgelu'
RN_MODEL = 'RN101-quickgelu'
DEFAULT_PRETRAINED = 'openai'
PRETRAINED_OPTION = 'clip_pretrained'  # the option key that users set to a local file

_HUB_PROBE_TIMEOUT_S = 3.0
_MODELS: Dict[Tuple[str, Optional[str], str, str], open_clip.CLIP] = {}
_FP16_TOWERS: weakref.WeakKeyDictionary[open_clip.CLIP, torch.nn.Module] = weakref.WeakKeyDictionary()
logger = logging.getLogger(__name__)


def _device_key(device: Union[str, torch.device]) -> torch.device:
    device = torch.device(device)
    if device.type == 'cuda' and device.index is None:
        device = torch.device('cuda', torch.cuda.current_device())
    return device


def _hub_files(model_name: str, tag: str) -> Tuple[str, Tuple[str, ...]]:
    """The hub repository and file names open_clip looks for ``(model_name, tag)`` under, best first: the
    safetensors file beside a ``.bin`` / ``.pth`` one, as open_clip's download prefers it."""
    import open_clip
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    repo, filename = os.path.split(cfg['hf_hub'])
    filename = filename or HF_WEIGHTS_NAME
    if filename == HF_WEIGHTS_NAME:
        return repo, (HF_SAFE_WEIGHTS_NAME, filename)
    if filename.endswith(('.bin', '.pth')):
        return repo, (filename[:-4] + '.safetensors', filename)
    return repo, (filename,)


def _hub_reachable(repo: str, filename: str) -> bool:
    """Whether the hub answers one short request for ``filename``'s metadata (any answer, even an error
    status, counts); False offline. The hub client's own download would retry for about a minute."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        get_hf_file_metadata(hf_hub_url(repo, filename), timeout=_HUB_PROBE_TIMEOUT_S)
    except HfHubHTTPError:
        return True
    except Exception:  # no connection, a time-out, a proxy refusing: the download would fail the same way
        return False
    return True


def _resolve_tag(model_name: str, tag: str) -> Optional[str]:
    """A cached checkpoint for the tag, or ``None`` when open_clip may download it; raises when it cannot."""
    import open_clip
    from huggingface_hub import constants, try_to_load_from_cache

    if not open_clip.get_pretrained_cfg(model_name, tag):
        known = ', '.join(open_clip.list_pretrained_tags_by_model(model_name)) or 'none'
        raise CLIPLoadError(
            f"CLIP '{model_name}': {PRETRAINED_OPTION}='{tag}' is neither a file nor an open_clip "
            f'tag of this model (tags: {known})'
        )
    if not open_clip.get_pretrained_cfg(model_name, tag).get('hf_hub'):
        return None
    repo, filenames = _hub_files(model_name, tag)
    for filename in filenames:
        cached = try_to_load_from_cache(repo, filename)
        if isinstance(cached, str):
            return cached
    if _hub_reachable(repo, filenames[-1]):
        return None
    why = 'HF_HUB_OFFLINE is set' if constants.HF_HUB_OFFLINE else 'the hub is unreachable'
    raise CLIPLoadError(
        f"CLIP weights for '{model_name}' ({PRETRAINED_OPTION}='{tag}') are missing and {why}: open_clip looks for "
        f'{repo}/{" or ".join(filenames)} in the Hugging Face cache {constants.HF_HUB_CACHE}; download them once '
        f'with network access, or set {PRETRAINED_OPTION} to a local file (OpenAI .pt, open_clip state dict or '
        '.safetensors)'
    )


def _is_openai_layout(path: str) -> bool:
    """True for TorchScript archives and state dicts keyed like OpenAI's ``clip`` package."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(name.endswith('/constants.pkl') for name in archive.namelist()):
                return True
    state = torch.load(path, map_location='cpu', weights_only=True)
    if isinstance(state, dict) and isinstance(state.get('state_dict'), dict):
        state = {k[len('module.') :] if k.startswith('module.') else k: v for k, v in state['state_dict'].items()}
    return isinstance(state, dict) and 'token_embedding.weight' in state and 'text_projection' in state


def _build(model_name: str, pretrained: Optional[str], device: torch.device, precision: str) -> open_clip.CLIP:
    import open_clip

    if pretrained is None:
        logger.warning(f"CLIP '{model_name}' has random weights ({PRETRAINED_OPTION} is null)")
        return open_clip.create_model(model_name, pretrained=None, device=device, precision=precision)
    path = pretrained if os.path.isfile(pretrained) else _resolve_tag(model_name, pretrained)
    if path is None:  # not cached, hub reachable: let open_clip download it
        try:
            return open_clip.create_model(model_name, pretrained=pretrained, device=device, precision=precision)
        except Exception as err:
            raise CLIPLoadError(
                f"CLIP '{model_name}' ({PRETRAINED_OPTION}='{pretrained}'): download failed "
                f'({one_line_message(err, 300)})'
            ) from None
    try:
        if not path.endswith('.safetensors') and _is_openai_layout(path):
            with warnings.catch_warnings():  # open_clip tries torch.jit.load first, which warns of deprecation
                warnings.filterwarnings('ignore', message='`torch.jit.load` is deprecated', category=FutureWarning)
                return open_clip.load_openai_model(path, precision=precision, device=device)
        return open_clip.create_model(model_name, pretrained=path, device=device, precision=precision)
    except Exception as err:  # torch/open_clip raise many types for unreadable or mismatching files
        raise CLIPLoadError(f"CLIP '{model_name}': cannot load {path} ({one_line_message(err, 300)})") from None


def check_clip_weights(model_name: str = VIT_MODEL, pretrained: Optional[str] = DEFAULT_PRETRAINED) -> None:
    """Fail fast with :class:`CLIPLoadError` when the weights can be neither found nor downloaded (builds nothing)."""
    if pretrained is not None and not os.path.isfile(pretrained):
        _resolve_tag(model_name, pretrained)


def load_clip(
    model_name: str = VIT_MODEL,
    pretrained: Optional[str] = DEFAULT_PRETRAINED,
    device: Union[str, torch.device] = 'cpu',
    precision: str = 'fp32',
) -> open_clip.CLIP:
    """Return the frozen CLIP for these arguments, building it on first use and sharing it afterwards.

    The model is in eval mode with ``requires_grad=False`` everywhere. It is never registered as a
    submodule by this package, so it stays out of state dicts, checkpoints, optimizers and DDP.
    """
    device = _device_key(device)
    if pretrained is not None and os.path.isfile(pretrained):
        pretrained = os.path.realpath(pretrained)  # one model per file, however the path is spelled
    key = (model_name, None if pretrained is None else str(pretrained), str(device), precision)
    if key not in _MODELS:
        model = _build(model_name, key[1], device, precision).eval()
        model.requires_grad_(False)
        _MODELS[key] = model
    return _MODELS[key]


def fp16_weights_tower(model: open_clip.CLIP) -> torch.nn.Module:
    """A frozen copy of ``model.visual`` with OpenAI's fp16 weights, made once per model: conv, linear and
    attention weights in float16, BatchNorm and LayerNorm parameters in float32, as OpenAI's ``clip.load``
    keeps a model on a GPU (``convert_weights``) and the authors' identity loss ran it."""
    import open_clip

    if model not in _FP16_TOWERS:
        tower = copy.deepcopy(model.visual).eval().requires_grad_(False)
        open_clip.model.convert_weights_to_lp(tower, torch.float16)
        _FP16_TOWERS[model] = tower
    return _FP16_TOWERS[model]


def clear_clip_cache() -> None:
    """Forget the shared models, their fp16 copies and every fast path's derived towers and packed weights
    (tests; freeing memory between runs)."""
    from cliplit_basicsr import accel

    _MODELS.clear()
    _FP16_TOWERS.clear()
    accel.clear_caches()


def require_resnet(model: open_clip.CLIP, model_name: str) -> None:
    """Raise :class:`CLIPLoadError` unless the image tower is a ModifiedResNet (the identity loss needs its maps)."""
    from open_clip.modified_resnet import ModifiedResNet

    if not isinstance(model.visual, ModifiedResNet):
        raise CLIPLoadError(
            f"CLIP '{model_name}': the identity loss needs a ModifiedResNet image tower "
            f'(e.g. {RN_MODEL}), got {type(model.visual).__name__}'
        )
