"""LPIPS (full-reference) and MUSIQ (no-reference) through pyiqa, as BasicSR metrics.

BasicSR calls a metric as ``fn(img=..., img2=..., **yaml_options)`` with HWC BGR uint8 images; pyiqa
wants RGB NCHW tensors in [0, 1]. pyiqa is licensed for non-commercial use only, so it is imported
when a metric is first computed, never by ``import cliplit_basicsr``. Each pyiqa model is built once
per process and option set.

pyiqa fetches its weights on first use (into ``torch.hub.get_dir()/pyiqa``, LPIPS's backbone into
``torch.hub.get_dir()/checkpoints`` through torchvision). Offline (``HF_HUB_OFFLINE=1``) or after a
failed download, a missing file raises :class:`MetricWeightsError` naming the metric and the file.
``pretrained_model_path`` points a metric at a local weights file instead of pyiqa's download.
"""

import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlparse

import numpy as np
import torch
from basicsr.utils.registry import METRIC_REGISTRY

from cliplit_basicsr.errors import CLIPLITError, OptionError

_OFFLINE_VALUES = {'1', 'ON', 'YES', 'TRUE'}
_metrics: Dict[Tuple, torch.nn.Module] = {}


class MetricWeightsError(CLIPLITError, RuntimeError):
    """A pyiqa metric whose weights are neither cached nor downloadable (message is one line)."""


def _offline() -> bool:
    return os.environ.get('HF_HUB_OFFLINE', '').upper() in _OFFLINE_VALUES


def _lpips_files(net: str = 'alex', pretrained_model_path: Optional[str] = None, **_) -> List[Tuple[str, Path]]:
    """The (url, cache path) pairs pyiqa's LPIPS reads: its linear layers and torchvision's backbone."""
    from pyiqa.archs.lpips_arch import default_model_urls
    from pyiqa.default_model_configs import DEFAULT_CONFIGS
    from pyiqa.utils.download_util import DEFAULT_CACHE_DIR
    from torchvision.models import AlexNet_Weights, VGG16_Weights

    backbones = {'alex': AlexNet_Weights, 'vgg': VGG16_Weights}
    if net not in backbones:
        raise OptionError(f'metric lpips: net must be one of {sorted(backbones)}, got {net!r}')
    files = [(backbones[net].IMAGENET1K_V1.url, Path(torch.hub.get_dir()) / 'checkpoints')]
    if pretrained_model_path is None:
        version = DEFAULT_CONFIGS['lpips']['metric_opts']['version']
        files.append((default_model_urls[f'{version}_{net}'], Path(DEFAULT_CACHE_DIR)))
    return [(url, folder / Path(urlparse(url).path).name) for url, folder in files]


def _musiq_files(
    pretrained: str = 'koniq10k', pretrained_model_path: Optional[str] = None, **_
) -> List[Tuple[str, Path]]:
    """The (url, cache path) pair pyiqa's MUSIQ reads, unless a local weights file is given."""
    from pyiqa.archs.musiq_arch import default_model_urls
    from pyiqa.utils.download_util import DEFAULT_CACHE_DIR

    if pretrained not in default_model_urls:
        raise OptionError(f'metric musiq: pretrained must be one of {sorted(default_model_urls)}, got {pretrained!r}')
    if pretrained_model_path is not None:
        return []
    url = default_model_urls[pretrained]
    return [(url, Path(DEFAULT_CACHE_DIR) / Path(urlparse(url).path).name)]


_REQUIRED_FILES = {'lpips': _lpips_files, 'musiq': _musiq_files}


def _weights_error(name: str, missing: List[Tuple[str, Path]], reason: str) -> MetricWeightsError:
    from pyiqa.utils.download_util import DEFAULT_CACHE_DIR

    url, path = missing[0]
    local = ", or set the metric's pretrained_model_path" if path.parent == Path(DEFAULT_CACHE_DIR) else ''
    return MetricWeightsError(
        f'metric {name}: weights file {path.name} is not in {path.parent} and {reason}; '
        f'download {url} into that folder{local}'
    )


