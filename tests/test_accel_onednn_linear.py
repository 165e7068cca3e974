"""oneDNN's differentiable linear computes what ``F.linear`` computes, on fp32 CPU tensors only, and keeps
its packed weights in step with the weights."""

import pytest
import torch

from cliplit_basicsr.accel import onednn_linear
from cliplit_basicsr.accel.config import CACHE
from cliplit_basicsr.accel.onednn_linear import onednn_linear_available


@pytest.fixture
def routed(monkeypatch):
    """Counts the GEMMs handed to oneDNN (after the availability check's own)."""
    assert onednn_linear_available()  # the PyTorch wheels this package installs have oneDNN
    calls = []
    linear = onednn_linear._linear

    def counting(x, weight, bias):
        calls.append(tuple(x.shape))
        return linear(x, weight, bias)

    monkeypatch.setattr(onednn_linear, '_linear', counting)
    return calls


def test_differentiable_linear_equals_f_linear_values_and_gradients(routed):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 7, 5, generator=gen, requires_grad=True)
    weight = torch.randn(4, 5, generator=gen, requires_grad=True)
    bias = torch.randn(4, generator=gen, requires_grad=True)
    upstream = torch.randn(2, 7, 4, generator=gen)
    expected = torch.nn.functional.linear(x, weight, bias)
    grads_expected = torch.autograd.grad((expected * upstream).sum(), (x, weight, bias))
    got = onednn_linear.linear(x, weight, bias)
    grads = torch.autograd.grad((got * upstream).sum(), (x, weight, bias))
    assert len(routed) == 2  # the forward GEMM and the input gradient's
    torch.testing.assert_close(got, expected)
    for g, e in zip(grads, grads_expected):
        torch.testing.assert_close(g, e)


def test_differentiable_linear_leaves_autocast_and_other_dtypes_to_pytorch(routed):
    x, weight = torch.randn(3, 8), torch.randn(2, 8)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert onednn_linear.linear(x, weight).dtype == torch.bfloat16
    assert onednn_linear.linear(x.double(), weight.double()).dtype == torch.float64
    assert routed == []


def test_packed_weights_follow_in_place_changes_and_go_with_their_weight():
    import gc

    x, weight = torch.randn(3, 8), torch.randn(4, 8)
    torch.testing.assert_close(onednn_linear.linear(x, weight), x @ weight.t())
    with torch.no_grad():
        weight.mul_(-2.0)
    torch.testing.assert_close(onednn_linear.linear(x, weight), x @ weight.t())
    key = id(weight)
    assert key in CACHE.packs
    del weight
    gc.collect()
    assert key not in CACHE.packs
