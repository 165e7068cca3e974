"""Pack image folders into LMDBs with BasicSR's own writer (``LmdbMaker``) and ``meta_info.txt`` format.

    python scripts/create_lmdb.py --input datasets/backlit --output datasets/backlit.lmdb
    python scripts/create_lmdb.py --input datasets/backlit datasets/welllit   # -> backlit.lmdb, welllit.lmdb

Keys are the file stems (BasicSR readers take a key as the ``meta_info`` name up to its first dot, so stems
with dots, non-ASCII stems and stems shared by two files are refused). Images are decoded as the training
data sets decode a folder (:func:`cliplit_basicsr.image_io.read_image`: JPEGs by Pillow) and stored as PNG,
so a folder and its LMDB give the same pixels. Every image is checked first, so a bad file is reported
before anything is written; each LMDB is written beside its final path and moved into place when complete.
"""

import argparse
import os
import shutil
from typing import List, NamedTuple, Optional, Sequence

import cv2
from basicsr.utils.lmdb_util import LmdbMaker

from cliplit_basicsr.data.image_source import ImageSource, to_rgb
from cliplit_basicsr.errors import DataError, ImageReadError, OptionError, exit_on_user_error
from cliplit_basicsr.image_io import read_image

_PAGE = 4096
_SLACK = 16 * 2**20


def image_keys(names: Sequence[str]) -> List[str]:
    """LMDB keys (file stems) for image paths; `DataError` for stems BasicSR cannot read back."""
    keys = [os.path.splitext(os.path.basename(name))[0] for name in names]
    for name, key in zip(names, keys):
        if '.' in key:
            raise DataError(
                f"{name}: file stem '{key}' contains a dot, which BasicSR's LMDB readers cut at; rename the file"
            )
        if not key.isascii() or not key.isprintable() or not key.strip():
            raise DataError(f"{name}: file stem '{key}' is not a printable ASCII LMDB key; rename the file")
    seen = {}
    for name, key in zip(names, keys):
        if key in seen:
            raise DataError(f"{name}: same stem '{key}' as {seen[key]}; LMDB keys must be unique")
        seen[key] = name
    return keys


def check_images(names: Sequence[str]) -> int:
    """Read every image as the writer will; return an LMDB map size that holds them all."""
    total = 0
    for name in names:
        img = read_image(name)
        to_rgb(img, name)  # the dataset's acceptance rules: 8/16-bit gray, RGB or RGBA
        total += img.nbytes + _PAGE
    return 2 * total + _SLACK  # PNG at compression level 1 stays below twice the raw size


class LmdbJob(NamedTuple):
    """A checked folder, ready to be written."""

    source: ImageSource
    keys: List[str]
    map_size: int
    lmdb_path: str


def plan_lmdb(folder: str, lmdb_path: str) -> LmdbJob:
    """Check ``folder``'s images and the output path before anything is written."""
    lmdb_path = os.path.normpath(os.path.expanduser(lmdb_path))
    if not lmdb_path.endswith('.lmdb'):
        raise OptionError(f"--output {lmdb_path}: the name must end with '.lmdb'")
    if os.path.exists(lmdb_path):
        raise OptionError(f'--output {lmdb_path}: already exists; remove it or choose another name')
    source = ImageSource(folder, {'type': 'disk'}, '--input')
    return LmdbJob(source, image_keys(source.names), check_images(source.names), lmdb_path)


def write_lmdb(job: LmdbJob, compress_level: int = 1) -> None:
    """Write a planned LMDB beside its final path, then move it into place."""
    parent, base = os.path.split(job.lmdb_path)
    os.makedirs(parent or '.', exist_ok=True)
    staging = os.path.join(parent, f'.{base[: -len(".lmdb")]}.{os.getpid()}.partial.lmdb')
    shutil.rmtree(staging, ignore_errors=True)
    try:
        maker = LmdbMaker(staging, map_size=job.map_size, compress_level=compress_level)
        for name, key in zip(job.source.names, job.keys):
            img = read_image(name)
            ok, png = cv2.imencode('.png', img, [cv2.IMWRITE_PNG_COMPRESSION, compress_level])
            if not ok:
                raise ImageReadError(f'{name}: cannot encode as PNG')
            maker.put(png.tobytes(), key, img.shape[:2] + (1 if img.ndim == 2 else img.shape[2],))
        maker.close()
        os.replace(staging, job.lmdb_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@exit_on_user_error
def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--input', nargs='+', required=True, help='image folder(s)')
    parser.add_argument(
        '--output', nargs='+', help='LMDB path(s) ending in .lmdb, one per input (default: <input>.lmdb)'
    )
    parser.add_argument('--compress-level', type=int, default=1, choices=range(10), help='PNG compression level')
    args = parser.parse_args(argv)
    outputs = args.output or [os.path.normpath(folder) + '.lmdb' for folder in args.input]
    if len(outputs) != len(args.input):
        parser.error(f'--output names {len(outputs)} LMDB(s) for {len(args.input)} --input folder(s)')
    if len(set(map(os.path.normpath, outputs))) != len(outputs):
        parser.error('--output names the same LMDB twice')
    jobs = [plan_lmdb(folder, lmdb_path) for folder, lmdb_path in zip(args.input, outputs)]
    for job in jobs:
        write_lmdb(job, args.compress_level)


if __name__ == '__main__':
    main()
