"""The training layout (channels-last) computes the plain network's loss and gradients, and leaves the
module's parameters and state dict as they were."""

import copy
from pathlib import Path

import pytest
import torch

from cliplit_basicsr.archs.training_layout import prepare_for_training
from cliplit_basicsr.checkpoint import load_checkpoint
from cliplit_basicsr.network import CLIPLITNet

INIT_WEIGHTS = Path(__file__).resolve().parents[1] / 'cliplit_basicsr' / 'weights' / 'init_enhancement_model.pth'


def _loss_and_grads(net, x, weights):
    """The training objective's shape: clamp(x / (L + eps)) scored by fixed weights, plus a term on L itself."""
    net.zero_grad(set_to_none=True)
    light = net(x)
    loss = (torch.clamp(x / (light + 1e-9), 0, 1) * weights).mean() + light.square().mean()
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in net.named_parameters()}


@pytest.mark.parametrize('padding', ['zeros', 'reflect'])
def test_loss_and_gradients_equal_the_plain_network(padding):
    plain = load_checkpoint(CLIPLITNet(padding=padding), INIT_WEIGHTS)
    fast = copy.deepcopy(plain)
    assert prepare_for_training(fast) is fast
    assert fast.cond1.weight.is_contiguous(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 37, 30, generator=gen)
    weights = torch.randn(2, 3, 37, 30, generator=gen)

    loss_plain, grads_plain = _loss_and_grads(plain, x, weights)
    loss_fast, grads_fast = _loss_and_grads(fast, x, weights)
    torch.testing.assert_close(loss_fast, loss_plain, rtol=1e-5, atol=0)
    assert grads_fast.keys() == grads_plain.keys()
    for name, grad in grads_plain.items():
        assert grad.abs().max() > 0, f'{name}: the test input gives no gradient'
        scale = grad.abs().max().item()
        torch.testing.assert_close(grads_fast[name], grad, rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_state_dict_inference_copies_and_repeated_calls():
    plain = load_checkpoint(CLIPLITNet(padding='zeros'), INIT_WEIGHTS)
    fast = prepare_for_training(prepare_for_training(copy.deepcopy(plain)))  # a second call changes nothing
    assert len(fast._forward_pre_hooks) == 1
    assert list(fast.state_dict()) == list(plain.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(fast.state_dict().values(), plain.state_dict().values()))
    x = torch.rand(1, 3, 24, 20, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-6)
    twin = copy.deepcopy(fast)  # the training model keeps copies of the network (I_t, I_{t-1})
    with torch.no_grad():
        twin.cond1.weight.mul_(2)
        assert not torch.allclose(twin(x), fast(x))
