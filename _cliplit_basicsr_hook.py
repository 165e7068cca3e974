"""Start-up hook that lets BasicSR 1.4.2 host cliplit_basicsr (standard library only).

The ``zz_cliplit_basicsr_hook.pth`` file installed in site-packages imports this module at
interpreter start-up. At that point it imports nothing (``os`` and ``sys`` are already loaded). A
training command (``python -m basicsr.train``, ``python -m cliplit_basicsr.train``, ``cliplit-train``)
is first re-executed with glibc told to keep the memory it frees (:func:`restart_keeping_freed_memory`;
``CLIPLIT_KEEP_FREED_MEMORY=0`` turns that off). Then it puts one import finder in front of
``sys.meta_path``, which acts on three names:

* ``torchvision.transforms.functional_tensor`` was removed from torchvision, but BasicSR 1.4.2
  imports it: the finder provides a new module filled from ``_functional_tensor``.
* ``basicsr``: once ``basicsr/__init__.py`` has run, ``cliplit_basicsr`` is imported, so that
  BasicSR's own entry points see the plugin's registrations.
* ``basicsr.train`` / ``basicsr.test`` when the process was started as ``python -m basicsr.train``
  (or ``basicsr.test``): the code that ``runpy`` runs as ``__main__`` becomes a call of the
  plugin's entry point (``cliplit_basicsr.train.main``), which runs BasicSR's own pipeline with the
  plugin's fixes (experiments under the current directory, CPU-safe resume, one-line errors).
  Ordinary imports of those modules are untouched.

Set ``CLIPLIT_BASICSR_NO_HOOK=1`` to disable the plugin import and the hand-over (the torchvision
shim stays, since it only adds a missing module).
"""

import os
import sys

_SHIM_NAME = 'torchvision.transforms.functional_tensor'
_SHIM_SOURCE = 'torchvision.transforms._functional_tensor'
_HANDED_OVER = {'basicsr.train': 'cliplit_basicsr.train', 'basicsr.test': 'cliplit_basicsr.test'}
_DISABLE_VARIABLE = 'CLIPLIT_BASICSR_NO_HOOK'
_TRAINING_MODULES = ('basicsr.train', 'cliplit_basicsr.train')
_TRAINING_SCRIPTS = ('cliplit-train',)
KEEP_FREED_MEMORY = {'MALLOC_MMAP_MAX_': '0', 'MALLOC_TRIM_THRESHOLD_': str(64 * 2**30)}
KEEP_FREED_MEMORY_SWITCH = 'CLIPLIT_KEEP_FREED_MEMORY'


def enabled() -> bool:
    """Whether the plugin import and the entry-point hand-over are active in this process."""
    return os.environ.get(_DISABLE_VARIABLE, '') in ('', '0')


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


def is_training_command(argv: 'list[str]') -> bool:
    """Whether the interpreter's argv starts CLIP-LIT training: ``python -m basicsr.train``,
    ``python -m cliplit_basicsr.train`` or the ``cliplit-train`` console script."""
    target = run_target(argv)
    if target is None:
        return False
    kind, name = target
    return name in _TRAINING_MODULES if kind == 'module' else os.path.basename(name) in _TRAINING_SCRIPTS


def uses_glibc() -> bool:
    """Whether this interpreter runs on glibc, the C library whose malloc variables the restart sets."""
    try:
        return bool(os.confstr('CS_GNU_LIBC_VERSION'))
    except (AttributeError, ValueError, OSError):
        return False


def keep_freed_memory_environment(environ: 'dict[str, str]') -> 'dict[str, str] | None':
    """``environ`` plus :data:`KEEP_FREED_MEMORY`, or None where it does not apply: the user set glibc's
    malloc variables (or ``GLIBC_TUNABLES`` malloc tunables) already, ``CLIPLIT_KEEP_FREED_MEMORY=0``, or
    the C library is not glibc."""
    if environ.get(KEEP_FREED_MEMORY_SWITCH, '') == '0' or any(k.startswith('MALLOC_') for k in environ):
        return None
    if 'malloc' in environ.get('GLIBC_TUNABLES', '') or not uses_glibc():
        return None
    return dict(environ, **KEEP_FREED_MEMORY)


def restart_keeping_freed_memory() -> None:
    """Re-execute this process (same PID, argv and environment plus :data:`KEEP_FREED_MEMORY`) so that
    glibc keeps the memory it frees; returns if that does not apply (see
    :func:`keep_freed_memory_environment`) or was done already.

    By default glibc serves every large block (full-size activations and gradients) with a fresh
    ``mmap`` and returns it on free, so the kernel faults in and zeroes those pages again at every
    training step: measured 1.6x on a 2-core CPU's enhancement step (README, Training). The variables are
    read only when a process starts (``mallopt`` later does not stop the faults), hence the restart. Call
    it before threads or files are opened: at start-up, or first thing in a script.
    """
    environment = keep_freed_memory_environment(dict(os.environ))
    if environment is not None:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
        os.execve(sys.executable, list(sys.orig_argv), environment)


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


class _PluginAfterBasicSRLoader(_DelegatingLoader):
    """Runs BasicSR's own package loader, then imports the plugin."""

    def exec_module(self, module):
        self.wrapped.exec_module(module)
        import warnings

        import cliplit_basicsr  # noqa: F401

        # basicsr/__init__ imports its own train/test, so runpy (``python -m basicsr.train``, and
        # multiprocessing's spawn re-importing that main module) warns that the module it is about
        # to run is already imported. With the hand-over (or as ``__mp_main__``) nothing runs twice.
        warnings.filterwarnings(
            'ignore', message=r"'basicsr\.(train|test)' found in sys\.modules", category=RuntimeWarning
        )


class _HandOverLoader(_DelegatingLoader):
    """Loads ``basicsr.train``/``basicsr.test`` normally, but gives ``runpy`` the plugin's entry."""

    def get_code(self, fullname):
        entry = _HANDED_OVER[fullname]
        source = f'import sys\nfrom {entry} import main\nsys.exit(main())\n'
        return compile(source, f'<{fullname} handed over to {entry}>', 'exec')


class _Finder:
    """The meta-path finder that applies the three actions above."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == _SHIM_NAME:
            from importlib.machinery import ModuleSpec  # only now: nothing is imported at start-up

            return ModuleSpec(fullname, _FunctionalTensorLoader())
        if fullname == 'basicsr' and enabled():
            return self._wrapped_spec(fullname, path, target, _PluginAfterBasicSRLoader)
        if fullname in _HANDED_OVER and enabled() and run_module_name(getattr(sys, 'orig_argv', ())) == fullname:
            return self._wrapped_spec(fullname, path, target, _HandOverLoader)
        return None

    def _wrapped_spec(self, fullname, path, target, loader_class):
        """The spec the other finders give for ``fullname``, its loader wrapped in ``loader_class``."""
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and not isinstance(spec.loader, _DelegatingLoader):
                    spec.loader = loader_class(spec.loader)
                return spec
        return None


def install() -> None:
    """Restart a training command keeping freed memory (see :func:`restart_keeping_freed_memory`), then
    put the finder first on ``sys.meta_path`` (idempotent)."""
    if is_training_command(getattr(sys, 'orig_argv', ())):
        restart_keeping_freed_memory()
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


install()
