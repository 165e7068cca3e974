"""Registers CLIP-LIT's enhancement network with BasicSR (``network_g: {type: CLIPLITNet}``).

The network is defined in :mod:`cliplit_basicsr.network`, which does not import BasicSR, so that enhancing
photos does not either.
"""

from basicsr.utils.registry import ARCH_REGISTRY

from cliplit_basicsr.network import CLIPLITNet

ARCH_REGISTRY.register()(CLIPLITNet)
