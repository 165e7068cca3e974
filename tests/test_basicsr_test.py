"""``python -m basicsr.test`` with CLIPLITEvalModel on small generated sets, checked independently.

One run covers a paired set (PSNR, SSIM, LPIPS, MUSIQ) and a set without ground truth (MUSIQ, NIQE; PSNR
listed but skipped). Every logged value is recomputed from the written PNGs with BasicSR's metric
functions and with pyiqa reading the files itself; pyiqa runs on random weights made for the test.
A last test runs the authors' smallest sample photo and compares with their own output.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.metrics import calculate_niqe, calculate_psnr, calculate_ssim
from pyiqa_test_weights import make_pyiqa_test_weights

from cliplit_basicsr.checkpoint import OFFICIAL_CHECKPOINT, load_checkpoint
from cliplit_basicsr.metrics import get_pyiqa_metric
from cliplit_basicsr.network import CLIPLITNet

pytestmark = pytest.mark.slow  # basicsr.test runs of ~30-60 s each

REPO_ROOT = Path(__file__).resolve().parents[1]
NAME = 'cliplit_tiny_eval'
LOG_TOLERANCE = 5.01e-5  # the log rounds to 4 decimals


def _smooth_image(rng: np.random.Generator, height: int, width: int, scale: float) -> np.ndarray:
    noise = (rng.random((height, width, 3)) * 255 * scale).astype(np.uint8)
    return cv2.GaussianBlur(noise, (9, 9), 0)


def _write_sets(root: Path) -> None:
    rng = np.random.default_rng(0)
    for folder in ('paired/lq', 'paired/gt', 'single'):
        (root / folder).mkdir(parents=True)
    for index, (height, width) in enumerate([(200, 208), (208, 192)]):  # NIQE needs >= 192 px
        lq = _smooth_image(rng, height, width, 0.4)  # dark, like a backlit photo
        cv2.imwrite(str(root / f'paired/lq/pair{index}.png'), lq)
        cv2.imwrite(str(root / f'paired/gt/pair{index}.png'), _smooth_image(rng, height, width, 1.0))
    cv2.imwrite(str(root / 'single/photo.png'), _smooth_image(rng, 200, 216, 0.5))


def _options(weights) -> dict:
    metrics = {
        'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False},
        'ssim': {'type': 'calculate_ssim', 'crop_border': 0, 'test_y_channel': False},
        'lpips': {'type': 'calculate_cliplit_lpips', 'better': 'lower', 'pretrained_model_path': str(weights.lpips)},
        'musiq': {'type': 'calculate_cliplit_musiq', 'pretrained_model_path': str(weights.musiq)},
        'niqe': {'type': 'calculate_niqe', 'crop_border': 0, 'better': 'lower'},
    }
    return {
        'name': NAME,
        'model_type': 'CLIPLITEvalModel',
        'num_gpu': 0,
        'datasets': {
            'test_1': {
                'name': 'BAID_generated',
                'type': 'PairedImageDataset',
                'dataroot_lq': 'paired/lq',
                'dataroot_gt': 'paired/gt',
                'io_backend': {'type': 'disk'},
                'scale': 1,
            },
            'test_2': {
                'name': 'Backlit300_generated',
                'type': 'SingleImageDataset',
                'dataroot_lq': 'single',
                'io_backend': {'type': 'disk'},
            },
        },
        # the training variant: test() must still infer with reflect padding; no checkpoint -> official
        'network_g': {'type': 'CLIPLITNet', 'padding': 'zeros'},
        'path': {},
        'val': {'save_img': True, 'metrics': metrics},
    }


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """Run ``python -m basicsr.test`` once from a temporary working directory."""
    work = tmp_path_factory.mktemp('basicsr_test')
    weights = make_pyiqa_test_weights(work / 'pyiqa_weights')
    _write_sets(work)
    (work / 'options.yml').write_text(yaml.safe_dump(_options(weights), sort_keys=False))
    env = dict(os.environ, HF_HUB_OFFLINE='1', TORCH_HOME=str(weights.torch_home))
    result = subprocess.run(
        [sys.executable, '-m', 'basicsr.test', '-opt', 'options.yml'],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return work, weights, result


def _logged(work: Path, dataset: str) -> dict:
    log = next((work / 'results' / NAME).glob(f'test_{NAME}_*.log')).read_text()
    block = re.search(rf'Validation {dataset}\n((?:\s+# .*\n)+)', log).group(1)
    return {m: float(v) for m, v in re.findall(r'# (\w+): ([-0-9.]+)', block)}


def _outputs(work: Path, dataset: str):
    return sorted((work / 'results' / NAME / 'visualization' / dataset).glob('*.png'))


def _authors_inference(lq_png: Path) -> np.ndarray:
    """The authors' test script restated: official weights, reflect variant, clamp(I / L, 0, 1), 8 bits."""
    net = load_checkpoint(CLIPLITNet(padding='reflect'), OFFICIAL_CHECKPOINT).eval()
    rgb = cv2.imread(str(lq_png))[:, :, ::-1].astype(np.float32) / 255.0
    image = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None]
    with torch.no_grad():
        enhanced = torch.clamp(image / net(image), 0, 1)[0].permute(1, 2, 0).numpy()
    return np.round(enhanced * 255.0).astype(np.uint8)[:, :, ::-1]


