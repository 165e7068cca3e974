"""The default run is as long as the authors': ``train.total_iter: auto`` against their ``train.py`` loop.

``authors_loop`` below is the control flow of the authors' ``train.py`` (commit 25ed5be), counters only:
the ``for epoch in range(config.num_epochs)`` loop, the thresholds it recomputes at every pass, the breaks,
the extensions and the round switches, with the losses given by a function instead of computed. The
package's run length and schedule must end where that loop ends.
"""

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from support import REPO_ROOT

from cliplit_basicsr import options as cliplit_options
from cliplit_basicsr.errors import OptionError
from cliplit_basicsr.models.run_length import AUTHORS_NUM_EPOCHS, PassLengths, RunEnd, authors_run, rounds_run
from cliplit_basicsr.models.schedule import Phase, ScheduleOptions, TrainingSchedule

NETWORK, REFINE, INIT = 'network', 'refinement', 'init'


def authors_loop(
    num_epochs, batches, clip_iters, recon_iters, loss_of=lambda phase, total: 0.0, train=2100, round_total=3100
):
    """Where the authors' loop stops: (total iterations, completed refinements, phase, iterations into it).

    ``batches``: loader lengths {network, refinement, init}; ``loss_of(phase, total_iteration)`` the loss of
    a step (0 by default: nothing is extended); ``train`` / ``round_total``: their hard-coded 2100 / 3100.
    Phases are reported as 'init', 'reconstruction', 'enhancement', 'refinement'.
    """
    total_iteration = cur_iteration = 0
    train_thre = total_thre = 0
    refinements, phase, into = 0, None, 0
    for _ in range(num_epochs):
        if total_iteration < clip_iters:
            train_thre, total_thre = 0, clip_iters
        elif total_iteration < recon_iters + clip_iters:
            train_thre = total_thre = recon_iters
        elif cur_iteration == 0:
            train_thre, total_thre = train, round_total
        if cur_iteration + 1 <= train_thre:
            phase = 'enhancement' if total_iteration >= recon_iters + clip_iters else 'reconstruction'
            for _ in range(batches[NETWORK]):
                loss = loss_of(phase, total_iteration)
                into = cur_iteration + 1
                if cur_iteration + 1 == train_thre and total_iteration > recon_iters + clip_iters and loss > 90:
                    train_thre += 60
                    total_thre += 60
                elif cur_iteration + 1 == train_thre:
                    cur_iteration += 1
                    total_iteration += 1
                    break
                cur_iteration += 1
                total_iteration += 1
        elif cur_iteration + 1 >= total_thre:
            cur_iteration = train_thre = total_thre = 0
            phase, into = None, 0
        else:
            initialising = total_iteration < clip_iters
            phase = 'init' if initialising else 'refinement'
            start = 0 if initialising else train_thre
            for _ in range(batches[INIT if initialising else REFINE]):
                loss = loss_of(phase, total_iteration)
                into = cur_iteration + 1 - start
                if cur_iteration + 1 == total_thre and loss > 60:
                    total_thre += 100
                elif cur_iteration + 1 == total_thre:
                    cur_iteration += 1
                    total_iteration += 1
                    refinements += not initialising
                    break
                cur_iteration += 1
                total_iteration += 1
    return total_iteration, refinements, phase, into


PHASE_NAMES = {
    Phase.PROMPT_INIT: 'init',
    Phase.RECONSTRUCTION: 'reconstruction',
    Phase.ENHANCEMENT: 'enhancement',
    Phase.PROMPT_REFINEMENT: 'refinement',
}


AUTHORS_DATA = PassLengths.of(380, 8, 380, 384, 16)  # BAID 380 backlit, DIV2K 384 well-lit, batches 8 and 16
STARTS = {  # (prompt initialisation, reconstruction): (authors' --num_clip_pretrained_iters, recon iters)
    (False, False): (0, 0),
    (True, False): (8000, 0),
    (False, True): (0, 1000),
    (True, True): (8000, 1000),
}


