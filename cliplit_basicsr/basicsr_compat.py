"""BasicSR 1.4.2 fixes for CLIP-LIT runs, applied by the plugin's entry points while such a run lasts.

``cliplit-train`` / ``cliplit-test`` (and ``python -m basicsr.train`` / ``basicsr.test``, handed over to them
by the start-up hook) run BasicSR's own pipeline rooted at the current directory. For an option file of
another model that is all: BasicSR runs untouched. For a CLIP-LIT option file (``model_type`` one of this
package's models) :func:`hosting_cliplit` puts the functions below where BasicSR looks their names up, for
the duration of the run:

* :func:`parse_options` reports an unreadable or invalid option file, or a missing required option, in one
  line, and hands the options to :mod:`cliplit_basicsr.options` (checks and derived values, before BasicSR
  writes anything);
* :func:`init_dist` lets ``torchrun`` runs work on a CPU (gloo) and picks each process's GPU by
  ``LOCAL_RANK``;
* :func:`load_resume_state` resumes on a CPU (BasicSR calls ``torch.cuda.current_device()``);
* :func:`create_train_val_dataloader` builds the train loader as CLIP-LIT trains
  (:func:`cliplit_basicsr.data.loaders.training_loader`).

What CLIP-LIT's models need of ``BaseModel`` otherwise (DDP on a CPU, atomic saves) they override on their
own classes, as BasicSR expects of a model that works differently.
"""

import argparse
import contextlib
import math
import os
from os import path as osp
from typing import Iterator, Optional

import basicsr.test
import basicsr.train
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from basicsr.utils import check_resume, scandir
from basicsr.utils import options as basicsr_options

from . import options as cliplit_options
from .errors import OptionError

_basicsr_parse_options = basicsr_options.parse_options
_basicsr_init_dist = basicsr_options.init_dist
_basicsr_create_train_val_dataloader = basicsr.train.create_train_val_dataloader


def option_file_from_argv() -> Optional[str]:
    """The ``-opt`` argument as BasicSR's parser will read it from ``sys.argv`` (None if absent)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt')
    return parser.parse_known_args()[0].opt


def read_option_file(option_file: str) -> dict:
    """The option file's mapping; :class:`OptionError` (one line, naming the file) if it is unreadable, not
    YAML or not a mapping. BasicSR would raise from deep inside PyYAML or ``open``."""
    try:
        with open(option_file, encoding='utf-8') as stream:
            content = yaml.load(stream, Loader=basicsr_options.ordered_yaml()[0])
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, 'strerror', None) or error
        raise OptionError(f'cannot read option file {option_file}: {reason}') from None
    except yaml.YAMLError as error:
        mark = getattr(error, 'problem_mark', None)
        where = f':{mark.line + 1}:{mark.column + 1}' if mark is not None else ''
        problem = getattr(error, 'problem', None) or error
        raise OptionError(f'option file {option_file}{where} is not valid YAML: {problem}') from None
    if not isinstance(content, dict):
        raise OptionError(f'option file {option_file} must hold a mapping of options, not {type(content).__name__}')
    return content


def is_cliplit_run() -> bool:
    """Whether the command line's option file (``-opt``) is for one of this package's models; an unreadable
    or invalid file is a one-line :class:`OptionError`."""
    option_file = option_file_from_argv()
    return option_file is not None and cliplit_options.is_cliplit(read_option_file(option_file))


def parse_options(root_path: str, is_train: bool = True):
    """BasicSR's ``parse_options`` with one-line errors, the options then checked and completed by
    :func:`cliplit_basicsr.options.prepare`."""
    try:
        opt, args = _basicsr_parse_options(root_path, is_train)
    except KeyError as error:
        raise OptionError(f'option file {option_file_from_argv()}: missing option {error}') from None
    cliplit_options.prepare(opt)
    return opt, args


def init_dist(launcher: str, backend: Optional[str] = None, **kwargs) -> None:
    """BasicSR's ``init_dist``; for ``pytorch`` (torchrun): gloo without CUDA (BasicSR calls CUDA even on a
    CPU), NCCL on ``LOCAL_RANK``'s GPU (BasicSR takes the global rank modulo the GPU count)."""
    if launcher != 'pytorch':
        _basicsr_init_dist(launcher, backend or 'nccl', **kwargs)
        return
    if 'RANK' not in os.environ:
        raise OptionError('--launcher pytorch: RANK is not set; start distributed runs with torchrun')
    if torch.cuda.is_available():
        if mp.get_start_method(allow_none=True) is None:
            mp.set_start_method('spawn')  # as BasicSR does; on a CPU, forked data workers start much faster
        local_rank = int(os.environ.get('LOCAL_RANK', int(os.environ['RANK']) % torch.cuda.device_count()))
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend or ('nccl' if torch.cuda.is_available() else 'gloo'), **kwargs)


