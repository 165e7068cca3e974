"""Enhancing photos into a folder: what ``cliplit-enhance`` does once its arguments are parsed.

Inputs are collected (a file, a folder, a tree with ``--recursive``) and planned into output paths before
anything is enhanced, so a clash or an unwritable output is reported before any work; each photo is then
read upright with its metadata, enhanced, and written atomically with its light map and comparison strip
if asked for. An image that cannot be read or written is reported in one line and the others go on.
"""

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

from cliplit_basicsr.choices import AUTO
from cliplit_basicsr.engine import quantise
from cliplit_basicsr.enhancer import CLIPLITEnhancer
from cliplit_basicsr.errors import CLIPLITError, ImageWriteError, UsageError, one_line_message
from cliplit_basicsr.image_io import is_image_file, read_photo, write_image
from cliplit_basicsr.photo_metadata import Metadata
from cliplit_basicsr.video import enhance_video, is_video_file

EXTENSION_FORMATS = {
    '.jpg': 'jpg',
    '.jpeg': 'jpg',
    '.png': 'png',
    '.webp': 'webp',
    '.tif': 'tif',
    '.tiff': 'tif',
    '.heic': 'heic',
    '.heif': 'heic',
}


@dataclass
class Job:
    """One input photo and the files it becomes."""

    source: Path
    output: Path
    fmt: str
    light_map: Optional[Path] = None
    compare: Optional[Path] = None

    def targets(self) -> List[Path]:
        return [p for p in (self.output, self.light_map, self.compare) if p is not None]


def collect_inputs(input_path: Path, recursive: bool, output_dir: Path) -> List[Path]:
    """The image and video files to enhance: the file itself, or a folder's (with ``recursive``, its
    subfolders' too, except an output folder inside it); other files are skipped with a warning."""
    if input_path.is_file():
        return [input_path]
    if not input_path.is_dir():
        raise UsageError(f'--input {input_path}: no such file or folder')
    output_dir = output_dir.resolve()
    nested_output = recursive and output_dir != input_path.resolve()
    candidates = input_path.rglob('*') if recursive else input_path.iterdir()
    files = []
    for path in sorted(candidates):
        if not path.is_file() or path.name.startswith('.'):
            continue
        if nested_output and output_dir in path.resolve().parents:
            continue
        if is_image_file(path) or is_video_file(path):
            files.append(path)
        else:
            print(f'warning: skipping {path}: not an image or video file', file=sys.stderr)
    if not files:
        raise UsageError(f'--input {input_path}: the folder has no image or video files')
    return files


def plan_jobs(files: List[Path], input_path: Path, args: argparse.Namespace) -> List[Job]:
    """Output paths: the input's place under ``--output`` (mirrored with ``--recursive``), its stem plus
    ``--suffix``, the format's extension (a video keeps its container's). Inputs that would share an output
    (``a.jpg`` and ``a.png`` into PNGs) each keep their own extension in the stem (``a_jpg.png``,
    ``a_png.png``), with a warning; an output that would replace its own input is a one-line error."""
    base_dir = input_path if input_path.is_dir() else input_path.parent
    output_dir = Path(args.output)
    planned: Dict[Tuple[Path, str], List[Path]] = {}
    for path in files:
        if is_video_file(path):
            fmt = path.suffix.lower().lstrip('.')
        else:
            fmt = EXTENSION_FORMATS.get(path.suffix.lower(), 'png') if args.ext == AUTO else args.ext
        planned.setdefault((output_dir / path.parent.relative_to(base_dir) / path.stem, fmt), []).append(path)
    jobs = []
    for (stem_path, fmt), sources in planned.items():
        if len(sources) > 1:
            names = ', '.join(str(s) for s in sources)
            print(
                f'warning: {names} would share the output {stem_path.name}.{fmt}: each keeps its extension',
                file=sys.stderr,
            )
        for source in sources:
            stem = stem_path.name + (f'_{source.suffix.lower().lstrip(".")}' if len(sources) > 1 else '') + args.suffix
            folder, still = stem_path.parent, not is_video_file(source)
            job = Job(
                source,
                folder / f'{stem}.{fmt}',
                fmt,
                folder / f'{stem}_light.{fmt}' if args.save_light_map and still else None,
                folder / f'{stem}_compare.{fmt}' if args.compare and still else None,
            )
            if any(target.resolve() == source.resolve() for target in job.targets()):
                raise UsageError(f'{source}: its output would replace it; choose another --output, --suffix or --ext')
            jobs.append(job)
    return jobs


