"""``cliplit-test`` / ``python -m cliplit_basicsr.test``: BasicSR's test pipeline with the plugin.

Takes BasicSR's arguments (``-opt``, ``--launcher``, ``--force_yml``) and writes ``results/`` under
the current directory. ``python -m basicsr.test`` is handed over to this entry by the start-up hook.
"""

import os

import basicsr.test

import cliplit_basicsr  # noqa: F401  (registers the plugin and applies its BasicSR fixes)
from cliplit_basicsr.errors import exit_on_user_error


@exit_on_user_error
def main() -> None:
    """Test as the option file says; user errors end the process with one line and status 1."""
    basicsr.test.test_pipeline(os.getcwd())


if __name__ == '__main__':
    main()
