"""A photo in the web app: read upright with its metadata, enhanced once, then shown and written at any strength.

The network runs once per photo, for its light map ``L`` (the map ``cliplit-enhance`` uses for that photo). A
strength ``s`` then costs only ``clamp(I / L^s, 0, 1)``: on a display-size copy of the photo and of ``L`` for the
preview, and on the full-resolution pixels for the download, through
:func:`~cliplit_basicsr.enhancer.apply_light_map` and ``cliplit-enhance``'s writer: the file is the one
``cliplit-enhance -i photo -o folder --strength s`` writes (same pixels, EXIF, ICC profile and PNG text).
No Gradio here: :mod:`cliplit_basicsr.app` is the page around it.
"""

import argparse
import contextlib
import io
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from cliplit_basicsr.engine import light_to_output, quantise
from cliplit_basicsr.enhancer import CLIPLITEnhancer, apply_light_map
from cliplit_basicsr.errors import ImageReadError, one_line_message
from cliplit_basicsr.image_io import PathLike, read_photo, write_image
from cliplit_basicsr.photo_folder import light_map_image, plan_jobs
from cliplit_basicsr.photo_metadata import Metadata

PREVIEW_SIDE = 1600  # the preview's long side at most, in pixels (a laptop screen's width)
OUTPUT_FORMAT = 'png'  # cliplit-enhance's default: every bit depth, alpha and metadata kept


def _display_size(height: int, width: int, side: int) -> Tuple[int, int]:
    """(width, height) of a ``height`` x ``width`` image scaled down to a long side of at most ``side``."""
    scale = min(1.0, side / max(height, width))
    return max(1, round(width * scale)), max(1, round(height * scale))


@dataclass
class EnhancedPhoto:
    """A photo with its light map, and display-size copies of both for previews at any strength.

    Args:
        name: the file's name as the person gave it (messages and the download's name use it).
        source: where it was read from.
        pixels: upright, OpenCV layout (gray, BGR or BGRA; uint8 or uint16), as ``read_photo`` gives it.
        metadata: what the output carries (EXIF, ICC profile, PNG text).
        light: the light map ``L`` of ``pixels``, float32 HxW.
        warnings: what reading it reported (metadata dropped...), naming ``name``.
        preview_side: the long side of the preview copies, in pixels.
    """

    name: str
    source: str
    pixels: np.ndarray
    metadata: Metadata
    light: np.ndarray
    warnings: List[str] = field(default_factory=list)
    preview_side: int = PREVIEW_SIDE

    def __post_init__(self):
        size = _display_size(*self.pixels.shape[:2], self.preview_side)
        small = cv2.resize(self.pixels, size, interpolation=cv2.INTER_AREA)  # in its own dtype
        rgb = np.repeat(small[:, :, None], 3, axis=2) if small.ndim == 2 else small[:, :, 2::-1]
        self._input = torch.from_numpy(rgb.astype(np.float32) / np.iinfo(small.dtype).max)
        self._light = torch.from_numpy(cv2.resize(self.light, size, interpolation=cv2.INTER_AREA))[:, :, None]
        self.before = self.preview(0.0)  # the photo as it is (display size, 8-bit RGB)

    def preview(self, strength: float) -> np.ndarray:
        """The photo at ``strength`` (0: as it is), display size, 8-bit RGB."""
        with torch.inference_mode():
            return quantise(light_to_output(self._input, self._light, strength), 255.0).to(torch.uint8).numpy()

    def light_map_preview(self) -> np.ndarray:
        """The light map, display size, 8-bit gray (values above 1 clipped), as ``--save-light-map`` draws it."""
        return light_map_image(self._light[:, :, 0].numpy(), np.uint8)

    def output(self, strength: float) -> np.ndarray:
        """The full-resolution output at ``strength``: ``enhance(pixels, strength)``'s array."""
        return apply_light_map(self.pixels, self.light, strength)

    def write(self, path: PathLike, strength: float) -> List[str]:
        """Write the output at ``strength`` to ``path`` as ``cliplit-enhance`` does (PNG with the metadata,
        atomically); returns its notes on what the format could not hold."""
        return write_image(path, self.output(strength), OUTPUT_FORMAT, metadata=self.metadata)


def enhance_photo(
    path: PathLike,
    enhancer: CLIPLITEnhancer,
    name: Optional[str] = None,
    progress: Optional[Callable[[float], None]] = None,
    preview_side: int = PREVIEW_SIDE,
) -> EnhancedPhoto:
    """Read the photo at ``path`` upright and compute its light map (the network's one run for it).

    Args:
        path: the photo's file.
        enhancer: the model.
        name: how messages name it (default: ``path``'s file name); a person's upload has a temporary path.
        progress: called with the fraction of the light map done (:meth:`CLIPLITEnhancer.enhance`).
        preview_side: the long side of the preview copies, in pixels.

    Raises ``ImageReadError`` naming ``name`` (one line) if the photo cannot be read or enhanced.
    """
    path, name = os.fspath(path), name or Path(path).name
    try:
        pixels, metadata, warnings = read_photo(path)
        light = enhancer.enhance(pixels, return_light_map=True, progress=progress)[1]
    except ValueError as err:  # ImageReadError (a CLIPLITError) and the enhancer's checks (too small...)
        message = one_line_message(err).replace(path, name)
        raise ImageReadError(message if message.startswith(name) else f'{name}: {message}') from None
    warnings = [warning.replace(path, name) for warning in warnings]
    return EnhancedPhoto(name, path, pixels, metadata, light, warnings, preview_side)


def output_names(names: Sequence[str]) -> List[str]:
    """The names ``cliplit-enhance`` gives the outputs of photos with these file names, in one folder (PNG):
    the stem, or the stem and its extension where two would share one (``a_jpg.png``, ``a_png.png``); a
    name dropped more than once is numbered from its second time (``a_2.png``)."""
    options = argparse.Namespace(output='out', ext=OUTPUT_FORMAT, suffix='', save_light_map=False, compare=None)
    sources = [Path(Path(name).name) for name in names]
    with contextlib.redirect_stderr(io.StringIO()):  # plan_jobs' note on shared names is for the command line
        by_source = {job.source: Path(job.output.name) for job in plan_jobs(sorted(set(sources)), Path('.'), options)}
    named, seen = [], Counter()
    for source in sources:  # the same file name dropped twice: the second is _2, the third _3
        seen[source] += 1
        output = by_source[source]
        named.append(output.name if seen[source] == 1 else f'{output.stem}_{seen[source]}{output.suffix}')
    return named
