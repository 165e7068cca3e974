"""``cliplit-enhance``: enhance a backlit image, or every image of a folder, into PNGs of the same stem.

Grayscale inputs are enhanced and written as RGB, RGBA keeps its alpha, 16-bit inputs give 16-bit PNGs.
Files without an image extension in a folder are skipped with a warning; an image that cannot be read is
reported in one line and the others are still processed (the exit code is then 1).
"""

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import cv2
from tqdm import tqdm

from cliplit_basicsr.enhancer import CLIPLITEnhancer
from cliplit_basicsr.errors import CLIPLITError, exit_on_user_error, one_line_message
from cliplit_basicsr.image_io import is_image_file, read_image, write_png
from cliplit_basicsr.inference import DEFAULT_TILES, PRECISIONS


class UsageError(CLIPLITError, ValueError):
    """A command-line path that cannot be used."""


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='cliplit-enhance', description=__doc__.splitlines()[0])
    parser.add_argument('-i', '--input', required=True, help='an image file or a folder of images')
    parser.add_argument('-o', '--output', required=True, help='folder for the enhanced PNGs (created if needed)')
    parser.add_argument('--ckpt', default='official', help="'official' (the authors' model) or a checkpoint path")
    parser.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N (default: auto)')
    parser.add_argument(
        '--precision',
        default='fp32',
        choices=list(PRECISIONS),
        help='fp32 (exact, default); bf16 on CPUs with AMX or CUDA; fp16 on CUDA',
    )
    parser.add_argument(
        '--tile',
        type=int,
        default=None,
        help='tile size in pixels, exact at any size (default: '
        f'{", ".join(f"{n} on {d.upper()}" for d, n in DEFAULT_TILES.items())}; 0 = whole image)',
    )
    return parser.parse_args(argv)


def collect_inputs(input_path: Path) -> List[Path]:
    """The image files to enhance: the file itself, or a folder's image files (others skipped with a warning)."""
    if input_path.is_file():
        return [input_path]
    if not input_path.is_dir():
        raise UsageError(f'--input {input_path}: no such file or folder')
    files = []
    for path in sorted(p for p in input_path.iterdir() if p.is_file()):
        if is_image_file(path):
            files.append(path)
        else:
            print(f'warning: skipping {path}: not an image file', file=sys.stderr)
    if not files:
        raise UsageError(f'--input {input_path}: the folder has no image files')
    return files


def prepare_output(output_dir: Path) -> None:
    """Create the output folder and check that files can be created in it."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / '.cliplit-enhance-write-test'
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise UsageError(f'--output {output_dir}: not a writable folder ({err.strerror or err})') from None


@exit_on_user_error
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    files = collect_inputs(Path(args.input))
    output_dir = Path(args.output)
    prepare_output(output_dir)
    enhancer = CLIPLITEnhancer(args.ckpt, args.device, args.precision, args.tile)
    failures = 0
    for path in tqdm(files, desc='cliplit-enhance', unit='image'):
        try:
            image = read_image(path)
            if image.ndim == 2:
                image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
            write_png(output_dir / f'{path.stem}.png', enhancer.enhance(image))
        except CLIPLITError as err:
            tqdm.write(f'error: {one_line_message(err)}', file=sys.stderr)
            failures += 1
    if failures:
        tqdm.write(f'error: {failures} of {len(files)} images failed', file=sys.stderr)
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
