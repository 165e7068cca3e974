"""The training schedule state machine against the authors' train.py semantics.

Expected iterations are worked out by hand from the rules (lengths, extensions, 20/30 best tracking with
a zero-filled window, the two alternating result slots), never taken from this code's own output.
"""

import io
import math

import pytest
import torch

from cliplit_basicsr.models.schedule import PROMPT_BEST_START, Phase, ScheduleError, ScheduleOptions, TrainingSchedule

INIT, RECON, ENH, PROMPT = Phase.PROMPT_INIT, Phase.RECONSTRUCTION, Phase.ENHANCEMENT, Phase.PROMPT_REFINEMENT


def tiny(**overrides):
    values = dict(
        prompt_init_iters=4,
        prompt_init_min_iters=0,
        reconstruction_iters=3,
        reconstruction_min_iters=0,
        restart_after=2,
        restart_extension=2,
        enhancement_iters=4,
        enhancement_extension=2,
        prompt_refinement_iters=2,
        prompt_extension=3,
        check_period=2,
        prompt_check_period=2,
        window=3,
    )
    values.update(overrides)
    return ScheduleOptions(**values)


def run(schedule, iterations, loss=lambda phase, it: 1.0, psnr=lambda it: 30.0, start=1):
    """Step ``iterations`` times; returns [(iteration, phase, round, outcome)]."""
    trace = []
    for it in range(start, start + iterations):
        phase, rnd = schedule.phase, schedule.round
        out = schedule.step(it, loss(phase, it), psnr(it) if phase is RECON else None)
        trace.append((it, phase, rnd, out))
    return trace


def transitions(trace):
    return [(it, out.transition) for it, _, _, out in trace if out.transition]


def test_full_path_phase_order_and_lengths():
    schedule = TrainingSchedule(tiny(), prompt_init=True, reconstruction=True)
    trace = run(schedule, 4 + 3 + 2 * (4 + 2))
    assert transitions(trace) == [
        (4, (INIT, RECON)),
        (7, (RECON, ENH)),
        (11, (ENH, PROMPT)),
        (13, (PROMPT, ENH)),
        (17, (ENH, PROMPT)),
        (19, (PROMPT, ENH)),
    ]
    assert [rnd for it, phase, rnd, _ in trace if phase is ENH] == [1] * 4 + [2] * 4
    assert schedule.round == 3 and schedule.phase is ENH


@pytest.mark.parametrize(
    'prompt_init,reconstruction,first',
    [(True, True, INIT), (False, True, RECON), (True, False, INIT), (False, False, ENH)],
)
def test_loaded_prompt_or_network_skips_stages(prompt_init, reconstruction, first):
    schedule = TrainingSchedule(tiny(), prompt_init=prompt_init, reconstruction=reconstruction)
    assert schedule.phase is first
    phases = [phase for _, phase, _, _ in run(schedule, 12)]
    assert (INIT in phases) == prompt_init and (RECON in phases) == reconstruction
    assert phases[-1] in (ENH, PROMPT)


def test_enhancement_extended_while_last_loss_above_threshold():
    # the phase's last step is checked; 60-style extensions repeat while the loss stays above 90
    high_until = 9  # steps 4 (end) and 6 (1st extension end) are above, step 8 is above, 10 is not

    def loss(phase, it):
        return 95.0 if phase is ENH and it <= high_until else 50.0

    schedule = TrainingSchedule(tiny(enhancement_loss_threshold=90.0), prompt_init=False, reconstruction=False)
    trace = run(schedule, 12, loss)
    assert [it for it, _, _, out in trace if out.extended] == [4, 6, 8]
    assert transitions(trace)[0] == (10, (ENH, PROMPT))
    # a loss above the threshold before the end changes nothing
    schedule = TrainingSchedule(tiny(), prompt_init=False, reconstruction=False)
    trace = run(schedule, 6, lambda phase, it: 500.0 if it < 4 else 1.0)
    assert transitions(trace)[0] == (4, (ENH, PROMPT)) and not any(out.extended for *_, out in trace)


