"""A photo's orientation, EXIF, ICC profile and PNG text: read from the input, carried to the output.

Phones store pixels as the sensor read them and an EXIF orientation tag saying how to show them; every
viewer applies it. ``cliplit-enhance`` therefore enhances every photo upright, as it is shown
(:func:`orient`), and writes it upright with the tag reset to 1. The rest of the metadata (EXIF fields such
as camera, date, exposure and GPS, the embedded ICC colour profile, PNG text chunks) is carried over where
the output format can hold it: the maths runs on the file's own RGB values, as the authors' code does
(no colour conversion), so the profile keeps the output's colours meaning what the input's meant.
"""

import io
import struct
import zlib
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image

ORIENTATION_TAG = 0x0112
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_PNG_TEXT_CHUNKS = (b'tEXt', b'zTXt', b'iTXt')
_EXIF_HEADER = b'Exif\x00\x00'
# PNG text chunks that can hold a second copy of the orientation (XMP's tiff:Orientation, ImageMagick's raw
# EXIF): kept only for photos stored upright, so that no viewer turns the upright output again.
_ORIENTATION_TEXT_KEYWORDS = (b'XML:com.adobe.xmp', b'Raw profile type exif', b'Raw profile type APP1')

# The transform that shows stored pixels (H, W, ...) as a viewer does, per EXIF orientation (as Pillow's
# ImageOps.exif_transpose, on any dtype and channel count).
_ORIENT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


@dataclass
class Metadata:
    """What is carried from an input photo to its outputs; empty when there is none (or it is stripped)."""

    exif: Optional[bytes] = None  # EXIF as Pillow writes it ('Exif\\0\\0' + TIFF structure), orientation 1
    icc_profile: Optional[bytes] = None
    png_text: List[Tuple[bytes, bytes]] = field(default_factory=list)  # raw (type, data) text chunks of a PNG

    def __bool__(self) -> bool:
        return bool(self.exif or self.icc_profile or self.png_text)


def orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """``pixels`` as shown under EXIF ``orientation`` (1-8; anything else: as stored), contiguous."""
    return np.ascontiguousarray(_ORIENT.get(orientation, _ORIENT[1])(pixels))


def _png_chunks(data: bytes) -> List[Tuple[bytes, bytes]]:
    """(type, data) of every chunk of a PNG file's bytes."""
    chunks, position = [], len(PNG_SIGNATURE)
    while position + 8 <= len(data):
        length, kind = struct.unpack('>I4s', data[position : position + 8])
        chunks.append((kind, data[position + 8 : position + 8 + length]))
        position += 12 + length
        if kind == b'IEND':
            break
    return chunks


def read_metadata(data: bytes) -> Tuple[int, Metadata]:
    """The EXIF orientation (1 if none) and the :class:`Metadata` of an image file's bytes.

    Raises whatever Pillow raises for metadata it cannot parse; the caller drops the metadata then.
    """
    with Image.open(io.BytesIO(data)) as image:
        exif = image.getexif()
        if image.info.get('exif') and not len(exif):  # Pillow skips an EXIF block it cannot parse
            raise ValueError('the EXIF block cannot be parsed')
        orientation = int(exif.get(ORIENTATION_TAG, 1) or 1)
        metadata = Metadata(icc_profile=image.info.get('icc_profile') or None)
        if len(exif):
            exif[ORIENTATION_TAG] = 1
            metadata.exif = exif.tobytes()
    if data.startswith(PNG_SIGNATURE):
        metadata.png_text = [
            (kind, body)
            for kind, body in _png_chunks(data)
            if kind in _PNG_TEXT_CHUNKS and (orientation == 1 or body.split(b'\0')[0] not in _ORIENTATION_TEXT_KEYWORDS)
        ]
    return orientation, metadata


def icc_colour_space(profile: bytes) -> str:
    """An ICC profile's data colour space ('RGB', 'GRAY', 'CMYK', ...), from its header."""
    return profile[16:20].decode('ascii', 'replace').strip()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_with_metadata(png: bytes, metadata: Metadata) -> bytes:
    """An encoded PNG with ``metadata`` as chunks after its header: iCCP, eXIf and the text chunks."""
    if not metadata:
        return png
    extra = b''
    if metadata.icc_profile:
        extra += _chunk(b'iCCP', b'ICC Profile\x00\x00' + zlib.compress(metadata.icc_profile))
    if metadata.exif:
        exif = metadata.exif[len(_EXIF_HEADER) :] if metadata.exif.startswith(_EXIF_HEADER) else metadata.exif
        extra += _chunk(b'eXIf', exif)
    extra += b''.join(_chunk(kind, body) for kind, body in metadata.png_text)
    header_end = len(PNG_SIGNATURE) + 8 + struct.unpack('>I', png[8:12])[0] + 4  # after IHDR
    return png[:header_end] + extra + png[header_end:]


def pillow_save_options(metadata: Metadata) -> dict:
    """Pillow ``save`` arguments that write ``metadata`` (JPEG, WebP, TIFF)."""
    options = {}
    if metadata.exif:
        options['exif'] = metadata.exif
    if metadata.icc_profile:
        options['icc_profile'] = metadata.icc_profile
    return options
