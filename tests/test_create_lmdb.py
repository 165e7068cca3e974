"""scripts/create_lmdb.py: BasicSR LMDBs that read back, through the dataset, as the folders they came from."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from basicsr.data import build_dataset
from basicsr.data.data_util import paths_from_lmdb

import cliplit_basicsr  # noqa: F401  (registers the dataset)

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / 'scripts' / 'create_lmdb.py'


def _load_script():
    spec = importlib.util.spec_from_file_location('create_lmdb', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


create_lmdb = _load_script()


def _write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


def _mixed_folder(root: Path) -> Path:
    """Sizes that vary (a tiny first image, so BasicSR's default map size would overflow) and every format kind."""
    rng = np.random.default_rng(0)
    _write(root / 'a_tiny.png', rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    _write(root / 'b_large.png', rng.integers(0, 256, (700, 600, 3), dtype=np.uint8))
    _write(root / 'c_photo.jpg', cv2.GaussianBlur(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8), (0, 0), 2))
    _write(root / 'd_gray.png', rng.integers(0, 256, (50, 40), dtype=np.uint8))
    _write(root / 'e_rgba.png', rng.integers(0, 256, (40, 50, 4), dtype=np.uint8))
    _write(root / 'f_deep.png', rng.integers(0, 65536, (33, 47, 3), dtype=np.uint16))
    return root


def _expect_exit_1(argv):
    with pytest.raises(SystemExit) as info:
        create_lmdb.main(argv)
    assert info.value.code == 1


def _dataset(root: Path, backend: str):
    return build_dataset(
        {
            'type': 'CLIPLITUnpairedDataset',
            'name': backend,
            'phase': 'train',
            'dataroot_backlit': str(root),
            'use_welllit': False,
            'io_backend': {'type': backend},
            'image_size': 64,
            'augment': False,
        }
    )


def test_round_trip_through_the_dataset(tmp_path):
    folder = _mixed_folder(tmp_path / 'backlit')
    create_lmdb.main(['--input', str(folder)])
    lmdb_path = tmp_path / 'backlit.lmdb'
    assert sorted(paths_from_lmdb(str(lmdb_path))) == ['a_tiny', 'b_large', 'c_photo', 'd_gray', 'e_rgba', 'f_deep']
    meta = (lmdb_path / 'meta_info.txt').read_text().splitlines()
    assert 'b_large.png (700,600,3) 1' in meta and 'd_gray.png (50,40,1) 1' in meta and 'e_rgba.png (40,50,4) 1' in meta
    from_folder, from_lmdb = _dataset(folder, 'disk'), _dataset(lmdb_path, 'lmdb')
    assert len(from_folder) == len(from_lmdb) == 6
    for index in range(6):
        assert Path(from_folder[index]['backlit_path']).stem == from_lmdb[index]['backlit_path']
    cpu, every = torch.device('cpu'), torch.arange(6)
    expected = from_folder.resident(cpu)['backlit'].take(every)
    # decoded by several threads at once: the process's one LMDB environment serves them all
    torch.testing.assert_close(from_lmdb.resident(cpu)['backlit'].take(every), expected, rtol=0, atol=0)
    assert not [p for p in tmp_path.iterdir() if 'partial' in p.name]
    # A second dataset on the same LMDB in the same process (the training model's network and prompt sets).
    torch.testing.assert_close(
        _dataset(lmdb_path, 'lmdb').resident(cpu)['backlit'].take(every), expected, rtol=0, atol=0
    )


def test_several_folders_with_explicit_outputs(tmp_path):
    rng = np.random.default_rng(1)
    for name in ('backlit', 'welllit'):
        _write(tmp_path / name / 'x.png', rng.integers(0, 256, (20, 20, 3), dtype=np.uint8))
    outputs = [tmp_path / 'out' / 'b.lmdb', tmp_path / 'out' / 'w.lmdb']
    create_lmdb.main(['--input', str(tmp_path / 'backlit'), str(tmp_path / 'welllit'), '--output', *map(str, outputs)])
    for output in outputs:
        assert paths_from_lmdb(str(output)) == ['x']


@pytest.mark.parametrize(
    'files, pattern',
    [
        ({'shot.v2.png': True}, "file stem 'shot.v2' contains a dot"),
        ({'x.png': True, 'x.jpg': True}, "same stem 'x'"),
        ({'ok.png': True, 'bad.png': False}, 'bad.png: cannot decode image'),
    ],
)
def test_refused_folders_write_nothing(tmp_path, capsys, files, pattern):
    for name, valid in files.items():
        if valid:
            _write(tmp_path / 'in' / name, np.zeros((4, 4, 3), np.uint8))
        else:
            (tmp_path / 'in' / name).write_bytes(b'broken')
    _expect_exit_1(['--input', str(tmp_path / 'in')])
    error = capsys.readouterr().err
    assert error.count('\n') == 1 and error.startswith('error: ')
    assert re.search(pattern, error)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['in']


def test_existing_output_is_refused_before_any_write(tmp_path, capsys):
    _write(tmp_path / 'a' / 'x.png', np.zeros((4, 4, 3), np.uint8))
    _write(tmp_path / 'b' / 'y.png', np.zeros((4, 4, 3), np.uint8))
    (tmp_path / 'b.lmdb').mkdir()
    _expect_exit_1(['--input', str(tmp_path / 'a'), str(tmp_path / 'b')])
    assert 'b.lmdb: already exists' in capsys.readouterr().err
    assert not (tmp_path / 'a.lmdb').exists()


@pytest.mark.slow  # a fresh interpreter imports torch, BasicSR and the plugin
def test_command_line_error_is_one_line(tmp_path):
    env = {
        **os.environ,
        'HF_HUB_OFFLINE': '1',
        'PYTHONPATH': os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get('PYTHONPATH')])),
    }
    result = subprocess.run(
        [sys.executable, str(SCRIPT), '--input', str(tmp_path / 'nowhere')],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f'error: --input: folder {tmp_path / "nowhere"} does not exist']


def test_paired_test_lmdbs_serve_basicsr_paired_dataset(tmp_path):
    """Test-set LMDBs (input + ground truth, same stems) are read by BasicSR's own PairedImageDataset."""
    rng = np.random.default_rng(2)
    images = {}
    for folder in ('input', 'gt'):
        for stem in ('p1', 'p2'):
            images[folder, stem] = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
            _write(tmp_path / folder / f'{stem}.png', images[folder, stem])
    create_lmdb.main(['--input', str(tmp_path / 'input'), str(tmp_path / 'gt')])
    paired = build_dataset(
        {
            'type': 'PairedImageDataset',
            'name': 'val',
            'phase': 'val',
            'scale': 1,
            'io_backend': {'type': 'lmdb'},
            'dataroot_lq': str(tmp_path / 'input.lmdb'),
            'dataroot_gt': str(tmp_path / 'gt.lmdb'),
        }
    )
    for index in range(2):
        item = paired[index]
        stem = item['lq_path']
        for key, folder in (('lq', 'input'), ('gt', 'gt')):
            expected = torch.from_numpy(images[folder, stem][:, :, ::-1].transpose(2, 0, 1) / 255).float()
            torch.testing.assert_close(item[key], expected, rtol=0, atol=1e-7)