def test_prompt_phases_extended_by_their_threshold():
    def loss(phase, it):
        return 70.0 if phase is PROMPT and it < 12 else 1.0  # refinement ends at 6; extended to 9, then 12

    schedule = TrainingSchedule(tiny(prompt_loss_threshold=60.0), prompt_init=False, reconstruction=False)
    trace = run(schedule, 14, loss)
    assert [it for it, _, _, out in trace if out.extended] == [6, 9]
    assert transitions(trace)[:2] == [(4, (ENH, PROMPT)), (12, (PROMPT, ENH))]
    # prompt initialisation follows the same rule (the authors' code checks it there too)
    schedule = TrainingSchedule(tiny(), prompt_init=True, reconstruction=False)
    trace = run(schedule, 8, lambda phase, it: 61.0 if it == 4 else 1.0)
    assert [it for it, _, _, out in trace if out.extended] == [4]
    assert transitions(trace)[0] == (7, (INIT, ENH))


def test_reconstruction_restart_branch():
    # PSNR far below 8 dB: restart at the first step with more than restart_after=2 steps since (re)start,
    # the stage grows by 2 each time (counted from its start); good PSNR afterwards lets it finish.
    options = tiny(reconstruction_iters=4, restart_after=2, restart_extension=2, window=2)
    schedule = TrainingSchedule(options, prompt_init=False, reconstruction=True)
    trace = run(schedule, 12, psnr=lambda it: 5.0 if it <= 6 else 40.0)
    assert [it for it, _, _, out in trace if out.restart_network] == [3, 6]
    # length 4 + 2 + 2 = 8; at 7 the window mean is (5 + 40) / 2 = 22.5 dB, so no third restart
    assert transitions(trace)[0] == (8, (RECON, ENH))
    assert schedule.state_dict()['restarts'] == 2


def test_reconstruction_psnr_window_mean_and_threshold():
    options = tiny(reconstruction_iters=10, restart_after=3, window=3, restart_psnr=8.0)
    schedule = TrainingSchedule(options, prompt_init=False, reconstruction=True)
    # window means: steps 4..: (7+9+9)/3 > 8 ; then (7+7+9)/3 = 7.67 < 8 at step 5
    values = {1: 9.0, 2: 9.0, 3: 9.0, 4: 7.0, 5: 7.0}
    trace = run(schedule, 5, psnr=lambda it: values[it])
    assert [it for it, _, _, out in trace if out.restart_network] == [5]


def test_best_network_tracking_uses_zero_filled_window_and_period():
    # window 3, checks at even global iterations; enhancement starts at iteration 1
    losses = {1: 10.0, 2: 10.0, 3: 1.0, 4: 1.0, 5: 1.0, 6: 100.0, 7: 1.0, 8: 1.0}
    options = tiny(enhancement_iters=8, enhancement_loss_threshold=1e9)
    schedule = TrainingSchedule(options, prompt_init=False, reconstruction=False)
    trace = run(schedule, 8, lambda phase, it: losses[it])
    # it 2: mean (-10 - 10 + 0) / 3 = -6.67 (> -inf); it 4: (-10 - 1 - 1) / 3 = -4 (better);
    # it 6: (-1 - 1 - 100) / 3 (worse); it 8: (-100 - 1 - 1) / 3 (worse)
    assert [it for it, _, _, out in trace if out.snapshot_slot is not None] == [2, 4]
    assert schedule.state_dict()['best_iter'] == 4


def test_best_network_resets_each_round():
    options = tiny(enhancement_iters=4, prompt_refinement_iters=2)
    schedule = TrainingSchedule(options, prompt_init=False, reconstruction=False)
    # round 1 losses tiny, round 2 huge: round 2's first check still takes a snapshot. At iteration 4 the
    # full window (-0.1 each) is worse than iteration 2's zero-padded one (-0.2 / 3): no snapshot.
    trace = run(schedule, 10, lambda phase, it: 0.1 if it <= 4 else 1000.0 if phase is ENH else 1.0)
    assert [(it, rnd) for it, _, rnd, out in trace if out.snapshot_slot is not None] == [(2, 1), (8, 2)]


