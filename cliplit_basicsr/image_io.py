"""Reading and writing images, for enhancement and training alike, with one decoding policy.

JPEGs are decoded by Pillow, as the authors' code reads every image (``Image.open``, training and test);
Pillow also reports truncated JPEGs, which OpenCV would fill with grey. Everything else (PNG, 16-bit
PNG/TIFF, BMP, WebP, ...) is decoded by OpenCV with ``IMREAD_UNCHANGED``, which reads 16-bit colour that
Pillow cannot; for these formats the two decoders give the same pixels. HEIC/HEIF photos (the iPhone's
default) are decoded by pillow-heif: upright (libheif applies the file's rotation and mirroring), 10- and
12-bit ones scaled to 16 bits, with their EXIF and ICC profile. Images come in OpenCV's layout:
HxW (gray), HxWx3 (BGR) or HxWx4 (BGRA), uint8 or uint16, as stored (no EXIF rotation: the authors'
training reads them so; a HEIC's own rotation is part of its image, as HEIF defines it).
:func:`read_photo` gives a photo as viewers show it, with its metadata (:mod:`cliplit_basicsr.photo_metadata`).
Writes are atomic: a temporary file, then ``os.replace``.
"""

import io
import os
from typing import List, Optional, Tuple, Union

import cv2
import numpy as np
from PIL import Image

from cliplit_basicsr.atomic_io import atomic_write_path
from cliplit_basicsr.errors import ImageReadError, ImageWriteError, one_line_message
from cliplit_basicsr.photo_metadata import (
    ORIENTATION_TAG,
    Metadata,
    icc_colour_space,
    orient,
    pillow_save_options,
    png_with_metadata,
    read_metadata,
)

PathLike = Union[str, os.PathLike]
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm', '.heic', '.heif')
SIXTEEN_BIT_FORMATS = ('png', 'tif', 'heic')  # HEIC as 10 bits a channel; the others hold 8 bits
ALPHA_FORMATS = ('png', 'webp', 'tif', 'heic')
_JPEG_MAGIC = b'\xff\xd8\xff'


def is_image_file(path: PathLike) -> bool:
    """Whether ``path`` has an image file extension."""
    return os.fspath(path).lower().endswith(IMAGE_EXTENSIONS)


def _decode_jpeg(data: bytes, name: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.mode not in ('L', 'RGB'):
                image = image.convert('RGB')
            pixels = np.array(image)  # writable, as OpenCV returns images
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageReadError(f'{name}: cannot decode JPEG ({err})') from None
    return pixels if pixels.ndim == 2 else np.ascontiguousarray(pixels[:, :, ::-1])


def _is_heif(data: bytes) -> bool:
    if data[4:8] != b'ftyp' or data[8:12] in (b'avif', b'avis'):  # HEIF, not AVIF (no AV1 decoder here)
        return False
    import pillow_heif

    return pillow_heif.is_supported(data)


def _decode_heif(data: bytes, name: str) -> Tuple[np.ndarray, Metadata]:
    """A HEIC/HEIF photo's pixels (upright, OpenCV layout, uint8 or uint16) and its metadata (EXIF with the
    orientation reset: libheif has applied the file's transformations)."""
    import pillow_heif

    try:
        heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=False)
        pixels = np.array(heif)  # writable, as OpenCV returns images
    except (ValueError, RuntimeError, OSError, SyntaxError) as err:
        raise ImageReadError(f'{name}: cannot decode HEIC ({one_line_message(err)})') from None
    if pixels.ndim == 3:
        pixels = np.ascontiguousarray(pixels[:, :, [2, 1, 0, 3][: pixels.shape[2]]])
    metadata = Metadata(icc_profile=heif.info.get('icc_profile') or None)
    if heif.info.get('exif'):
        try:
            exif = Image.Exif()
            exif.load(heif.info['exif'])
            exif[ORIENTATION_TAG] = 1
            metadata.exif = exif.tobytes()
        except Exception:  # Pillow raises many types for a malformed EXIF block: the photo goes on without it
            metadata.exif = None
    return pixels, metadata


def decode_image(data: Optional[bytes], name: str) -> np.ndarray:
    """An encoded image's pixels, as stored (a HEIC upright: its rotation is part of its image), in OpenCV's
    layout; ``ImageReadError`` naming ``name`` if it is missing, corrupt, or not 8- or 16-bit gray, RGB or RGBA."""
    if data is None:
        raise ImageReadError(f'{name}: not found')
    if data.startswith(_JPEG_MAGIC):
        return _decode_jpeg(data, name)
    if _is_heif(data):
        return _decode_heif(data, name)[0]
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if image is None:
        raise ImageReadError(f'{name}: cannot decode image (corrupt or unsupported format)')
    if image.dtype not in (np.uint8, np.uint16) or not (image.ndim == 2 or image.shape[2] in (1, 3, 4)):
        raise ImageReadError(
            f'{name}: unsupported image ({image.dtype}, shape {image.shape}); expected 8- or 16-bit gray, RGB or RGBA'
        )
    return image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image


def _read_bytes(path: PathLike) -> bytes:
    try:
        with open(path, 'rb') as f:
            return f.read()
    except OSError as err:
        raise ImageReadError(f'{path}: cannot read ({err.strerror or err})') from None


def read_image(path: PathLike) -> np.ndarray:
    """An image file's pixels as stored (:func:`decode_image`)."""
    return decode_image(_read_bytes(path), os.fspath(path))


