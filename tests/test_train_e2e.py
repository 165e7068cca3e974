"""End-to-end CLIP-LIT training through BasicSR's own ``python -m basicsr.train`` (CPU, offline).

The option file is the shipped ``options/train_cliplit.yml`` with tiny sizes, the tiny CLIP checkpoints of
the parity folder, and a schedule that passes through every phase in 16 iterations:

    iter  1-2   prompt initialisation
    iter  3-7   reconstruction (PSNR threshold 1000 dB forces the restart branch once, at iter 6: the
                stage grows from 4 to 5 iterations)
    iter  8-9   round 1 enhancement           iter 10-11 round 1 prompt refinement (ranks I_t of round 1)
    iter 12-13  round 2 enhancement           iter 14-   round 2 prompt refinement (I_t = round 2,
                                                         I_{t-1} = round 1), extended at iter 15
Ranking margins make the extension certain whatever is learned: the 3-term form (round 1) has zero
margins, so its loss is at most 200 * 3 < 1000 (threshold), the 4-term form (round 2) has margins 5,
so its loss is at least 200 * 4 * 4 > 1000.
"""

import os
import re
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import pytest
import torch
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
TOTAL_ITER = 16
EXPECTED_EVENTS = [
    'Phase prompt_init -> reconstruction at iter 2: now round 0',
    'reconstruction PSNR below 1000.0 dB at iter 6: network re-initialised, stage now 5 iterations',
    'Phase reconstruction -> enhancement at iter 7: now round 1',
    'Phase enhancement -> prompt_refinement at iter 9: now round 1 ranking with the outputs of rounds [1]',
    'Phase prompt_refinement -> enhancement at iter 11: now round 2',
    'Phase enhancement -> prompt_refinement at iter 13: now round 2 ranking with the outputs of rounds [2, 1]',
    '[round 2] prompt_refinement extended to 4 iterations at iter 15',
]


def make_image_sets(root: Path, backlit_count: int, height_step: int) -> Path:
    """Dark backlit and bright well-lit PNGs of varied sizes (3 well-lit) and a 2-pair val set, in ``root``."""
    rng = np.random.default_rng(0)
    sets = {
        'backlit': (backlit_count, (0, 110)),
        'welllit': (3, (90, 256)),
        'val_lq': (2, (0, 110)),
        'val_gt': (2, (60, 200)),
    }
    for name, (count, (low, high)) in sets.items():
        (root / name).mkdir()
        for i in range(count):
            shape = (32, 32, 3) if name.startswith('val') else (28 + height_step * i, 40 - 2 * i, 3)
            cv2.imwrite(str(root / name / f'{name[0]}{i}.png'), rng.integers(low, high, shape, dtype=np.uint8))
    return root


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    """Generated images: dark backlit and bright well-lit sets of different sizes, a small paired val set.

    5 backlit images at batch 2: every epoch ends with a partial batch, which is trained (as the authors do;
    BasicSR's loader would drop it and end the run before ``total_iter``).
    """
    root = make_image_sets(tmp_path_factory.mktemp('data'), backlit_count=5, height_step=4)
    create_lmdb = runpy.run_path(str(REPO_ROOT / 'scripts' / 'create_lmdb.py'))['main']
    create_lmdb(['--input', str(root / 'backlit'), str(root / 'welllit')])  # -> backlit.lmdb, welllit.lmdb
    return root


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE='1', OMP_NUM_THREADS='1', PYTHONPATH=str(REPO_ROOT))
    env.pop('CLIPLIT_BASICSR_NO_HOOK', None)
    return env


