"""CLIP-LIT's training schedule (docs/method.md, Training schedule) as a pure-Python state machine.

The authors' ``train.py`` drives its phases with a handful of counters inside nested loops. This module
keeps the same decisions in one object that is told the (rank-averaged) loss of every step and answers
what to do next, so the model stays free of bookkeeping and the schedule can be unit-tested and resumed:

1. ``prompt_init`` — cross-entropy prompt initialisation (skipped when a prompt pair is loaded).
2. ``reconstruction`` — identity-only training of the network (skipped when an initial network is
   loaded). When the mean PSNR over the last ``window`` steps is below ``restart_psnr`` more than
   ``restart_after`` steps after the last (re)start, the network is re-initialised and the stage made
   ``restart_extension`` steps longer (counted from the stage's start, as the authors do).
3. Rounds of ``enhancement`` then ``prompt_refinement``. A phase whose *last* step's loss is above its
   threshold is extended (``enhancement_extension`` / ``prompt_extension`` steps) and checked again at
   its new end.

Best tracking, exactly as the authors' code behaves:

* Enhancement: a window of ``window`` values, reset to zeros when a round starts, receives ``-loss``
  after every step; at every global iteration divisible by ``check_period`` whose window mean
  (``sum / window``, zeros included) beats the round's best, the live network is the round's best: the
  model snapshots it into the result slot the step names (``StepOutcome.snapshot_slot``). The authors'
  "best" object is an alias of the live network, so training always continues from the current weights;
  only the snapshot (the source of the enhanced outputs I_t) is taken.
* Prompts: at every global iteration divisible by ``prompt_check_period`` whose loss is below the
  lowest seen so far (reset to ``PROMPT_BEST_START`` each round), the prompt pair is saved. Again the
  live pair keeps training.

I_t and I_{t-1}: the authors alternate two result slots. Enhancement writes slot ``pointer``; each
prompt-refinement phase flips ``pointer`` first and then ranks with the newest slot (``1 - pointer``)
and the previous one (``pointer``). Before any result exists, ranking uses backlit vs well-lit only;
with one result, the 3-term form. Which of the two is ranked as more backlit (``order: code|paper``) is
the ranking loss's business; this module only says which slot is newest.

The module holds the options and the state machine together (about 320 lines): every option is read by
one transition, and both are tested and resumed as one.
"""

import math
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Dict, List, Optional, Tuple, Union

import torch

from cliplit_basicsr.errors import OptionError

PROMPT_BEST_START = 100.0  # the authors' initial ``min_prompt_loss``: larger losses never count as best

Value = Union[float, torch.Tensor]  # a step's loss or PSNR: a number, or a 0-dim tensor on the training device


def read_value(value: Value) -> float:
    """A step's value as a Python number: for a tensor on a GPU, the one point where the host waits for it."""
    return float(value)


class ScheduleError(OptionError):
    """A schedule option that is out of range (reported as one line)."""


class Phase(str, Enum):
    PROMPT_INIT = 'prompt_init'
    RECONSTRUCTION = 'reconstruction'
    ENHANCEMENT = 'enhancement'
    PROMPT_REFINEMENT = 'prompt_refinement'

    @property
    def trains_network(self) -> bool:
        return self in (Phase.RECONSTRUCTION, Phase.ENHANCEMENT)


@dataclass(frozen=True)
class ScheduleOptions:
    """Every length, threshold and period of the schedule (defaults: the authors' values)."""

    prompt_init_iters: int = 8000  # run only when no prompt pair is loaded
    prompt_init_min_iters: int = 3000  # the authors refuse shorter initialisations
    reconstruction_iters: int = 1000  # run only when no initial network is loaded
    reconstruction_min_iters: int = 200
    restart_psnr: float = 8.0  # dB, mean over the window, output vs input (Y, BT.601)
    restart_after: int = 100  # steps since the last (re)start before the PSNR check applies
    restart_extension: int = 100
    enhancement_iters: int = 2100
    enhancement_extension: int = 60
    enhancement_loss_threshold: float = 90.0  # 320 * L_clip + 0.9 * 25 * L_id of the phase's last step
    prompt_refinement_iters: int = 1000  # the authors: until iteration 3100 of the round
    prompt_extension: int = 100
    prompt_loss_threshold: float = 60.0  # initialisation too, extended otherwise (docs/differences.md)
    check_period: int = 20  # best-network checks on global iterations divisible by this
    prompt_check_period: int = 20  # best-prompt checks likewise
    window: int = 30  # running-mean length for best tracking and the restart test
    ranking_outputs: int = 2  # enhanced-output rounds ranked in prompt refinement: 0, 1 (no I_{t-1}) or 2
    prompt_learning: bool = True  # False: fixed prompts, rounds are enhancement only
    # The run's length when train.total_iter is auto (cliplit_basicsr.models.run_length): this many whole
    # rounds, or (rounds: null) as many iterations as the authors' num_epochs passes hold.
    rounds: Optional[int] = None
    authors_num_epochs: int = 2000

    def __post_init__(self):
        positive = ('enhancement_iters', 'check_period', 'prompt_check_period', 'window', 'authors_num_epochs')
        non_negative = (
            'prompt_init_iters',
            'prompt_init_min_iters',
            'reconstruction_iters',
            'reconstruction_min_iters',
            'restart_after',
            'restart_extension',
            'enhancement_extension',
            'prompt_refinement_iters',
            'prompt_extension',
        )
        for name in positive + non_negative:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (1 if name in positive else 0):
                bound = 'a positive' if name in positive else 'a non-negative'
                raise ScheduleError(f'train.schedule.{name}={value!r} must be {bound} integer')
        if self.rounds is not None and (
            isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1
        ):
            raise ScheduleError(f'train.schedule.rounds={self.rounds!r} must be a positive integer or null')
        if self.ranking_outputs not in (0, 1, 2):
            raise ScheduleError(f'train.schedule.ranking_outputs={self.ranking_outputs!r} must be 0, 1 or 2')
        if self.prompt_learning and self.prompt_refinement_iters < 1:
            raise ScheduleError('train.schedule.prompt_refinement_iters must be >= 1 when prompts are learned')

    def check_lengths(self, prompt_init: bool, reconstruction: bool) -> None:
        """Refuse stages shorter than the authors' minimum (they silently reset such values)."""
        if prompt_init and self.prompt_init_iters < self.prompt_init_min_iters:
            raise ScheduleError(
                f'train.schedule.prompt_init_iters={self.prompt_init_iters} is below '
                f'prompt_init_min_iters={self.prompt_init_min_iters}'
            )
        if reconstruction and self.reconstruction_iters < self.reconstruction_min_iters:
            raise ScheduleError(
                f'train.schedule.reconstruction_iters={self.reconstruction_iters} is below '
                f'reconstruction_min_iters={self.reconstruction_min_iters}'
            )

    @classmethod
    def names(cls) -> List[str]:
        return [f.name for f in fields(cls)]


