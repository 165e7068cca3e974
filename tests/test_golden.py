"""cliplit-enhance reproduces the authors' own test-script outputs on the reference samples."""

import numpy as np
import pytest
import torch
from PIL import Image

from cliplit_basicsr.checkpoint import load_checkpoint
from cliplit_basicsr.cli import main
from cliplit_basicsr.enhancer import CLIPLITEnhancer
from cliplit_basicsr.image_io import read_image
from cliplit_basicsr.network import CLIPLITNet

pytestmark = pytest.mark.usefixtures('accel_mode')  # every test with the fast paths on and off


@pytest.mark.slow
def test_cli_reproduces_authors_outputs(reference_dir, tmp_path):
    samples = sorted((reference_dir / 'samples').glob('*.jpg'))
    assert samples
    assert (
        main(['-i', str(reference_dir / 'samples'), '-o', str(tmp_path), '--ckpt', 'official', '--device', 'cpu']) == 0
    )
    for sample in samples:
        expected = np.asarray(Image.open(reference_dir / 'expected' / f'{sample.stem}.png')).astype(np.int16)
        ours = np.asarray(Image.open(tmp_path / f'{sample.stem}.png')).astype(np.int16)
        assert ours.shape == expected.shape, sample.name
        diff = np.abs(ours - expected)
        assert diff.max() <= 1, f'{sample.name}: max diff {diff.max()}/255'
        assert diff.mean() < 0.05, f'{sample.name}: mean diff {diff.mean()}/255'


def test_tiled_equals_full_frame_network(reference_dir):
    """Exact tiling: a 3x4-tile run equals the plain network on the whole image (to rounding)."""
    bgr = read_image(reference_dir / 'samples' / 'c5b8b4070688114c602b27933c6699b6.jpg')[100:250, 200:420]
    tiled = CLIPLITEnhancer('official', 'cpu', tile=64).enhance(bgr).astype(np.int16)
    net = load_checkpoint(CLIPLITNet('reflect'), reference_dir / 'enhancement_model.pth').eval()
    x = torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1])).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        full = torch.clamp(x / net(x), 0, 1)
    full = full[0].mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()[:, :, ::-1]
    diff = np.abs(tiled - full.astype(np.int16))
    assert diff.max() <= 1 and diff.mean() < 0.01
