"""The inference engines against the authors' outputs and each other: the tiled engine (exact, bounded
memory), driven by the network's own layout, and the reference engine (the network's ``forward``)."""

import pytest
import torch

from cliplit_basicsr.checkpoint import load_checkpoint
from cliplit_basicsr.engine import TiledEngine, build_engine, enhance_tensor, light_to_output
from cliplit_basicsr.engine.tiled import HEAD_CACHE_BYTES
from cliplit_basicsr.network import CLIPLITNet

pytestmark = pytest.mark.usefixtures('accel_mode')  # every test with the fast paths on and off

VARIANTS = {'train': 'zeros', 'test': 'reflect'}


def assert_close_parity(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """The parity README's tolerance: rtol 1e-4, atol 5e-5 * max|expected|."""
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=5e-5 * expected.abs().max().item())


def _run(engine, img: torch.Tensor, strength: float = 1.0):
    out = torch.empty(img.shape)
    light = torch.empty((img.shape[0], 1) + img.shape[2:])

    def write(region, enhanced, light_map):
        y0, y1, x0, x1 = region
        out[:, :, y0:y1, x0:x1], light[:, :, y0:y1, x0:x1] = enhanced, light_map

    engine.run(lambda r: img[:, :, r[0] : r[1], r[2] : r[3]], write, img.shape[0], *img.shape[2:], strength)
    return out, light


def test_engine_without_onednn_conv_add_gives_the_same_images(parity_fixtures, reference_dir):
    """The plain-PyTorch conv-add (the switch off, CUDA, builds without oneDNN's in-place op) computes what
    oneDNN does."""
    from cliplit_basicsr.accel import accel

    net = load_checkpoint(CLIPLITNet('reflect'), reference_dir / 'enhancement_model.pth').eval()
    with accel(True):  # the module's accel_mode may have turned it off
        onednn = enhance_tensor(net, parity_fixtures['input'], tile=24)
    with accel(False):
        plain = enhance_tensor(net, parity_fixtures['input'], tile=24)
    torch.testing.assert_close(plain, onednn, rtol=1e-5, atol=1e-6)


def test_a_conv_add_failing_at_run_time_falls_back_with_one_warning(
    parity_fixtures, reference_dir, monkeypatch, caplog
):
    import logging

    from cliplit_basicsr import accel
    from cliplit_basicsr.accel import conv_add

    net = load_checkpoint(CLIPLITNet('reflect'), reference_dir / 'enhancement_model.pth').eval()
    with accel.accel(False):
        expected = enhance_tensor(net, parity_fixtures['input'], tile=24)
    calls = []

    def broken(*args):
        calls.append(args)
        raise RuntimeError('could not create a primitive')

    monkeypatch.setattr(conv_add, 'conv_add_works', lambda dtype: True)  # the probe passed; the op fails later
    monkeypatch.setattr(conv_add, 'conv_add_onednn', broken)
    accel.clear_caches()
    try:
        with accel.accel(True), caplog.at_level(logging.DEBUG, logger='cliplit_basicsr.accel'):
            got = enhance_tensor(net, parity_fixtures['input'], tile=24)
    finally:
        accel.clear_caches()
    assert len(calls) == 1  # off for good after the first failure
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert 'fast path conv_add_torch.float32 is off' in caplog.records[0].getMessage()
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize('variant', ['train', 'test'])
@pytest.mark.parametrize('tile,head_cache', [(0, 'kept'), (24, 'kept'), (24, 'recomputed')])
def test_tiled_engine_matches_authors_enhanced_output(parity_fixtures, reference_dir, variant, tile, head_cache):
    """The tiled channels-last engine reproduces the authors' enhanced images (test-script form, no eps),
    whether the second pass reads the head features from the whole-image cache or recomputes them."""
    fx = parity_fixtures
    net = load_checkpoint(CLIPLITNet(VARIANTS[variant]), reference_dir / 'init_enhancement_model.pth').eval()
    assert tile == 0 or tile < min(fx['input'].shape[2:])  # the tiled case really is tiled
    cache = HEAD_CACHE_BYTES if head_cache == 'kept' else 0
    enhanced, light = _run(TiledEngine(net, torch.device('cpu'), tile=tile, head_cache_bytes=cache), fx['input'])
    expected = (
        fx['enhanced_test_variant']
        if variant == 'test'
        else torch.clamp(fx['input'] / fx['light_map_train_variant'], 0, 1)
    )
    assert_close_parity(enhanced, expected)


