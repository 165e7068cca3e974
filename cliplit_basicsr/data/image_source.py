"""Training images from a folder or an LMDB, as RGB float32 resized the authors' way.

The authors open images with PIL and resize them with ``Image.ANTIALIAS`` (Pillow's antialiased
Lanczos) to a square. Here the bytes come through BasicSR's ``FileClient`` (disk or LMDB) and are decoded
by the package's decoder (:func:`cliplit_basicsr.image_io.decode_image`: JPEGs by Pillow, as theirs, no
EXIF rotation, as theirs; ``scripts/create_lmdb.py`` stores what it decodes, so a folder and its LMDB give
the same pixels); the resize is Pillow's Lanczos.
Conversions the authors' code did not support (it crashed on them) are documented choices:
grayscale is replicated to RGB, an alpha channel is dropped (as ``PIL.Image.convert('RGB')`` does),
16-bit images are scaled by 1/65535 and resized in float.
"""

import os
import threading
from typing import Dict, List, Optional

import cv2
import numpy as np
from basicsr.data.data_util import paths_from_lmdb
from basicsr.utils import FileClient, scandir
from PIL import Image

from cliplit_basicsr.errors import DataError, ImageReadError, OptionError
from cliplit_basicsr.image_io import IMAGE_EXTENSIONS, decode_image, is_image_file

_TO_RGB = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}  # BGRA2RGB drops alpha


def to_rgb(img: np.ndarray, name: str) -> np.ndarray:
    """An OpenCV-decoded image (gray, BGR or BGRA; 8- or 16-bit) as HWC RGB of the same dtype."""
    if img.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(f'{name}: unsupported pixel type {img.dtype} (8- or 16-bit images only)')
    channels = 1 if img.ndim == 2 else img.shape[2] if img.ndim == 3 else 0
    if channels not in _TO_RGB:
        raise ImageReadError(f'{name}: unsupported image shape {img.shape} (gray, RGB or RGBA only)')
    return cv2.cvtColor(img, _TO_RGB[channels])


def resize_lanczos(img: np.ndarray, size: int) -> np.ndarray:
    """Resize an HWC RGB uint8/uint16 image to ``size`` x ``size`` with Pillow's Lanczos; float32 in [0, 1].

    8-bit images are resized in Pillow's RGB mode (the authors' exact pixels), 16-bit ones per channel in
    float mode.
    """
    scale = float(np.iinfo(img.dtype).max)
    if img.shape[:2] == (size, size):
        return img.astype(np.float32) / scale
    if img.dtype == np.uint8:
        resized = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.LANCZOS))
        return resized.astype(np.float32) / scale
    channels = [
        np.asarray(Image.fromarray(img[:, :, c].astype(np.float32)).resize((size, size), Image.Resampling.LANCZOS))
        for c in range(img.shape[2])
    ]
    return np.clip(np.stack(channels, axis=2) / scale, 0, 1).astype(np.float32)


_lmdb_clients: Dict[str, FileClient] = {}
_lmdb_clients_lock = threading.Lock()  # resident sets are decoded by several threads


def _lmdb_client(root: str, backend: dict) -> FileClient:
    """The process's one FileClient for the LMDB at ``root``, shared by every dataset reading it: py-lmdb
    refuses a second handle on an environment that is open in the process. Only the training process reads
    images (they are decoded once and kept resident; the loaders run no workers), so no handle crosses a
    fork."""
    key = os.path.realpath(root)
    with _lmdb_clients_lock:
        if key not in _lmdb_clients:
            _lmdb_clients[key] = FileClient('lmdb', db_paths=[root], client_keys=['default'], **backend)
        return _lmdb_clients[key]


class ImageSource:
    """The images of one root (a folder, or an ``.lmdb`` made by ``scripts/create_lmdb.py``).

    ``names`` are file paths (disk) or LMDB keys, sorted. An LMDB is opened when first read, once per
    process (see ``_lmdb_client``).
    """

    def __init__(self, root: str, io_backend: dict, option: str) -> None:
        self.root = os.path.expanduser(str(root))
        self.backend = dict(io_backend)
        self.backend_type = self.backend.pop('type', 'disk')
        if not os.path.isdir(self.root):
            raise DataError(f'{option}: folder {self.root} does not exist')
        if self.backend_type == 'disk':
            self.names = self._folder_names(option)
        elif self.backend_type == 'lmdb':
            self.names = self._lmdb_names(option)
        else:
            raise OptionError(f"io_backend.type: '{self.backend_type}' is not supported (use disk or lmdb)")

    def _folder_names(self, option: str) -> List[str]:
        names = sorted(path for path in scandir(self.root, full_path=True) if is_image_file(path))
        if not names:
            hint = ' (an LMDB needs io_backend: {type: lmdb})' if self.root.rstrip('/').endswith('.lmdb') else ''
            raise DataError(f'{option}: no images ({", ".join(IMAGE_EXTENSIONS)}) in folder {self.root}{hint}')
        return names

    def _lmdb_names(self, option: str) -> List[str]:
        for required in ('meta_info.txt', 'data.mdb'):
            if not os.path.isfile(os.path.join(self.root, required)):
                raise DataError(f'{option}: {self.root} is not an LMDB made by scripts/create_lmdb.py (no {required})')
        try:
            names = sorted(paths_from_lmdb(self.root))
        except ValueError:
            raise DataError(f"{option}: LMDB folder {self.root} must end with '.lmdb'") from None
        if not names:
            raise DataError(f'{option}: LMDB {self.root} lists no images in meta_info.txt')
        return names

    def __len__(self) -> int:
        return len(self.names)

    def _read(self, name: str) -> Optional[bytes]:
        try:
            if self.backend_type == 'lmdb':
                return _lmdb_client(self.root, self.backend).get(name, 'default')
            return FileClient('disk', **self.backend).get(name)
        except Exception as err:  # OSError from disk, lmdb.Error from LMDB: report the file, one line
            raise ImageReadError(f'{self._describe(name)}: cannot read ({err})') from err

    def _describe(self, name: str) -> str:
        return f'{self.root}[{name}]' if self.backend_type == 'lmdb' else name

    def load(self, index: int, size: int) -> np.ndarray:
        """Image ``index`` as HWC RGB float32 in [0, 1], Lanczos-resized to ``size`` x ``size``."""
        name = self._describe(self.names[index])
        return resize_lanczos(to_rgb(decode_image(self._read(self.names[index]), name), name), size)
