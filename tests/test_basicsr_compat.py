"""Each BasicSR 1.4.2 fix of ``cliplit_basicsr.basicsr_compat``, applied only while a CLIP-LIT run is hosted."""

import socket
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from support import run_python, tiny_sr_options, write_options, write_sr_pairs

from cliplit_basicsr import basicsr_compat
from cliplit_basicsr.errors import OptionError


def test_fixes_apply_only_while_a_cliplit_run_is_hosted():
    import basicsr.test
    import basicsr.train
    from basicsr.models.base_model import BaseModel
    from basicsr.utils import options

    originals = {
        'parse_options': options.parse_options,
        'init_dist': options.init_dist,
        'load_resume_state': basicsr.train.load_resume_state,
        'create_train_val_dataloader': basicsr.train.create_train_val_dataloader,
        'model_to_device': BaseModel.model_to_device,
    }
    assert all(f.__module__.startswith('basicsr.') for f in originals.values())  # importing the plugin patched none
    assert basicsr.train.parse_options is basicsr.test.parse_options is options.parse_options
    with basicsr_compat.hosting_cliplit():
        assert basicsr.train.parse_options is basicsr.test.parse_options is basicsr_compat.parse_options
        assert options.init_dist is basicsr_compat.init_dist
        assert basicsr.train.load_resume_state is basicsr_compat.load_resume_state
        assert basicsr.train.create_train_val_dataloader is basicsr_compat.create_train_val_dataloader
        assert BaseModel.model_to_device is originals['model_to_device']  # CLIP-LIT's models override it
    assert basicsr.train.parse_options is basicsr.test.parse_options is originals['parse_options']
    assert options.init_dist is originals['init_dist']
    assert basicsr.train.load_resume_state is originals['load_resume_state']
    assert basicsr.train.create_train_val_dataloader is originals['create_train_val_dataloader']


@pytest.mark.parametrize(
    'content, expected',
    [
        (None, 'cannot read option file'),
        (b'\x89PNG\r\n', 'cannot read option file'),
        ('name: [unclosed', 'is not valid YAML'),
        ('- a list\n- not a mapping\n', 'must hold a mapping of options, not list'),
        (yaml.safe_dump({'name': 'x', 'num_gpu': 0}), "missing option 'datasets'"),
    ],
)
def test_one_line_option_errors(tmp_path, monkeypatch, content, expected):
    """An option file that cannot be read is reported before BasicSR runs (the entry points read it to tell
    a CLIP-LIT run); a missing required option by the hosted parse_options."""
    options = tmp_path / 'bad.yml'
    if isinstance(content, bytes):
        options.write_bytes(content)
    elif content is not None:
        options.write_text(content, encoding='utf-8')
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', str(options)])
    with pytest.raises(OptionError) as error:
        basicsr_compat.is_cliplit_run()
        basicsr_compat.parse_options(str(tmp_path), is_train=True)
    assert expected in str(error.value) and str(options) in str(error.value)


def _training_state_options(tmp_path, auto_resume, resume_state=None):
    return {
        'auto_resume': auto_resume,
        'num_gpu': 0,
        'network_g': {'type': 'X'},
        'path': {
            'training_states': str(tmp_path / 'training_states'),
            'models': str(tmp_path / 'models'),
            'resume_state': resume_state,
        },
    }


def test_resume_on_cpu(tmp_path):
    (tmp_path / 'training_states').mkdir()
    for iteration in (3, 12):
        state = {'epoch': 0, 'iter': iteration, 'optimizers': [{'t': torch.full((2,), float(iteration))}]}
        torch.save(state, tmp_path / 'training_states' / f'{iteration}.state')
    opt = _training_state_options(tmp_path, auto_resume=True)
    state = basicsr_compat.load_resume_state(opt)
    assert state['iter'] == 12 and state['optimizers'][0]['t'].device.type == 'cpu'
    assert opt['path']['resume_state'] == str(tmp_path / 'training_states' / '12.state')
    assert opt['path']['pretrain_network_g'] == str(tmp_path / 'models' / 'net_g_12.pth')  # BasicSR's check_resume

    assert basicsr_compat.load_resume_state(_training_state_options(tmp_path / 'fresh', auto_resume=True)) is None
    missing = _training_state_options(tmp_path, auto_resume=False, resume_state=str(tmp_path / 'nope.state'))
    with pytest.raises(OptionError, match='nope.state'):
        basicsr_compat.load_resume_state(missing)


