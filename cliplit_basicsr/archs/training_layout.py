"""Training-time layout of :class:`~cliplit_basicsr.network.CLIPLITNet`: same maths, less time.

**Channels-last** parameters and activations, so that oneDNN runs the 3x3 convs (forward and both
backward passes) without reordering every activation to and from its blocked layout.

Memory is bounded by micro-batches instead (``train.micro_batch``, :mod:`cliplit_basicsr.models.micro_batch`):
checkpointing the residual blocks (recomputing them in backward) costs more time for the same memory.

The module, its parameter names and its state dict stay unchanged, so BasicSR saves and loads it as before.
Convert before wrapping in DDP: DDP's gradient buckets take the parameters' layout when it is built.
"""

import torch
from torch import nn


def prepare_for_training(net: nn.Module) -> nn.Module:
    """Convert a CLIPLITNet in place to channels-last (idempotent); returns it. Inputs are converted on
    the way in (a forward pre-hook), so callers keep passing ordinary NCHW batches; outputs and
    gradients equal the plain network's."""
    if _to_channels_last not in net._forward_pre_hooks.values():
        net.to(memory_format=torch.channels_last)
        net.register_forward_pre_hook(_to_channels_last)
    return net


def _to_channels_last(module: nn.Module, args: tuple) -> tuple:
    return tuple(
        a.contiguous(memory_format=torch.channels_last) if torch.is_tensor(a) and a.dim() == 4 else a for a in args
    )