def test_best_prompt_saved_at_checks_only_when_lowest_and_below_start():
    options = tiny(prompt_init_iters=10, prompt_loss_threshold=1e9)
    schedule = TrainingSchedule(options, prompt_init=True, reconstruction=False)
    losses = {1: 0.1, 2: 150.0, 3: 0.1, 4: 5.0, 5: 0.1, 6: 7.0, 7: 0.1, 8: 3.0, 9: 0.0, 10: 4.0}
    trace = run(schedule, 10, lambda phase, it: losses[it])
    # it 2: 150 >= the authors' start value 100 -> no; it 4: 5 -> yes; 6: 7 no; 8: 3 yes; 10: 4 no
    assert PROMPT_BEST_START == 100.0
    assert [it for it, _, _, out in trace if out.save_prompt] == [4, 8]


def _newest_previous_rounds(schedule):
    slots = schedule.ranking_slots()
    return tuple(schedule.slot_rounds[s] for s in slots)


def test_it_and_it_minus_one_alternate_between_slots():
    options = tiny(enhancement_iters=4, prompt_refinement_iters=2)
    schedule = TrainingSchedule(options, prompt_init=False, reconstruction=False)
    seen = {}
    for it in range(1, 31):
        if schedule.phase is PROMPT:
            seen[schedule.round] = (schedule.ranking_slots(), _newest_previous_rounds(schedule))
        elif schedule.phase is ENH:
            round_ = schedule.round
            slot = schedule.step(it, 1.0).snapshot_slot
            if slot is not None:
                assert schedule.slot_rounds[slot] == round_
            continue
        schedule.step(it, 1.0)
    # round 1: only I_t (3-term ranking) from slot 0; then I_t is always the newest round, I_{t-1} the one
    # before, and the two slots alternate
    assert seen[1] == ((0,), (1,))
    assert seen[2] == ((1, 0), (2, 1))
    assert seen[3] == ((0, 1), (3, 2))
    assert seen[4] == ((1, 0), (4, 3))


def test_ranking_before_any_output_and_ablations():
    # an enhancement phase without a check iteration leaves no output: ranking is backlit vs well-lit
    options = tiny(enhancement_iters=1, check_period=1000)
    schedule = TrainingSchedule(options, prompt_init=False, reconstruction=False)
    schedule.step(1, 1.0)
    assert schedule.phase is PROMPT and schedule.ranking_slots() == ()
    for ranking_outputs, expected in ((0, ()), (1, (1,)), (2, (1, 0))):
        schedule = TrainingSchedule(tiny(ranking_outputs=ranking_outputs), prompt_init=False, reconstruction=False)
        run(schedule, 10)  # round 1 (4 + 2), round 2 enhancement (4): now refining after round 2
        assert schedule.phase is PROMPT and schedule.round == 2
        assert schedule.ranking_slots() == expected


def test_fixed_prompts_have_no_prompt_phases():
    schedule = TrainingSchedule(tiny(prompt_learning=False), prompt_init=True, reconstruction=False)
    trace = run(schedule, 12)
    assert {phase for _, phase, _, _ in trace} == {ENH}
    assert [(it, rnd) for it, _, rnd, out in trace if out.transition] == [(4, 1), (8, 2), (12, 3)]


def test_state_round_trip_continues_identically():
    options = tiny()

    def loss(phase, it):
        return float((it * 37) % 11) * (20 if phase is ENH else 10)

    reference = TrainingSchedule(options, prompt_init=True, reconstruction=True)
    run(reference, 15, loss)
    buffer = io.BytesIO()
    torch.save(reference.state_dict(), buffer)
    buffer.seek(0)
    restored = TrainingSchedule(options, prompt_init=False, reconstruction=False)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.state_dict() == reference.state_dict()
    expected = run(reference, 20, loss, start=16)
    actual = run(restored, 20, loss, start=16)
    assert [(it, p, r, vars(o)) for it, p, r, o in actual] == [(it, p, r, vars(o)) for it, p, r, o in expected]


