"""The installation and BasicSR plumbing: start-up hook, registration, BasicSR fixes, entry points.

Tests that start a fresh interpreter need the package installed (README command 1), because the
start-up hook is a ``.pth`` file in site-packages; they run from a temporary directory so that the
repository is not on ``sys.path`` by accident.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

import _cliplit_basicsr_hook as hook
import cliplit_basicsr  # noqa: F401  (registers the plugin, applies the BasicSR fixes)
from cliplit_basicsr import basicsr_patches
from cliplit_basicsr.atomic_io import atomic_torch_save
from cliplit_basicsr.errors import CLIPLITError, OptionError, exit_on_user_error, one_line_message


def run_python(args, cwd, env_update=None, timeout=300):
    """Run ``python ARGS`` in ``cwd`` offline and return the completed process (text output)."""
    env = dict(os.environ, HF_HUB_OFFLINE='1', PYTHONWARNINGS='ignore')
    env.pop('CLIPLIT_BASICSR_NO_HOOK', None)
    env.update(env_update or {})
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def write_options(path: Path, options: dict) -> Path:
    path.write_text(yaml.safe_dump(options), encoding='utf-8')
    return path


# --- registration and the start-up hook ------------------------------------------------------------


def test_import_registers_into_every_basicsr_registry():
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

    for registry in (ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY):
        modules = {getattr(obj, '__module__', '') for obj in registry._obj_map.values()}
        assert any(m.startswith('cliplit_basicsr.') for m in modules), f'nothing registered in {registry._name}'


def test_importing_basicsr_first_registers_the_plugin(tmp_path):
    code = textwrap.dedent("""
        import sys
        import basicsr
        from basicsr.utils.registry import ARCH_REGISTRY
        assert 'cliplit_basicsr' in sys.modules, 'plugin not imported after basicsr'
        assert any(o.__module__.startswith('cliplit_basicsr.') for o in ARCH_REGISTRY._obj_map.values())
        print('plugin registered')
    """)
    result = run_python(['-c', code], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert 'plugin registered' in result.stdout


def test_enhancement_does_not_import_open_clip(tmp_path):
    """open_clip and timm cost ~85 MB of resident memory and seconds of start-up; only CLIP users load them."""
    code = textwrap.dedent("""
        import sys
        import cliplit_basicsr
        from cliplit_basicsr.enhancer import CLIPLITEnhancer
        CLIPLITEnhancer('official', 'cpu').enhance(__import__('numpy').zeros((8, 8, 3), 'uint8'))
        print(sorted(m for m in ('open_clip', 'timm', 'transformers') if m in sys.modules))
        from cliplit_basicsr.clip import preprocess_images
        preprocess_images(__import__('torch').zeros(1, 3, 8, 8))
        print('open_clip' in sys.modules)
    """)
    result = run_python(['-c', code], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ['[]', 'True']


def test_no_hook_variable_disables_the_plugin_import_but_keeps_the_shim(tmp_path):
    code = "import sys, basicsr; print('cliplit_basicsr' in sys.modules)"
    result = run_python(['-c', code], cwd=tmp_path, env_update={'CLIPLIT_BASICSR_NO_HOOK': '1'})
    assert result.returncode == 0, result.stderr  # basicsr itself imports: the shim is still active
    assert result.stdout.strip() == 'False'


def test_functional_tensor_shim_is_a_new_module_with_the_private_modules_names():
    import torchvision.transforms._functional_tensor as private
    import torchvision.transforms.functional_tensor as shim

    assert shim is not private
    assert shim.__name__ == 'torchvision.transforms.functional_tensor'
    assert shim.rgb_to_grayscale is private.rgb_to_grayscale


def test_interpreter_start_runs_the_hook_without_importing_torch(tmp_path):
    result = run_python(['-X', 'importtime', '-c', 'pass'], cwd=tmp_path)
    imported = {line.rsplit('|', 1)[-1].strip() for line in result.stderr.splitlines() if '|' in line}
    assert '_cliplit_basicsr_hook' in imported, 'the .pth hook is not installed in site-packages'
    heavy = {name for name in imported if name.split('.')[0] in {'torch', 'numpy', 'basicsr', 'cliplit_basicsr'}}
    assert not heavy, f'interpreter start imports {sorted(heavy)}'


@pytest.mark.parametrize(
    'argv, expected',
    [
        (['python', '-m', 'basicsr.train', '-opt', 'x.yml'], 'basicsr.train'),
        (['python', '-u', '-m', 'basicsr.train'], 'basicsr.train'),
        (['python', '-mbasicsr.test'], 'basicsr.test'),
        (['python', '-Bum', 'basicsr.train'], 'basicsr.train'),
        (['python', '-X', 'importtime', '-W', 'ignore', '-m', 'basicsr.train'], 'basicsr.train'),
        (['python', '--check-hash-based-pycs', 'always', '-m', 'basicsr.test'], 'basicsr.test'),
        (['python', 'train.py', '-m', 'basicsr.train'], None),
        (['python', '-c', 'pass', '-m', 'basicsr.train'], None),
        (['python', '-X', '-m'], None),
        (['python'], None),
    ],
)
def test_run_module_name_reads_the_interpreter_arguments(argv, expected):
    assert hook.run_module_name(argv) == expected


@pytest.mark.parametrize(
    'argv, expected',
    [
        (['python', '-m', 'basicsr.train', '-opt', 'x.yml'], True),
        (['python', '-u', '-m', 'cliplit_basicsr.train', '--launcher', 'pytorch'], True),
        (['/venv/bin/python', '/venv/bin/cliplit-train', '-opt', 'x.yml'], True),
        (['python', '-m', 'basicsr.test', '-opt', 'x.yml'], False),
        (['/venv/bin/python', '/venv/bin/cliplit-enhance', '-i', 'x'], False),
        (['python', 'train.py', '-opt', 'x.yml'], False),
        (['python', '-c', 'import cliplit_basicsr'], False),
        (['python', '-m', 'pytest'], False),
    ],
)
def test_training_commands_are_recognised_from_the_interpreter_arguments(argv, expected):
    assert hook.is_training_command(argv) is expected


GLIBC = hook.uses_glibc()


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
    assert hook.keep_freed_memory_environment(environ) == ({**environ, **hook.KEEP_FREED_MEMORY} if applies else None)


@pytest.mark.parametrize('switch, expected', [('', '0'), ('0', None)])
def test_a_training_command_restarts_in_place_keeping_freed_memory(tmp_path, switch, expected):
    expected = expected if GLIBC else None
    script = tmp_path / 'cliplit-train'  # a stand-in with the console script's name: the hook acts on the name
    script.write_text(
        'import json, os, sys\nprint(json.dumps([os.getpid(), sys.argv[1:], os.environ.get("MALLOC_MMAP_MAX_")]))\n'
    )
    env = dict(os.environ, CLIPLIT_KEEP_FREED_MEMORY=switch)
    env = {k: v for k, v in env.items() if not k.startswith('MALLOC_')}
    proc = subprocess.Popen(
        [sys.executable, str(script), '-opt', 'x y.yml'], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True
    )
    pid, args, mmap_max = json.loads(proc.communicate(timeout=60)[0])
    assert (pid, args, mmap_max) == (proc.pid, ['-opt', 'x y.yml'], expected)


# --- BasicSR fixes --------------------------------------------------------------------------------

MINIMAL_OPTIONS = {'name': 'tiny', 'num_gpu': 0, 'manual_seed': 0, 'datasets': {}, 'path': {}, 'logger': {}}


@pytest.mark.parametrize(
    'is_train, folder, key', [(True, 'experiments', 'experiments_root'), (False, 'results', 'results_root')]
)
def test_parse_options_roots_basicsr_install_folder_at_the_current_directory(
    tmp_path, monkeypatch, is_train, folder, key
):
    from basicsr.utils.options import parse_options

    options = write_options(tmp_path / 'tiny.yml', MINIMAL_OPTIONS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', str(options)])
    opt, _ = parse_options(basicsr_patches.BASICSR_INSTALL_ROOT, is_train=is_train)
    assert opt['path'][key] == os.path.join(str(tmp_path), folder, 'tiny')
    other_root = str(tmp_path / 'elsewhere')
    opt, _ = parse_options(other_root, is_train=is_train)
    assert opt['path'][key] == os.path.join(other_root, folder, 'tiny')


def test_basicsr_entry_modules_use_the_patched_functions():
    import basicsr.test
    import basicsr.train
    from basicsr.models.base_model import BaseModel
    from basicsr.utils import dist_util, options

    for module in (options, basicsr.train, basicsr.test):
        assert module.parse_options is basicsr_patches.parse_options
    assert options.init_dist is dist_util.init_dist is basicsr_patches.init_dist
    assert BaseModel.model_to_device is basicsr_patches.model_to_device
    assert basicsr.train.load_resume_state is basicsr_patches.load_resume_state


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
def test_bad_option_files_raise_one_option_error_naming_the_file(tmp_path, monkeypatch, content, expected):
    from basicsr.utils.options import parse_options

    options = tmp_path / 'bad.yml'
    if isinstance(content, bytes):
        options.write_bytes(content)
    elif content is not None:
        options.write_text(content, encoding='utf-8')
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', str(options)])
    with pytest.raises(OptionError) as error:
        parse_options(str(tmp_path), is_train=True)
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


def test_load_resume_state_finds_the_newest_state_and_loads_it_on_cpu(tmp_path):
    (tmp_path / 'training_states').mkdir()
    for iteration in (3, 12):
        state = {'epoch': 0, 'iter': iteration, 'optimizers': [{'t': torch.full((2,), float(iteration))}]}
        torch.save(state, tmp_path / 'training_states' / f'{iteration}.state')
    opt = _training_state_options(tmp_path, auto_resume=True)
    state = basicsr_patches.load_resume_state(opt)
    assert state['iter'] == 12 and state['optimizers'][0]['t'].device.type == 'cpu'
    assert opt['path']['resume_state'] == str(tmp_path / 'training_states' / '12.state')
    assert opt['path']['pretrain_network_g'] == str(tmp_path / 'models' / 'net_g_12.pth')  # BasicSR's check_resume

    assert basicsr_patches.load_resume_state(_training_state_options(tmp_path / 'fresh', auto_resume=True)) is None
    missing = _training_state_options(tmp_path, auto_resume=False, resume_state=str(tmp_path / 'nope.state'))
    with pytest.raises(OptionError, match='nope.state'):
        basicsr_patches.load_resume_state(missing)


def test_checkpoint_saves_are_atomic(tmp_path):
    from basicsr.models import base_model

    assert base_model.torch.save is atomic_torch_save  # BasicSR's save_network / save_training_state
    target = tmp_path / '4.state'
    atomic_torch_save({'iter': 4}, target)
    with pytest.raises(Exception):
        atomic_torch_save({'iter': 8, 'unpicklable': lambda: None}, target)  # fails midway through writing
    assert torch.load(target) == {'iter': 4}
    assert sorted(p.name for p in tmp_path.iterdir()) == ['4.state']


def test_gloo_process_group_and_cpu_ddp_in_one_process(tmp_path):
    code = textwrap.dedent("""
        import types
        import torch, torch.distributed as dist
        import cliplit_basicsr
        from basicsr.models.base_model import BaseModel
        from basicsr.utils.options import init_dist
        init_dist('pytorch')
        assert dist.get_backend() == 'gloo' and dist.get_world_size() == 1
        assert torch.multiprocessing.get_start_method(allow_none=True) is None  # data workers may fork
        holder = types.SimpleNamespace(opt={'dist': True, 'num_gpu': 0}, device=torch.device('cpu'))
        net = BaseModel.model_to_device(holder, torch.nn.Linear(3, 1))
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


