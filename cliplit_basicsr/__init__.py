"""CLIP-LIT (Liang et al., ICCV 2023) as a BasicSR plugin.

Importing the package registers the network, losses, dataset, models and metrics into BasicSR's
registries, as Real-ESRGAN's package does, and applies the BasicSR 1.4.2 fixes of
:mod:`cliplit_basicsr.basicsr_compat`.
"""

from _cliplit_basicsr_hook import install_torchvision_shim

install_torchvision_shim()  # BasicSR 1.4.2 imports a module that current torchvision no longer has

from . import basicsr_compat  # noqa: E402  (before anything that runs BasicSR code paths)
from .archs import *  # noqa: E402, F401, F403
from .data import *  # noqa: E402, F401, F403
from .losses import *  # noqa: E402, F401, F403
from .metrics import *  # noqa: E402, F401, F403
from .models import *  # noqa: E402, F401, F403
from .version import __version__  # noqa: E402, F401

basicsr_compat.apply()
