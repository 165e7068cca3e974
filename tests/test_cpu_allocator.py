"""glibc keeping freed memory: CLIP-LIT training on a CPU restarts itself once; nothing else does."""

import json
from pathlib import Path

import pytest
import yaml
from support import REPO_ROOT, run_python, write_options

from cliplit_basicsr import cpu_allocator

GLIBC = cpu_allocator.uses_glibc()
ENV_PROBE = """
import json, os
with open(os.environ['ENV_PROBE'], 'a') as probe:
    probe.write(json.dumps([os.getpid(), {k: v for k, v in os.environ.items() if k.startswith('MALLOC_')}]) + '\\n')
"""


@pytest.mark.parametrize(
    'environ, applies',
    [
        ({}, True),
        ({'CLIPLIT_KEEP_FREED_MEMORY': '1'}, True),
        ({'CLIPLIT_KEEP_FREED_MEMORY': '0'}, False),
        ({'MALLOC_ARENA_MAX': '2'}, False),  # the user tunes glibc's malloc: left alone
        ({'GLIBC_TUNABLES': 'glibc.malloc.mmap_max=0'}, False),
    ],
)
def test_keep_freed_memory_environment_respects_the_users_settings(environ, applies):
    applies = applies and GLIBC  # other C libraries do not read these variables
    expected = {**environ, **cpu_allocator.KEEP_FREED_MEMORY} if applies else None
    assert cpu_allocator.keep_freed_memory_environment(environ) == expected


def _starts(tmp_path: Path, command, **env) -> list:
    """Run ``python COMMAND`` and return, per interpreter start, (pid, MALLOC_* variables it saw)."""
    probe_dir = tmp_path / 'site'
    probe_dir.mkdir(exist_ok=True)
    (probe_dir / 'sitecustomize.py').write_text(ENV_PROBE)
    probe = tmp_path / 'env.jsonl'
    probe.unlink(missing_ok=True)
    env = {'PYTHONPATH': str(probe_dir), 'ENV_PROBE': str(probe), 'CUDA_VISIBLE_DEVICES': '', **env}
    env = {k: v for k, v in env.items() if v is not None}
    result = run_python(command, cwd=tmp_path, env_update=env)
    assert result.returncode == 1 and result.stderr.strip().startswith('error: '), result.stderr[-2000:]
    assert 'does not exist' in result.stderr  # stopped at the data check, after the restart
    return [tuple(json.loads(line)) for line in probe.read_text().splitlines()]


@pytest.fixture
def cliplit_options(tmp_path):
    """The shipped training options pointing at a missing folder: the run restarts, then stops at the data."""
    opt = yaml.safe_load((REPO_ROOT / 'options' / 'train_cliplit.yml').read_text())
    opt['num_gpu'] = 0
    for section in (opt['datasets']['train'], opt['prompt_dataset']):
        section['dataroot_backlit'] = str(tmp_path / 'missing')
    return write_options(tmp_path / 'train.yml', opt)


@pytest.mark.slow
@pytest.mark.skipif(not GLIBC, reason='glibc malloc variables: this C library is not glibc')
def test_cliplit_training_on_cpu_restarts_once_keeping_freed_memory(tmp_path, cliplit_options):
    starts = _starts(tmp_path, ['-m', 'basicsr.train', '-opt', str(cliplit_options)])
    assert len(starts) == 2 and starts[0][0] == starts[1][0]  # the same process, re-executed
    assert starts[0][1] == {} and starts[1][1] == cpu_allocator.KEEP_FREED_MEMORY


@pytest.mark.slow
@pytest.mark.parametrize('env', [{'CLIPLIT_KEEP_FREED_MEMORY': '0'}, {'CLIPLIT_BASICSR_NO_HOOK': '1'}])
def test_cliplit_training_is_not_restarted_when_switched_off(tmp_path, cliplit_options, env):
    starts = _starts(tmp_path, ['-m', 'cliplit_basicsr.train', '-opt', str(cliplit_options)], **env)
    assert [malloc for _, malloc in starts] == [{}]


@pytest.mark.slow
def test_cliplit_testing_is_not_restarted(tmp_path):
    opt = yaml.safe_load((REPO_ROOT / 'options' / 'test_cliplit_baid.yml').read_text())
    opt['num_gpu'] = 0
    opt['datasets']['test_1']['dataroot_lq'] = str(tmp_path / 'missing')
    option_file = write_options(tmp_path / 'test.yml', opt)
    starts = _starts(tmp_path, ['-m', 'basicsr.test', '-opt', str(option_file)])
    assert [malloc for _, malloc in starts] == [{}]