@pytest.mark.slow
def test_distributed_on_cpu(tmp_path):
    code = textwrap.dedent("""
        import types
        import torch, torch.distributed as dist
        from cliplit_basicsr.basicsr_compat import init_dist
        from cliplit_basicsr.models.cliplit_eval_model import CLIPLITEvalModel
        init_dist('pytorch')
        assert dist.get_backend() == 'gloo' and dist.get_world_size() == 1
        assert torch.multiprocessing.get_start_method(allow_none=True) is None  # data workers may fork
        holder = types.SimpleNamespace(opt={'dist': True, 'num_gpu': 0}, device=torch.device('cpu'))
        net = CLIPLITEvalModel.model_to_device(holder, torch.nn.Linear(3, 1))
        assert isinstance(net, torch.nn.parallel.DistributedDataParallel)
        net(torch.ones(2, 3)).sum().backward()
        assert net.module.weight.grad.abs().sum() > 0
        dist.destroy_process_group()
        print('gloo ok')
    """)
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    env = {
        'RANK': '0',
        'LOCAL_RANK': '0',
        'WORLD_SIZE': '1',
        'MASTER_ADDR': '127.0.0.1',
        'MASTER_PORT': str(port),
        'CUDA_VISIBLE_DEVICES': '',
    }
    result = run_python(['-c', code], cwd=tmp_path, env_update=env)
    assert result.returncode == 0, result.stderr
    assert 'gloo ok' in result.stdout


def _train_loader(opt):
    from basicsr.utils import get_root_logger

    opt = dict(opt, dist=False, rank=0, world_size=1)
    for phase, dataset in opt['datasets'].items():
        dataset.update(phase=phase, scale=opt['scale'])  # as BasicSR's parse_options adds them
    return basicsr_compat.create_train_val_dataloader(opt, get_root_logger())[0]


def test_train_loader_of_cliplit_keeps_the_last_partial_batch(tmp_path):
    opt = tiny_sr_options(write_sr_pairs(tmp_path), batch_size_per_gpu=3)
    opt['model_type'] = 'CLIPLITModel'  # the loader does not care about the dataset type
    loader = _train_loader(opt)
    assert not loader.drop_last and loader.generator is not None
    assert [len(batch['lq']) for batch in loader] == [3, 1]


@pytest.mark.slow
def test_python_m_basicsr_train_runs_another_model_in_basicsr_under_cwd(tmp_path):
    """Handed over to the plugin's entry, BasicSR's own pipeline trains another model, rooted at the current
    directory instead of site-packages (where ``python -m basicsr.train`` alone would write)."""
    import basicsr

    options = write_options(tmp_path / 'tiny_sr.yml', tiny_sr_options(write_sr_pairs(tmp_path / 'data')))
    work = tmp_path / 'work'
    work.mkdir()
    result = run_python(
        ['-m', 'basicsr.train', '-opt', str(options)], cwd=work, env_update={'CUDA_VISIBLE_DEVICES': ''}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    states = work / 'experiments' / 'tiny_sr' / 'training_states'
    assert sorted(p.name for p in states.iterdir()) == ['2.state']
    models = sorted(p.name for p in (work / 'experiments' / 'tiny_sr' / 'models').iterdir())
    assert models == ['net_g_2.pth', 'net_g_latest.pth']
    assert not (Path(basicsr.__file__).parents[1] / 'experiments' / 'tiny_sr').exists()
