"""The one switch for every fast path, and the one object that owns their caches and probes.

``CLIPLIT_ACCEL`` (read once, at import; ``0`` turns the fast paths off) or :func:`set_accel` (tests,
notebooks) decide whether the computations that have a fast path take it. Off, every computation is plain
open_clip / PyTorch: the reference path, always importable and correct. On, a fast path steps aside where it
does not apply (another device, dtype or tower). Where the installed PyTorch lacks (or has changed) a private
op a path uses, or such a path fails at run time, it is turned off for the process with one warning naming
the path and the torch version (:func:`op_available`, :func:`step_aside`): never silently. The paths made of
public ops (the class-token tower, the bf16 tower) raise like any other code.
"""

import contextlib
import logging
import os
import weakref
from typing import Callable, Dict, Hashable, Iterator

from cliplit_basicsr.errors import one_line_message

logger = logging.getLogger('cliplit_basicsr.accel')

ENVIRONMENT_VARIABLE = 'CLIPLIT_ACCEL'
_enabled = os.environ.get(ENVIRONMENT_VARIABLE, '1').strip().lower() not in ('0', 'false', 'no', 'off')


def use_accel() -> bool:
    """Whether the fast paths are on (``CLIPLIT_ACCEL``, default on; :func:`set_accel`)."""
    return _enabled


def set_accel(enabled: bool) -> None:
    """Turn every fast path on or off for this process."""
    global _enabled
    _enabled = bool(enabled)


@contextlib.contextmanager
def accel(enabled: bool) -> Iterator[None]:
    """Within this context the fast paths are on (or off); the previous setting comes back after."""
    previous = use_accel()
    set_accel(enabled)
    try:
        yield
    finally:
        set_accel(previous)


class AccelCache:
    """Everything the fast paths keep between calls, in one place: op probes, derived towers (weight-sharing
    copies of CLIP towers), packed weights. :meth:`clear` forgets all of it."""

    def __init__(self) -> None:
        self.probes: Dict[str, bool] = {}
        self.failed: Dict[str, bool] = {}  # fast paths that raised at run time (they stay off)
        self.towers: Dict[Hashable, object] = {}  # (kind, id of the source module) -> derived module or None
        self.packs: Dict[int, object] = {}  # id of a weight -> its packed copies (onednn_linear.PackedWeights)

    def derived(self, kind: str, source: object, build: Callable[[], object]) -> object:
        """``build()``'s result for ``source`` (a module), made once per ``kind`` and source, dropped with it."""
        key = (kind, id(source))
        if key not in self.towers:
            self.towers[key] = build()
            weakref.finalize(source, self.towers.pop, key, None)
        return self.towers[key]

    def clear(self) -> None:
        self.probes.clear()
        self.failed.clear()
        self.towers.clear()
        self.packs.clear()


CACHE = AccelCache()


def clear_caches() -> None:
    """Forget every fast path's cached towers, packed weights and op probes."""
    CACHE.clear()


def _warn_off(name: str, reason: str) -> None:
    import torch

    logger.warning(
        f'fast path {name} is off for this process (torch {torch.__version__}): {reason}; '
        f'the plain computation runs instead ({ENVIRONMENT_VARIABLE}=0 turns every fast path off)'
    )


def op_available(name: str, probe: Callable[[], bool]) -> bool:
    """Whether the private op (or set of ops) ``name`` works here: ``probe()`` runs once per process (until
    :func:`clear_caches`); an op that is missing, raises or computes a wrong value turns its fast path off,
    with one warning."""
    if name not in CACHE.probes:
        try:
            works = bool(probe())
            reason = 'its private op computed a wrong value'
        except Exception as error:  # a private op can fail in any way; the plain maths then runs
            works, reason = False, f'{type(error).__name__}: {one_line_message(error, 200)}'
        if not works:
            _warn_off(name, reason)
        CACHE.probes[name] = works
    return CACHE.probes[name]


def step_aside(name: str, error: BaseException) -> None:
    """A fast path failed at run time: turn it off for the rest of the process, with one warning."""
    CACHE.failed[name] = True
    _warn_off(name, f'{type(error).__name__}: {one_line_message(error, 200)}')
