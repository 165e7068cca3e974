"""Start-up hook that lets BasicSR 1.4.2 host cliplit_basicsr (standard library only).

A ``.pth`` file installed next to this module imports it at interpreter start-up. It costs a
few microseconds and imports nothing heavy: it only adds two import finders.

* ``torchvision.transforms.functional_tensor`` was removed from torchvision, but BasicSR 1.4.2
  imports it; the finder provides a new module filled from ``_functional_tensor``.
* After ``basicsr/__init__.py`` finishes, ``cliplit_basicsr`` is imported so that BasicSR's own
  entry points (``python -m basicsr.train``/``basicsr.test``) see the plugin's registrations.

Set ``CLIPLIT_BASICSR_NO_HOOK=1`` to disable the automatic plugin import (the torchvision shim
stays, since it only adds a missing module).
"""

import importlib
import importlib.abc
import importlib.util
import os
import sys

_SHIM_NAME = 'torchvision.transforms.functional_tensor'
_SOURCE_NAME = 'torchvision.transforms._functional_tensor'


class _FunctionalTensorLoader(importlib.abc.Loader):
    """Builds the removed torchvision module as a fresh module holding the private one's names."""

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        source = importlib.import_module(_SOURCE_NAME)
        module.__dict__.update({k: v for k, v in vars(source).items() if not k.startswith('__')})


class _PluginAfterBasicSRLoader(importlib.abc.Loader):
    """Runs BasicSR's own package loader, then imports the plugin."""

    def __init__(self, wrapped):
        self.wrapped = wrapped

    def create_module(self, spec):
        return self.wrapped.create_module(spec)

    def exec_module(self, module):
        self.wrapped.exec_module(module)
        if not os.environ.get('CLIPLIT_BASICSR_NO_HOOK'):
            importlib.import_module('cliplit_basicsr')


class _Finder(importlib.abc.MetaPathFinder):

    def find_spec(self, fullname, path=None, target=None):
        if fullname == _SHIM_NAME:
            return importlib.util.spec_from_loader(fullname, _FunctionalTensorLoader())
        if fullname == 'basicsr':
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, 'find_spec'):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    if spec.loader is not None and not isinstance(spec.loader, _PluginAfterBasicSRLoader):
                        spec.loader = _PluginAfterBasicSRLoader(spec.loader)
                    return spec
        return None


def install():
    """Put the finder first on ``sys.meta_path`` (idempotent)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


install()