def package_run(options, end: RunEnd, prompt_init, reconstruction, loss_of=lambda phase, total: 0.0):
    """This package's schedule stepped as the training model steps it, until ``end`` says the run is over:
    the same summary as :func:`authors_loop`."""
    schedule = TrainingSchedule(options, prompt_init=prompt_init, reconstruction=reconstruction)
    end.start(schedule.phase)
    refinements, phase, into, iteration = 0, None, 0, 0
    while not end.ended:
        iteration += 1
        current = PHASE_NAMES[schedule.phase]
        into = into + 1 if current == phase else 1
        phase = current
        before = schedule.phase
        outcome = schedule.step(iteration, loss_of(phase, iteration - 1), psnr=30.0)
        refinements += outcome.transition is not None and before is Phase.PROMPT_REFINEMENT
        end.observe(before, outcome.transition is not None, schedule.phase)
    return iteration, refinements, phase, into


def test_pass_lengths_of_the_authors_data():
    assert AUTHORS_DATA == PassLengths(network=48, prompt_refinement=24, prompt_init=48)


@pytest.mark.parametrize('start', STARTS)
def test_authors_run_ends_where_the_authors_loop_ends(start):
    clip_iters, recon_iters = STARTS[start]
    batches = {NETWORK: 48, REFINE: 24, INIT: 48}
    total, refinements, phase, into = authors_loop(AUTHORS_NUM_EPOCHS, batches, clip_iters, recon_iters)
    length = authors_run(ScheduleOptions(), AUTHORS_DATA, *start)
    assert length.total_iter == total
    end = RunEnd(length, AUTHORS_DATA, prompt_learning=True, num_epochs=AUTHORS_NUM_EPOCHS)
    assert package_run(ScheduleOptions(), end, *start) == (total, refinements, phase, into)


def test_the_authors_figures():
    """23 rounds (71,300 iterations) from the released network and prompt; 21 rounds and 240 iterations
    after an 8000-iteration prompt initialisation (module docstring of run_length)."""
    both_loaded = authors_run(ScheduleOptions(), AUTHORS_DATA, False, False)
    assert (both_loaded.total_iter, both_loaded.rounds) == (71300, 23.0)
    initialised = authors_run(ScheduleOptions(), AUTHORS_DATA, True, False)
    assert initialised.total_iter == 8000 + 21 * 3100 + 240


@pytest.mark.parametrize('start', STARTS)
def test_extended_phases_end_where_the_authors_run_ends(start):
    """Phases extended (enhancement once a round, prompt refinement every third round): the package's run
    still ends at the authors' last pass, on the same iteration."""

    def loss_of(phase, total):
        if phase == 'enhancement':
            return 100.0 if total % 7 == 3 else 0.0  # above 90: extended where its last step lands here
        return 70.0 if phase == 'refinement' and total % 11 == 5 else 0.0  # above 60

    clip_iters, recon_iters = STARTS[start]
    batches = {NETWORK: 48, REFINE: 24, INIT: 48}
    authors = authors_loop(AUTHORS_NUM_EPOCHS, batches, clip_iters, recon_iters, loss_of)
    length = authors_run(ScheduleOptions(), AUTHORS_DATA, *start)
    end = RunEnd(length, AUTHORS_DATA, prompt_learning=True, num_epochs=AUTHORS_NUM_EPOCHS)
    ours = package_run(ScheduleOptions(), end, *start, loss_of=loss_of)
    assert ours == authors
    assert ours[0] != length.total_iter  # the extensions did move the end
    assert ours[0] <= end.max_iterations


@pytest.mark.parametrize('start', STARTS)
def test_rounds_run_is_whole_rounds(start):
    length = rounds_run(ScheduleOptions(), 3, *start)
    end = RunEnd(length, AUTHORS_DATA, prompt_learning=True, rounds=3)
    assert package_run(ScheduleOptions(), end, *start) == (length.total_iter, 3, 'refinement', 1000)

    def extend_round_one(phase, total):
        return 100.0 if phase == 'enhancement' and total % 100 == 99 else 0.0  # round 1's: once

    end = RunEnd(length, AUTHORS_DATA, prompt_learning=True, rounds=3)
    total, *rest = package_run(ScheduleOptions(), end, *start, loss_of=extend_round_one)
    assert rest[:2] == [3, 'refinement'] and total > length.total_iter


