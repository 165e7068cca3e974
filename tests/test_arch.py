"""The CLIP-LIT network and its checkpoint loader against the authors' checkpoints and parity fixtures."""

import pytest
import torch
from basicsr.utils.registry import ARCH_REGISTRY

from cliplit_basicsr.checkpoint import (
    OFFICIAL_CHECKPOINT,
    CheckpointError,
    load_checkpoint,
    read_state_dict,
    resolve_checkpoint,
)
from cliplit_basicsr.network import CLIPLITNet

pytestmark = pytest.mark.usefixtures('accel_mode')  # every test with the fast paths on and off

CHECKPOINTS = ('enhancement_model.pth', 'init_enhancement_model.pth')
VARIANTS = {'train': 'zeros', 'test': 'reflect'}


def assert_close_parity(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """The parity README's tolerance: rtol 1e-4, atol 5e-5 * max|expected|."""
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=5e-5 * expected.abs().max().item())


def test_registered_and_parameter_count():
    net = ARCH_REGISTRY.get('CLIPLITNet')(padding='reflect')
    assert sum(p.numel() for p in net.parameters()) == 278790


def test_conv_init_is_normal_002():
    torch.manual_seed(0)
    weights = torch.cat([m.weight.flatten() for m in CLIPLITNet().modules() if isinstance(m, torch.nn.Conv2d)])
    assert abs(weights.mean().item()) < 1e-3
    assert weights.std().item() == pytest.approx(0.02, rel=0.02)


def test_unknown_padding_rejected():
    with pytest.raises(ValueError, match='padding'):
        CLIPLITNet(padding='replicate')


@pytest.mark.parametrize('name', CHECKPOINTS)
@pytest.mark.parametrize('padding', ['zeros', 'reflect'])
def test_authors_checkpoints_load_into_both_variants(reference_dir, name, padding):
    raw = torch.load(reference_dir / name, map_location='cpu', weights_only=True)
    net = load_checkpoint(CLIPLITNet(padding), reference_dir / name)
    state = net.state_dict()
    assert len(state) == len(raw)
    for key, value in raw.items():
        assert key.startswith('module.')
        assert torch.equal(state[key[len('module.') :]], value)


def test_packaged_official_checkpoint_is_the_authors_final_model(reference_dir):
    assert OFFICIAL_CHECKPOINT.read_bytes() == (reference_dir / 'enhancement_model.pth').read_bytes()


@pytest.mark.parametrize(
    'wrap',
    [
        lambda sd: sd,
        lambda sd: {f'module.{k}': v for k, v in sd.items()},
        lambda sd: {'params': sd},
        lambda sd: {'params_ema': {f'module.{k}': v for k, v in sd.items()}, 'params': {}},
    ],
)
def test_wrapped_and_prefixed_forms(tmp_path, wrap):
    torch.manual_seed(1)
    state = CLIPLITNet().state_dict()
    torch.save(wrap(state), tmp_path / 'ckpt.pth')
    loaded = load_checkpoint(CLIPLITNet('reflect'), tmp_path / 'ckpt.pth').state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def _bad_files(tmp_path):
    state = CLIPLITNet().state_dict()
    text = tmp_path / 'notes.pth'
    text.write_text('not a checkpoint')
    missing = dict(state)
    missing.pop('cond1.bias')
    wrong_shape = {**state, 'condx.weight': torch.zeros(64, 32, 1, 1)}
    files = {
        text: 'not a torch file',
        tmp_path / 'missing.pth': (missing, 'missing keys cond1.bias'),
        tmp_path / 'extra.pth': ({**state, 'head.weight': torch.zeros(1)}, 'unexpected keys head.weight'),
        tmp_path / 'shape.pth': (wrong_shape, 'condx.weight has shape (64, 32, 1, 1)'),
        tmp_path / 'list.pth': ([torch.zeros(1)], 'not a state dict'),
        tmp_path / 'truncated.pth': None,
    }
    for path, spec in files.items():
        if isinstance(spec, tuple):
            torch.save(spec[0], path)
            files[path] = spec[1]
    torch.save(state, tmp_path / 'full.pth')
    (tmp_path / 'truncated.pth').write_bytes((tmp_path / 'full.pth').read_bytes()[:5000])
    files[tmp_path / 'truncated.pth'] = 'cannot be loaded'
    return files


def test_bad_checkpoints_give_one_line_errors_naming_the_file(tmp_path):
    for path, reason in _bad_files(tmp_path).items():
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(CLIPLITNet(), path)
        message = str(info.value)
        assert '\n' not in message and str(path) in message and reason in message, message


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(CheckpointError, match='no such file'):
        resolve_checkpoint(tmp_path / 'absent.pth')


def test_read_state_dict_strips_module_prefix(reference_dir):
    assert all(not k.startswith('module.') for k in read_state_dict(reference_dir / 'enhancement_model.pth'))


@pytest.mark.parametrize('variant', ['train', 'test'])
def test_parity_with_authors_network(parity_fixtures, reference_dir, variant):
    fx = parity_fixtures
    net = load_checkpoint(CLIPLITNet(VARIANTS[variant]), reference_dir / 'init_enhancement_model.pth').eval()
    with torch.no_grad():
        light = net(fx['input'])
    assert_close_parity(light, fx[f'light_map_{variant}_variant'])
    eps = 1e-9 if variant == 'train' else 0.0  # the training script's form / the test script's form
    assert_close_parity(torch.clamp(fx['input'] / (light + eps), 0, 1), fx[f'enhanced_{variant}_variant'])
