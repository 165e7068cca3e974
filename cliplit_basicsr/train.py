"""``cliplit-train`` / ``python -m cliplit_basicsr.train``: BasicSR's training pipeline with the plugin.

Takes BasicSR's arguments (``-opt``, ``--auto_resume``, ``--debug``, ``--launcher``, ``--force_yml``)
and writes ``experiments/`` and ``tb_logger/`` under the current directory. ``python -m basicsr.train``
is handed over to this entry by the start-up hook, so both commands behave the same.
"""

import os

import basicsr.train
import torch
import torch.distributed as dist

import _cliplit_basicsr_hook
import cliplit_basicsr  # noqa: F401  (registers the plugin and applies its BasicSR fixes)
from cliplit_basicsr.basicsr_compat import option_file_from_argv, read_option_file
from cliplit_basicsr.cpu_allocator import restart_keeping_freed_memory
from cliplit_basicsr.errors import exit_on_user_error
from cliplit_basicsr.options import is_cliplit


def restart_cpu_training_keeping_freed_memory() -> None:
    """A CLIP-LIT run on a CPU re-executes itself once with glibc keeping freed memory
    (:mod:`cliplit_basicsr.cpu_allocator`), before BasicSR sets anything up; other models, GPU runs and
    runs with the start-up hook disabled (``CLIPLIT_BASICSR_NO_HOOK=1``) are left as started."""
    option_file = option_file_from_argv()
    if option_file is None or not _cliplit_basicsr_hook.enabled():
        return
    raw = read_option_file(option_file)
    if is_cliplit(raw) and (raw.get('num_gpu') == 0 or not torch.cuda.is_available()):
        restart_keeping_freed_memory()


@exit_on_user_error
def main() -> None:
    """Train as the option file says; user errors end the process with one line and status 1.

    A distributed run's process group is closed once every rank is done: BasicSR leaves it open, and a
    rank that exits while another still finishes its last save can abort in gloo's teardown.
    """
    restart_cpu_training_keeping_freed_memory()
    basicsr.train.train_pipeline(os.getcwd())
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == '__main__':
    main()