def prepare_output(output_dir: Path) -> None:
    """Create the output folder and check that files can be created in it."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / '.cliplit-enhance-write-test'
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise UsageError(f'--output {output_dir}: not a writable folder ({err.strerror or err})') from None


def light_map_image(light: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The light map as a grayscale image of ``dtype`` (values above 1 clipped), rounded as the outputs."""
    return quantise(torch.from_numpy(light), float(np.iinfo(dtype).max)).numpy().astype(dtype)


def compare_strip(original: np.ndarray, enhanced: np.ndarray, light: np.ndarray, width: int) -> np.ndarray:
    """Input | output | light map side by side, 8-bit BGR, ``width`` pixels wide in all."""

    def bgr8(image: np.ndarray) -> np.ndarray:
        if image.dtype == np.uint16:
            image = (image // 257).astype(np.uint8)
        if image.ndim == 2:
            return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        return image[:, :, :3]

    panel = width // 3
    widths = (panel, panel, width - 2 * panel)  # the last panel takes the remainder: exactly ``width``
    height = max(1, round(original.shape[0] * panel / original.shape[1]))
    panels = [bgr8(image) for image in (original, enhanced, light_map_image(light, np.uint8))]
    return np.hstack([cv2.resize(image, (w, height), interpolation=cv2.INTER_AREA) for image, w in zip(panels, widths)])


def enhance_one(job: Job, enhancer: CLIPLITEnhancer, args: argparse.Namespace) -> float:
    """Enhance and write one job; returns its megapixels. Warnings go to stderr; errors are raised."""
    try:
        job.output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ImageWriteError(f'{job.output.parent}: cannot create the folder ({err.strerror or err})') from None
    if is_video_file(job.source):
        report = enhance_video(
            job.source,
            job.output,
            lambda frames: enhancer.enhance(frames, strength=args.strength),
            args.codec,
            args.crf,
        )
        return report.megapixels
    pixels, metadata, warnings = read_photo(job.source)
    if args.strip_metadata:
        metadata = Metadata()
    if job.light_map is None and job.compare is None:  # no whole-image light map plane to hold
        enhanced, light = enhancer.enhance(pixels, strength=args.strength), None
    else:
        enhanced, light = enhancer.enhance(pixels, strength=args.strength, return_light_map=True)
    warnings += [f'{job.output}: {note}' for note in write_image(job.output, enhanced, job.fmt, args.quality, metadata)]
    if job.light_map is not None:
        notes = write_image(job.light_map, light_map_image(light, enhanced.dtype), job.fmt, args.quality)
        warnings += [f'{job.light_map}: {note}' for note in notes]
    if job.compare is not None:
        write_image(job.compare, compare_strip(pixels, enhanced, light, args.compare), job.fmt, args.quality)
    for warning in dict.fromkeys(warnings):
        tqdm.write(f'warning: {warning}', file=sys.stderr)
    return pixels.shape[0] * pixels.shape[1] / 1e6


def enhance_photos(args: argparse.Namespace) -> int:
    """Enhance ``args.input`` into ``args.output`` as ``cliplit-enhance`` documents; returns the exit code
    (1 if any image failed). Usage errors raise :class:`UsageError` before anything is written."""
    input_path, output_dir = Path(args.input), Path(args.output)
    jobs = plan_jobs(collect_inputs(input_path, args.recursive, output_dir), input_path, args)
    if (args.save_light_map or args.compare) and any(is_video_file(job.source) for job in jobs):
        print('warning: --save-light-map and --compare apply to photos only, not to videos', file=sys.stderr)
    prepare_output(output_dir)
    enhancer = CLIPLITEnhancer(args.ckpt, args.device, args.precision, args.tile, args.engine)
    started, megapixels, failed, skipped = time.perf_counter(), 0.0, [], []
    noun = 'files' if any(is_video_file(job.source) for job in jobs) else 'images'
    for job in tqdm(jobs, desc='cliplit-enhance', unit=noun[:-1]):
        existing = [p for p in job.targets() if p.exists()]
        if existing and not args.overwrite:
            tqdm.write(f'skipping {job.source}: {existing[0]} exists (--overwrite replaces it)', file=sys.stderr)
            skipped.append(job.source)
            continue
        try:
            megapixels += enhance_one(job, enhancer, args)
        except (CLIPLITError, ValueError) as err:
            tqdm.write(f'error: {one_line_message(err)}', file=sys.stderr)
            failed.append(job.source)
    done = len(jobs) - len(failed) - len(skipped)
    summary = f'cliplit-enhance: {done} of {len(jobs)} {noun} enhanced, {megapixels:.1f} MP in '
    summary += f'{time.perf_counter() - started:.1f} s'
    if skipped:
        summary += f'; {len(skipped)} skipped (outputs exist)'
    if failed:
        summary += f'; {len(failed)} failed: {", ".join(str(p) for p in failed)}'
    tqdm.write(summary, file=sys.stderr)
    return 1 if failed else 0