def write_options(workdir: Path, data: Path, parity_dir: Path, backend: str = 'disk', **schedule) -> Path:
    """The shipped option file, shrunk; returns the path of the written YAML."""
    opt = yaml.safe_load((REPO_ROOT / 'options' / 'train_cliplit.yml').read_text())
    vit, rn = str(parity_dir / 'tiny_vit_openai.pt'), str(parity_dir / 'tiny_rn_openai.pt')
    suffix = '.lmdb' if backend == 'lmdb' else ''
    opt.update(name='tiny', num_gpu=0, manual_seed=5)
    opt.pop('dist_params')
    opt['datasets']['train'].update(
        dataroot_backlit=str(data / f'backlit{suffix}'),
        io_backend={'type': backend},
        image_size=32,
        batch_size_per_gpu=2,
    )
    opt['datasets']['val'].update(dataroot_lq=str(data / 'val_lq'), dataroot_gt=str(data / 'val_gt'))
    opt['prompt_dataset'].update(
        dataroot_backlit=str(data / f'backlit{suffix}'),
        dataroot_welllit=str(data / f'welllit{suffix}'),
        io_backend={'type': backend},
        image_size=32,
        batch_size_per_gpu=2,
    )
    opt['network_prompt']['clip_pretrained'] = vit
    opt['path']['pretrain_network_g'] = None  # from scratch: reconstruction runs
    train = opt['train']
    train['total_iter'] = TOTAL_ITER
    train['schedule'].update(
        dict(
            prompt_init_iters=2,
            prompt_init_min_iters=0,
            reconstruction_iters=4,
            reconstruction_min_iters=0,
            restart_psnr=1000.0,
            restart_after=3,
            restart_extension=1,
            enhancement_iters=2,
            enhancement_loss_threshold=1e9,
            prompt_refinement_iters=2,
            prompt_extension=2,
            prompt_loss_threshold=1000.0,
            check_period=1,
            prompt_check_period=1,
            window=2,
        ),
        **schedule,
    )
    train['clip_opt']['clip_pretrained'] = vit
    train['identity_opt']['clip_pretrained'] = train['reconstruction_opt']['clip_pretrained'] = rn
    train['ranking_opt']['margins'] = {'rank2': [1.0, 0.2], 'rank3': [0.0, 0.0], 'rank4': [5.0, 5.0]}
    opt['val']['val_freq'] = 8
    opt['logger'].update(print_freq=1, save_checkpoint_freq=4, use_tb_logger=False)
    path = workdir / 'tiny.yml'
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return path


@pytest.mark.slow
def test_auto_run_length_ends_after_whole_rounds(tmp_path, data_dir, parity_dir):
    """``total_iter: auto`` with ``rounds: 2``: the run ends when round 2's prompt refinement ends, the
    reconstruction restart's extension included (15 iterations where 2 rounds are nominally 14), and BasicSR
    saves and validates as at any run's end."""
    option_file = write_options(tmp_path, data_dir, parity_dir, rounds=2, prompt_loss_threshold=1e9)
    opt = yaml.safe_load(option_file.read_text())
    opt['train']['total_iter'] = 'auto'
    option_file.write_text(yaml.safe_dump(opt, sort_keys=False))
    run_train(tmp_path, option_file)
    log = log_text(tmp_path)
    assert 'End of training' in log and 'Validation BAID_test' in log
    assert 'Run length (train.total_iter: auto): 2 rounds; with no phase extended, 14 iterations' in log
    assert 'Run complete at iter 15 (2 rounds): 2 rounds' in log
    assert re.search(r'iter:\s+15,', log) and not re.search(r'iter:\s+16,', log)
    state = torch.load(experiment(tmp_path) / 'models' / 'net_g_latest.pth', weights_only=True)
    assert state['params']


@pytest.mark.slow
def test_auto_run_length_ends_where_the_authors_loop_ends(tmp_path, data_dir, parity_dir):
    """``total_iter: auto`` with the authors' pass budget, through BasicSR's own loop: the run's last
    iteration is the authors' ``train.py`` loop's (``test_run_length.authors_loop``) for these loaders: 5
    backlit images at batch 2 (3 a pass), 5 ranking pairs at batch 2 (3), a pool of 10 at batch 2 (5)."""
    from test_run_length import INIT, NETWORK, REFINE, authors_loop

    schedule = {'authors_num_epochs': 15, 'restart_psnr': 0.0, 'prompt_loss_threshold': 1e9}
    option_file = write_options(tmp_path, data_dir, parity_dir, **schedule)
    opt = yaml.safe_load(option_file.read_text())
    opt['train']['total_iter'] = 'auto'
    option_file.write_text(yaml.safe_dump(opt, sort_keys=False))
    batches = {NETWORK: 3, REFINE: 3, INIT: 5}
    total, refinements, _, _ = authors_loop(15, batches, clip_iters=2, recon_iters=4, train=2, round_total=4)
    run_train(tmp_path, option_file)
    log = log_text(tmp_path)
    assert f'Run complete at iter {total} (' in log and f'{refinements} rounds' in log
    assert re.search(rf'iter:\s+{total},', log) and not re.search(rf'iter:\s+{total + 1},', log)


