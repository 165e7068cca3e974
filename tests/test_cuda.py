"""The GPU path, end to end: training through every phase, torchrun with NCCL, kill and resume, enhancement
in each precision against the authors' outputs, and the parity fixtures, all on CUDA.

These tests need a GPU; elsewhere they skip with that reason (CI has none). ``scripts/device_check.sh``
runs them on a bare GPU machine.
"""

import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from test_train_e2e import (
    EXPECTED_EVENTS,
    TOTAL_ITER,
    _env,
    assert_every_phase,
    assert_outputs,
    kill_once_saved,
    log_text,
    make_image_sets,
    run_train,
    write_options,
)

from cliplit_basicsr.models.network_precision import FP16_INITIAL_SCALE

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU'),
]

# Errors against the authors' outputs, per path: (max, mean) in 1/255, the README's measured maxima.
CUDA_TOLERANCES = {'fp32': (1, 0.05), 'fp16': (1, 0.05), 'bf16': (2, 0.5)}


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return make_image_sets(tmp_path_factory.mktemp('data'), backlit_count=5, height_step=4)


def _gpu_options(tmp_path, data_dir, parity_dir):
    option_file = write_options(tmp_path, data_dir, parity_dir)
    opt = yaml.safe_load(option_file.read_text())
    opt['num_gpu'] = 1
    option_file.write_text(yaml.safe_dump(opt, sort_keys=False))
    return option_file


@pytest.mark.parametrize('option', [None, 'network_amp=fp16', 'cuda_graphs=true'], ids=['fp32', 'fp16', 'graphs'])
def test_training_passes_every_phase_on_cuda(tmp_path, data_dir, parity_dir, option):
    extra = () if option is None else ('--force_yml', f'train:{option}')
    run_train(tmp_path, _gpu_options(tmp_path, data_dir, parity_dir), *extra)
    log = log_text(tmp_path)
    assert_every_phase(log)
    assert 'CPU training' not in log  # the CPU allocator note and restart are for CPU runs only
    assert_outputs(tmp_path)
    if option == 'cuda_graphs=true':  # the option reached the model (phases here are too short to capture)
        assert 'replayed as a CUDA graph' in log
    if option == 'network_amp=fp16':  # the scaler ran (its scale or growth count moved) and is saved for a resume
        state = torch.load(tmp_path / 'experiments' / 'tiny' / 'training_states' / f'{TOTAL_ITER}.state')
        scaler = state['cliplit']['grad_scaler']
        assert (scaler['scale'], scaler['_growth_tracker']) != (FP16_INITIAL_SCALE, 0)


def test_torchrun_with_nccl_on_one_gpu(tmp_path, data_dir, parity_dir):
    option_file = _gpu_options(tmp_path, data_dir, parity_dir)
    command = [
        sys.executable,
        '-m',
        'torch.distributed.run',
        '--standalone',
        '--nproc_per_node=1',
        '-m',
        'cliplit_basicsr.train',
        '-opt',
        str(option_file),
        '--launcher',
        'pytorch',
    ]
    result = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert_every_phase(log_text(tmp_path))


def test_killed_and_auto_resumed_on_cuda(tmp_path, data_dir, parity_dir):
    option_file = _gpu_options(tmp_path, data_dir, parity_dir)
    kill_once_saved(tmp_path, option_file, 12, timeout=300)
    output = run_train(tmp_path, option_file, '--auto_resume')
    assert 'Resuming training from epoch' in output
    assert [event in output for event in EXPECTED_EVENTS][-2:] == [True, True]
    assert (tmp_path / 'experiments' / 'tiny' / 'training_states' / f'{TOTAL_ITER}.state').is_file()


@pytest.mark.parametrize('precision', list(CUDA_TOLERANCES))
def test_enhance_on_cuda_reproduces_the_authors_outputs(reference_dir, tmp_path, precision):
    from cliplit_basicsr.cli import main

    argv = ['-i', str(reference_dir / 'samples'), '-o', str(tmp_path), '--device', 'cuda', '--precision', precision]
    assert main(argv) == 0
    worst, mean_of = CUDA_TOLERANCES[precision]
    for expected_path in sorted((reference_dir / 'expected').glob('*.png')):
        expected = np.asarray(Image.open(expected_path)).astype(np.int16)
        ours = np.asarray(Image.open(tmp_path / expected_path.name)).astype(np.int16)
        diff = np.abs(ours - expected)
        assert diff.max() <= worst and diff.mean() < mean_of, f'{expected_path.name}: {diff.max()}, {diff.mean()}'


