"""LPIPS and MUSIQ through pyiqa as BasicSR metrics: registration, colour order, caching, offline errors.

pyiqa's real weights cannot be downloaded here; random weights in the right shapes exercise the same path.
"""

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from basicsr.metrics import calculate_metric
from pyiqa_test_weights import make_pyiqa_test_weights

import cliplit_basicsr  # noqa: F401  (registers the metrics)
from cliplit_basicsr.errors import CLIPLITError
from cliplit_basicsr.metrics import MetricWeightsError, get_pyiqa_metric, needs_reference

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    return make_pyiqa_test_weights(tmp_path_factory.mktemp('pyiqa_weights'))


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    """Two different smooth BGR images, also written as PNG for pyiqa to read by itself (as RGB)."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp('images')
    arrays = [cv2.GaussianBlur((rng.random((72, 88, 3)) * 255).astype(np.uint8), (7, 7), 0) for _ in range(2)]
    paths = []
    for index, array in enumerate(arrays):
        paths.append(str(folder / f'{index}.png'))
        cv2.imwrite(paths[-1], array)
    return arrays, paths


@pytest.mark.slow
def test_import_does_not_load_pyiqa():
    code = 'import sys, cliplit_basicsr; print("pyiqa" in sys.modules)'
    out = subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'False'


def test_reference_need_follows_the_signature():
    assert [needs_reference(t) for t in ('calculate_psnr', 'calculate_ssim', 'calculate_cliplit_lpips')] == [True] * 3
    assert [needs_reference(t) for t in ('calculate_niqe', 'calculate_cliplit_musiq')] == [False] * 2


def test_musiq_matches_pyiqa_reading_the_file(weights, images, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(weights.torch_home))
    (img, _), (path, _) = images
    opt = {'type': 'calculate_cliplit_musiq', 'pretrained_model_path': str(weights.musiq), 'device': 'cpu'}
    ours = calculate_metric({'img': img}, opt)
    pyiqa_metric = get_pyiqa_metric('musiq', 'cpu', pretrained='koniq10k', pretrained_model_path=str(weights.musiq))
    assert ours == pytest.approx(pyiqa_metric(path).item(), abs=1e-5)
    with_gt = calculate_metric({'img': img, 'img2': images[0][1]}, opt)  # a paired set: gt is ignored
    assert with_gt == pytest.approx(ours, abs=1e-6)


def test_lpips_matches_pyiqa_reading_the_files(weights, images, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(weights.torch_home))
    (img, img2), (path, path2) = images
    opt = {
        'type': 'calculate_cliplit_lpips',
        'pretrained_model_path': str(weights.lpips),
        'device': 'cpu',
        'better': 'lower',
    }
    ours = calculate_metric({'img': img, 'img2': img2}, opt)
    pyiqa_metric = get_pyiqa_metric('lpips', 'cpu', net='alex', pretrained_model_path=str(weights.lpips))
    assert ours == pytest.approx(pyiqa_metric(path, path2).item(), abs=1e-5)
    assert ours > 0
    assert calculate_metric({'img': img, 'img2': img}, opt) == pytest.approx(0, abs=1e-6)
    # the linear layers came from the file (pyiqa loads it non-strictly), not from a default
    loaded = torch.load(weights.lpips)
    assert torch.equal(pyiqa_metric.net.lin0.model[1].weight.cpu(), loaded['lin0.model.1.weight'])


def test_metric_is_built_once(weights, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(weights.torch_home))
    first = get_pyiqa_metric('musiq', 'cpu', pretrained='koniq10k', pretrained_model_path=str(weights.musiq))
    assert get_pyiqa_metric('musiq', 'cpu', pretrained='koniq10k', pretrained_model_path=str(weights.musiq)) is first


@pytest.mark.parametrize(
    'metric, wanted',
    [
        (
            'musiq',
            lambda: __import__('pyiqa.archs.musiq_arch', fromlist=['x']).default_model_urls['koniq10k'],
        ),
        (
            'lpips',
            lambda: __import__('torchvision.models', fromlist=['x']).AlexNet_Weights.IMAGENET1K_V1.url,
        ),
    ],
)
def test_missing_weights_offline_is_one_line_naming_the_file(metric, wanted, images, tmp_path, monkeypatch):
    from pyiqa.utils import download_util

    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'empty_torch_home'))
    monkeypatch.setattr(download_util, 'DEFAULT_CACHE_DIR', str(tmp_path / 'empty_pyiqa_cache'))
    (img, img2), _ = images
    with pytest.raises(MetricWeightsError) as error:
        calculate_metric({'img': img, 'img2': img2}, {'type': f'calculate_cliplit_{metric}', 'device': 'cpu'})
    message = str(error.value)
    assert isinstance(error.value, CLIPLITError) and '\n' not in message
    assert message.startswith(f'metric {metric}:')
    assert Path(wanted()).name in message and wanted() in message


def test_missing_local_weights_file_is_named(images, tmp_path):
    missing = tmp_path / 'nothing.pth'
    with pytest.raises(MetricWeightsError, match=f'metric musiq: pretrained_model_path {missing}: no such file'):
        calculate_metric(
            {'img': images[0][0]}, {'type': 'calculate_cliplit_musiq', 'pretrained_model_path': str(missing)}
        )


def test_bad_image_is_one_line(weights, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(weights.torch_home))
    gray = np.zeros((32, 32), np.uint8)
    expected = r'^musiq image: expected an HWC BGR uint8 image, got uint8 of shape \(32, 32\)$'
    with pytest.raises(ValueError, match=expected):
        calculate_metric(
            {'img': gray}, {'type': 'calculate_cliplit_musiq', 'pretrained_model_path': str(weights.musiq)}
        )