@dataclass
class StepOutcome:
    """What the model must do after a step (``transition`` is ``(old, new)`` phase when the phase ended)."""

    # the live network is the round's best: copy it into this result slot (named here, because after a step
    # that ends the phase the schedule already points at the next round's slot)
    snapshot_slot: Optional[int] = None
    save_prompt: bool = False  # the prompt pair has the lowest loss seen at a check
    restart_network: bool = False  # reconstruction failed: re-initialise network and its optimiser
    extended: bool = False  # the phase was lengthened instead of ending
    transition: Optional[Tuple[Phase, Phase]] = None


@dataclass
class _State:
    phase: str
    round: int = 0  # 1-based index of the enhancement/prompt round; 0 before the rounds
    phase_iter: int = 0  # steps done in the current phase
    phase_length: int = 0  # current length of the phase, extensions included
    extensions: int = 0  # extensions of the current phase
    window: List[float] = field(default_factory=list)
    window_pos: int = 0
    best_score: float = -math.inf  # best window mean of the round's enhancement checks
    best_iter: int = 0  # global iteration of that best, 0 if none
    min_prompt_loss: float = PROMPT_BEST_START
    best_prompt_iter: int = 0
    steps_since_restart: int = 0
    restarts: int = 0
    slots: List[Optional[int]] = field(default_factory=lambda: [None, None])  # round whose best fills a slot
    pointer: int = 0


