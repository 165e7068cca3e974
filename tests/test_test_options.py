"""The shipped test option files name only registered parts and the metrics their sets can compute.

(Running them end to end needs the datasets; test_basicsr_test.py runs the same configuration on
generated sets.)
"""

from pathlib import Path

import pytest
import yaml
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

import cliplit_basicsr  # noqa: F401  (registers the plugin)
from cliplit_basicsr.metrics import needs_reference

OPTIONS = Path(__file__).resolve().parents[1] / 'options'


@pytest.mark.parametrize(
    'name, has_gt, metrics',
    [
        ('test_cliplit_baid.yml', True, {'psnr', 'ssim', 'lpips', 'musiq'}),
        ('test_cliplit_backlit300.yml', False, {'musiq'}),
    ],
)
def test_option_file(name, has_gt, metrics):
    opt = yaml.safe_load((OPTIONS / name).read_text())
    assert opt['model_type'] in MODEL_REGISTRY
    assert opt['network_g']['type'] in ARCH_REGISTRY and opt['network_g']['padding'] == 'reflect'
    assert opt['path']['pretrain_network_g'] == 'official'
    (dataset,) = opt['datasets'].values()
    assert dataset['type'] in DATASET_REGISTRY and ('dataroot_gt' in dataset) == has_gt
    assert set(opt['val']['metrics']) == metrics
    for metric in opt['val']['metrics'].values():
        assert metric['type'] in METRIC_REGISTRY
        assert has_gt or not needs_reference(metric['type'])
