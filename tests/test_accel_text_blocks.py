"""The contiguous-rows block forward computes what open_clip's block computes, values and gradients, with
and without CLIP's causal mask, and the transformer falls back to open_clip's loop where it does not apply.

That text features through it equal ``encode_text`` and the authors' values is tests/test_clip_parity.py's job."""

import pytest
import torch
from open_clip.transformer import QuickGELU, Transformer

from cliplit_basicsr.accel.text_blocks import block_forward, is_plain_block, transformer_forward


def _transformer(**options) -> Transformer:
    torch.manual_seed(0)
    return Transformer(width=32, layers=2, heads=4, act_layer=QuickGELU, **options).eval().requires_grad_(False)


def _causal_mask(length: int) -> torch.Tensor:
    return torch.full((length, length), float('-inf')).triu_(1)


@pytest.mark.parametrize('mask', [None, _causal_mask(7)])
def test_block_forward_equals_open_clips_block(mask):
    block = _transformer().resblocks[0]
    assert is_plain_block(block)
    x = torch.randn(3, 7, 32, requires_grad=True)
    expected = block(x, attn_mask=mask)
    (grad_expected,) = torch.autograd.grad(expected.square().sum(), x)
    got = block_forward(block, x, mask)
    (grad_got,) = torch.autograd.grad(got.square().sum(), x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_got, grad_expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('options', [{}, {'ls_init_value': 0.5}])
def test_transformer_forward_equals_open_clips_transformer(options):
    transformer = _transformer(**options)
    x, mask = torch.randn(2, 5, 32), _causal_mask(5)
    torch.testing.assert_close(
        transformer_forward(transformer, x, mask), transformer(x, attn_mask=mask), rtol=1e-5, atol=1e-5
    )


def test_transformer_forward_leaves_other_blocks_to_open_clip():
    transformer = _transformer(batch_first=False)  # its blocks take (L, N, D)
    assert not any(is_plain_block(b) for b in transformer.resblocks)
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(transformer_forward(transformer, x), transformer(x))
