"""Exceptions of the CLIP core; each message is one line that names the model, file or option at fault."""

from cliplit_basicsr.errors import CLIPLITError


class CLIPLoadError(CLIPLITError, RuntimeError):
    """CLIP weights that cannot be found or loaded (missing offline, unreadable file, wrong tower)."""


class PromptFileError(CLIPLITError, ValueError):
    """A file that is not a CLIP-LIT prompt pair (neither this package's format nor the authors')."""


class PrecisionError(CLIPLITError, ValueError):
    """An ``amp`` option that is not one of the supported autocast dtypes for the device."""
