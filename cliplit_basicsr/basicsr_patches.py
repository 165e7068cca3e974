"""Fixes applied to BasicSR 1.4.2 from the plugin side, without editing BasicSR.

Importing ``cliplit_basicsr`` applies them (BasicSR looks these functions up at call time):

* ``parse_options``: BasicSR's ``train.py``/``test.py`` pass their install folder (site-packages
  under ``python -m``) as root, so experiments, results and ``tb_logger/`` would be written there;
  that root is replaced by the current directory. An unreadable or invalid option file, or a
  missing required option, raises :class:`~cliplit_basicsr.errors.OptionError` naming the file.
* ``init_dist`` (``--launcher pytorch``): gloo when CUDA is unavailable, NCCL otherwise, and the
  GPU chosen by ``LOCAL_RANK`` (BasicSR uses the global rank and calls CUDA even on CPU). On CPU the
  start method is left alone: BasicSR's ``spawn`` makes every epoch's data workers re-import the
  whole stack (30 s per epoch on a 2-core machine, against 0.5 s forked).
* ``BaseModel.model_to_device``: distributed training on CPU wraps networks in DDP without
  device ids (BasicSR asks for the current CUDA device).
* ``BaseModel.save_network`` / ``save_training_state`` write atomically (temporary file, then
  ``os.replace``), so a process killed while saving leaves the previous state loadable.
* ``basicsr.train.load_resume_state`` loads the state onto the model's device, CPU included
  (BasicSR calls ``torch.cuda.current_device()``), and names a missing state file in one line.
* ``basicsr.train.create_train_val_dataloader`` starts the train loader's persistent workers before
  the model loads CLIP (:func:`~cliplit_basicsr.data.worker_start.start_workers_now`).
"""

import argparse
import os
from os import path as osp
from typing import Any, Optional

import basicsr
import basicsr.test
import basicsr.train
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from basicsr.models import base_model
from basicsr.utils import check_resume, dist_util, scandir
from basicsr.utils import options as basicsr_options
from torch.nn.parallel import DistributedDataParallel

from .atomic_io import atomic_torch_save
from .data.worker_start import start_workers_now
from .errors import OptionError

BASICSR_INSTALL_ROOT = osp.dirname(osp.dirname(osp.abspath(basicsr.__file__)))

_basicsr_parse_options = basicsr_options.parse_options
_basicsr_init_dist = dist_util.init_dist
_basicsr_model_to_device = base_model.BaseModel.model_to_device


def _option_file_from_argv() -> Optional[str]:
    """The ``-opt`` argument as BasicSR's parser will read it from ``sys.argv`` (None if absent)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt')
    return parser.parse_known_args()[0].opt


def check_option_file(option_file: str) -> None:
    """Raise :class:`OptionError` unless ``option_file`` is a readable YAML mapping."""
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


def parse_options(root_path: str, is_train: bool = True):
    """BasicSR's ``parse_options``, rooted at the current directory instead of BasicSR's install folder."""
    if osp.abspath(root_path) == BASICSR_INSTALL_ROOT:
        root_path = os.getcwd()
    option_file = _option_file_from_argv()
    if option_file is not None:
        check_option_file(option_file)
    try:
        return _basicsr_parse_options(root_path, is_train)
    except KeyError as error:
        raise OptionError(f'option file {option_file}: missing option {error}') from None


def init_dist(launcher: str, backend: Optional[str] = None, **kwargs) -> None:
    """BasicSR's ``init_dist``; for ``pytorch`` (torchrun): gloo without CUDA, NCCL on ``LOCAL_RANK``'s GPU."""
    if launcher != 'pytorch':
        _basicsr_init_dist(launcher, backend or 'nccl', **kwargs)
        return
    if 'RANK' not in os.environ:
        raise OptionError('--launcher pytorch: RANK is not set; start distributed runs with torchrun')
    if torch.cuda.is_available():
        if mp.get_start_method(allow_none=True) is None:
            mp.set_start_method('spawn')  # as BasicSR does; on CPU, forked data workers start much faster
        local_rank = int(os.environ.get('LOCAL_RANK', int(os.environ['RANK']) % torch.cuda.device_count()))
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend or ('nccl' if torch.cuda.is_available() else 'gloo'), **kwargs)


def model_to_device(self, net: torch.nn.Module) -> torch.nn.Module:
    """BasicSR's ``model_to_device``; distributed on CPU, DDP gets no device ids."""
    if self.opt['dist'] and self.device.type == 'cpu':
        find_unused_parameters = self.opt.get('find_unused_parameters', False)
        return DistributedDataParallel(net.to(self.device), find_unused_parameters=find_unused_parameters)
    return _basicsr_model_to_device(self, net)


class _TorchWithAtomicSave:
    """``torch`` as ``basicsr.models.base_model`` sees it: unchanged, except that ``save`` is atomic."""

    save = staticmethod(atomic_torch_save)

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)


def _latest_training_state(opt: dict) -> Optional[str]:
    """The newest ``<iter>.state`` in the experiment's ``training_states`` folder, if any."""
    folder = opt['path']['training_states']
    if not osp.isdir(folder):
        return None
    iterations = [int(name[: -len('.state')]) for name in scandir(folder, suffix='.state') if name[:-6].isdigit()]
    return osp.join(folder, f'{max(iterations)}.state') if iterations else None


def load_resume_state(opt: dict) -> Optional[dict]:
    """The training state to resume from, on the model's device (CPU included), or None.

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
    """BasicSR's, then the train loader's persistent workers are started at once, before the model (and
    CLIP) exists, so that they do not map the model's memory (:mod:`cliplit_basicsr.data.worker_start`)."""
    result = _create_train_val_dataloader(opt, logger)
    start_workers_now(result[0])
    return result


_create_train_val_dataloader = basicsr.train.create_train_val_dataloader


def apply() -> None:
    """Apply every fix above where BasicSR looks the patched names up."""
    for module in (basicsr_options, basicsr.train, basicsr.test):
        module.parse_options = parse_options
    dist_util.init_dist = basicsr_options.init_dist = init_dist
    base_model.BaseModel.model_to_device = model_to_device
    base_model.torch = _TorchWithAtomicSave()
    basicsr.train.load_resume_state = load_resume_state
    basicsr.train.create_train_val_dataloader = create_train_val_dataloader


apply()
