"""``cliplit-test`` / ``python -m cliplit_basicsr.test``: BasicSR's test pipeline with the plugin.

Takes BasicSR's arguments (``-opt``, ``--launcher``, ``--force_yml``) and writes ``results/`` under
the current directory. ``python -m basicsr.test`` is handed over to this entry by the start-up hook. A
CLIP-LIT option file runs with the plugin's BasicSR fixes; any other runs in BasicSR as it is.
"""

import contextlib
import os

import basicsr.test

from cliplit_basicsr.basicsr_compat import hosting_cliplit, is_cliplit_run
from cliplit_basicsr.errors import exit_on_user_error


@exit_on_user_error
def main() -> None:
    """Test as the option file says; user errors end the process with one line and status 1."""
    with hosting_cliplit() if is_cliplit_run() else contextlib.nullcontext():
        basicsr.test.test_pipeline(os.getcwd())


if __name__ == '__main__':
    main()
