"""The fused oneDNN ViT tower computes what the open_clip ViT computes, on the same weights, refuses to run
where it has no autograd, and is not made for towers whose blocks it does not compute.

That prompt-step image features through it still match the authors' values is tests/test_clip_parity.py's
job (they are computed without autograd on CPU, hence through this tower)."""

import pytest
import torch
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import QuickGELU, VisionTransformer
from support import tiny_vit
from torch import nn

from cliplit_basicsr.accel.fused_vit import FusedBlock, PatchEmbedding, fused_ops_available, fused_vit_tower
from cliplit_basicsr.clip import image_features, preprocess


def _vit(image_size: int = 32, act_layer=QuickGELU, **options) -> VisionTransformer:
    vit = tiny_vit(image_size, act_layer, **options).requires_grad_(False)
    with torch.no_grad():  # non-trivial biases and norms, so that every scaled term shows in the output
        for name, p in vit.named_parameters():
            if name.endswith(('bias', 'ln_1.weight', 'ln_2.weight')):
                p.add_(0.1 * torch.randn_like(p))
    return vit


@pytest.mark.parametrize('image_size', [32, 36])  # 36: the patch grid drops a remainder, as the convolution does
def test_fused_tower_equals_the_vit_with_the_same_weights(image_size):
    assert fused_ops_available()  # the PyTorch wheels this package installs have oneDNN
    vit = _vit(image_size)
    tower = fused_vit_tower(vit)
    assert tower is fused_vit_tower(vit)  # made once
    assert isinstance(tower.conv1, PatchEmbedding)
    blocks = tower.transformer.resblocks
    assert all(isinstance(b, FusedBlock) for b in blocks) and [b.class_token_only for b in blocks] == [0, 0, 1]
    assert {id(p) for p in tower.parameters()} == {id(p) for p in vit.parameters()}  # no copy of the weights
    x = torch.randn(5, 3, image_size, image_size)
    with torch.no_grad():
        torch.testing.assert_close(tower(x), vit(x), rtol=1e-5, atol=1e-5)


def test_fused_tower_equals_a_vit_whose_attention_has_no_biases():
    """The class-token attention drops the key bias (it cancels in the softmax) and adds the value bias
    after mixing; without biases both terms are absent."""
    vit = _vit()
    for block in vit.transformer.resblocks:
        unbiased = nn.MultiheadAttention(32, 4, bias=False, batch_first=True).eval().requires_grad_(False)
        with torch.no_grad():
            unbiased.in_proj_weight.copy_(block.attn.in_proj_weight)
            unbiased.out_proj.weight.copy_(block.attn.out_proj.weight)
        block.attn = unbiased
    tower, x = fused_vit_tower(vit), torch.randn(3, 3, 32, 32)
    assert tower is not None and tower.transformer.resblocks[-1].block.attn.in_proj_bias is None
    with torch.no_grad():
        torch.testing.assert_close(tower(x), vit(x), rtol=1e-5, atol=1e-5)


def test_fused_tower_follows_weight_updates():
    vit = _vit()
    tower = fused_vit_tower(vit)
    with torch.no_grad():
        x = torch.randn(2, 3, 32, 32)
        tower(x)  # packs the weights
        vit.transformer.resblocks[0].mlp.c_fc.bias.add_(1.0)
        vit.transformer.resblocks[1].ln_2.weight.mul_(2.0)
        vit.transformer.resblocks[1].mlp.c_proj.weight.mul_(1.5)  # packed: must be packed again
        vit.transformer.resblocks[2].attn.in_proj_weight[:32].mul_(-1.0)  # the class-token query's rows
        vit.conv1.weight.add_(0.1)
        torch.testing.assert_close(tower(x), vit(x), rtol=1e-5, atol=1e-5)


def test_fused_tower_refuses_inputs_that_need_gradients():
    tower = fused_vit_tower(_vit())
    with pytest.raises(RuntimeError, match='no autograd'):
        tower(torch.randn(1, 3, 32, 32, requires_grad=True))


def test_image_features_use_the_fused_tower_without_autograd_only(monkeypatch):
    calls = []
    forward = FusedBlock.forward
    monkeypatch.setattr(FusedBlock, 'forward', lambda self, *a, **k: calls.append(1) or forward(self, *a, **k))

    class Model(nn.Module):  # what image_features reads of an open_clip CLIP
        def __init__(self):
            super().__init__()
            self.visual = _vit()

    model, images = Model(), torch.rand(2, 3, 40, 40, requires_grad=True)
    with torch.no_grad():
        plain = model.visual(preprocess.preprocess_images(images, (32, 32)))
        fused = image_features(model, images)
    assert len(calls) == 3
    differentiable = image_features(model, images)
    assert len(calls) == 3 and differentiable.requires_grad
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(differentiable.detach(), plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    'tower',
    [
        lambda: _vit(pool_type='avg'),
        lambda: _vit(act_layer=nn.GELU),
        lambda: _vit(ls_init_value=0.1),
        lambda: _vit().train(),
        lambda: ModifiedResNet(layers=(1, 1, 1, 1), output_dim=16, heads=2, image_size=64, width=8).eval(),
    ],
)
def test_towers_it_does_not_compute_get_none(tower):
    assert fused_vit_tower(tower()) is None


def test_a_failing_op_probe_turns_the_fast_path_off_with_one_warning(caplog):
    """A private op that is missing or changed is found out once and said once, at WARNING, with the path
    and the torch version; never raised."""
    import logging

    from cliplit_basicsr.accel import clear_caches, op_available

    def changed_op():
        raise RuntimeError('mkldnn::_linear_pointwise() Expected 6 arguments, got 5')

    clear_caches()  # forget this process's own probe of the op
    try:
        with caplog.at_level(logging.DEBUG, logger='cliplit_basicsr.accel'):
            assert op_available('fused_vit', changed_op) is False
            assert op_available('fused_vit', changed_op) is False  # probed once
        assert [r.levelno for r in caplog.records] == [logging.WARNING]
        message = caplog.records[0].getMessage()
        assert f'fast path fused_vit is off for this process (torch {torch.__version__})' in message
        assert 'Expected 6 arguments' in message
        assert fused_vit_tower(_vit()) is None
    finally:
        clear_caches()


def test_a_fast_path_failing_at_run_time_warns_once_and_stays_off(caplog):
    import logging

    from cliplit_basicsr import accel

    calls = []

    def failing():
        calls.append(1)
        raise TypeError('unexpected keyword argument')

    accel.clear_caches()
    try:
        with caplog.at_level(logging.DEBUG, logger='cliplit_basicsr.accel'):
            assert accel._guarded('fused_vit', failing) is None
            assert accel._guarded('fused_vit', failing) is None
        assert len(calls) == 1  # off after the first failure
        assert [r.levelno for r in caplog.records] == [logging.WARNING]
        assert 'fast path fused_vit is off' in caplog.records[0].getMessage()
        assert 'TypeError: unexpected keyword argument' in caplog.records[0].getMessage()
    finally:
        accel.clear_caches()


def test_the_switch_sends_image_features_through_open_clip():
    from cliplit_basicsr.accel import accel

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = _vit()

    model, images = Model(), torch.rand(2, 3, 40, 40)
    calls = []
    model.visual.transformer.resblocks[-1].register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad(), accel(False):
        plain = image_features(model, images)
    assert calls == [1]  # open_clip's own last block ran
    with torch.no_grad():
        fast = image_features(model, images)
    assert calls == [1]  # the fused tower ran instead
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