class TrainingSchedule:
    """The phase machine. Call `step` once per training iteration with that iteration's loss."""

    def __init__(self, options: ScheduleOptions, prompt_init: bool, reconstruction: bool):
        options.check_lengths(prompt_init, reconstruction)
        self.options = options
        self._reconstruction = reconstruction
        first = (
            Phase.PROMPT_INIT
            if prompt_init and options.prompt_learning
            else Phase.RECONSTRUCTION
            if reconstruction
            else Phase.ENHANCEMENT
        )
        self._s = _State(phase=first.value)
        self._enter(first)

    # -- queries -------------------------------------------------------------------------------------
    @property
    def phase(self) -> Phase:
        """The phase the next step belongs to."""
        return Phase(self._s.phase)

    @property
    def round(self) -> int:
        return self._s.round

    @property
    def phase_iter(self) -> int:
        return self._s.phase_iter

    @property
    def phase_length(self) -> int:
        return self._s.phase_length

    @property
    def extensions(self) -> int:
        """How many times in a row the current phase has been extended."""
        return self._s.extensions

    @property
    def slot_rounds(self) -> Tuple[Optional[int], Optional[int]]:
        """For each slot, the round whose best network it holds (None: empty)."""
        return tuple(self._s.slots)

    def ranking_slots(self) -> Tuple[int, ...]:
        """Slots whose outputs the current prompt refinement ranks: ``()``, ``(newest,)`` or
        ``(newest, previous)`` — i.e. the sources of I_t and I_{t-1}."""
        slots, pointer = self._s.slots, self._s.pointer
        if self.options.ranking_outputs == 0 or slots[0] is None:
            return ()
        if slots[1] is None:
            return (0,)
        newest, previous = 1 - pointer, pointer
        return (newest,) if self.options.ranking_outputs == 1 else (newest, previous)

    def describe(self) -> str:
        """One line for the log: phase, round, position."""
        return f'{self.phase.value} (round {self._s.round}) step {self._s.phase_iter}/{self._s.phase_length}'

    # -- transitions ---------------------------------------------------------------------------------
    def _enter(self, phase: Phase) -> None:
        s, o = self._s, self.options
        s.phase, s.phase_iter, s.extensions = phase.value, 0, 0
        s.window, s.window_pos = [0.0] * o.window, 0
        self._window: Optional[torch.Tensor] = None  # the window on the values' device, once one is a tensor
        if phase is Phase.PROMPT_INIT:
            s.phase_length = o.prompt_init_iters
        elif phase is Phase.RECONSTRUCTION:
            s.phase_length, s.steps_since_restart = o.reconstruction_iters, 0
        elif phase is Phase.ENHANCEMENT:
            s.round += 1
            s.phase_length = o.enhancement_iters
            s.best_score, s.best_iter = -math.inf, 0
            s.min_prompt_loss, s.best_prompt_iter = PROMPT_BEST_START, 0
        else:
            s.phase_length = o.prompt_refinement_iters
            s.pointer = 1 - s.pointer

    def _next_phase(self) -> Phase:
        phase = self.phase
        if phase is Phase.PROMPT_INIT and self._reconstruction_pending:
            return Phase.RECONSTRUCTION
        if phase is Phase.ENHANCEMENT and self.options.prompt_learning:
            return Phase.PROMPT_REFINEMENT
        return Phase.ENHANCEMENT

    @property
    def _reconstruction_pending(self) -> bool:
        return self._s.round == 0 and self._reconstruction

    def _push(self, value: Value) -> None:
        """Put ``value`` in the running window; a tensor stays where it is (no read)."""
        s = self._s
        if torch.is_tensor(value) and self._window is None:
            self._window = torch.tensor(s.window, dtype=torch.float64, device=value.device)
        if self._window is not None:
            self._window[s.window_pos] = value
        else:
            s.window[s.window_pos] = float(value)
        s.window_pos = (s.window_pos + 1) % len(s.window)

    def _window_mean(self) -> float:
        s = self._s
        if self._window is None:
            return sum(s.window) / len(s.window)
        return read_value(self._window.sum()) / len(s.window)

    def step(self, iteration: int, loss: Value, psnr: Optional[Value] = None) -> StepOutcome:
        """Account for the step at global ``iteration`` (1-based, BasicSR's ``current_iter``).

        ``loss`` is the step's total loss of the current phase; ``psnr`` (reconstruction only) the mean
        PSNR of output vs input. Both must already be averaged over ranks so that every rank decides
        alike. Either may be a tensor on the training device: it is read (:func:`read_value`) only where a
        decision needs it: at the phase's check iterations, at its scheduled end, and, in reconstruction,
        once the restart test applies.
        """
        s, o, phase = self._s, self.options, self.phase
        out = StepOutcome()
        s.phase_iter += 1
        if phase is Phase.RECONSTRUCTION:
            if psnr is None:
                raise ValueError('the reconstruction phase needs the step PSNR')
            self._push(psnr)
            s.steps_since_restart += 1
            if s.steps_since_restart > o.restart_after and self._window_mean() < o.restart_psnr:
                out.restart_network = True
                s.steps_since_restart, s.restarts = 0, s.restarts + 1
                s.phase_length += o.restart_extension
        elif phase is Phase.ENHANCEMENT:
            self._push(-loss)
            if iteration % o.check_period == 0:
                mean = self._window_mean()
                if mean > s.best_score:
                    s.best_score, s.best_iter = mean, iteration
                    s.slots[s.pointer] = s.round
                    out.snapshot_slot = s.pointer
        elif iteration % o.prompt_check_period == 0:
            value = read_value(loss)
            if value < s.min_prompt_loss:
                s.min_prompt_loss, s.best_prompt_iter = value, iteration
                out.save_prompt = True

        if s.phase_iter >= s.phase_length:
            threshold, extension = {
                Phase.ENHANCEMENT: (o.enhancement_loss_threshold, o.enhancement_extension),
                Phase.PROMPT_INIT: (o.prompt_loss_threshold, o.prompt_extension),
                Phase.PROMPT_REFINEMENT: (o.prompt_loss_threshold, o.prompt_extension),
            }.get(phase, (math.inf, 0))
            if extension > 0 and read_value(loss) > threshold:
                s.phase_length += extension
                s.extensions += 1
                out.extended = True
            else:
                new = self._next_phase()
                self._enter(new)
                out.transition = (phase, new)
        return out

    # -- resume --------------------------------------------------------------------------------------
    def state_dict(self) -> Dict:
        """Plain Python values only (loadable with ``torch.load(weights_only=True)``)."""
        state = asdict(self._s)
        if self._window is not None:
            state['window'] = self._window.tolist()
        state['reconstruction'] = self._reconstruction
        return state

    def load_state_dict(self, state: Dict) -> None:
        state = dict(state)
        self._reconstruction = bool(state.pop('reconstruction'))
        self._s = _State(**state)
        self._s.window = [float(v) for v in self._s.window]
        self._window = None
        self._s.slots = list(self._s.slots)
