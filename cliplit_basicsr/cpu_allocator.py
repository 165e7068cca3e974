"""glibc's malloc told to keep the memory it frees, for CLIP-LIT training on a CPU.

By default glibc serves every large block (the full-size activations and gradients of a training step)
with a fresh ``mmap`` and hands it back on free, so the kernel faults in and zeroes those pages again at
every step: the enhancement step runs markedly slower on a CPU (``docs/benchmarks.md``). glibc reads its
malloc variables only when a process starts (``mallopt`` later does not stop the faults), so a CLIP-LIT
training process on a CPU re-executes itself once with them set, before BasicSR has set anything up
(:func:`restart_keeping_freed_memory`, called from :mod:`cliplit_basicsr.train`). Nothing else is
restarted: other models, GPU runs and data workers of other processes keep glibc's defaults.
"""

import os
import sys
from typing import Dict, Mapping, Optional

KEEP_FREED_MEMORY = {'MALLOC_MMAP_MAX_': '0', 'MALLOC_TRIM_THRESHOLD_': str(64 * 2**30)}
SWITCH = 'CLIPLIT_KEEP_FREED_MEMORY'  # 0: never restart


def uses_glibc() -> bool:
    """Whether this interpreter runs on glibc, the C library whose malloc variables the restart sets."""
    try:
        return bool(os.confstr('CS_GNU_LIBC_VERSION'))
    except (AttributeError, ValueError, OSError):
        return False


def keep_freed_memory_environment(environ: Mapping[str, str]) -> Optional[Dict[str, str]]:
    """``environ`` plus :data:`KEEP_FREED_MEMORY`, or None where it does not apply: the user set glibc's
    malloc variables (or ``GLIBC_TUNABLES`` malloc tunables) already, ``CLIPLIT_KEEP_FREED_MEMORY=0``, or
    the C library is not glibc."""
    if environ.get(SWITCH, '') == '0' or any(k.startswith('MALLOC_') for k in environ):
        return None
    if 'malloc' in environ.get('GLIBC_TUNABLES', '') or not uses_glibc():
        return None
    return dict(environ, **KEEP_FREED_MEMORY)


def restart_keeping_freed_memory() -> None:
    """Re-execute this process (same PID, argv and environment plus :data:`KEEP_FREED_MEMORY`); returns
    if that does not apply (see :func:`keep_freed_memory_environment`) or was done already.

    Call it before the process starts threads, opens files it needs or connects to other processes.
    """
    environment = keep_freed_memory_environment(os.environ)
    if environment is not None:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
        os.execve(sys.executable, list(sys.orig_argv), environment)


def allocator_note(environ: Mapping[str, str] = os.environ) -> str:
    """One log line on whether glibc keeps freed memory in this CPU training process."""
    if environ.get('MALLOC_MMAP_MAX_') == '0':
        return 'CPU training: glibc keeps freed memory (MALLOC_MMAP_MAX_=0): no page faults on reused activations'
    return (
        'CPU training with glibc returning freed memory (MALLOC_* set by hand, '
        f'{SWITCH}=0 or another C library): steps can run markedly slower (docs/training.md)'
    )
