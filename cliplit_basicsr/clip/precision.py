"""Opt-in mixed precision for CLIP forwards: fp32 by default, bf16/fp16 autocast on request."""

import contextlib
from typing import ContextManager, Optional

import torch

from .errors import PrecisionError

AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}


def check_amp(amp: Optional[str]) -> Optional[str]:
    """Validate an ``amp`` option (``None``/``'fp32'`` = off, ``'bf16'``, ``'fp16'``); returns ``None`` when off."""
    if amp in (None, False, 'fp32', 'none'):
        return None
    if amp not in AMP_DTYPES:
        raise PrecisionError(f"amp: '{amp}' is not supported; use null (fp32), 'bf16' or 'fp16'")
    return amp


def runs_on_bf16_weights(device: torch.device, amp: Optional[str]) -> bool:
    """True where a CLIP image forward should run on a bf16 copy of the weights rather than under autocast
    (bf16 on CPU, see :func:`clip_autocast`)."""
    return torch.device(device).type == 'cpu' and check_amp(amp) == 'bf16'


def clip_autocast(device: torch.device, amp: Optional[str]) -> ContextManager:
    """Autocast context for a CLIP forward on ``device``; a no-op when ``amp`` is off.

    CUDA takes bf16 or fp16; on CPU only bf16 is offered (CPU fp16 autocast is slower than fp32).
    Measured with torch 2.11/2.14: CPU bf16 autocast of open_clip's ViT is *slower* than fp32, because
    ``nn.MultiheadAttention`` feeds a transposed (non-contiguous) input to its in-projection, for which
    the bf16 matmul copies the weight once per sequence position; CUDA is unaffected. Image forwards on
    CPU therefore run on a bf16 copy of the image tower instead (:func:`runs_on_bf16_weights`); the
    prompt pair's short text forward keeps autocast.
    """
    amp = check_amp(amp)
    if amp is None:
        return contextlib.nullcontext()
    device = torch.device(device)
    if device.type == 'cpu' and amp != 'bf16':
        raise PrecisionError(f"amp: '{amp}' is not offered on CPU; use 'bf16' or null (fp32)")
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])
