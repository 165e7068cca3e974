"""Deprecated: the inference engines live in :mod:`cliplit_basicsr.engine` (this name stays for old code)."""

import warnings

from cliplit_basicsr.engine import DEFAULT_TILES, PRECISIONS, enhance_tensor  # noqa: F401

warnings.warn(
    'cliplit_basicsr.inference is deprecated: use cliplit_basicsr.engine (enhance_tensor, build_engine)',
    DeprecationWarning,
    stacklevel=2,
)
