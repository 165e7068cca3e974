"""Start-up hook that lets BasicSR 1.4.2's own commands host cliplit_basicsr (standard library only).

The ``zz_cliplit_basicsr_hook.pth`` file installed in site-packages calls :func:`install` at interpreter
start-up, unless ``CLIPLIT_BASICSR_NO_HOOK=1`` is set (then this module is not even imported). It imports
nothing (``os`` and ``sys`` are already loaded) and puts one import finder in front of ``sys.meta_path``,
which acts on three names only:

* ``torchvision.transforms.functional_tensor`` was removed from torchvision, but BasicSR 1.4.2 imports
  it: the finder provides a new module filled from ``_functional_tensor``.
* ``basicsr``: once ``basicsr/__init__.py`` has run, the plugin registers its classes in BasicSR's
  registries (:mod:`cliplit_basicsr.registration`), so that BasicSR's own entry points and any user code
  find them.
* ``basicsr.train`` / ``basicsr.test`` when the process was started as ``python -m basicsr.train`` (or
  ``basicsr.test``): the code that ``runpy`` runs as ``__main__`` becomes a call of the plugin's entry
  point (``cliplit_basicsr.train.main``), which runs BasicSR's own pipeline rooted at the current directory,
  with the plugin's fixes for CLIP-LIT option files only. Ordinary imports of those modules are untouched.

Nothing else happens at start-up: the process, its environment, its warnings filters and every other
import are left alone. ``import cliplit_basicsr`` installs the first two parts by itself
(:func:`install_plugin_finder`), so the plugin registers whenever BasicSR is imported, hook or not.
"""

import os
import sys

_SHIM_NAME = 'torchvision.transforms.functional_tensor'
_SHIM_SOURCE = 'torchvision.transforms._functional_tensor'
_HANDED_OVER = {'basicsr.train': 'cliplit_basicsr.train', 'basicsr.test': 'cliplit_basicsr.test'}
DISABLE_VARIABLE = 'CLIPLIT_BASICSR_NO_HOOK'


def enabled(environ=os.environ) -> bool:
    """Whether the start-up hook is active: ``CLIPLIT_BASICSR_NO_HOOK`` unset, empty or ``0``."""
    return environ.get(DISABLE_VARIABLE, '') in ('', '0')


def run_target(argv: 'list[str]') -> 'tuple[str, str] | None':
    """What ``python [options] ...`` runs, read from the interpreter's argv: ``('module', NAME)`` for
    ``-m NAME``, ``('script', PATH)`` for a script (console scripts included); None for ``-c``, stdin or
    nothing."""
    args = list(argv[1:])
    while args:
        arg = args.pop(0)
        if arg == '--check-hash-based-pycs':  # the only long option that takes a value
            args = args[1:]
            continue
        if arg == '--':
            return ('script', args[0]) if args and args[0] != '-' else None
        if arg == '-' or arg.startswith('--'):
            return None  # stdin, or an option that ends the interpreter's (--version, --help)
        if not arg.startswith('-'):
            return 'script', arg
        for position, flag in enumerate(arg[1:], start=2):
            if flag in 'cmWX':  # options that take a value, attached or as the next argument
                value = arg[position:] or (args.pop(0) if args else None)
                if flag == 'm':
                    return ('module', value) if value else None
                if flag == 'c':
                    return None
                break
    return None


def run_module_name(argv: 'list[str]') -> 'str | None':
    """The module that ``python [options] -m NAME ...`` runs, read from the interpreter's argv."""
    target = run_target(argv)
    return target[1] if target and target[0] == 'module' else None


class _FunctionalTensorLoader:
    """Builds the removed torchvision module as a fresh module holding the private one's names."""

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        import importlib

        source = importlib.import_module(_SHIM_SOURCE)
        module.__dict__.update({k: v for k, v in vars(source).items() if not k.startswith('__')})


class _DelegatingLoader:
    """A loader that behaves as the wrapped one except where a subclass says otherwise."""

    def __init__(self, wrapped):
        self.wrapped = wrapped

    def __getattr__(self, name):
        return getattr(self.wrapped, name)

    def create_module(self, spec):
        return self.wrapped.create_module(spec)

    def exec_module(self, module):
        self.wrapped.exec_module(module)


