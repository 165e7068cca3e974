"""Turn BasicSR test logs into a markdown table beside the CLIP-LIT paper's figures (docs/method.md, Evaluation).

    python scripts/benchmark_table.py results/CLIPLIT_BAID/ results/CLIPLIT_Backlit300/

Each argument is a log file or a folder (all its ``*.log`` files, in name order). Every ``Validation
<set>`` block that BasicSR's validation logs is read; when a set appears more than once (several logs, or
validation during training), the last block counts. A set is compared with the paper's table whose name
it starts with, case-insensitively (``BAID`` or ``Backlit300``, as in the shipped test options), and a
metric with the paper's column of the same name (``psnr``, ``ssim``, ``lpips``, ``musiq``).
Standard library only: it runs without torch.
"""

import argparse
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional

# Liang et al., ICCV 2023: Table 1 (BAID test) and Table 2 (Backlit300), row "CLIP-LIT (Ours)".
PAPER_RESULTS = {
    'BAID': {'psnr': 21.579, 'ssim': 0.883, 'lpips': 0.159, 'musiq': 55.682},
    'Backlit300': {'musiq': 52.921},
}
METRIC_LABELS = {'psnr': 'PSNR ↑', 'ssim': 'SSIM ↑', 'lpips': 'LPIPS ↓', 'musiq': 'MUSIQ ↑', 'niqe': 'NIQE ↓'}

_BLOCK_START = re.compile(r'INFO: Validation (?P<set>.+?)\s*$')
_METRIC_LINE = re.compile(r'^\s*# (?P<metric>[^:\s]+): (?P<value>[-+0-9.eE]+|nan|inf)')


class TableError(Exception):
    """A log that cannot be read or holds no validation results (message is one line)."""


def read_results(log: Path) -> Dict[str, Dict[str, float]]:
    """The metric values of every ``Validation <set>`` block in ``log``, the last block per set."""
    try:
        lines = log.read_text(encoding='utf-8', errors='replace').splitlines()
    except OSError as error:
        raise TableError(f'cannot read log {log}: {error.strerror or error}') from None
    results: Dict[str, Dict[str, float]] = {}
    current: Optional[Dict[str, float]] = None
    for line in lines:
        start = _BLOCK_START.search(line)
        metric = _METRIC_LINE.match(line)
        if start:
            current = results[start.group('set')] = {}
        elif metric and current is not None:
            current[metric.group('metric')] = float(metric.group('value'))
        else:
            current = None
    return {name: values for name, values in results.items() if values}


def log_files(argument: str) -> List[Path]:
    """A log file, or the ``*.log`` files of a folder in name order."""
    path = Path(argument)
    if path.is_dir():
        logs = sorted(path.glob('*.log'))
        if not logs:
            raise TableError(f'{path}: folder holds no *.log file')
        return logs
    if not path.is_file():
        raise TableError(f'{path}: no such log file or folder')
    return [path]


def paper_set(name: str) -> Optional[str]:
    """The paper's table that the test set ``name`` corresponds to, if any."""
    return next((key for key in PAPER_RESULTS if name.lower().startswith(key.lower())), None)


def markdown_table(results: Dict[str, Dict[str, float]]) -> str:
    """One row per (test set, metric): this run's value, the paper's, and their difference."""
    rows = ['| Test set | Metric | This run | Paper (CLIP-LIT) | Difference |', '|---|---|---:|---:|---:|']
    for name, values in results.items():
        paper = PAPER_RESULTS.get(paper_set(name) or '', {})
        for metric, value in values.items():
            label = METRIC_LABELS.get(metric.lower(), metric)
            reference = paper.get(metric.lower())
            if reference is None:
                rows.append(f'| {name} | {label} | {value:.4f} | – | – |')
            else:
                rows.append(f'| {name} | {label} | {value:.4f} | {reference:.3f} | {value - reference:+.4f} |')
    return '\n'.join(rows)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('logs', nargs='+', help='BasicSR test logs, or folders holding them')
    args = parser.parse_args(argv)
    try:
        results: Dict[str, Dict[str, float]] = {}
        for argument in args.logs:
            for log in log_files(argument):
                results.update(read_results(log))
        if not results:
            raise TableError(f'no "Validation <set>" results in {", ".join(args.logs)}')
    except TableError as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    print(markdown_table(results))
    return 0


if __name__ == '__main__':
    sys.exit(main())
