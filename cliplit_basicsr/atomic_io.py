"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half of one."""

import contextlib
import os
from typing import Any, Iterator

import torch


@contextlib.contextmanager
def atomic_write_path(path: 'str | os.PathLike') -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step.

    The temporary file lives in the same folder (``os.replace`` is atomic only within a file
    system), is flushed to disk before the rename, and is removed if writing fails.
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(folder, f'.{name}.{os.getpid()}.tmp')
    try:
        yield temporary
        with open(temporary, 'rb+') as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def atomic_torch_save(obj: Any, path: 'str | os.PathLike') -> None:
    """``torch.save(obj, path)``, atomically."""
    with atomic_write_path(path) as temporary:
        torch.save(obj, temporary)