@pytest.mark.parametrize(
    'bad,message',
    [
        (dict(enhancement_iters=0), 'enhancement_iters=0'),
        (dict(window=-1), 'window=-1'),
        (dict(check_period=2.5), 'check_period=2.5'),
        (dict(ranking_outputs=3), 'ranking_outputs=3'),
    ],
)
def test_bad_options_are_one_line_errors(bad, message):
    with pytest.raises(ScheduleError, match=message) as info:
        tiny(**bad)
    assert '\n' not in str(info.value)


def test_minimum_stage_lengths_are_enforced_only_for_stages_that_run():
    options = ScheduleOptions(prompt_init_iters=100, reconstruction_iters=50)
    with pytest.raises(ScheduleError, match='prompt_init_iters=100 is below prompt_init_min_iters=3000'):
        TrainingSchedule(options, prompt_init=True, reconstruction=False)
    with pytest.raises(ScheduleError, match='reconstruction_iters=50 is below reconstruction_min_iters=200'):
        TrainingSchedule(options, prompt_init=False, reconstruction=True)
    assert TrainingSchedule(options, prompt_init=False, reconstruction=False).phase is ENH


def test_authors_defaults():
    o = ScheduleOptions()
    assert (
        o.prompt_init_iters,
        o.reconstruction_iters,
        o.enhancement_iters,
        o.enhancement_iters + o.prompt_refinement_iters,
    ) == (8000, 1000, 2100, 3100)
    assert (o.enhancement_extension, o.enhancement_loss_threshold, o.prompt_extension, o.prompt_loss_threshold) == (
        60,
        90.0,
        100,
        60.0,
    )
    assert (o.check_period, o.window, o.restart_psnr, o.restart_after, o.restart_extension) == (20, 30, 8.0, 100, 100)
    assert math.isinf(TrainingSchedule(o, False, False).state_dict()['best_score'])


@pytest.mark.parametrize('order', ['code', 'paper'])
def test_newest_slot_is_i_t_for_the_ranking_loss_under_both_orders(order):
    """The model passes the outputs of ``ranking_slots()`` in order (newest, previous) to the ranking loss;
    with ``order: code`` the newest (round 2) must be ranked more backlit than round 1, with ``paper`` less."""
    from cliplit_basicsr.clip import negative_scores
    from cliplit_basicsr.losses.cliplit_loss import CLIPLITPromptRankingLoss

    schedule = TrainingSchedule(tiny(), prompt_init=False, reconstruction=False)
    run(schedule, 10)  # now refining after round 2
    text = torch.eye(4)[:2]  # negative prompt along e0, positive along e1

    def feature(s_value):  # an image feature whose negative score S is s_value
        angle = math.atan2(1.0, 1.0) - math.asin(math.log(s_value / (1 - s_value)) / 100 / math.sqrt(2))
        return torch.tensor([[math.cos(angle), math.sin(angle), 0.0, 0.0]])

    by_round = {1: feature(0.7), 2: feature(0.3)}  # the newest output already looks less backlit
    sets = [by_round[schedule.slot_rounds[slot]] for slot in schedule.ranking_slots()]
    backlit, welllit = feature(0.99), feature(0.01)
    loss = CLIPLITPromptRankingLoss(loss_weight=1.0, order=order)(text, backlit, welllit, *sets)

    s_new, s_prev = (float(negative_scores(f, text)) for f in sets)
    assert (s_new, s_prev) == pytest.approx((0.3, 0.7), abs=1e-4)
    more, less = (s_new, s_prev) if order == 'code' else (s_prev, s_new)
    expected = (
        max(0, 0.9 - (0.99 - 0.01))
        + max(0, 0.9 - (0.99 - more))
        + max(0, 0.1 - (more - less))
        + max(0, 0.1 - (less - 0.01))
    )
    assert float(loss) == pytest.approx(expected, abs=1e-4)
    assert (max(0, 0.1 - (more - less)) > 0) == (order == 'code')  # only code order penalises I_t < I_{t-1}