def read_photo(path: PathLike) -> Tuple[np.ndarray, Metadata, List[str]]:
    """A photo as viewers show it: (pixels with its EXIF orientation applied, its metadata, warnings).
    Metadata that cannot be parsed is dropped with a warning; the pixels are still read."""
    data = _read_bytes(path)
    if _is_heif(data):
        (pixels, metadata), orientation = _decode_heif(data, os.fspath(path)), 1
    else:
        pixels = decode_image(data, os.fspath(path))
        try:
            orientation, metadata = read_metadata(data)
        except Exception as err:  # Pillow raises many types for malformed EXIF, ICC or headers
            return pixels, Metadata(), [f'{path}: metadata dropped (cannot be read: {one_line_message(err, 200)})']
    warnings = []
    if metadata.icc_profile and icc_colour_space(metadata.icc_profile) != 'RGB':
        # the outputs are RGB (gray and CMYK photos too): another space's profile would misdescribe them
        space = icc_colour_space(metadata.icc_profile)
        warnings.append(f'{path}: ICC profile dropped (a {space} profile cannot describe the RGB output)')
        metadata.icc_profile = None
    return orient(pixels, orientation), metadata, warnings


def _to_8_bit(pixels: np.ndarray) -> np.ndarray:
    """16-bit pixels rounded to 8 bits (v * 255 / 65535, to nearest)."""
    return ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def encode_image(
    pixels: np.ndarray, fmt: str, quality: int = 95, metadata: Optional[Metadata] = None
) -> Tuple[bytes, List[str]]:
    """Encode OpenCV-layout ``pixels`` as ``fmt`` (one of ``choices.OUTPUT_FORMATS``) with ``metadata``: (bytes,
    notes on what the format could not hold: 16 bits, alpha, metadata)."""
    metadata = metadata or Metadata()
    notes = []
    if pixels.dtype == np.uint16 and fmt not in SIXTEEN_BIT_FORMATS:
        pixels = _to_8_bit(pixels)
        notes.append(f'{fmt.upper()} holds 8 bits a channel: the 16-bit output was rounded to 8 bits')
    if pixels.ndim == 3 and pixels.shape[2] == 4 and fmt not in ALPHA_FORMATS:
        pixels = pixels[:, :, :3]
        notes.append(f'{fmt.upper()} has no alpha channel: alpha dropped')
    if fmt == 'heic':
        return _encode_heif(pixels, quality, metadata), notes
    if fmt == 'png' or (fmt == 'tif' and pixels.dtype == np.uint16):
        ok, encoded = cv2.imencode(f'.{fmt}', pixels)
        if not ok:
            raise ValueError(f'cannot encode a {fmt.upper()} from a {pixels.dtype} array of shape {pixels.shape}')
        if fmt == 'png':
            return png_with_metadata(encoded.tobytes(), metadata), notes
        if metadata:
            notes.append('16-bit TIFF is written without its metadata (EXIF, ICC profile)')
        return encoded.tobytes(), notes
    rgb = pixels if pixels.ndim == 2 else pixels[:, :, [2, 1, 0, 3][: pixels.shape[2]]]
    stream = io.BytesIO()
    options = pillow_save_options(metadata)
    if fmt in ('jpg', 'webp'):
        options['quality'] = quality
    Image.fromarray(np.ascontiguousarray(rgb)).save(
        stream, {'jpg': 'JPEG', 'webp': 'WEBP', 'tif': 'TIFF'}[fmt], **options
    )
    return stream.getvalue(), notes


def _encode_heif(pixels: np.ndarray, quality: int, metadata: Metadata) -> bytes:
    """HEIC (HEVC) bytes of OpenCV-layout pixels: 8 bits, or 10 bits a channel from uint16."""
    import pillow_heif

    rgb = pixels if pixels.ndim == 2 else pixels[:, :, [2, 1, 0, 3][: pixels.shape[2]]]
    mode = {2: 'L', 3: 'RGB', 4: 'RGBA'}[rgb.ndim if rgb.ndim == 2 else rgb.shape[2]]
    if pixels.dtype == np.uint16:
        mode += ';16'
    heif = pillow_heif.from_bytes(mode, (rgb.shape[1], rgb.shape[0]), np.ascontiguousarray(rgb).tobytes())
    stream = io.BytesIO()
    heif.save(stream, quality=quality, **pillow_save_options(metadata))
    return stream.getvalue()


def write_image(
    path: PathLike, pixels: np.ndarray, fmt: str = 'png', quality: int = 95, metadata: Optional[Metadata] = None
) -> List[str]:
    """Write ``pixels`` (OpenCV layout, uint8/uint16) to ``path`` as ``fmt``, atomically; returns the notes of
    :func:`encode_image`. ``ImageWriteError`` (one line, naming the file) if it cannot."""
    try:
        data, notes = encode_image(pixels, fmt, quality, metadata)
    except (ValueError, OSError) as err:  # Pillow's encoders raise OSError for what they cannot write
        raise ImageWriteError(f'{path}: {err}') from None
    try:
        with atomic_write_path(path) as temporary:
            with open(temporary, 'wb') as f:
                f.write(data)
    except OSError as err:
        raise ImageWriteError(f'{path}: cannot write ({err.strerror or err})') from None
    return notes


def write_png(path: PathLike, image: np.ndarray) -> None:
    """Write ``image`` (OpenCV layout, uint8/uint16) as a PNG, atomically."""
    write_image(path, image, 'png')