def get_pyiqa_metric(name: str, device: Optional[str] = None, **options) -> torch.nn.Module:
    """Build pyiqa's metric ``name`` with ``options`` once per process (later calls return the same one)."""
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    key = (name, device, tuple(sorted(options.items())))
    if key not in _metrics:
        import pyiqa

        if options.get('pretrained_model_path') is not None and not Path(options['pretrained_model_path']).is_file():
            raise MetricWeightsError(
                f'metric {name}: pretrained_model_path {options["pretrained_model_path"]}: no such file'
            )
        missing = [(url, path) for url, path in _REQUIRED_FILES[name](**options) if not path.is_file()]
        if missing and _offline():
            raise _weights_error(name, missing, 'HF_HUB_OFFLINE is set')
        try:
            _metrics[key] = pyiqa.create_metric(name, device=torch.device(device), **options)
        except Exception as err:  # urllib, hub and torch errors of many types
            still_missing = [(url, path) for url, path in missing if not path.is_file()]
            if still_missing:
                raise _weights_error(name, still_missing, f'could not be downloaded ({type(err).__name__})') from None
            raise
    return _metrics[key]


def _to_tensor(img: np.ndarray, what: str) -> torch.Tensor:
    """An HWC BGR uint8 image as BasicSR passes it -> a (1, 3, H, W) RGB float tensor in [0, 1]."""
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(
            f'{what}: expected an HWC BGR uint8 image, got '
            f'{getattr(img, "dtype", type(img).__name__)} of shape {getattr(img, "shape", None)}'
        )
    rgb = np.ascontiguousarray(img[:, :, ::-1])
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).float().div(255.0)


def _score(
    name: str, device: Optional[str], options: dict, img: np.ndarray, img2: Optional[np.ndarray] = None
) -> float:
    metric = get_pyiqa_metric(name, device, **options)
    inputs = [_to_tensor(img, f'{name} image')] + ([] if img2 is None else [_to_tensor(img2, f'{name} reference')])
    with torch.no_grad():
        return float(metric(*inputs).item())


@METRIC_REGISTRY.register()
def calculate_cliplit_lpips(
    img: np.ndarray,
    img2: np.ndarray,
    net: str = 'alex',
    pretrained_model_path: Optional[str] = None,
    device: Optional[str] = None,
    **kwargs,
) -> float:
    """LPIPS v0.1 (lower is better) between ``img`` and the reference ``img2`` (HWC BGR uint8).

    ``net``: ``'alex'`` (pyiqa's ``lpips``, the usual choice) or ``'vgg'``. ``pretrained_model_path``: a
    local file with the LPIPS linear layers (pyiqa loads it non-strictly, as it does its own file).
    Other keys (``better``, ...) are BasicSR options and ignored.
    """
    options = {'net': net, 'pretrained_model_path': pretrained_model_path}
    return _score('lpips', device, options, img, img2)


@METRIC_REGISTRY.register()
def calculate_cliplit_musiq(
    img: np.ndarray,
    img2: Optional[np.ndarray] = None,
    pretrained: str = 'koniq10k',
    pretrained_model_path: Optional[str] = None,
    device: Optional[str] = None,
    **kwargs,
) -> float:
    """MUSIQ quality score (higher is better) of ``img`` (HWC BGR uint8); needs no reference.

    ``pretrained``: the rating set of pyiqa's weights (``koniq10k`` is pyiqa's ``musiq``, scores in
    ~0-100); ``pretrained_model_path``: a local MUSIQ state dict instead. ``img2`` is accepted and
    ignored so that the metric also runs on paired sets.
    """
    options = {'pretrained': pretrained, 'pretrained_model_path': pretrained_model_path}
    return _score('musiq', device, options, img)
