"""Two-process gloo training through ``torchrun`` equals one-process training with the same global batch.

Both runs use the tiny schedule of test_train_e2e.py (every phase in 16 iterations, tiny CLIP models),
without augmentation (each rank draws its own) and with Adam's ``eps`` at 1: Adam with its default eps
normalises the gradient's scale away in the first steps, so a rank-averaging error (a loss summed over the
batch, say) would go unseen; with eps = 1 the update follows the gradient's scale. Every checkpoint is
compared (after prompt initialisation and reconstruction, after each round).
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_train_e2e import _env, make_image_sets, write_options

from cliplit_basicsr.checkpoint import read_state_dict

pytestmark = pytest.mark.slow

GLOBAL_BATCH = 4
# Reduction order differs (DDP averages per-rank gradients); CLIP's logit scale of 100 amplifies that float
# noise in the prompt's ranking gradients over the two refinement rounds (the network came out bit-equal).
# Measured, deterministic: 2e-5 of the embedding's scale on an Intel AMX CPU, 1.06e-4 on an AMD EPYC
# (avx512). A gradient off by the number of ranks (2x) moves the weights by a whole update: ~2e-3 of the
# network's scale, 0.37 of the prompt's (measured with the ranking loss doubled in the 2-process run).
# Tolerances, as a share of each tensor's largest magnitude:
FLOAT_TOLERANCE = {'net_g': 1e-4, 'net_prompt': 1e-3}
TIMEOUT = 400  # seconds per run; a deadlock between ranks ends the test instead of hanging it


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """8 backlit images (a multiple of the global batch, split evenly over 2 ranks), 3 well-lit, 2 val pairs."""
    return make_image_sets(tmp_path_factory.mktemp('data'), backlit_count=8, height_step=2)


def _options(workdir: Path, data: Path, parity_dir: Path, processes: int) -> Path:
    option_file = write_options(workdir, data, parity_dir)
    opt = yaml.safe_load(option_file.read_text())
    for section in (opt['datasets']['train'], opt['prompt_dataset']):
        section.update(batch_size_per_gpu=GLOBAL_BATCH // processes, augment=False)
    opt['train']['optim_g'].update(lr=1.0, eps=1.0)  # gradients are ~1e-4 here: steps of ~1e-4
    opt['train']['optim_prompt'].update(lr=0.01, eps=1.0)
    option_file.write_text(yaml.safe_dump(opt, sort_keys=False))
    return option_file


def _run(workdir: Path, command) -> None:
    process = subprocess.Popen(
        command,
        cwd=workdir,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # torchrun and its workers
        process.communicate()
        pytest.fail(f'{" ".join(map(str, command[:4]))} did not finish within {TIMEOUT} s (ranks deadlocked?)')
    assert process.returncode == 0, output[-4000:]


@pytest.fixture(scope='module')
def runs(tmp_path_factory, data, parity_dir):
    one, two = tmp_path_factory.mktemp('one_process'), tmp_path_factory.mktemp('two_processes')
    _run(one, [sys.executable, '-m', 'cliplit_basicsr.train', '-opt', str(_options(one, data, parity_dir, 1))])
    _run(
        two,
        [
            sys.executable,
            '-m',
            'torch.distributed.run',
            '--standalone',
            '--nproc_per_node=2',
            '-m',
            'cliplit_basicsr.train',
            '-opt',
            str(_options(two, data, parity_dir, 2)),
            '--launcher',
            'pytorch',
        ],
    )
    return one / 'experiments' / 'tiny', two / 'experiments' / 'tiny'


def _files(folder: Path):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob('*') if p.is_file())


def test_rank_zero_writes_one_set_of_files(runs):
    one, two = runs
    assert [p.name for p in two.parent.iterdir()] == ['tiny']  # no renamed copy made by a second rank
    assert _files(two / 'models') == _files(one / 'models') and _files(two / 'models')
    assert _files(two / 'training_states') == _files(one / 'training_states') and _files(two / 'training_states')
    assert len(list(two.glob('train_tiny_*.log'))) == 1
    assert not list(two.rglob('*.tmp'))


@pytest.mark.parametrize('network', ['net_g', 'net_prompt'])
def test_same_weights_as_one_process(runs, network):
    one, two = runs
    checkpoints = sorted(p.name for p in (one / 'models').glob(f'{network}_*.pth'))
    assert checkpoints
    for name in checkpoints:
        expected, actual = read_state_dict(one / 'models' / name), read_state_dict(two / 'models' / name)
        assert expected.keys() == actual.keys()
        for key in expected:
            scale = expected[key].abs().max().item() if expected[key].is_floating_point() else 0
            torch.testing.assert_close(
                actual[key],
                expected[key],
                rtol=0,
                atol=FLOAT_TOLERANCE[network] * scale,
                msg=lambda message: f'{name}: {key}: {message}',
            )
