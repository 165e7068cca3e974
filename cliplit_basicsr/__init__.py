"""CLIP-LIT (Liang et al., ICCV 2023) as a BasicSR plugin.

Importing the package registers the network, losses, dataset, model and metrics into BasicSR's
registries, exactly as Real-ESRGAN's package does.
"""

import _cliplit_basicsr_hook  # noqa: F401  (makes BasicSR 1.4.2 importable on current torchvision)

from . import basicsr_patches  # noqa: F401  (must precede anything that runs BasicSR code paths)
from .archs import *  # noqa: F401,F403
from .data import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .metrics import *  # noqa: F401,F403
from .models import *  # noqa: F401,F403
from .version import __version__  # noqa: F401