def register_plugin() -> None:
    """Register the plugin's classes in BasicSR's registries (imports BasicSR; idempotent). A failure is a
    warning, not an error: ``import basicsr`` must keep working for every other project of the environment
    (CLIP-LIT's option files then fail with BasicSR's "No object named ..." after it)."""
    import importlib

    try:
        importlib.import_module('cliplit_basicsr.registration')
    except Exception as error:
        import warnings

        warnings.warn(f'cliplit_basicsr did not register with BasicSR: {type(error).__name__}: {error}', stacklevel=2)


class _RegisterAfterBasicSRLoader(_DelegatingLoader):
    """Runs BasicSR's own package loader, then registers the plugin."""

    def exec_module(self, module):
        self.wrapped.exec_module(module)
        register_plugin()


class _HandOverLoader(_DelegatingLoader):
    """Loads ``basicsr.train``/``basicsr.test`` normally, but gives ``runpy`` the plugin's entry."""

    def get_code(self, fullname):
        entry = _HANDED_OVER[fullname]
        source = f'import sys\nfrom {entry} import main\nsys.exit(main())\n'
        return compile(source, f'<{fullname} handed over to {entry}>', 'exec')


class _PluginFinder:
    """Provides ``torchvision.transforms.functional_tensor`` and registers the plugin after ``basicsr``."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == _SHIM_NAME:
            from importlib.machinery import ModuleSpec  # only now: nothing is imported at start-up

            return ModuleSpec(fullname, _FunctionalTensorLoader())
        if fullname == 'basicsr':
            return self._wrapped_spec(fullname, path, target, _RegisterAfterBasicSRLoader)
        return None

    def _wrapped_spec(self, fullname, path, target, loader_class):
        """The spec the other finders give for ``fullname``, its loader wrapped in ``loader_class``."""
        for finder in sys.meta_path:
            if isinstance(finder, _PluginFinder) or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and not isinstance(spec.loader, _DelegatingLoader):
                    spec.loader = loader_class(spec.loader)
                return spec
        return None


class _Finder(_PluginFinder):
    """The start-up finder: the plugin finder's work, and the hand-over of BasicSR's commands."""

    def find_spec(self, fullname, path=None, target=None):
        command = run_module_name(getattr(sys, 'orig_argv', ()))
        if fullname in _HANDED_OVER and command == fullname:
            return self._wrapped_spec(fullname, path, target, _HandOverLoader)
        if fullname == 'basicsr' and command in _HANDED_OVER:
            _quiet_runpy_about(command)
        return super().find_spec(fullname, path, target)


def _quiet_runpy_about(command: str) -> None:
    """basicsr/__init__ imports its own train and test, so ``runpy`` warns that the module it is about to run
    is already imported. Handed over, nothing runs twice: in that process only, that one warning is not
    shown."""
    import warnings

    message = f"'{command}' found in sys.modules after import of package 'basicsr'"
    warnings.filterwarnings('ignore', message=message.replace('.', r'\.'), category=RuntimeWarning, module='runpy')


def _insert(finder_class) -> None:
    if not any(isinstance(finder, finder_class) for finder in sys.meta_path):
        sys.meta_path.insert(0, finder_class())


def install_plugin_finder() -> None:
    """Make ``torchvision.transforms.functional_tensor`` importable (what ``import basicsr`` 1.4.2 needs on
    current torchvision) and register the plugin the moment BasicSR is imported, or now if it already is;
    what ``import cliplit_basicsr`` asks of this module (idempotent)."""
    _insert(_PluginFinder)
    basicsr = sys.modules.get('basicsr')
    if basicsr is not None and not getattr(getattr(basicsr, '__spec__', None), '_initializing', False):
        register_plugin()


def install() -> None:
    """Put the start-up finder first on ``sys.meta_path`` (idempotent); a no-op when :func:`enabled` is
    false."""
    if enabled():
        _insert(_Finder)
