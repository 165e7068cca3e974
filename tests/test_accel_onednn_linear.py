"""The oneDNN GEMM route for frozen CLIP forwards computes what PyTorch computes, and really takes over the
linear layers' GEMMs (including nn.MultiheadAttention's), on fp32 CPU tensors only.

That the identity loss through it still matches the authors' values is tests/test_clip_parity.py's job
(its target maps are computed without autograd, hence through this route)."""

import pytest
import torch
from torch import nn

from cliplit_basicsr.accel import onednn_linear
from cliplit_basicsr.accel.config import CACHE
from cliplit_basicsr.accel.onednn_linear import onednn_gemms, onednn_gemms_available


@pytest.fixture
def routed(monkeypatch):
    """Counts the GEMMs handed to oneDNN (after the availability check's own)."""
    onednn_gemms_available()
    calls = []
    linear = onednn_linear._linear

    def counting(x, weight, bias):
        calls.append(tuple(x.shape))
        return linear(x, weight, bias)

    monkeypatch.setattr(onednn_linear, '_linear', counting)
    return calls


def _block(width: int = 24, heads: int = 4) -> nn.Module:
    """An open_clip-like transformer block: batch-first attention, then an MLP."""
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(width, heads, batch_first=True)
    mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention, self.mlp = attention, mlp

        def forward(self, x):
            x = x + self.attention(x, x, x, need_weights=False)[0]
            return x + self.mlp(x)

    return Block().eval().requires_grad_(False)


def test_attention_and_mlp_gemms_run_on_onednn_with_the_same_result(routed):
    assert onednn_gemms_available()  # the PyTorch wheels this package installs have oneDNN
    block, x = _block(), torch.randn(3, 11, 24)
    with torch.no_grad():
        expected = block(x)
        with onednn_gemms(torch.device('cpu')):
            got = block(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # in-projection, out-projection and the MLP's two layers, each over the 3 x 11 tokens
    assert len(routed) == 4 and all(shape == (33, w) for shape, w in zip(routed, (24, 24, 24, 96))), routed


def test_plain_matmuls_and_broadcast_weights(routed):
    gen = torch.Generator().manual_seed(1)
    x, weight, bias = torch.randn(6, 5, generator=gen), torch.randn(4, 5, generator=gen), torch.randn(4, generator=gen)
    batched = torch.randn(2, 6, 5, generator=gen)
    with torch.no_grad(), onednn_gemms('cpu'):
        affine, product = torch.addmm(bias, x, weight.t()), x @ weight.t()
        broadcast = torch.bmm(batched, weight.t().expand(2, 5, 4))
        scaled = torch.addmm(bias, x, weight.t(), alpha=2.0)  # not a linear layer: left to PyTorch
    assert len(routed) == 3
    torch.testing.assert_close(affine, torch.nn.functional.linear(x, weight, bias))
    torch.testing.assert_close(product, x @ weight.t())
    torch.testing.assert_close(broadcast, batched @ weight.t())
    torch.testing.assert_close(scaled, bias + 2.0 * x @ weight.t())


def test_other_dtypes_are_left_alone_and_the_fast_path_setting_comes_back(routed):
    fastpath = torch.backends.mha.get_fastpath_enabled()
    x, weight = torch.randn(4, 8, dtype=torch.bfloat16), torch.randn(3, 8, dtype=torch.bfloat16)
    with torch.no_grad(), onednn_gemms('cpu'):
        assert not torch.backends.mha.get_fastpath_enabled()
        half = torch.nn.functional.linear(x, weight)
    assert torch.backends.mha.get_fastpath_enabled() == fastpath
    assert routed == [] and half.dtype == torch.bfloat16
    torch.testing.assert_close(half, torch.nn.functional.linear(x, weight))


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