@pytest.mark.parametrize('variant', ['train', 'test'])
def test_engines_agree_and_reproduce_the_authors_light_map(parity_fixtures, reference_dir, variant):
    fx = parity_fixtures
    net = load_checkpoint(CLIPLITNet(VARIANTS[variant]), reference_dir / 'init_enhancement_model.pth').eval()
    engines = {name: build_engine(net, torch.device('cpu'), tile=24, engine=name) for name in ('tiled', 'reference')}
    (tiled, tiled_light), (reference, reference_light) = (_run(engines[n], fx['input']) for n in engines)
    assert_close_parity(reference_light, fx[f'light_map_{variant}_variant'])
    assert_close_parity(tiled_light, fx[f'light_map_{variant}_variant'])
    torch.testing.assert_close(tiled, reference, rtol=1e-5, atol=1e-5)


def test_the_tiled_engine_follows_the_networks_layout():
    """Halos and widths come from CLIPLITNet.layout(): a network whose layout the buffer plan cannot serve is
    refused, and the halos are the number of 3x3 convs on each side of the pyramid pooling."""
    net = CLIPLITNet('reflect')
    layout = net.layout()
    assert (layout.head_halo, layout.tail_halo) == (5, 12)
    assert [stage.name for stage in layout.head] == ['cond1', 'ResidualBlock1', 'ResidualBlock2']
    assert layout.tail[0].in_channels == layout.pyramid.channels == 32 and layout.tail[1].channels == 64
    broken = CLIPLITNet('reflect')
    broken.layout = lambda: type(layout)(layout.head, layout.pyramid, layout.tail[:-1], layout.leaky_slope)
    with pytest.raises(ValueError, match='light map'):
        TiledEngine(broken, torch.device('cpu'))


def test_strength_scales_the_light_map(parity_fixtures, reference_dir):
    net = load_checkpoint(CLIPLITNet('reflect'), reference_dir / 'enhancement_model.pth').eval()
    img = parity_fixtures['input']
    engine = TiledEngine(net, torch.device('cpu'), tile=24)
    one, light = _run(engine, img)
    assert torch.equal(one, torch.clamp(img / light, 0, 1))
    assert torch.equal(_run(engine, img, 0.0)[0], img)  # strength 0: the input itself
    assert torch.equal(_run(engine, img, 2.0)[0], torch.clamp(img / light.pow(2.0), 0, 1))
    assert torch.equal(enhance_tensor(net, img, tile=24), one)


def test_strength_is_the_same_whatever_the_layout():
    """A tile's output (a strided view) equals the whole image's there: float32 pow differs in its last bit
    between the vectorised and the scalar kernels, so a strength is computed through float64."""
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 67, 261, generator=generator)
    light = torch.rand(1, 1, 67, 261, generator=generator) * 0.9 + 0.05
    for strength in (0.6, 1.37):
        whole = light_to_output(image, light, strength)
        assert torch.equal(light_to_output(image[..., 5:136], light[..., 5:136], strength), whole[..., 5:136])


def test_progress_of_a_batch():
    fractions = []
    engine = TiledEngine(CLIPLITNet('reflect').eval(), torch.device('cpu'), tile=16)
    img = torch.rand(2, 3, 20, 40, generator=torch.Generator().manual_seed(0))
    engine.run(lambda r: img[:, :, r[0] : r[1], r[2] : r[3]], lambda *_: None, 2, 20, 40, 1.0, fractions.append)
    assert fractions == pytest.approx([step / 24 for step in range(1, 25)])  # 6 tiles, two passes, two images
