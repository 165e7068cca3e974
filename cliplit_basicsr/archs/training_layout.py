"""Training-time layout of :class:`~cliplit_basicsr.archs.cliplit_arch.CLIPLITNet`: same maths, less time and memory.

Two independent, exact rearrangements of the network's training forward/backward on CPU:

* **channels-last** parameters and activations, so oneDNN runs the 3x3 convs (forward and both
  backward passes) without reordering every activation to and from its blocked layout;
* **activation checkpointing** (non-reentrant) of the six residual blocks and the pyramid pooling, which
  hold the bulk of the activations (each keeps two or three full-size maps, the reflect-padded copies
  included): only each block's input is kept and the block is recomputed during backward, which bounds
  peak memory at batch 8 @ 512 for about one extra forward of those blocks.

Both keep the module, its parameter names and its state dict unchanged (checkpointing wraps the blocks'
``forward`` on the instance, not their classes), so BasicSR saves and loads it as before. Convert before
wrapping in DDP: DDP's gradient buckets take the parameters' layout when it is built.
"""
from typing import Iterable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

HEAVY_BLOCKS = tuple(f'ResidualBlock{i}' for i in range(1, 7)) + ('PPM1', )


class _Checkpointed:
    """A block's forward that keeps only its input for backward and recomputes the rest there."""

    def __init__(self, block: nn.Module):
        self.block_forward = block.forward

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return self.block_forward(x)
        return checkpoint(self.block_forward, x, use_reentrant=False)


def prepare_for_training(net: nn.Module, channels_last: bool = True,
                         checkpoint_blocks: Iterable[str] = HEAVY_BLOCKS) -> nn.Module:
    """Convert a CLIPLITNet in place for fast training (idempotent); returns it. Gradients equal the plain
    network's; without autograd (validation, ``torch.no_grad``) the checkpointed blocks run plainly.

    Args:
        net: the enhancement network (a ``CLIPLITNet``; the blocks are looked up by name).
        channels_last: store the conv weights channels-last; inputs are converted on the way in
            (a forward pre-hook), so callers keep passing ordinary NCHW batches.
        checkpoint_blocks: names of the submodules to checkpoint (default: the six residual blocks and
            ``PPM1``; ``()`` for none).
    """
    blocks = dict(net.named_children())
    unknown = [name for name in checkpoint_blocks if name not in blocks]
    if unknown:
        raise ValueError(f'prepare_for_training: {type(net).__name__} has no submodule(s) {unknown}')
    if channels_last and _to_channels_last not in net._forward_pre_hooks.values():
        net.to(memory_format=torch.channels_last)
        net.register_forward_pre_hook(_to_channels_last)
    for name in checkpoint_blocks:
        if not isinstance(blocks[name].forward, _Checkpointed):
            blocks[name].forward = _Checkpointed(blocks[name])
    return net


def _to_channels_last(module: nn.Module, args: tuple) -> tuple:
    return tuple(a.contiguous(memory_format=torch.channels_last) if torch.is_tensor(a) and a.dim() == 4 else a
                 for a in args)
