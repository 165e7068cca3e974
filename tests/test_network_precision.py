"""``train.network_amp``: the network's reduced-precision step stays close to the authors' fp32 step on the
parity fixtures (bf16 here, fp16 on a GPU), fp16 scales its gradients, and the scaler's state survives a
resume."""

import contextlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cliplit_basicsr
from cliplit_basicsr.checkpoint import load_checkpoint
from cliplit_basicsr.errors import OptionError
from cliplit_basicsr.losses.cliplit_loss import CLIPLITEnhanceLoss, CLIPLITIdentityLoss
from cliplit_basicsr.models.network_precision import FP16_INITIAL_SCALE, NetworkPrecision, network_precision_option
from cliplit_basicsr.network import CLIPLITNet

CPU = torch.device('cpu')
CUDA_AVAILABLE = torch.cuda.is_available()
PACKAGE = Path(cliplit_basicsr.__file__).parent
# Measured on the parity fixtures (docs/training.md): loss 2.7e-2 / 1.5e-3 relative, gradients 8.4e-2 /
# 5.0e-3 of their largest magnitude, bf16 / fp16 (fp16 on a CPU's emulation). The bounds leave room for
# other kernels.
TOLERANCES = {'bf16': (0.06, 0.2), 'fp16': (5e-3, 2e-2)}


@pytest.fixture(scope='module')
def enhancement_losses(parity_dir):
    """``losses(device)``: the enhancement phase's CLIP + identity loss with the tiny CLIP models."""

    def losses(device: torch.device):
        text = torch.randn(2, 64, generator=torch.Generator().manual_seed(1)).to(device)
        clip = CLIPLITEnhanceLoss(clip_pretrained=str(parity_dir / 'tiny_vit_openai.pt')).to(device)
        identity = CLIPLITIdentityLoss(clip_pretrained=str(parity_dir / 'tiny_rn_openai.pt'), precision='fp32')
        identity = identity.to(device)
        return lambda output, lq: clip(output, text) + identity(output, lq)

    return losses


@pytest.fixture(scope='module')
def backlit():
    """Two bundled samples at 128x128, as a training batch."""
    images = []
    for path in sorted((PACKAGE / 'samples').glob('*.jpg'))[:2]:
        rgb = Image.open(path).convert('RGB').resize((128, 128), Image.LANCZOS)
        images.append(torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).float() / 255)
    return torch.stack(images)


@contextlib.contextmanager
def exact_fp32_on_cuda():
    """The fp32 reference without TF32 (cuDNN's convolutions use it by default on CUDA)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def enhancement_step(precision: NetworkPrecision, lq: torch.Tensor, losses):
    """The model's network step on the authors' initial network: loss, unscaled gradients, optimizer."""
    net = load_checkpoint(CLIPLITNet(padding='zeros'), PACKAGE / 'weights' / 'init_enhancement_model.pth')
    net = net.to(lq.device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    with precision.autocast():
        light_map = net(lq)
    loss = losses(torch.clamp(lq / (light_map.float() + 1e-9), 0, 1), lq)
    precision.backward(loss)
    scale = 1.0 if precision.scaler is None else precision.scaler.get_scale()
    return loss, [p.grad / scale for p in net.parameters()], net, optimizer


@pytest.mark.parametrize(
    'amp,device',
    [
        ('bf16', 'cpu'),
        pytest.param('fp16', 'cuda', marks=[pytest.mark.cuda, pytest.mark.skipif(not CUDA_AVAILABLE, reason='a GPU')]),
    ],
)
def test_a_reduced_precision_step_stays_close_to_fp32(amp, device, backlit, enhancement_losses):
    device, backlit = torch.device(device), backlit.to(device)
    losses = enhancement_losses(device)
    with exact_fp32_on_cuda():
        reference_loss, reference_grads, _, _ = enhancement_step(NetworkPrecision(None, device), backlit, losses)
    precision = NetworkPrecision(amp, device)
    loss, grads, _, _ = enhancement_step(precision, backlit, losses)
    assert loss.dtype == torch.float32
    loss_deviation = abs(loss.item() - reference_loss.item()) / abs(reference_loss.item())
    grad_deviation = max(((g - r).abs().max() / r.abs().max()).item() for g, r in zip(grads, reference_grads))
    max_loss, max_grad = TOLERANCES[amp]
    assert 0 < loss_deviation < max_loss  # autocast really ran, and stays close
    assert grad_deviation < max_grad


def _tiny_fp16_step(precision: NetworkPrecision):
    """A one-conv network's step under ``precision``: the scaler's mechanics without the network's cost."""
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 1, 3)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    with precision.autocast():
        out = net(torch.rand(1, 3, 8, 8))
    precision.backward(out.float().square().mean())
    return net, optimizer


def test_fp16_skips_a_step_whose_gradients_overflow_and_lowers_its_scale():
    precision = NetworkPrecision('fp16', CPU)
    precision.load_state_dict(dict(precision.state_dict(), scale=1e38))  # every gradient overflows fp16
    net, optimizer = _tiny_fp16_step(precision)
    before = [p.detach().clone() for p in net.parameters()]
    precision.step(optimizer)
    assert all(torch.equal(p, b) for p, b in zip(net.parameters(), before))
    assert precision.scaler.get_scale() == pytest.approx(0.5e38)
    precision.load_state_dict(dict(precision.state_dict(), scale=1024.0))  # at the initial scale it is taken
    net, optimizer = _tiny_fp16_step(precision)
    before = [p.detach().clone() for p in net.parameters()]
    precision.step(optimizer)
    assert not any(torch.equal(p, b) for p, b in zip(net.parameters(), before))


def test_the_scaler_state_round_trips_and_fp32_has_none():
    assert NetworkPrecision(None, CPU).state_dict() is None and NetworkPrecision('bf16', CPU).state_dict() is None
    saved = dict(NetworkPrecision('fp16', CPU).state_dict(), scale=256.0)
    resumed = NetworkPrecision('fp16', CPU)
    resumed.load_state_dict(saved)
    assert resumed.state_dict() == saved
    fresh = NetworkPrecision('fp16', CPU)
    fresh.load_state_dict(None)  # a state saved in fp32: the scaler starts afresh
    assert fresh.scaler.get_scale() == FP16_INITIAL_SCALE


@pytest.mark.parametrize('value', ['fp8', 'float16', True])
def test_an_unknown_precision_is_a_one_line_error(value):
    with pytest.raises(OptionError, match=r'^train\.network_amp: expected ~ \(fp32'):
        network_precision_option(value, CPU)


def test_fp16_on_a_cpu_is_a_one_line_error_naming_bf16():
    with pytest.raises(OptionError, match=r'^train\.network_amp: fp16 is offered on GPUs only.*use bf16'):
        network_precision_option('fp16', CPU)
    assert network_precision_option('bf16', CPU).dtype is torch.bfloat16
