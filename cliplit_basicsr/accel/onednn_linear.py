"""Exact-fp32 linear layers through oneDNN on a CPU: the same maths, faster.

PyTorch sends fp32 matmuls on a CPU to MKL's sgemm, and sends them to oneDNN only in reduced precision. On
some CPUs (the AMD EPYC of ``docs/benchmarks.md``) MKL runs a generic code path at about half oneDNN's fp32
rate. :func:`linear` is ``F.linear`` on ``torch.ops.mkldnn._linear_pointwise`` with weights packed once in
oneDNN's blocked layout, forward and backward; the prompt pair's text blocks (:mod:`.text_blocks`) and the
fused ViT tower (:mod:`.fused_vit`) use it. Only float rounding changes: both libraries accumulate in fp32.
"""

import weakref
from typing import Dict, Optional, Tuple

import torch

from .config import CACHE, op_available


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``x @ weight.T + bias`` by oneDNN (x (M,K), weight (N,K), bias (N,) or None)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, 'none', [], '')


class PackedWeights:
    """Weights (N, K), times ``scale``, in oneDNN's blocked layout for ``_linear_pointwise``, by name; a
    weight is packed again when it is another tensor or was changed in place (its version counter moved)."""

    def __init__(self) -> None:
        self._entries: Dict[str, Tuple[tuple, torch.Tensor]] = {}

    def __call__(self, name: str, weight: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        stamp = (weight.data_ptr(), weight._version, tuple(weight.shape), scale)
        entry = self._entries.get(name)
        if entry is None or entry[0] != stamp:
            weight = weight.contiguous() if scale == 1.0 else weight * scale
            entry = self._entries[name] = (stamp, torch.ops.mkldnn._reorder_linear_weight(weight))
        return entry[1]


def packed_weight(weight: torch.Tensor, transposed: bool = False) -> torch.Tensor:
    """``weight`` (or its transpose) packed for ``_linear_pointwise``, kept (in :data:`.config.CACHE`)
    while ``weight`` lives."""
    packs = CACHE.packs.get(id(weight))
    if packs is None:
        packs = CACHE.packs[id(weight)] = PackedWeights()
        weakref.finalize(weight, CACHE.packs.pop, id(weight), None)
    return packs('transposed', weight.t()) if transposed else packs('weight', weight)


def _fp32_cpu(*tensors: torch.Tensor) -> bool:
    return all(t.dtype == torch.float32 and t.device.type == 'cpu' for t in tensors)


def _probe() -> bool:
    if not torch.backends.mkldnn.is_available():
        return False
    x, weight, bias = torch.randn(5, 7), torch.randn(3, 7), torch.randn(3)
    return torch.allclose(_linear(x, weight, bias), torch.nn.functional.linear(x, weight, bias), atol=1e-5)


def onednn_linear_available() -> bool:
    """Whether this PyTorch build has oneDNN's linear op, and the op is right here."""
    return op_available('onednn_linear', _probe)


class _OneDNNLinear(torch.autograd.Function):
    """``F.linear`` with both GEMMs on oneDNN, on weights packed once (:func:`packed_weight`): forward
    ``x @ W.T + b``, backward ``dy @ W``; weight and bias gradients when asked for."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(rows, weight)
        ctx.shape, ctx.has_bias = x.shape, bias is not None
        return _linear(rows, packed_weight(weight), bias).view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        rows, weight = ctx.saved_tensors
        grad = grad.reshape(-1, grad.shape[-1])
        grad_x = (
            _linear(grad, packed_weight(weight, transposed=True), None).view(ctx.shape)
            if ctx.needs_input_grad[0]
            else None
        )
        grad_weight = grad.t().mm(rows) if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.linear``, differentiable, on oneDNN for fp32 CPU tensors outside autocast where it is available
    (:func:`packed_weight` keeps a packed copy of each weight, forward and transposed); ``F.linear``
    otherwise."""
    if _fp32_cpu(x, weight) and not torch.is_autocast_enabled('cpu') and onednn_linear_available():
        return _OneDNNLinear.apply(x, weight, bias)
    return torch.nn.functional.linear(x, weight, bias)
