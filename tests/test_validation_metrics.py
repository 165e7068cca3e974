"""Validation while training: PSNR and SSIM by BasicSR's tensor versions on the device agree with BasicSR's
numpy metrics (what ``basicsr.test`` prints), and the images written by the background thread are the same."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import cliplit_basicsr  # noqa: F401  (registers the models)
from cliplit_basicsr.models.cliplit_eval_model import CLIPLITEvalModel

SAMPLES = Path(cliplit_basicsr.__file__).parent / 'samples'


class Loader(list):
    """What validation reads of a BasicSR loader: its batches and ``dataset.opt['name']``."""

    class dataset:  # noqa: N801
        opt = {'name': 'pairs'}


def _pairs() -> Loader:
    batches = Loader()
    for i, path in enumerate(sorted(SAMPLES.glob('*.jpg'))[:2]):
        bgr = cv2.resize(cv2.imread(str(path)), (96 + 16 * i, 80))
        lq = torch.from_numpy(bgr[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255
        gt = torch.from_numpy(cv2.GaussianBlur(bgr, (0, 0), 2)[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255
        batches.append({'lq': lq, 'gt': gt, 'lq_path': [f'{path.stem}.png']})
    return batches


def _validate(tmp_path: Path, training: bool, y_channel: bool):
    metrics = {
        name: {'type': f'calculate_{name}', 'crop_border': 2, 'test_y_channel': y_channel} for name in ('psnr', 'ssim')
    }
    opt = {
        'name': 'val',
        'model_type': 'CLIPLITEvalModel',
        'num_gpu': 0,
        'dist': False,
        'rank': 0,
        'world_size': 1,
        'is_train': False,
        'network_g': {'type': 'CLIPLITNet', 'padding': 'zeros'},
        'path': {'pretrain_network_g': 'official', 'visualization': str(tmp_path / ('train' if training else 'test'))},
        'val': {'metrics': metrics, 'suffix': 'x'},
    }
    model = CLIPLITEvalModel(opt)
    model.opt['is_train'] = training  # the device path is the training validation's
    model.nondist_validation(_pairs(), 8, None, save_img=True)
    images = sorted((tmp_path / ('train' if training else 'test')).rglob('*.png'))
    return model.metric_results, [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in images]


@pytest.mark.parametrize('y_channel', [False, True])
def test_device_metrics_agree_with_basicsr_numpy_metrics(tmp_path, y_channel):
    on_device, written = _validate(tmp_path, training=True, y_channel=y_channel)
    on_host, expected = _validate(tmp_path, training=False, y_channel=y_channel)
    assert set(on_device) == set(on_host) == {'psnr', 'ssim'}
    assert abs(on_device['psnr'] - on_host['psnr']) < 1e-5, (
        on_device,
        on_host,
    )  # measured: 1.6e-6 dB (the tensor PSNR's 1e-8)
    assert abs(on_device['ssim'] - on_host['ssim']) < 1e-7, (on_device, on_host)  # measured: 8e-9
    assert 10 < on_host['psnr'] < 60 and 0 < on_host['ssim'] < 1
    assert len(written) == len(expected) == 2
    assert all(np.array_equal(a, b) for a, b in zip(written, expected))


def test_a_failed_write_is_raised(tmp_path, monkeypatch):
    import cliplit_basicsr.models.cliplit_eval_model as eval_model

    def refuse(path, image):
        raise OSError(f'{path}: disk full')

    monkeypatch.setattr(eval_model, 'write_png', refuse)
    with pytest.raises(OSError, match='disk full'):
        _validate(tmp_path, training=True, y_channel=False)


def test_the_reconstruction_psnr_is_basicsr_y_psnr_exactly():
    """The reconstruction phase's PSNR (its restart test) keeps its Y weights on the device; the value is
    BasicSR's ``calculate_psnr_pt(..., test_y_channel=True)`` averaged over the batch, bit for bit."""
    from basicsr.metrics.psnr_ssim import calculate_psnr_pt

    from cliplit_basicsr.models.training_setup import y_psnr

    generator = torch.Generator().manual_seed(0)
    output, target = torch.rand(3, 3, 24, 20, generator=generator), torch.rand(3, 3, 24, 20, generator=generator)
    expected = calculate_psnr_pt(output, target, crop_border=0, test_y_channel=True).mean().float()
    assert torch.equal(y_psnr(output, target), expected)


class OnePass(Loader):
    """A loader that can be read once: a second validation must come from the kept set."""

    passes = 0

    def __iter__(self):
        type(self).passes += 1
        assert type(self).passes == 1, 'the validation set was read again'
        return super().__iter__()


def test_a_training_run_decodes_each_validation_set_once(tmp_path):
    from cliplit_basicsr.models.validation_sets import DecodedValidationSets

    loader = OnePass(_pairs())
    loader.append({'lq': torch.rand(1, 3, 8, 8), 'lq_path': ['not_8_bit.png']})  # kept as it is, not as uint8
    sets = DecodedValidationSets()
    first = list(sets.batches('pairs', loader))
    again = list(sets.batches('pairs', loader))
    assert len(first) == len(again) == 3
    for a, b in zip(first, again):
        assert a['lq_path'] == b['lq_path'] and set(a) == set(b)
        for key in ('lq', 'gt'):
            if key in a:
                assert torch.equal(a[key], b[key]), key  # bit for bit, from uint8 or as given
    assert sets._kept['pairs'][0]['lq'].dtype == torch.uint8 and sets._kept['pairs'][2]['lq'].dtype == torch.float32


def test_a_set_too_large_for_memory_is_read_each_time(monkeypatch):
    import cliplit_basicsr.models.validation_sets as validation_sets

    monkeypatch.setattr(validation_sets, 'free_memory_bytes', lambda: 1000)
    sets, loader = validation_sets.DecodedValidationSets(), _pairs()
    assert len(list(sets.batches('pairs', loader))) == len(list(sets.batches('pairs', loader))) == 2
    assert 'pairs' not in sets._kept
