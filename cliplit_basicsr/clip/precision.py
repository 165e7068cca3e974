"""Opt-in mixed precision for CLIP forwards: fp32 by default, bf16/fp16 autocast on request."""

import contextlib
from typing import ContextManager, Optional

import torch

from cliplit_basicsr.choices import REDUCED_PRECISIONS, torch_dtype

from .errors import PrecisionError


def check_amp(amp: Optional[str]) -> Optional[str]:
    """Validate an ``amp`` option (``None``/``'fp32'`` = off, ``'bf16'``, ``'fp16'``); returns ``None`` when off."""
    if amp in (None, False, 'fp32', 'none'):
        return None
    if amp not in REDUCED_PRECISIONS:
        raise PrecisionError(f"amp: '{amp}' is not supported; use null (fp32), 'bf16' or 'fp16'")
    return amp


def clip_autocast(device: torch.device, amp: Optional[str]) -> ContextManager:
    """Autocast context for a CLIP forward on ``device``; a no-op when ``amp`` is off.

    CUDA takes bf16 or fp16; on CPU only bf16 is offered (CPU fp16 autocast is slower than fp32).
    With the fast paths on, CPU bf16 image forwards run on a bf16 copy of the image tower instead
    (:func:`cliplit_basicsr.accel.bf16_image_tower`); the prompt pair's short text forward keeps autocast.
    """
    amp = check_amp(amp)
    if amp is None:
        return contextlib.nullcontext()
    device = torch.device(device)
    if device.type == 'cpu' and amp != 'bf16':
        raise PrecisionError(f"amp: '{amp}' is not offered on CPU; use 'bf16' or null (fp32)")
    return torch.autocast(device_type=device.type, dtype=torch_dtype(amp))
