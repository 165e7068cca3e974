"""scripts/benchmark_table.py on logs written by BasicSR's own validation logging.

(The table on a real ``basicsr.test`` log is checked in test_basicsr_test.py.)
"""

import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from basicsr.models.sr_model import SRModel

SCRIPT = Path(__file__).resolve().parents[1] / 'scripts' / 'benchmark_table.py'
PAPER_BAID = {'psnr': 21.579, 'ssim': 0.883, 'lpips': 0.159, 'musiq': 55.682}  # the paper, Table 1
PAPER_BACKLIT300_MUSIQ = 52.921


def write_log(path: Path, blocks, best: bool = False) -> None:
    """Log ``(set, {metric: value}, iter)`` blocks exactly as SRModel's validation logs them."""
    logger = logging.getLogger('basicsr')
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s: %(message)s'))  # BasicSR's format
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)  # setLevel, not the attribute: it clears the logger's level cache
    try:
        logger.info('Testing ...')
        for name, values, current_iter in blocks:
            model = SimpleNamespace(metric_results=values)
            if best:
                model.best_metric_results = {name: {m: {'val': v, 'iter': current_iter} for m, v in values.items()}}
            SRModel._log_validation_metric_values(model, current_iter, name, None)
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(level)


def logged(value: float) -> float:
    """The value as the log shows it (4 decimals)."""
    return float(format(value, '.4f'))


def table(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_rows_beside_the_paper(tmp_path):
    baid = {'psnr': 21.12345, 'ssim': 0.87654, 'lpips': 0.16123, 'musiq': 54.5}
    write_log(tmp_path / 'test_baid.log', [('BAID_test', baid, 'CLIPLIT_BAID')])
    write_log(tmp_path / 'test_backlit.log', [('Backlit300', {'musiq': 53.25}, 'CLIPLIT_Backlit300')])
    result = table(tmp_path / 'test_baid.log', tmp_path / 'test_backlit.log')
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()
    assert rows[:2] == ['| Test set | Metric | This run | Paper (CLIP-LIT) | Difference |', '|---|---|---:|---:|---:|']
    labels = {'psnr': 'PSNR ↑', 'ssim': 'SSIM ↑', 'lpips': 'LPIPS ↓', 'musiq': 'MUSIQ ↑'}
    expected = [
        f'| BAID_test | {labels[m]} | {v:.4f} | {PAPER_BAID[m]:.3f} | {logged(v) - PAPER_BAID[m]:+.4f} |'
        for m, v in baid.items()
    ]
    expected.append(
        f'| Backlit300 | MUSIQ ↑ | 53.2500 | {PAPER_BACKLIT300_MUSIQ:.3f} | {53.25 - PAPER_BACKLIT300_MUSIQ:+.4f} |'
    )
    assert rows[2:] == expected


def test_last_block_of_a_training_log_counts_and_unknown_sets_have_no_paper_value(tmp_path):
    write_log(
        tmp_path / 'train.log',
        [('BAID_val', {'psnr': 18.0}, 1000), ('LOL', {'psnr': 12.5}, 1000), ('BAID_val', {'psnr': 20.5}, 2000)],
        best=True,
    )
    result = table(tmp_path)  # a folder: all its logs
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()[2:]
    assert rows == [
        f'| BAID_val | PSNR ↑ | 20.5000 | 21.579 | {20.5 - 21.579:+.4f} |',
        '| LOL | PSNR ↑ | 12.5000 | – | – |',
    ]


@pytest.mark.parametrize(
    'make, message',
    [
        (lambda d: d / 'missing.log', 'no such log file or folder'),
        (lambda d: d, 'folder holds no *.log file'),
        (
            lambda d: (d / 'empty.log').write_text('2026-01-01 INFO: nothing validated\n') and d / 'empty.log',
            'no "Validation <set>" results',
        ),
    ],
)
def test_errors_are_one_line(tmp_path, make, message):
    result = table(make(tmp_path))
    assert result.returncode == 1 and result.stdout == ''
    assert message in result.stderr and result.stderr.count('\n') == 1
