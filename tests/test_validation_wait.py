"""Under torchrun only rank 0 validates: the other ranks must wait for it however long it takes, not inside
their next collective, where the process group's timeout (NCCL's default: 10 minutes) would end the run."""

import subprocess
import sys
import textwrap

import pytest
from test_train_e2e import _env

pytestmark = pytest.mark.slow

GROUP_TIMEOUT, VALIDATION = 2, 6  # seconds: a validation three times the process group's timeout

RANK_SCRIPT = textwrap.dedent(
    f"""
    import datetime, sys, time
    import torch, torch.distributed as dist
    dist.init_process_group('gloo', timeout=datetime.timedelta(seconds={GROUP_TIMEOUT}))
    import basicsr.models.sr_model
    from cliplit_basicsr.models.cliplit_eval_model import CLIPLITEvalModel

    class Model:
        opt = {{'rank': dist.get_rank()}}

        def nondist_validation(self, *args):
            time.sleep({VALIDATION})

    owner = CLIPLITEvalModel if sys.argv[1] == 'cliplit' else basicsr.models.sr_model.SRModel
    owner.dist_validation(Model(), None, 1, None, False)
    total = torch.ones(1)
    dist.all_reduce(total)  # the next training step's first collective
    with open(f'{{sys.argv[2]}}/rank{{dist.get_rank()}}.txt', 'w') as report:
        report.write(f'went on with {{int(total.item())}}')
    """
)


def _torchrun(tmp_path, owner: str) -> subprocess.CompletedProcess:
    script = tmp_path / 'rank.py'
    script.write_text(RANK_SCRIPT)
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', str(script)]
    command += [owner, str(tmp_path)]
    return subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=120)


def test_the_other_ranks_outwait_a_validation_longer_than_the_group_timeout(tmp_path):
    result = _torchrun(tmp_path, 'cliplit')
    assert result.returncode == 0, result.stderr[-3000:]
    assert [(tmp_path / f'rank{rank}.txt').read_text() for rank in (0, 1)] == ['went on with 2'] * 2


def test_basicsr_own_dist_validation_fails_there(tmp_path):
    """The control: BasicSR's rank-0 validation with the same timings ends the run."""
    result = _torchrun(tmp_path, 'basicsr')
    assert result.returncode != 0
    assert not (tmp_path / 'rank1.txt').exists()
