"""``cliplit-train`` / ``python -m cliplit_basicsr.train``: BasicSR's training pipeline with the plugin.

Takes BasicSR's arguments (``-opt``, ``--auto_resume``, ``--debug``, ``--launcher``, ``--force_yml``)
and writes ``experiments/`` and ``tb_logger/`` under the current directory. ``python -m basicsr.train``
is handed over to this entry by the start-up hook, so both commands behave the same.
"""

import os

import basicsr.train
import torch.distributed as dist

import cliplit_basicsr  # noqa: F401  (registers the plugin and applies its BasicSR fixes)
from cliplit_basicsr.errors import exit_on_user_error


@exit_on_user_error
def main() -> None:
    """Train as the option file says; user errors end the process with one line and status 1.

    A distributed run's process group is closed once every rank is done: BasicSR leaves it open, and a
    rank that exits while another still finishes its last save can abort in gloo's teardown.
    """
    basicsr.train.train_pipeline(os.getcwd())
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == '__main__':
    main()
