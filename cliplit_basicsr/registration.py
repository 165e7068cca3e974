"""Registers every class of the plugin in BasicSR's registries, as Real-ESRGAN's package does on import.

Imported once BasicSR is (:func:`_cliplit_basicsr_hook.install_plugin_finder`): each sub-package imports its
``*_arch.py`` / ``*_dataset.py`` / ``*_loss.py`` / ``*_model.py`` modules, and ``metrics`` its functions.
Registering changes nothing else in BasicSR: its fixes for CLIP-LIT runs apply in the plugin's entry points
only (:mod:`cliplit_basicsr.basicsr_compat`).
"""

from .archs import *  # noqa: F401, F403
from .data import *  # noqa: F401, F403
from .losses import *  # noqa: F401, F403
from .metrics import *  # noqa: F401, F403
from .models import *  # noqa: F401, F403