def test_run_succeeds_and_writes_under_cwd(run):
    work, _, result = run
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in _outputs(work, 'BAID_generated')] == [f'pair0_{NAME}.png', f'pair1_{NAME}.png']
    assert [p.name for p in _outputs(work, 'Backlit300_generated')] == [f'photo_{NAME}.png']


def test_outputs_are_the_authors_inference_with_the_official_checkpoint(run):
    work, _, _ = run
    for output in _outputs(work, 'BAID_generated'):
        lq = work / 'paired' / 'lq' / output.name.replace(f'_{NAME}', '')
        difference = np.abs(cv2.imread(str(output)).astype(int) - _authors_inference(lq))
        assert difference.max() <= 1 and difference.mean() < 0.01


def test_paired_metrics_equal_independent_computation(run, monkeypatch):
    work, weights, _ = run
    monkeypatch.setenv('TORCH_HOME', str(weights.torch_home))  # LPIPS's random AlexNet
    outputs = _outputs(work, 'BAID_generated')
    gts = [work / 'paired' / 'gt' / p.name.replace(f'_{NAME}', '') for p in outputs]
    images = [(cv2.imread(str(o)), cv2.imread(str(g))) for o, g in zip(outputs, gts)]
    lpips = get_pyiqa_metric('lpips', 'cpu', net='alex', pretrained_model_path=str(weights.lpips))
    musiq = get_pyiqa_metric('musiq', 'cpu', pretrained='koniq10k', pretrained_model_path=str(weights.musiq))
    expected = {
        'psnr': np.mean([calculate_psnr(o, g, crop_border=0) for o, g in images]),
        'ssim': np.mean([calculate_ssim(o, g, crop_border=0) for o, g in images]),
        'lpips': np.mean([lpips(str(o), str(g)).item() for o, g in zip(outputs, gts)]),
        'musiq': np.mean([musiq(str(o)).item() for o in outputs]),
    }
    logged = _logged(work, 'BAID_generated')
    assert set(logged) == set(expected) | {'niqe'}
    for metric, value in expected.items():
        assert logged[metric] == pytest.approx(value, abs=LOG_TOLERANCE + 1e-5), metric


def test_no_reference_metrics_run_without_ground_truth(run):
    work, weights, result = run
    (output,) = _outputs(work, 'Backlit300_generated')
    musiq = get_pyiqa_metric('musiq', 'cpu', pretrained='koniq10k', pretrained_model_path=str(weights.musiq))
    logged = _logged(work, 'Backlit300_generated')
    assert set(logged) == {'musiq', 'niqe'}  # psnr, ssim and lpips need the ground truth: skipped
    assert logged['musiq'] == pytest.approx(musiq(str(output)).item(), abs=LOG_TOLERANCE + 1e-5)
    assert logged['niqe'] == pytest.approx(calculate_niqe(cv2.imread(str(output)), crop_border=0), abs=LOG_TOLERANCE)
    assert 'Backlit300_generated has no ground truth: skipped psnr, ssim, lpips' in result.stdout + result.stderr


def test_benchmark_table_on_the_log(run):
    work, _, _ = run
    table = subprocess.run(
        [sys.executable, str(REPO_ROOT / 'scripts' / 'benchmark_table.py'), str(work / 'results' / NAME)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    baid, backlit = _logged(work, 'BAID_generated'), _logged(work, 'Backlit300_generated')
    assert f'| BAID_generated | PSNR ↑ | {baid["psnr"]:.4f} | 21.579 | {baid["psnr"] - 21.579:+.4f} |' in table
    assert f'| BAID_generated | LPIPS ↓ | {baid["lpips"]:.4f} | 0.159 |' in table
    assert f'| Backlit300_generated | MUSIQ ↑ | {backlit["musiq"]:.4f} | 52.921 |' in table
    assert f'| Backlit300_generated | NIQE ↓ | {backlit["niqe"]:.4f} | – | – |' in table


def test_reproduces_the_authors_output_on_a_real_photo(tmp_path, reference_dir):
    """The whole BasicSR path (its dataset's decoding, the model, tensor2img, PNG) against the authors' own
    output for their sample: within JPEG-decoder noise (the reference folder's README)."""
    sample = min(reference_dir.glob('samples/*.jpg'), key=lambda p: p.stat().st_size)
    (tmp_path / 'photos').mkdir()
    (tmp_path / 'photos' / sample.name).write_bytes(sample.read_bytes())
    options = {
        'name': NAME,
        'model_type': 'CLIPLITEvalModel',
        'num_gpu': 0,
        'datasets': {
            'test_1': {
                'name': 'samples',
                'type': 'SingleImageDataset',
                'dataroot_lq': 'photos',
                'io_backend': {'type': 'disk'},
            }
        },
        'network_g': {'type': 'CLIPLITNet', 'padding': 'reflect'},
        'path': {'pretrain_network_g': 'official'},
        'val': {'save_img': True},
    }
    (tmp_path / 'options.yml').write_text(yaml.safe_dump(options))
    result = subprocess.run(
        [sys.executable, '-m', 'basicsr.test', '-opt', 'options.yml'],
        cwd=tmp_path,
        env=dict(os.environ, HF_HUB_OFFLINE='1'),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (output,) = _outputs(tmp_path, 'samples')
    expected = cv2.imread(str(reference_dir / 'expected' / f'{sample.stem}.png')).astype(int)
    difference = np.abs(cv2.imread(str(output)).astype(int) - expected)
    assert difference.max() <= 1 and difference.mean() < 0.01
