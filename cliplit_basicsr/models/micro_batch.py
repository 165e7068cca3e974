"""One optimizer step's forward and backward run a few images at a time: the same gradients, less memory.

Every loss of CLIP-LIT's network phases is a sum or a mean of per-image terms (the network, CLIP in eval
mode and the losses couple no two images of a batch), so the gradient of the batch's loss is the sum of
the gradients of each micro-batch's share of it. Running forward + backward per micro-batch and letting
the gradients accumulate keeps only one micro-batch's activations alive, which at the default 8 @ 512
is most of the enhancement step's memory. Only the order of the floating-point sums changes.
"""

import contextlib
from typing import Callable, ContextManager, Dict, Optional

import torch
from torch import nn

TermsFn = Callable[[torch.Tensor, float], Dict[str, torch.Tensor]]


def auto_micro_batch(device: torch.device) -> Optional[int]:
    """``train.micro_batch: auto``: one image at a time on CPU, the whole batch on accelerators.

    On a CPU one image at a time runs as fast as larger splits with a fraction of their memory
    (``docs/benchmarks.md``); a GPU is best fed whole batches, as the authors train.
    """
    return 1 if torch.device(device).type == 'cpu' else None


def batch_share(loss: nn.Module, value: torch.Tensor, share: float, world_size: int = 1) -> torch.Tensor:
    """``value`` (``loss`` on a micro-batch holding ``share`` of this process's batch) as its part of the
    loss of the whole batch, across ``world_size`` processes whose gradients DDP averages.

    A loss averaged over the batch (BasicSR's default ``'mean'`` included) is scaled by ``share``: the mean
    over processes of their means is the whole batch's mean. A loss summed over it (``loss.reduction ==
    'sum'``, the identity loss) is scaled by ``world_size``: DDP's mean over processes of ``world_size``
    times each process's sum is the whole batch's sum, as one process computes it.
    """
    return value * world_size if getattr(loss, 'reduction', 'mean') == 'sum' else value * share


def backward_in_micro_batches(
    images: torch.Tensor,
    micro_batch: Optional[int],
    terms_of: TermsFn,
    total: str,
    no_sync: Callable[[], ContextManager] = contextlib.nullcontext,
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
) -> Dict[str, torch.Tensor]:
    """Backpropagate the batch loss ``terms_of(...)[total]`` ``micro_batch`` images at a time (``None``: at once).

    Args:
        images: the batch (B, ...), split along its first dimension.
        micro_batch: images per forward/backward; ``None`` or >= B runs the batch in one go.
        terms_of: ``terms_of(part, share)`` returns the named loss terms of the images ``part``, which hold
            ``share`` (= len(part) / B) of the batch, each already scaled to its part of the batch's term
            (see :func:`batch_share`), so that summing them over the parts gives the batch's terms.
        total: the key of the term to backpropagate.
        no_sync: a context without gradient synchronisation (DDP's ``no_sync``), entered for every part
            but the last, so that distributed gradients are reduced once per step.
        backward: how a part's total is backpropagated (a gradient scaler's scaled backward, say).

    Returns:
        The batch's terms (detached sums over the parts). Gradients accumulate into the parameters'
        ``.grad``: zero them before, step after.
    """
    parts = images.split(micro_batch or len(images))
    totals: Dict[str, torch.Tensor] = {}
    for i, part in enumerate(parts):
        with no_sync() if i < len(parts) - 1 else contextlib.nullcontext():
            terms = terms_of(part, len(part) / len(images))
            backward(terms[total])
        for name, value in terms.items():
            totals[name] = totals[name] + value.detach() if name in totals else value.detach()
    return totals
