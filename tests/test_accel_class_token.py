"""The class-token tower computes what the open_clip ViT computes (features and input gradients), on the
same weights, and leaves towers whose output is not the class token alone unchanged.

That image features through it still match the authors' values is tests/test_clip_parity.py's job."""

import pytest
import torch
from open_clip.modified_resnet import ModifiedResNet
from support import tiny_vit

from cliplit_basicsr.accel.class_token import ClassTokenBlock, class_token_tower


def test_class_token_tower_equals_the_vit_with_the_same_weights():
    vit = tiny_vit()
    tower = class_token_tower(vit)
    assert isinstance(tower.transformer.resblocks[-1], ClassTokenBlock)
    assert tower is class_token_tower(vit)  # made once
    assert {id(p) for p in tower.parameters()} == {id(p) for p in vit.parameters()}  # no copy of the weights
    x = torch.randn(5, 3, 32, 32, requires_grad=True)
    expected = vit(x)
    (grad_expected,) = torch.autograd.grad(expected.square().sum(), x)
    got = tower(x)
    (grad_got,) = torch.autograd.grad(got.square().sum(), x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_got, grad_expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    'tower',
    [
        lambda: tiny_vit(pool_type='avg'),
        lambda: tiny_vit(output_tokens=True),
        lambda: ModifiedResNet(layers=(1, 1, 1, 1), output_dim=16, heads=2, image_size=64, width=8).eval(),
    ],
)
def test_towers_that_read_more_than_the_class_token_are_left_alone(tower):
    tower = tower()
    assert class_token_tower(tower) is tower
