"""CLIP-LIT (Liang et al., ICCV 2023) as a BasicSR plugin.

Importing the package is quick and imports neither BasicSR nor open_clip: enhancing photos
(:mod:`cliplit_basicsr.enhancer`, ``cliplit-enhance``) needs neither. The network, losses, dataset, models
and metrics register in BasicSR's registries the moment BasicSR is imported, or at once if it already is
(:mod:`cliplit_basicsr.registration`), with or without the start-up hook.
"""

from _cliplit_basicsr_hook import install_plugin_finder

from .version import __version__  # noqa: F401

install_plugin_finder()
