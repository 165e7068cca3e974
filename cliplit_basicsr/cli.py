"""``cliplit-enhance``: enhance a backlit photo or video, a folder of them or a tree of folders.

Every photo is enhanced upright, as viewers show it (its EXIF orientation applied), and written upright with
its EXIF (orientation reset), ICC profile and PNG text carried over where the output format holds them
(``--strip-metadata`` drops them). Grayscale inputs are enhanced and written as RGB, RGBA keeps its alpha,
16-bit inputs give 16-bit outputs where the format allows (PNG, TIFF; 10 bits in HEIC). Files without an image extension
are skipped with a warning; an image that cannot be read is reported in one line and the others are still
processed (the exit code is then 1). An output that exists is left alone unless ``--overwrite``. Videos are
enhanced frame by frame into the same container (:mod:`cliplit_basicsr.video`).
"""

import argparse
import math
import sys
from typing import Optional, Sequence

from cliplit_basicsr.choices import AUTO, DEFAULT_TILES, ENGINES, OUTPUT_FORMATS, PRECISIONS
from cliplit_basicsr.errors import UsageError, exit_on_user_error


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The options that build a :class:`~cliplit_basicsr.enhancer.CLIPLITEnhancer` (``--ckpt``, ``--device``,
    ``--precision``, ``--tile``, ``--engine``), shared by ``cliplit-enhance`` and ``cliplit-app``."""
    add = parser.add_argument
    add('--ckpt', default='official', help="'official' (the authors' model) or a checkpoint path")
    add('--device', default=AUTO, help='auto, cpu, cuda or cuda:N (default: auto)')
    add('--precision', default='fp32', choices=list(PRECISIONS), help='fp32 (exact, default), bf16 or fp16')
    add(
        '--tile',
        type=int,
        default=None,
        help='tile size in pixels, exact at any size (default: '
        f'{", ".join(f"{n} on {d.upper()}" for d, n in DEFAULT_TILES.items())}; 0 = whole image)',
    )
    add('--engine', default='tiled', choices=list(ENGINES), help="tiled (default) or reference (the network's forward)")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='cliplit-enhance', description=__doc__.splitlines()[0])
    add = parser.add_argument
    add('-i', '--input', required=True, help='an image file or a folder of images')
    add('-o', '--output', required=True, help='folder for the enhanced images (created if needed)')
    add_model_options(parser)
    add('--ext', default='png', choices=[AUTO, *OUTPUT_FORMATS], help="output format; auto keeps the input's")
    add('--quality', type=int, default=95, help='JPEG, WebP and HEIC quality, 1-100 (default 95)')
    add('--suffix', default='', help='appended to each output file stem, e.g. _enhanced')
    add('--recursive', action='store_true', help='enhance the folders below --input too, mirrored under --output')
    add('--overwrite', action='store_true', help='replace outputs that exist (default: leave them, and say so)')
    add('--strip-metadata', action='store_true', help='write no EXIF, ICC profile or PNG text')
    add('--strength', type=float, default=1.0, help="I / L^s: 1 = the model's (default), 0 = the input, 2 = more")
    add('--save-light-map', action='store_true', help='also write the light map L beside each output (_light)')
    add('--compare', type=int, metavar='WIDTH', help='also write an input | output | light map strip this wide')
    add('--codec', help="videos: the codec to write (h264, hevc, vp9, av1; default: the input's where possible)")
    add('--crf', type=int, help="videos: the encoder's constant-quality factor (lower is better)")
    return parser.parse_args(argv)


def check_values(args: argparse.Namespace) -> None:
    if not 1 <= args.quality <= 100:
        raise UsageError(f'--quality {args.quality}: expected 1 to 100')
    if args.compare is not None and args.compare < 3:
        raise UsageError(f'--compare {args.compare}: expected a width of at least 3 pixels')
    if not math.isfinite(args.strength) or args.strength < 0:
        raise UsageError(f'--strength {args.strength}: expected a number >= 0')


@exit_on_user_error
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    check_values(args)
    from cliplit_basicsr.photo_folder import enhance_photos  # torch and the rest: not needed for --help

    return enhance_photos(args)


if __name__ == '__main__':
    sys.exit(main())
