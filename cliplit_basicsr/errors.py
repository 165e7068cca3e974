"""Errors a user can fix (bad option, file or input), and how entry points report them: one line."""

import functools
import sys
from typing import Callable, Optional, TypeVar

_Result = TypeVar('_Result')


class CLIPLITError(Exception):
    """Base class of the errors that entry points print as one line instead of a traceback.

    The message names the file or option at fault and what is wrong with it.
    """


class UsageError(CLIPLITError, ValueError):
    """A command-line path or value that cannot be used."""


class OptionError(CLIPLITError, ValueError):
    """An option file, or a value in it, that cannot be used."""


class DataError(CLIPLITError, ValueError):
    """A data root or image that cannot be used; the message names it."""


class ImageReadError(DataError):
    """An image that cannot be read or decoded; the message names the file."""


class ImageWriteError(DataError):
    """An output image that cannot be written; the message names the file."""


def require_flag(value, option: str) -> bool:
    """``value`` of ``option`` if it is a boolean (YAML's true/false), else a one-line :class:`OptionError`."""
    if not isinstance(value, bool):
        raise OptionError(f'{option}: expected true or false, got {value!r}')
    return value


def require_positive_int(value, option: str) -> int:
    """``value`` of ``option`` if it is an integer >= 1 (not a boolean), else a one-line :class:`OptionError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f'{option}: expected a positive integer, got {value!r}')
    return value


def one_line_message(error: BaseException, limit: Optional[int] = None) -> str:
    """The message of ``error`` folded onto one line (its type's name if it has none), cut after ``limit``
    characters; also when a DataLoader worker re-raised it.

    PyTorch re-raises a worker's exception with the worker's whole traceback as its message;
    its last line is ``<module>.<Class>: <original message>``.
    """
    message = str(error)
    if '\nOriginal Traceback' in message:
        last_line = message.rstrip().splitlines()[-1]
        message = last_line.split(': ', 1)[-1]
    message = ' '.join(message.split()) or type(error).__name__
    return message if limit is None or len(message) <= limit else message[:limit] + '...'


def exit_on_user_error(entry_point: Callable[..., _Result]) -> Callable[..., _Result]:
    """Wrap a console entry point: a :class:`CLIPLITError` prints ``error: <message>`` and exits 1."""

    @functools.wraps(entry_point)
    def guarded(*args, **kwargs):
        try:
            return entry_point(*args, **kwargs)
        except CLIPLITError as error:
            print(f'error: {one_line_message(error)}', file=sys.stderr, flush=True)
            sys.exit(1)

    return guarded