def _latest_training_state(opt: dict) -> Optional[str]:
    """The newest ``<iter>.state`` in the experiment's ``training_states`` folder, if any."""
    folder = opt['path']['training_states']
    if not osp.isdir(folder):
        return None
    iterations = [int(name[: -len('.state')]) for name in scandir(folder, suffix='.state') if name[:-6].isdigit()]
    return osp.join(folder, f'{max(iterations)}.state') if iterations else None


def load_resume_state(opt: dict) -> Optional[dict]:
    """The training state to resume from, on the model's device (CPU included), or None; BasicSR's loads
    onto ``torch.cuda.current_device()`` and, under ``python -m``, looks for auto-resume states relative to
    the current directory while it saved them under its root.

    With ``--auto_resume`` it is the newest state of the experiment, otherwise ``path.resume_state``.
    """
    if opt['auto_resume']:
        state_path = _latest_training_state(opt)
        if state_path is not None:
            opt['path']['resume_state'] = state_path
    else:
        state_path = opt['path'].get('resume_state')
    if not state_path:
        return None
    if not osp.isfile(state_path):
        raise OptionError(f'path.resume_state: no such training state file {state_path}')
    on_gpu = opt['num_gpu'] != 0 and torch.cuda.is_available()
    device = torch.device('cuda', torch.cuda.current_device()) if on_gpu else torch.device('cpu')
    resume_state = torch.load(state_path, map_location=device)
    check_resume(opt, resume_state['iter'])
    return resume_state


def create_train_val_dataloader(opt: dict, logger):
    """BasicSR's, with the train loader built as CLIP-LIT trains (last partial batch kept, no workers:
    :func:`~cliplit_basicsr.data.loaders.training_loader`). With
    ``train.total_iter: auto`` the run ends where its :class:`~cliplit_basicsr.models.run_length.RunEnd`
    says: the loader then stops yielding batches, and BasicSR's bounds become upper bounds."""
    from .data.loaders import training_loader

    result = _basicsr_create_train_val_dataloader(opt, logger)

    train_loader, train_sampler, val_loaders, total_epochs, total_iters = result
    end = opt.get('run_length')
    if end is None:
        return training_loader(train_loader, opt), train_sampler, val_loaders, total_epochs, total_iters
    train_loader = training_loader(train_loader, opt, stop=lambda: end.ended)
    total_iters = end.max_iterations
    return train_loader, train_sampler, val_loaders, math.ceil(total_iters / len(train_loader)), total_iters


@contextlib.contextmanager
def hosting_cliplit() -> Iterator[None]:
    """Within this context BasicSR's pipeline runs a CLIP-LIT option file with the fixes of this module; the
    functions BasicSR had come back after."""
    fixes = [
        (basicsr.train, 'parse_options', parse_options),
        (basicsr.test, 'parse_options', parse_options),
        (basicsr_options, 'init_dist', init_dist),
        (basicsr.train, 'load_resume_state', load_resume_state),
        (basicsr.train, 'create_train_val_dataloader', create_train_val_dataloader),
    ]
    saved = [(module, name, getattr(module, name)) for module, name, _ in fixes]
    for module, name, fix in fixes:
        setattr(module, name, fix)
    try:
        yield
    finally:
        for module, name, original in saved:
            setattr(module, name, original)