def test_snapshot_on_the_last_enhancement_step_fills_the_slot_refinement_ranks():
    # every enhancement step is a check and ends the phase: the step's outcome names the slot of the round
    # that just ended, although the schedule has moved on to refinement (and flipped its pointer)
    options = tiny(enhancement_iters=1, check_period=1, prompt_refinement_iters=1)
    schedule = TrainingSchedule(options, prompt_init=False, reconstruction=False)
    for it, expected_ranking in ((1, (0,)), (3, (1, 0)), (5, (0, 1))):
        assert schedule.phase is ENH
        outcome = schedule.step(it, 1.0)
        assert outcome.transition == (ENH, PROMPT)
        assert schedule.ranking_slots() == expected_ranking
        assert outcome.snapshot_slot == expected_ranking[0]  # I_t: the newest round's best
        schedule.step(it + 1, 1.0)


def test_tensor_values_decide_as_numbers_and_are_read_only_where_a_decision_needs_them(monkeypatch):
    """Losses kept on the device (0-dim tensors) give the same phase sequence, switch iterations, snapshots,
    saves, restarts and state as the same values as numbers, and are read only at check iterations, at
    scheduled phase ends and in reconstruction once its restart test applies."""
    import cliplit_basicsr.models.schedule as schedule_module

    generator = torch.Generator().manual_seed(0)
    losses = (torch.rand(400, generator=generator) * 120).tolist()  # float32 values, some above 60 and 90
    psnrs = (torch.rand(400, generator=generator) * 8 + 3).tolist()  # around the restart threshold of 8 dB

    def trace_of(as_tensor):
        reads = []
        real_read = schedule_module.read_value

        def counted(value):
            reads.append(current[0])
            return real_read(value)

        monkeypatch.setattr(schedule_module, 'read_value', counted)
        options = tiny(
            reconstruction_iters=9,
            check_period=5,
            prompt_check_period=5,
            restart_psnr=8.0,
            enhancement_loss_threshold=90.0,
            prompt_loss_threshold=60.0,
        )
        schedule, current, outcomes = TrainingSchedule(options, prompt_init=True, reconstruction=True), [0], []
        for it in range(1, 401):
            current[0] = (
                it,
                schedule.phase,
                schedule.phase_iter + 1,
                schedule.phase_length,
                schedule._s.steps_since_restart + 1,
            )
            value = torch.tensor(losses[it - 1]) if as_tensor else losses[it - 1]
            psnr = torch.tensor(psnrs[it - 1]) if as_tensor else psnrs[it - 1]
            outcomes.append(
                (schedule.phase, schedule.round, schedule.step(it, value, psnr if schedule.phase is RECON else None))
            )
        return outcomes, schedule.state_dict(), reads

    numbers, tensors = trace_of(False), trace_of(True)
    assert tensors[0] == numbers[0] and tensors[1] == numbers[1]
    assert len({phase for phase, _, _ in numbers[0]}) == 4 and any(o.extended for _, _, o in numbers[0])
    assert any(o.restart_network for _, _, o in numbers[0]) and any(
        o.snapshot_slot is not None for _, _, o in numbers[0]
    )
    options = tiny(check_period=5, prompt_check_period=5)
    for it, phase, phase_iter, length, since_restart in tensors[2]:
        check = options.check_period if phase is ENH else options.prompt_check_period
        at_end = phase_iter >= length
        in_restart_test = phase is RECON and since_restart > options.restart_after
        assert (phase is not RECON and it % check == 0) or at_end or in_restart_test, (it, phase)
    assert len(tensors[2]) <= 300  # these tiny phases end often; still, many steps read nothing
