"""CLIP-LIT option files are checked before BasicSR writes anything: missing data is one line naming the
option key and the path, and no ``experiments/`` or ``results/`` folder is left behind."""

import cv2
import numpy as np
import pytest
import yaml
from support import REPO_ROOT, run_python

from cliplit_basicsr import options as cliplit_options
from cliplit_basicsr.errors import CLIPLITError


def _shipped(name: str) -> dict:
    return yaml.safe_load((REPO_ROOT / 'options' / name).read_text())


@pytest.mark.slow
@pytest.mark.parametrize(
    'module, option_file, key',
    [
        ('basicsr.test', 'test_cliplit_baid.yml', 'datasets.test_1.dataroot_lq'),
        ('basicsr.test', 'test_cliplit_backlit300.yml', 'datasets.test_1.dataroot_lq'),
        ('basicsr.train', 'train_cliplit.yml', 'datasets.train.dataroot_backlit'),
    ],
)
def test_missing_data_is_one_line_and_nothing_is_created(tmp_path, module, option_file, key):
    """The shipped option files, run where their datasets are not: as a new user first does."""
    result = run_python(['-m', module, '-opt', str(REPO_ROOT / 'options' / option_file)], cwd=tmp_path)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f'error: {key}: folder datasets/'), result.stderr[-2000:]
    assert 'does not exist' in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no results/, experiments/ or tb_logger/


def test_every_dataset_root_is_checked(tmp_path):
    opt = _shipped('train_cliplit.yml')
    backlit = tmp_path / 'backlit'
    backlit.mkdir()
    cv2.imwrite(str(backlit / 'a.png'), np.zeros((4, 4, 3), np.uint8))
    opt['datasets']['train']['dataroot_backlit'] = opt['prompt_dataset']['dataroot_backlit'] = str(backlit)
    opt['datasets']['val'].update(dataroot_lq=str(backlit), dataroot_gt=str(backlit))
    opt['prompt_dataset']['dataroot_welllit'] = str(tmp_path / 'empty')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(CLIPLITError, match=r'^prompt_dataset.dataroot_welllit: no images .* in folder .*empty'):
        cliplit_options.image_counts(opt)
    opt['prompt_dataset']['dataroot_welllit'] = str(backlit)
    opt['datasets']['val']['dataroot_gt'] = str(tmp_path / 'gt')
    with pytest.raises(CLIPLITError, match=r'^datasets.val.dataroot_gt: folder .*gt does not exist'):
        cliplit_options.image_counts(opt)
    opt['datasets']['val']['dataroot_gt'] = str(backlit)
    assert cliplit_options.image_counts(opt)['prompt_dataset.dataroot_welllit'] == 1