def _images(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    for i in range(count):
        cv2.imwrite(str(folder / f'{i:03d}.png'), np.full((4, 4, 3), i % 256, np.uint8))
    return folder


@pytest.fixture(scope='module')
def authors_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    return _images(root / 'backlit', 380), _images(root / 'welllit', 384)


def _shipped_options(backlit: Path, welllit: Path, **path) -> dict:
    opt = yaml.safe_load((REPO_ROOT / 'options' / 'train_cliplit.yml').read_text())
    opt['datasets']['train']['dataroot_backlit'] = str(backlit)
    opt['prompt_dataset'].update(dataroot_backlit=str(backlit), dataroot_welllit=str(welllit))
    del opt['datasets']['val']
    opt['path'].update(path)
    opt.update(is_train=True, world_size=1, rank=0, dist=False)
    return opt


@pytest.mark.parametrize(
    'path, start',
    [
        ({}, (True, False)),  # the shipped default: the authors' network, a prompt initialisation
        ({'pretrain_network_prompt': 'prompt.pth'}, (False, False)),
        ({'pretrain_network_g': None}, (True, True)),
        ({'pretrain_network_g': None, 'pretrain_network_prompt': 'prompt.pth'}, (False, True)),
    ],
)
def test_the_shipped_option_file_trains_the_authors_run(authors_data, path, start):
    opt = _shipped_options(*authors_data, **path)
    assert opt['train']['total_iter'] == 'auto'
    cliplit_options.prepare(opt)
    clip_iters, recon_iters = STARTS[start]
    batches = {NETWORK: 48, REFINE: 24, INIT: 48}
    total, refinements, phase, into = authors_loop(AUTHORS_NUM_EPOCHS, batches, clip_iters, recon_iters)
    assert opt['train']['total_iter'] == total  # the nominal length: BasicSR's ETA
    options = ScheduleOptions(**opt['train']['schedule'])
    assert package_run(options, opt['run_length'], *start) == (total, refinements, phase, into)
    assert f'{total} iterations' in opt['run_length'].describe()


def test_rounds_option(authors_data):
    opt = _shipped_options(*authors_data)
    opt['train']['schedule']['rounds'] = 5
    cliplit_options.prepare(opt)
    assert opt['train']['total_iter'] == 8000 + 5 * 3100
    assert opt['run_length'].rounds == 5


@pytest.mark.parametrize(
    'train, message',
    [
        ({'total_iter': 1000, 'schedule': {'rounds': 5}}, 'train.schedule.rounds needs train.total_iter: auto'),
        ({'total_iter': 'long'}, 'train.total_iter: expected a positive number of iterations or auto'),
        ({'total_iter': 0}, 'train.total_iter: expected a positive number of iterations or auto'),
        ({'schedule': {'rounds': 0}}, 'train.schedule.rounds=0 must be a positive integer'),
    ],
)
def test_bad_run_length_options(authors_data, train, message):
    opt = _shipped_options(*authors_data)
    opt['train'].update({k: v for k, v in train.items() if k != 'schedule'})
    opt['train']['schedule'].update(train.get('schedule', {}))
    with pytest.raises(OptionError, match=message):
        cliplit_options.prepare(opt)


@pytest.mark.parametrize('mode', ['cpu', 'cuda'])
def test_a_prefetching_loader_cannot_end_an_auto_run(authors_data, mode):
    """BasicSR's prefetchers load batches ahead: the run could not stop where the authors' loop does."""
    opt = _shipped_options(*authors_data)
    opt['datasets']['train']['prefetch_mode'] = mode
    with pytest.raises(OptionError, match=f'datasets.train.prefetch_mode: {mode} loads batches ahead'):
        cliplit_options.prepare(opt)
    opt['train']['total_iter'] = 1000  # a fixed length: BasicSR's loop counts the iterations itself
    cliplit_options.prepare(opt)


def test_distributed_pass_lengths():
    """On 2 processes each takes half of a pass: the pass length follows the per-process batch."""
    assert PassLengths.of(380, 4, 380, 384, 8, world_size=2) == PassLengths(48, 24, 48)
    assert PassLengths.of(380, 8, 380, 384, 16, world_size=2) == PassLengths(24, 12, 24)
