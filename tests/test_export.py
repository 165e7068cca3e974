"""cliplit-export: an ONNX model that onnxruntime runs without torch, exact at every size."""

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from PIL import Image

from cliplit_basicsr.checkpoint import OFFICIAL_CHECKPOINT, load_checkpoint
from cliplit_basicsr.engine import quantise
from cliplit_basicsr.export import SizeFreeAdaptiveAvgPool2d, main
from cliplit_basicsr.image_io import read_image
from cliplit_basicsr.network import CLIPLITNet

pytestmark = pytest.mark.slow  # each export traces the network (about 20 s)


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    path = tmp_path_factory.mktemp('export') / 'cliplit.onnx'
    assert main(['-o', str(path)]) == 0
    return path


def _run(path, image: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return session.run(['enhanced'], {'image': image})[0]


def _authors_network() -> CLIPLITNet:
    return load_checkpoint(CLIPLITNet(padding='reflect'), OFFICIAL_CHECKPOINT).eval()


def test_onnxruntime_reproduces_the_authors_outputs(reference_dir, exported):
    for sample in sorted((reference_dir / 'samples').glob('*.jpg')):
        rgb = read_image(sample)[:, :, ::-1].astype(np.float32) / 255
        enhanced = _run(exported, np.ascontiguousarray(rgb.transpose(2, 0, 1)[None]))
        ours = quantise(torch.from_numpy(enhanced[0]), 255.0).permute(1, 2, 0).numpy()
        expected = np.asarray(Image.open(reference_dir / 'expected' / f'{sample.stem}.png')).astype(np.int32)
        diff = np.abs(ours - expected)
        assert diff.max() <= 1, f'{sample.name}: max diff {diff.max()}/255'
        assert diff.mean() < 0.05, f'{sample.name}: mean diff {diff.mean()}/255'


@pytest.mark.parametrize('shape', [(1, 3, 37, 53), (2, 3, 130, 67), (1, 3, 2, 2), (1, 3, 301, 433)])
def test_exact_at_sizes_other_than_the_traced_one(exported, shape):
    """The model was traced at 64x96; the pyramid pooling's averages follow the input's size at run time."""
    image = torch.rand(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    with torch.no_grad():
        expected = torch.clamp(image / _authors_network()(image), 0, 1)
    np.testing.assert_allclose(_run(exported, image.numpy()), expected.numpy(), rtol=0, atol=2e-6)


def test_model_metadata_and_dynamic_axes(exported):
    model = onnx.load(str(exported))
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    assert metadata['checkpoint'] == 'enhancement_model.pth' and metadata['padding'] == 'reflect'
    assert 'S-Lab License' in metadata['licence'] and metadata['precision'] == 'fp32'
    (image,) = model.graph.input
    dims = image.type.tensor_type.shape.dim
    assert [d.dim_param != '' for d in dims] == [True, False, True, True]  # N, H, W dynamic; 3 channels


def test_fp16_variant(tmp_path):
    path = tmp_path / 'cliplit_fp16.onnx'
    assert main(['-o', str(path), '--precision', 'fp16']) == 0
    image = torch.rand(1, 3, 61, 83, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = torch.clamp(image / _authors_network()(image), 0, 1).numpy()
    enhanced = _run(path, image.numpy().astype(np.float16))
    assert enhanced.dtype == np.float16
    assert np.abs(enhanced.astype(np.float32) - expected).max() < 1 / 255


def test_a_bad_checkpoint_is_one_line_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(b'not a checkpoint')
    with pytest.raises(SystemExit) as status:
        main(['-o', str(tmp_path / 'out.onnx'), '--ckpt', str(bad)])
    assert status.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: ') and str(bad) in err and '\n' not in err
    assert list(tmp_path.iterdir()) == [bad]


@pytest.mark.parametrize('size', [(7, 7), (13, 29), (6, 12), (2, 5), (101, 64)])
def test_size_free_pooling_takes_the_adaptive_averages(size):
    x = torch.rand(2, 3, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for bins in (1, 2, 3, 6):
        torch.testing.assert_close(SizeFreeAdaptiveAvgPool2d(bins)(x), torch.nn.AdaptiveAvgPool2d(bins)(x))