# --- error layer ----------------------------------------------------------------------------------


class _FailingDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, index):
        raise CLIPLITError('image broken.png: not an image')


def test_one_line_message_recovers_the_message_of_a_dataloader_worker_error():
    loader = torch.utils.data.DataLoader(_FailingDataset(), num_workers=1)
    with pytest.raises(CLIPLITError) as error:
        next(iter(loader))
    assert '\n' in str(error.value)  # PyTorch put the worker's traceback into the message
    assert one_line_message(error.value) == 'image broken.png: not an image'


def test_exit_on_user_error_prints_one_line_and_exits_1(capsys):

    @exit_on_user_error
    def entry():
        raise OptionError("options/x.yml: missing option 'name'")

    with pytest.raises(SystemExit) as exit_info:
        entry()
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == "error: options/x.yml: missing option 'name'\n"


@pytest.mark.parametrize('module', ['basicsr.train', 'basicsr.test'])  # handed over to cliplit_basicsr's
def test_entry_points_report_a_missing_option_file_in_one_line(tmp_path, module):
    result = run_python(['-m', module, '-opt', 'missing.yml'], cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == 'error: cannot read option file missing.yml: No such file or directory'


# --- BasicSR's own training module, end to end ----------------------------------------------------


def _tiny_sr_options(data: Path) -> dict:
    """A BasicSR SRModel run small enough for a CPU test: 2 iterations, checkpoint every 2."""
    return {
        'name': 'tiny_sr',
        'model_type': 'SRModel',
        'scale': 2,
        'num_gpu': 0,
        'manual_seed': 0,
        'datasets': {
            'train': {
                'name': 'tiny',
                'type': 'PairedImageDataset',
                'dataroot_gt': str(data / 'gt'),
                'dataroot_lq': str(data / 'lq'),
                'io_backend': {'type': 'disk'},
                'filename_tmpl': '{}',
                'gt_size': 16,
                'use_hflip': True,
                'use_rot': True,
                'num_worker_per_gpu': 0,
                'batch_size_per_gpu': 2,
                'dataset_enlarge_ratio': 1,
                'prefetch_mode': None,
            }
        },
        'network_g': {
            'type': 'MSRResNet',
            'num_in_ch': 3,
            'num_out_ch': 3,
            'num_feat': 4,
            'num_block': 1,
            'upscale': 2,
        },
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {
            'ema_decay': 0,
            'optim_g': {'type': 'Adam', 'lr': 1e-3},
            'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
            'total_iter': 2,
            'warmup_iter': -1,
            'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
        },
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': False},
    }


@pytest.mark.slow
def test_python_m_basicsr_train_writes_under_cwd_and_auto_resumes_on_cpu(tmp_path):
    rng = np.random.default_rng(0)
    for folder, size in (('gt', 32), ('lq', 16)):
        (tmp_path / 'data' / folder).mkdir(parents=True)
        for index in range(4):
            cv2.imwrite(
                str(tmp_path / 'data' / folder / f'{index}.png'), rng.integers(0, 256, (size, size, 3), np.uint8)
            )
    options = write_options(tmp_path / 'tiny_sr.yml', _tiny_sr_options(tmp_path / 'data'))
    work = tmp_path / 'work'
    work.mkdir()

    first = run_python(['-m', 'basicsr.train', '-opt', str(options)], cwd=work, env_update={'CUDA_VISIBLE_DEVICES': ''})
    assert first.returncode == 0, first.stderr[-3000:]
    states = work / 'experiments' / 'tiny_sr' / 'training_states'
    assert sorted(p.name for p in states.iterdir()) == ['2.state']

    second = run_python(
        ['-m', 'basicsr.train', '-opt', str(options), '--auto_resume', '--force_yml', 'train:total_iter=4'],
        cwd=work,
        env_update={'CUDA_VISIBLE_DEVICES': ''},
    )
    assert second.returncode == 0, second.stderr[-3000:]
    log = '\n'.join(p.read_text() for p in (work / 'experiments' / 'tiny_sr').glob('train_tiny_sr_*.log'))
    assert 'Resuming training from epoch: 0, iter: 2.' in log
    assert sorted(p.name for p in states.iterdir()) == ['2.state', '4.state']
    models = sorted(p.name for p in (work / 'experiments' / 'tiny_sr' / 'models').iterdir())
    assert models == ['net_g_2.pth', 'net_g_4.pth', 'net_g_latest.pth']
    assert not (Path(basicsr_patches.BASICSR_INSTALL_ROOT) / 'experiments' / 'tiny_sr').exists()
