"""``cliplit-train`` / ``python -m cliplit_basicsr.train``: BasicSR's training pipeline with the plugin.

Takes BasicSR's arguments (``-opt``, ``--auto_resume``, ``--debug``, ``--launcher``, ``--force_yml``)
and writes ``experiments/`` and ``tb_logger/`` under the current directory. ``python -m basicsr.train``
is handed over to this entry by the start-up hook, so both commands behave the same. A CLIP-LIT option file
runs with the plugin's BasicSR fixes (:func:`~cliplit_basicsr.basicsr_compat.hosting_cliplit`); any other
runs in BasicSR as it is.
"""

import os

import basicsr.train
import torch
import torch.distributed as dist

import _cliplit_basicsr_hook
from cliplit_basicsr.basicsr_compat import hosting_cliplit, is_cliplit_run, option_file_from_argv, read_option_file
from cliplit_basicsr.cpu_allocator import restart_keeping_freed_memory
from cliplit_basicsr.errors import exit_on_user_error


def restart_cpu_training_keeping_freed_memory() -> None:
    """A CLIP-LIT run on a CPU re-executes itself once with glibc keeping freed memory
    (:mod:`cliplit_basicsr.cpu_allocator`), before BasicSR sets anything up; GPU runs and runs with the
    start-up hook disabled (``CLIPLIT_BASICSR_NO_HOOK=1``) are left as started."""
    if not _cliplit_basicsr_hook.enabled():
        return
    raw = read_option_file(option_file_from_argv())
    if raw.get('num_gpu') == 0 or not torch.cuda.is_available():
        restart_keeping_freed_memory()


@exit_on_user_error
def main() -> None:
    """Train as the option file says; user errors end the process with one line and status 1.

    A distributed CLIP-LIT run's process group is closed once every rank is done: BasicSR leaves it open,
    and a rank that exits while another still finishes its last save can abort in gloo's teardown.
    """
    if not is_cliplit_run():
        basicsr.train.train_pipeline(os.getcwd())
        return
    restart_cpu_training_keeping_freed_memory()
    with hosting_cliplit():
        basicsr.train.train_pipeline(os.getcwd())
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == '__main__':
    main()
