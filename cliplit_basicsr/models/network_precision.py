"""``train.network_amp``: the light-map network's forward and backward in bf16 or fp16, on request.

The authors train the network in fp32, which stays the default. With ``bf16`` or ``fp16`` the network's
convolutions run under autocast (their backward follows the forward's precision); the light map is cast
back to fp32 before the division, so the enhanced image, the CLIP and identity losses (which have their own
precision options) and every reduction stay fp32, as do the optimizer's states and the prompt embedding.
fp16 (GPUs only) adds a gradient scaler, saved in the training state so that a resumed run scales as the killed one
would have. docs/training.md gives the loss and gradient deviations and the speed.
"""

import contextlib
from typing import ContextManager, Optional

import torch

from cliplit_basicsr.choices import REDUCED_PRECISIONS, torch_dtype
from cliplit_basicsr.errors import OptionError

FP16_INITIAL_SCALE = 2.0**10


def network_precision_option(value: Optional[str], device: torch.device) -> 'NetworkPrecision':
    """``train.network_amp`` checked for ``device``: fp16 is for GPUs (a CPU emulates its convolutions, far
    slower than fp32; bf16 is the CPU's fast mode)."""
    if value == 'fp16' and torch.device(device).type == 'cpu':
        raise OptionError('train.network_amp: fp16 is offered on GPUs only (a CPU emulates it); use bf16 on a CPU')
    return NetworkPrecision(value, device)


class NetworkPrecision:
    """What ``train.network_amp`` (``~`` = fp32, ``bf16``, ``fp16``) changes in a network step."""

    def __init__(self, value: Optional[str], device: torch.device) -> None:
        if value is not None and value not in REDUCED_PRECISIONS:
            raise OptionError(f"train.network_amp: expected ~ (fp32, the authors'), bf16 or fp16, got {value!r}")
        self.device = torch.device(device)
        self.dtype = None if value is None else torch_dtype(value)
        # The scaler starts at 2^10, not torch's 2^16: the identity loss is fp16 on CUDA (the authors'
        # numerics) and weighted 25 in reconstruction, so larger scales overflow its backward and skip steps.
        self.scaler = torch.amp.GradScaler(self.device.type, init_scale=FP16_INITIAL_SCALE) if value == 'fp16' else None

    def autocast(self) -> ContextManager:
        """The context of the network's forward: autocast to ``dtype``, or nothing in fp32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        # no cache of the cast weights (autocast caches those that require grad: the network's): each is
        # cast once per forward anyway, and CUDA graph capture (train.cuda_graphs) needs the cache off
        return torch.autocast(self.device.type, dtype=self.dtype, cache_enabled=False)

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, scaled first in fp16 so that small gradients survive the fp16 range."""
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer's step; in fp16 on the unscaled gradients, skipped where they overflowed."""
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)
            self.scaler.update()

    def state_dict(self) -> Optional[dict]:
        return None if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: Optional[dict]) -> None:
        if self.scaler is not None and state:  # a state saved in fp32 or bf16 has none: start the scaler afresh
            self.scaler.load_state_dict(state)