@pytest.mark.slow
def test_a_fixed_length_run_cannot_resume_as_an_auto_run(tmp_path, data_dir, parity_dir):
    """A state trained with a number for ``train.total_iter`` holds no pass count: resuming it with ``auto``
    is refused in one line instead of counting the authors' passes from the middle of the run."""
    option_file = write_options(tmp_path, data_dir, parity_dir)
    run_train(tmp_path, option_file, '--force_yml', 'train:total_iter=4')
    result = subprocess.run(
        train_command(option_file, '--auto_resume', '--force_yml', 'train:total_iter=auto'),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith('error: path.resume_state: ')
    assert 'was trained with a number for train.total_iter' in result.stderr


def train_command(option_file: Path, *extra: str):
    return [sys.executable, '-m', 'basicsr.train', '-opt', str(option_file), *extra]


def run_train(workdir: Path, option_file: Path, *extra: str, timeout: float = 240) -> str:
    result = subprocess.run(
        train_command(option_file, *extra), cwd=workdir, env=_env(), capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def experiment(workdir: Path) -> Path:
    return workdir / 'experiments' / 'tiny'


def log_text(workdir: Path) -> str:
    return '\n'.join(p.read_text() for p in sorted(experiment(workdir).glob('train_tiny_*.log')))


def assert_every_phase(log: str) -> None:
    positions = [log.find(event) for event in EXPECTED_EVENTS]
    missing = [event for event, pos in zip(EXPECTED_EVENTS, positions) if pos < 0]
    assert not missing, f'missing log lines: {missing}'
    assert positions == sorted(positions)
    assert re.search(r'Validation BAID_test\s+# psnr: [\d.]+.*\s+# ssim: [\d.]+', log)
    assert 'End of training' in log


def assert_outputs(workdir: Path) -> None:
    from cliplit_basicsr.archs.prompt_arch import read_prompt_file
    from cliplit_basicsr.checkpoint import load_checkpoint
    from cliplit_basicsr.network import CLIPLITNet

    models = experiment(workdir) / 'models'
    for name in ('net_g_latest.pth', f'net_g_{TOTAL_ITER}.pth', 'net_g_round1_best.pth', 'net_g_round2_best.pth'):
        load_checkpoint(CLIPLITNet(), models / name)
    for name in ('net_prompt_latest.pth', 'prompt_pair_round0_best.pth'):
        embedding, _ = read_prompt_file(models / name)
        assert embedding.shape[0] == 2
    assert (experiment(workdir) / 'training_states' / f'{TOTAL_ITER}.state').is_file()
    assert not list(experiment(workdir).rglob('*.tmp'))


@pytest.mark.slow
def test_lmdb_training_passes_every_phase(tmp_path, data_dir, parity_dir):
    option_file = write_options(tmp_path, data_dir, parity_dir, backend='lmdb')
    run_train(tmp_path, option_file)
    assert_every_phase(log_text(tmp_path))
    assert_outputs(tmp_path)


@pytest.mark.slow
def test_bf16_network_training_passes_every_phase(tmp_path, data_dir, parity_dir):
    option_file = write_options(tmp_path, data_dir, parity_dir)
    run_train(tmp_path, option_file, '--force_yml', 'train:network_amp=bf16')
    assert 'network_amp: bf16' in log_text(tmp_path)
    assert_every_phase(log_text(tmp_path))
    assert_outputs(tmp_path)
    state = torch.load(experiment(tmp_path) / 'training_states' / f'{TOTAL_ITER}.state', weights_only=True)
    assert state['cliplit']['grad_scaler'] is None  # bf16 needs no scaler


def _latest_state(workdir: Path):
    states = list((experiment(workdir) / 'training_states').glob('*.state'))
    return max(states, key=lambda p: int(p.stem)) if states else None


def kill_once_saved(workdir: Path, option_file: Path, iteration: int, timeout: float) -> None:
    """Start a training run and SIGKILL it as soon as its training state of ``iteration`` is on disk."""
    process = subprocess.Popen(
        train_command(option_file), cwd=workdir, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + timeout
    try:
        while (
            _latest_state(workdir) is None or int(_latest_state(workdir).stem) < iteration
        ) and time.time() < deadline:
            assert process.poll() is None, 'training ended before it could be killed'
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


@pytest.mark.slow
def test_folder_training_killed_and_auto_resumed(tmp_path, data_dir, parity_dir):
    option_file = write_options(tmp_path, data_dir, parity_dir)
    kill_once_saved(tmp_path, option_file, 12, timeout=240)
    state_file = _latest_state(tmp_path)
    assert state_file is not None and int(state_file.stem) == 12
    saved = torch.load(state_file, weights_only=True)
    k = saved['iter']

    restored = restored_model(tmp_path, option_file, state_file)
    assert_restored_equals_saved(restored, saved, experiment(tmp_path) / 'models', k)

    output = run_train(tmp_path, option_file, '--auto_resume')
    assert f'Resuming training from epoch: {saved["epoch"]}, iter: {k}.' in output
    assert [event in output for event in EXPECTED_EVENTS] == [False] * 5 + [True] * 2  # k = 12: round 2 enhancement
    assert_every_phase(log_text(tmp_path))  # the folder run, killed and resumed, went through every phase
    assert_outputs(tmp_path)


def in_process_options(workdir: Path, opt: dict, resume_state: Optional[Path] = None) -> dict:
    """``opt`` completed as BasicSR's ``parse_options`` would for one process in ``workdir``."""
    exp = experiment(workdir)
    opt.update(
        dist=False, rank=0, world_size=1, is_train=True, auto_resume=resume_state is not None, root_path=str(workdir)
    )
    opt['path'].update(
        experiments_root=str(exp),
        models=str(exp / 'models'),
        training_states=str(exp / 'training_states'),
        log=str(exp),
        visualization=str(exp / 'visualization'),
    )
    if resume_state is not None:
        opt['path']['resume_state'] = str(resume_state)
    for phase, dataset in opt['datasets'].items():
        dataset['phase'] = phase.split('_')[0]
    return opt


def restored_model(workdir: Path, option_file: Path, state_file: Path):
    """Build the model in this process as ``--auto_resume`` does and restore ``state_file`` into it."""
    from basicsr.models import build_model
    from basicsr.utils import check_resume

    opt = in_process_options(workdir, yaml.safe_load(option_file.read_text()), resume_state=state_file)
    state = torch.load(state_file, map_location='cpu', weights_only=True)
    check_resume(opt, state['iter'])
    model = build_model(opt)
    model.resume_training(state)
    return model


def _assert_same(actual, expected, where):
    if torch.is_tensor(expected):
        assert torch.equal(actual.cpu(), expected.cpu()), where
    elif isinstance(expected, dict):
        assert set(actual) == set(expected), where
        for key in expected:
            _assert_same(actual[key], expected[key], f'{where}.{key}')
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            _assert_same(a, e, f'{where}[{i}]')
    else:
        assert actual == expected, where


def assert_restored_equals_saved(model, saved, models_dir: Path, k: int) -> None:
    """Every restored field equals the one written at iteration ``k``."""
    current = model.training_state(saved['epoch'], k)
    for key in ('epoch', 'iter', 'optimizers', 'schedulers'):
        _assert_same(current[key], saved[key], key)
    _assert_same(current['cliplit'], saved['cliplit'], 'cliplit')
    net_g = torch.load(models_dir / f'net_g_{k}.pth', weights_only=True)['params']
    _assert_same(model.get_bare_model(model.net_g).state_dict(), net_g, 'net_g')
    net_prompt = torch.load(models_dir / f'net_prompt_{k}.pth', weights_only=True)['params']
    _assert_same(model.get_bare_model(model.net_prompt).state_dict(), net_prompt, 'net_prompt')
    assert model.schedule.state_dict() == saved['cliplit']['schedule']


@pytest.mark.slow
def test_kill_during_save_leaves_previous_state_loadable(tmp_path, data_dir, parity_dir, monkeypatch):
    """A save interrupted half-way (the process dies inside ``torch.save``) leaves the previous state usable."""
    import cliplit_basicsr.atomic_io as atomic_io

    option_file = write_options(tmp_path, data_dir, parity_dir)
    exp = experiment(tmp_path)
    first = tmp_path / 'first.state'
    model = restored_model_fresh(tmp_path, option_file)
    model.save(0, 4)
    first.write_bytes((exp / 'training_states' / '4.state').read_bytes())

    real_save = torch.save

    def dying_save(obj, path, *args, **kwargs):
        real_save(obj, path, *args, **kwargs)
        with open(path, 'r+b') as stream:  # half a file, then the process "dies"
            stream.truncate(os.path.getsize(path) // 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic_io.torch, 'save', dying_save)
    for label in ('net_g', 'net_prompt', 'state'):
        with pytest.raises(KeyboardInterrupt):
            if label == 'state':
                model.save_training_state(0, 8)
            else:
                model.save_network(getattr(model, label), label, 8)
    monkeypatch.setattr(atomic_io.torch, 'save', real_save)

    assert sorted(p.name for p in (exp / 'training_states').iterdir()) == ['4.state']
    assert sorted(p.name for p in (exp / 'models').iterdir()) == ['net_g_4.pth', 'net_prompt_4.pth']
    assert (exp / 'training_states' / '4.state').read_bytes() == first.read_bytes()
    restored = restored_model(tmp_path, option_file, exp / 'training_states' / '4.state')
    assert_restored_equals_saved(restored, torch.load(first, weights_only=True), exp / 'models', 4)


def restored_model_fresh(workdir: Path, option_file: Path, edit=None):
    """The model as a new run builds it (no resume); ``edit(opt)`` may change the options first."""
    from basicsr.models import build_model

    opt = yaml.safe_load(option_file.read_text())
    if edit is not None:
        edit(opt)
    for sub in ('models', 'training_states'):
        (experiment(workdir) / sub).mkdir(parents=True, exist_ok=True)
    return build_model(in_process_options(workdir, opt))


@pytest.mark.parametrize(
    'section,key',
    [
        ('train.schedule', 'enhancment_iters'),
        ('train', 'optim_promt'),
        ('path', 'pretrain_netwrok_g'),
        ('', 'network_promt'),
    ],
)
def test_unknown_option_is_one_line_error(tmp_path, parity_dir, section, key):
    from cliplit_basicsr.errors import OptionError
    from cliplit_basicsr.options import check_training_options

    option_file = write_options(tmp_path, tmp_path, parity_dir)
    opt = yaml.safe_load(option_file.read_text())
    target = opt
    for part in filter(None, section.split('.')):
        target = target[part]
    target[key] = 1
    with pytest.raises(OptionError, match=re.escape(f'unknown option {section + "." if section else ""}{key}')):
        check_training_options(opt)


@pytest.mark.slow
def test_unknown_option_through_basicsr_train(tmp_path, data_dir, parity_dir):
    option_file = write_options(tmp_path, data_dir, parity_dir)
    opt = yaml.safe_load(option_file.read_text())
    opt['train']['schedule']['enhancment_iters'] = 5
    option_file.write_text(yaml.safe_dump(opt, sort_keys=False))
    result = subprocess.run(
        train_command(option_file), cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith('error: unknown option train.schedule.enhancment_iters'), result.stderr[-2000:]
    assert 'Traceback' not in result.stderr


def network_batch(size: int) -> dict:
    """A ``datasets.train`` batch as its loader yields it: backlit indices and (identity) draws."""
    from torch.utils.data import default_collate

    from cliplit_basicsr.data.augment import AugmentParams

    return default_collate([{'index': i, 'aug': AugmentParams().as_dict()} for i in range(size)])


def test_fixed_prompts_ablation_trains_only_the_network(tmp_path, data_dir, parity_dir):
    """``prompt_learning: false``: the pair stays the init texts' embedding, rounds are enhancement only, and the
    default ``pretrain_network_g: init`` (the authors' network after reconstruction) skips reconstruction."""
    from cliplit_basicsr.checkpoint import read_state_dict
    from cliplit_basicsr.models.cliplit_model import INIT_CHECKPOINT
    from cliplit_basicsr.models.schedule import Phase

    def fixed_prompts(opt):
        opt['train']['schedule']['prompt_learning'] = False
        opt['network_prompt']['init_texts'] = ['backlit', 'well-lit']
        opt['path']['pretrain_network_g'] = 'init'
        del opt['prompt_dataset']

    option_file = write_options(tmp_path, data_dir, parity_dir)
    model = restored_model_fresh(tmp_path, option_file, fixed_prompts)
    prompt = model.get_bare_model(model.net_prompt).embedding.detach().clone()
    initial = read_state_dict(INIT_CHECKPOINT)
    assert all(torch.equal(v, initial[k]) for k, v in model.get_bare_model(model.net_g).state_dict().items())
    torch.manual_seed(0)
    phases = []
    for it in range(1, 6):
        phases.append((model.schedule.phase, model.schedule.round))
        model.feed_data(network_batch(2))
        model.optimize_parameters(it)
    assert phases == [(Phase.ENHANCEMENT, 1)] * 2 + [(Phase.ENHANCEMENT, 2)] * 2 + [(Phase.ENHANCEMENT, 3)]
    assert torch.equal(model.get_bare_model(model.net_prompt).embedding, prompt)
    assert not all(torch.equal(v, initial[k]) for k, v in model.get_bare_model(model.net_g).state_dict().items())
    assert set(model.log_dict) == {'round', 'l_clip', 'l_identity', 'l_enhance'}


def test_prompt_feature_cache_changes_no_step(tmp_path, data_dir, parity_dir):
    """Prompt steps with kept CLIP features (the default) and with every image encoded again
    (``prompt_feature_cache: false``) learn the same prompt from the same batches, and the cache spares
    CLIP the images that recur exactly (flips/transpose only)."""
    from torch.utils.data import default_collate

    from cliplit_basicsr.data.prompt_init_pool import PromptInitPool
    from cliplit_basicsr.models.schedule import Phase

    option_file = write_options(tmp_path, data_dir, parity_dir)
    models = {
        cache: restored_model_fresh(
            tmp_path, option_file, lambda opt, cache=cache: opt['train'].update(prompt_feature_cache=cache)
        )
        for cache in (True, False)
    }
    pool = PromptInitPool(models[True].prompt_loaders.pairs)
    np.random.seed(0)  # the dataset's augmentation draws
    batches = [default_collate([pool[i] for i in order]) for _ in range(6) for order in ([0, 7, 2], [3, 4, 11])]
    for cache, model in models.items():
        prompt = model.get_bare_model(model.net_prompt)
        encode, encoded = prompt.encode_images, []
        prompt.encode_images = lambda images, encode=encode, encoded=encoded: (
            encoded.append(len(images)) or encode(images)
        )
        feed = iter(batches)
        model.prompt_loaders.next_batch = lambda phase, feed=feed: next(feed)
        model.losses = [model._prompt_step(Phase.PROMPT_INIT)['l_prompt_init'].item() for _ in batches]
        model.encoded = sum(encoded)
    cached, plain = models[True], models[False]
    assert plain.encoded == 6 * 6
    assert cached.encoded < plain.encoded  # recurring images were not encoded again
    np.testing.assert_allclose(cached.losses, plain.losses, rtol=1e-5)
    learned = {cache: m.get_bare_model(m.net_prompt).embedding.detach() for cache, m in models.items()}
    scale = learned[False].abs().max().item()
    torch.testing.assert_close(learned[True], learned[False], rtol=0, atol=1e-5 * scale)


def test_a_phase_extended_ten_times_in_a_row_is_warned_about(tmp_path, data_dir, parity_dir):
    """The authors extend a phase for as long as its last loss stays above the threshold; the log warns
    every tenth extension in a row, naming the threshold option."""
    import logging

    option_file = write_options(tmp_path, data_dir, parity_dir, prompt_loss_threshold=-1.0)  # always above
    model = restored_model_fresh(tmp_path, option_file)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger('basicsr')
    logger.addHandler(handler)
    try:
        for iteration in range(1, 2 + 2 * 10 + 1):  # 2 steps, then 10 extensions of 2
            model.optimize_parameters(iteration)
    finally:
        logger.removeHandler(handler)
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert warnings == [
        '[round 0] prompt_init extended 10 times in a row: its loss stays above '
        'train.schedule.prompt_loss_threshold; the run ends at train.total_iter'
    ]


def test_each_refinement_phase_and_its_resume_rank_the_rounds_pairs(tmp_path, data_dir, parity_dir):
    """The model pairs the ranking lists anew when a refinement phase starts, from the seed and the round;
    a model resumed inside that phase ranks the same pairs."""
    from cliplit_basicsr.models.schedule import Phase

    option_file = write_options(tmp_path, data_dir, parity_dir, restart_psnr=0.0)
    model = restored_model_fresh(tmp_path, option_file)
    pairings, iteration = {}, 0
    while len(pairings) < 2:
        iteration += 1
        if model.schedule.phase.trains_network:
            model.feed_data(network_batch(2))
        model.optimize_parameters(iteration)
        if model.schedule.phase is Phase.PROMPT_REFINEMENT:
            pairings.setdefault(model.schedule.round, model.prompt_loaders.pairs.pairing.clone())
    expected = build_dataset_copy(option_file)
    for round_, pairing in pairings.items():
        expected.redraw_pairing((5, round_))  # manual_seed 5 in write_options
        assert torch.equal(pairing, expected.pairing), round_
    assert not torch.equal(pairings[1], pairings[2])
    model.save(0, iteration)
    state = experiment(tmp_path) / 'training_states' / f'{iteration}.state'
    assert model.schedule.phase is Phase.PROMPT_REFINEMENT
    restored = restored_model(tmp_path, option_file, state)
    assert torch.equal(restored.prompt_loaders.pairs.pairing, pairings[2])


def build_dataset_copy(option_file: Path):
    from basicsr.data import build_dataset

    opt = yaml.safe_load(option_file.read_text())
    return build_dataset(dict(opt['prompt_dataset'], phase='train'))


@pytest.mark.slow
def test_compiled_network_takes_the_same_step(tmp_path, data_dir, parity_dir):
    """``train.compile_network: true`` (torch.compile in place): checkpoints keep their keys, and an
    enhancement step moves the network as the eager one does (only float rounding may differ)."""
    option_file = write_options(tmp_path, data_dir, parity_dir)
    models = []
    for compiled in (False, True):

        def edit(opt, compiled=compiled):
            opt['path']['pretrain_network_g'] = 'init'  # straight to enhancement
            opt['path']['pretrain_network_prompt'] = None
            opt['train']['compile_network'] = compiled
            opt['train']['schedule']['prompt_learning'] = False
            del opt['prompt_dataset']

        model = restored_model_fresh(tmp_path / str(compiled), option_file, edit)
        assert (model.get_bare_model(model.net_g)._compiled_call_impl is not None) == compiled
        torch.manual_seed(0)
        model.feed_data(network_batch(2))
        model.optimize_parameters(1)
        models.append(model.get_bare_model(model.net_g).state_dict())
    assert list(models[0]) == list(models[1])
    for key in models[0]:
        torch.testing.assert_close(models[1][key], models[0][key], rtol=1e-5, atol=1e-7)
