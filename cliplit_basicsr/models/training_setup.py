"""What the training model builds from its options: losses, optimizers, the prompt pair, the micro-batch
setting; each refuses a bad option with one line naming it."""

import functools
from copy import deepcopy
from typing import Iterable, Optional

import torch
from basicsr.archs import build_network
from basicsr.losses import build_loss as basicsr_build_loss
from basicsr.utils import get_root_logger
from torch import nn

from cliplit_basicsr.choices import AUTO
from cliplit_basicsr.errors import OptionError

from .micro_batch import auto_micro_batch


@functools.lru_cache(maxsize=None)
def _y_weights(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """BT.601 RGB -> Y weights (3, 1) of BasicSR's ``rgb2ycbcr_pt``, made once per device: a step copies
    nothing from the host (``rgb2ycbcr_pt`` builds them at every call)."""
    return torch.tensor([[65.481], [128.553], [24.966]], dtype=dtype, device=device)


def y_psnr(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean PSNR (dB) over the batch on the BT.601 Y channel, the formula of the authors' pyiqa metric:
    BasicSR's ``calculate_psnr_pt(..., crop_border=0, test_y_channel=True)``, operation for operation."""

    def luma(images: torch.Tensor) -> torch.Tensor:
        weights = _y_weights(images.device, images.dtype)
        return ((images.permute(0, 2, 3, 1) @ weights).permute(0, 3, 1, 2) + 16.0) / 255.0

    mse = torch.mean((luma(output).double() - luma(target).double()) ** 2, dim=[1, 2, 3])
    return (10.0 * torch.log10(1.0 / (mse + 1e-8))).mean().float()


def micro_batch_option(value, device: torch.device) -> Optional[int]:
    """``train.micro_batch``: a positive number of images, ``None`` (the whole batch at once) or ``auto``
    (:func:`~.micro_batch.auto_micro_batch` for ``device``)."""
    if value == AUTO:
        return auto_micro_batch(device)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise OptionError(f'train.micro_batch: expected a positive integer, ~ (whole batch) or {AUTO}, got {value!r}')
    return value


def build_loss(opt: dict, key: str, device: torch.device) -> nn.Module:
    """The loss of section ``train.<key>`` on ``device``."""
    loss_opt = opt['train'].get(key)
    if not isinstance(loss_opt, dict) or 'type' not in loss_opt:
        raise OptionError(f'train.{key}: missing (a loss section with a type)')
    try:
        return basicsr_build_loss(deepcopy(loss_opt)).to(device)
    except (TypeError, ValueError) as err:
        raise OptionError(f'train.{key}: {err}') from None


def build_adam(model, key: str, params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
    """The Adam optimizer of section ``train.<key>``, built by BasicSR's ``model.get_optimizer``."""
    optim_opt = dict(model.opt['train'].get(key) or {})
    optim_type = optim_opt.pop('type', None)
    if optim_type != 'Adam':
        raise OptionError(f'train.{key}.type: expected Adam, got {optim_type!r}')
    try:
        return model.get_optimizer(optim_type, params, **optim_opt)
    except TypeError as err:
        raise OptionError(f'train.{key}: {err}') from None


def build_prompt_pair(opt: dict) -> nn.Module:
    """The prompt pair of ``network_prompt``, loaded from ``path.pretrain_network_prompt`` if given."""
    prompt_opt = deepcopy(opt.get('network_prompt') or {'type': 'CLIPLITPromptPair'})
    try:
        net = build_network(prompt_opt)
    except TypeError as err:
        raise OptionError(f'network_prompt: {err}') from None
    prompt_file = opt['path'].get('pretrain_network_prompt')
    if prompt_file:
        get_root_logger().info(f'Loading prompt pair from {prompt_file}')
        net.load_file(prompt_file)
    return net
