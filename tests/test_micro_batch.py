"""Forward/backward in micro-batches gives the whole batch's loss terms and gradients (the network phases'
losses are sums or means of per-image terms)."""

import copy
from pathlib import Path

import pytest
import torch

from cliplit_basicsr.checkpoint import load_checkpoint
from cliplit_basicsr.errors import OptionError
from cliplit_basicsr.losses.cliplit_loss import CLIPLITEnhanceLoss, CLIPLITIdentityLoss
from cliplit_basicsr.models.micro_batch import backward_in_micro_batches, batch_share
from cliplit_basicsr.models.training_setup import micro_batch_option
from cliplit_basicsr.network import CLIPLITNet

INIT_WEIGHTS = Path(__file__).resolve().parents[1] / 'cliplit_basicsr' / 'weights' / 'init_enhancement_model.pth'


def _enhancement_terms(net, clip_fn, identity_fn, text):
    """The enhancement phase's terms, as the training model computes them (one mean, one summed loss)."""

    def terms_of(x, share):
        out = torch.clamp(x / (net(x) + 1e-9), 0, 1)
        terms = {
            'l_clip': batch_share(clip_fn, clip_fn(out, text), share),
            'l_identity': batch_share(identity_fn, identity_fn(out, x), share),
        }
        terms['total'] = terms['l_clip'] + terms['l_identity']
        return terms

    return terms_of


@pytest.mark.parametrize('micro_batch', [1, 3])
def test_micro_batches_give_the_batch_terms_and_gradients(parity_dir, micro_batch):
    vit, rn = str(parity_dir / 'tiny_vit_openai.pt'), str(parity_dir / 'tiny_rn_openai.pt')
    clip_fn = CLIPLITEnhanceLoss(loss_weight=320.0, clip_model='tiny-vit', clip_pretrained=vit)
    identity_fn = CLIPLITIdentityLoss(loss_weight=22.5, clip_model='tiny-rn', clip_pretrained=rn)
    gen = torch.Generator().manual_seed(0)
    text = torch.randn(2, clip_fn.clip('cpu').text_projection.shape[1], generator=gen)
    x = torch.rand(4, 3, 40, 36, generator=gen)
    whole = load_checkpoint(CLIPLITNet(padding='zeros'), INIT_WEIGHTS)
    split = copy.deepcopy(whole)

    expected = backward_in_micro_batches(x, None, _enhancement_terms(whole, clip_fn, identity_fn, text), 'total')
    actual = backward_in_micro_batches(x, micro_batch, _enhancement_terms(split, clip_fn, identity_fn, text), 'total')
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, rtol=1e-5, atol=0, msg=name)
    for (name, p_whole), p_split in zip(whole.named_parameters(), split.parameters()):
        scale = p_whole.grad.abs().max().item()
        assert scale > 0, f'{name}: the test input gives no gradient'
        # fp32 rounding only: oneDNN blocks the per-image GEMMs differently for other batch sizes, and the
        # CLIP softmax (logit scale 100) amplifies it; measured <= 1.3e-4 of a gradient's largest entry here
        # (a mis-scaled share would be off by the batch/part ratio)
        deviation = (p_split.grad - p_whole.grad).abs().max().item() / scale
        assert deviation < 1e-3, f'{name}: deviates by {deviation:.1e} of its largest entry'


def test_batch_share_follows_the_loss_reduction():
    value = torch.tensor(6.0)
    assert batch_share(CLIPLITIdentityLoss.__new__(CLIPLITIdentityLoss), value, 0.25) == 6.0  # summed over the batch
    assert batch_share(CLIPLITEnhanceLoss.__new__(CLIPLITEnhanceLoss), value, 0.25) == 1.5  # averaged over it
    assert batch_share(torch.nn.L1Loss(), value, 0.25) == 1.5
    # 2 processes: DDP averages their gradients; a summed loss counts twice, a mean as it is
    assert batch_share(CLIPLITIdentityLoss.__new__(CLIPLITIdentityLoss), value, 0.25, world_size=2) == 12.0
    assert batch_share(CLIPLITEnhanceLoss.__new__(CLIPLITEnhanceLoss), value, 0.25, world_size=2) == 1.5


@pytest.mark.parametrize('value', [0, -2, 1.5, True, 'two'])
def test_bad_micro_batch_option_is_a_one_line_error(value):
    with pytest.raises(OptionError, match=r'^train\.micro_batch: expected a positive integer'):
        micro_batch_option(value, torch.device('cpu'))


def test_auto_micro_batch_is_one_image_on_cpu_and_the_whole_batch_on_gpu():
    assert micro_batch_option('auto', torch.device('cpu')) == 1
    assert micro_batch_option('auto', torch.device('cuda', 0)) is None
    assert micro_batch_option(3, torch.device('cuda', 0)) == 3
    assert micro_batch_option(None, torch.device('cpu')) is None