def test_parity_fixtures_on_cuda(parity_dir, parity_fixtures):
    """The four losses and the network on CUDA (TF32 off) within the fixtures' tolerance."""
    from cliplit_basicsr.losses.cliplit_loss import CLIPLITEnhanceLoss, CLIPLITIdentityLoss

    f, device = parity_fixtures, torch.device('cuda')
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        vit, rn = str(parity_dir / 'tiny_vit_openai.pt'), str(parity_dir / 'tiny_rn_openai.pt')
        enhanced = f['enhanced'].to(device).requires_grad_(True)
        clip = CLIPLITEnhanceLoss(clip_pretrained=vit)(enhanced, f['text_features'].to(device))
        clip.backward()
        assert clip.item() == pytest.approx(f['clip_loss'], rel=1e-4)
        grad = f['clip_loss_grad_enhanced']
        torch.testing.assert_close(enhanced.grad.cpu(), grad, rtol=1e-4, atol=5e-5 * grad.abs().max().item())
        identity = CLIPLITIdentityLoss(clip_pretrained=rn, precision='fp32')(
            f['enhanced'].to(device), f['input'].to(device)
        )
        assert identity.item() == pytest.approx(f['identity_loss_default'], rel=1e-4)
        fp16 = CLIPLITIdentityLoss(clip_pretrained=rn)  # auto: the authors' fp16 on CUDA
        assert fp16(f['enhanced'].to(device), f['input'].to(device)).item() == pytest.approx(
            f['identity_loss_default'], rel=1e-3
        )
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def test_steady_state_steps_wait_for_nothing_on_the_host(tmp_path, data_dir, parity_dir):
    """Every phase's steps between its first (set-up: text features, the kept networks' outputs) and its
    last (the schedule reads the loss to end or extend it) run under ``set_sync_debug_mode('error')``: no
    ``.item()``, no blocking copy, no data-dependent shape. Check iterations are out of reach here."""
    from test_train_e2e import network_batch, restored_model_fresh

    from cliplit_basicsr.models.schedule import Phase

    lengths = dict(prompt_init_iters=5, reconstruction_iters=5, enhancement_iters=5, prompt_refinement_iters=5)
    option_file = write_options(
        tmp_path, data_dir, parity_dir, **lengths, restart_after=1000, check_period=1000, prompt_check_period=1000
    )
    opt = yaml.safe_load(option_file.read_text())
    opt['num_gpu'] = 1
    option_file.write_text(yaml.safe_dump(opt, sort_keys=False))
    model = restored_model_fresh(tmp_path, option_file)
    assert model.device.type == 'cuda'
    checked = set()
    for iteration in range(1, 31):
        schedule = model.schedule
        steady = 2 <= schedule.phase_iter + 1 < schedule.phase_length
        phase = schedule.phase
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode('error' if steady else 0)
        try:
            model.feed_data(network_batch(2))
            model.optimize_parameters(iteration)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        if steady:
            checked.add((phase, schedule.round if phase is not Phase.PROMPT_REFINEMENT else 'refinement'))
    assert {phase for phase, _ in checked} == set(Phase)


def test_cuda_graph_steps_take_the_eager_steps(tmp_path, data_dir, parity_dir):
    """``train.cuda_graphs: true`` through two enhancement rounds of 7 steps: 3 eager warm-ups, the capture,
    replays, a partial batch beside the graph (iteration 6), the graph ended at the round's end and captured
    again in the next. The network moves as eager steps move it on the same batches, and replays that end
    no phase wait for nothing on the host."""
    from test_graphed_step import varied_network_batch
    from test_train_e2e import restored_model_fresh

    from cliplit_basicsr.models.schedule import Phase

    option_file = write_options(
        tmp_path, data_dir, parity_dir, enhancement_iters=7, check_period=1000, enhancement_loss_threshold=1e18
    )
    captured_after = [False] * 3 + [True] * 3 + [False] * 4 + [True] * 3 + [False]  # reset at each round's end
    runs = []
    for graphs in (False, True):

        def edit(opt, graphs=graphs):
            opt['num_gpu'] = 1
            opt['path']['pretrain_network_g'] = 'init'  # straight to enhancement
            opt['path']['pretrain_network_prompt'] = None
            opt['train']['schedule']['prompt_learning'] = False
            opt['train']['cuda_graphs'] = graphs
            del opt['prompt_dataset']

        model = restored_model_fresh(tmp_path / str(graphs), option_file, edit)
        losses = []
        for iteration, captured in enumerate(captured_after, start=1):
            assert (model.schedule.phase, model.schedule.round) == (Phase.ENHANCEMENT, 1 + (iteration > 7))
            model.feed_data(varied_network_batch(iteration, size=1 if iteration == 6 else 2))
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode('error' if graphs and iteration in (5, 12, 13) else 0)
            try:
                model.optimize_parameters(iteration)
            finally:
                torch.cuda.set_sync_debug_mode(0)
            if graphs:
                assert model.graphed_step.captured == captured, iteration
            losses.append(model.log_dict['l_enhance'].item())
        assert (model.graphed_step.captures == 2) if graphs else model.graphed_step is None
        runs.append((losses, model.get_bare_model(model.net_g).state_dict()))
    (eager_losses, eager), (graph_losses, graphed) = runs
    assert graph_losses == pytest.approx(eager_losses, rel=1e-5)
    for key in eager:
        torch.testing.assert_close(graphed[key], eager[key], rtol=1e-5, atol=1e-7)
