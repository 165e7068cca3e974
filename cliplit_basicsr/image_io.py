"""Reading images for enhancement and writing results, keeping bit depth and alpha.

JPEGs are decoded with Pillow, as the authors' test script reads them (``Image.open``; no EXIF rotation),
so the golden outputs are reproduced with the authors' decoder; Pillow also reports truncated JPEGs, which
OpenCV would silently fill with grey. Everything else (PNG, 16-bit PNG/TIFF, BMP, WebP, ...) is decoded
by OpenCV with ``IMREAD_UNCHANGED``. Images come back in OpenCV's layout: HxW (gray), HxWx3 (BGR) or HxWx4
(BGRA), uint8 or uint16. PNGs are written atomically (temporary file, then ``os.replace``).
"""

import io
import os
from typing import Union

import cv2
import numpy as np
from PIL import Image

from cliplit_basicsr.atomic_io import atomic_write_path
from cliplit_basicsr.data.image_io import IMAGE_EXTENSIONS, DataError, ImageReadError

PathLike = Union[str, os.PathLike]
_JPEG_MAGIC = b'\xff\xd8\xff'
__all__ = ['IMAGE_EXTENSIONS', 'ImageReadError', 'ImageWriteError', 'is_image_file', 'read_image', 'write_png']


class ImageWriteError(DataError):
    """An output image that cannot be written; the message names the file."""


def is_image_file(path: PathLike) -> bool:
    """Whether ``path`` has an image file extension."""
    return os.fspath(path).lower().endswith(IMAGE_EXTENSIONS)


def _decode_jpeg(data: bytes, path: PathLike) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.mode not in ('L', 'RGB'):
                image = image.convert('RGB')
            pixels = np.asarray(image)
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f'{path}: cannot decode JPEG ({err})') from None
    return pixels if pixels.ndim == 2 else np.ascontiguousarray(pixels[:, :, ::-1])


def read_image(path: PathLike) -> np.ndarray:
    """Read an image file as OpenCV would (gray / BGR / BGRA, uint8 / uint16); ``ImageReadError`` if not."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as err:
        raise ImageReadError(f'{path}: cannot read ({err.strerror or err})') from None
    if data.startswith(_JPEG_MAGIC):
        return _decode_jpeg(data, path)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if image is None:
        raise ImageReadError(f'{path}: cannot decode image (corrupt or unsupported format)')
    if image.dtype not in (np.uint8, np.uint16) or not (image.ndim == 2 or image.shape[2] in (1, 3, 4)):
        raise ImageReadError(
            f'{path}: unsupported image ({image.dtype}, shape {image.shape}); expected 8- or 16-bit gray, RGB or RGBA'
        )
    return image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image


def write_png(path: PathLike, image: np.ndarray) -> None:
    """Write ``image`` (OpenCV layout, uint8/uint16) as a PNG, atomically."""
    ok, encoded = cv2.imencode('.png', image)
    if not ok:
        raise ImageWriteError(f'{path}: cannot encode a PNG from a {image.dtype} array of shape {image.shape}')
    try:
        with atomic_write_path(path) as temporary:
            with open(temporary, 'wb') as f:
                f.write(encoded.tobytes())
    except OSError as err:
        raise ImageWriteError(f'{path}: cannot write ({err.strerror or err})') from None
