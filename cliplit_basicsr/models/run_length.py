"""How long CLIP-LIT trains: the authors' run, counted as their ``train.py`` counts it.

The authors' ``train.py`` stops after ``--num_epochs`` (2000) passes of its outer loop
``for epoch in range(config.num_epochs)``. Each pass is one of:

* one pass over a loader, cut short where a phase ends (a phase always starts a fresh pass): the
  enhancement and reconstruction phases iterate the backlit loader (380 images at batch 8, the last
  partial batch kept: 48 iterations a pass), prompt refinement the paired loader (``max(backlit,
  well-lit)`` = 384 pairs at batch 16: 24), prompt initialisation the pooled loader (2 x 384 images at
  batch 16: 48);
* or a *switch*, a pass without iterations, which closes a round (after its prompt refinement), the
  prompt initialisation and the reconstruction stage.

So with the defaults a round takes ``ceil(2100 / 48) + ceil(1000 / 24) + 1 = 44 + 42 + 1 = 87`` passes and
3100 iterations. From the released initial network and prompt (the authors' default start) 2000 passes
are 22 rounds plus the 23rd round's enhancement and refinement: 23 rounds, 71,300 iterations. After an
8000-iteration prompt initialisation (167 passes and a switch) they are 21 rounds and 240 iterations of
the 22nd round's enhancement: 73,340 iterations. :func:`authors_run` counts this for any data sizes,
batch sizes, schedule and starting point, as long as no phase is extended.

A phase extended while its loss stays above a threshold uses passes too: an extension that reaches into
another pass of its loader leaves one pass fewer at the end of the run. :class:`RunEnd` follows the run as
it goes and ends it where the authors' loop would, extensions included; or after ``rounds`` whole rounds.
"""

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

from .schedule import Phase, ScheduleOptions

AUTHORS_NUM_EPOCHS = 2000  # train.py's --num_epochs default (also in its README's from-scratch command)
ROUNDS_BOUND = 10  # a rounds run whose phases keep being extended stops at 10x its nominal length


@dataclass(frozen=True)
class PassLengths:
    """Iterations in one full pass over each loader (batches per epoch, the last partial batch kept)."""

    network: int  # backlit images (reconstruction, enhancement)
    prompt_refinement: int  # (backlit, well-lit) pairs
    prompt_init: int  # backlit and well-lit images, pooled

    @classmethod
    def of(
        cls, backlit: int, network_batch: int, prompt_backlit: int, welllit: int, prompt_batch: int, world_size: int = 1
    ) -> 'PassLengths':
        """For the network phases' ``backlit`` images and the prompt phases' ``prompt_backlit`` and ``welllit``
        images, at per-process batch sizes on ``world_size`` processes (each takes ``ceil(n / world_size)``
        items of a pass, as BasicSR's sampler gives them)."""

        def batches(items: int, batch: int) -> int:
            return math.ceil(math.ceil(items / world_size) / batch)

        pairs = max(prompt_backlit, welllit)
        return cls(batches(backlit, network_batch), batches(pairs, prompt_batch), batches(2 * pairs, prompt_batch))

    def of_phase(self, phase: Phase) -> int:
        """The pass length of the loader ``phase`` iterates."""
        if phase is Phase.PROMPT_INIT:
            return self.prompt_init
        return self.prompt_refinement if phase is Phase.PROMPT_REFINEMENT else self.network


@dataclass(frozen=True)
class RunLength:
    """A run's nominal length (no phase extended): ``total_iter`` and how it divides into stages."""

    total_iter: int
    rounds: float  # completed rounds, plus the completed share of a last, partial round
    stages: Tuple[Tuple[str, int], ...]  # (stage, iterations) in order, e.g. ('round 1 enhancement', 2100)

    def describe(self) -> str:
        parts: List[str] = [f'{name} {iterations}' for name, iterations in self.stages if not name.startswith('round ')]
        rounds = f'{self.rounds:.2f}'.rstrip('0').rstrip('.')
        parts.append(f'{rounds} rounds')
        return f'{self.total_iter} iterations: ' + ', '.join(parts)


def switch_after(phase: Phase, prompt_learning: bool) -> bool:
    """Whether the authors' loop spends a pass without iterations after ``phase`` ends: after prompt
    initialisation, reconstruction and each round (its prompt refinement, or its enhancement when prompts
    are not learned)."""
    return phase is not Phase.ENHANCEMENT or not prompt_learning


def _stages(options: ScheduleOptions, prompt_init: bool, reconstruction: bool):
    """(phase, name, iterations) in the authors' order, forever."""
    if prompt_init and options.prompt_learning:
        yield Phase.PROMPT_INIT, 'prompt initialisation', options.prompt_init_iters
    if reconstruction:
        yield Phase.RECONSTRUCTION, 'reconstruction', options.reconstruction_iters
    round_ = 0
    while True:
        round_ += 1
        yield Phase.ENHANCEMENT, f'round {round_} enhancement', options.enhancement_iters
        if options.prompt_learning:
            yield Phase.PROMPT_REFINEMENT, f'round {round_} prompt refinement', options.prompt_refinement_iters


def authors_run(
    options: ScheduleOptions,
    passes: PassLengths,
    prompt_init: bool,
    reconstruction: bool,
    num_epochs: int = AUTHORS_NUM_EPOCHS,
) -> RunLength:
    """The iterations of the authors' ``num_epochs`` outer-loop passes from this starting point, no phase
    extended (module docstring)."""
    left, total, stages, rounds = num_epochs, 0, [], 0.0
    cycle = options.enhancement_iters + options.prompt_refinement_iters * options.prompt_learning
    for phase, name, iterations in _stages(options, prompt_init, reconstruction):
        per_pass = passes.of_phase(phase)
        needed = math.ceil(iterations / per_pass)
        done = iterations if needed <= left else left * per_pass
        left -= min(needed, left)
        if done:
            total += done
            stages.append((name, done))
            rounds += done / cycle if name.startswith('round ') else 0
        if left and switch_after(phase, options.prompt_learning):
            left -= 1
        if not left:
            return RunLength(total, round(rounds, 4), tuple(stages))
    raise AssertionError('unreachable: the stages never end')


def rounds_run(options: ScheduleOptions, rounds: int, prompt_init: bool, reconstruction: bool) -> RunLength:
    """The iterations of ``rounds`` whole rounds after the stages before them, no phase extended."""
    total, stages = 0, []
    for _, name, iterations in _stages(options, prompt_init, reconstruction):
        if name.startswith(f'round {rounds + 1} '):
            return RunLength(total, float(rounds), tuple(stages))
        total += iterations
        stages.append((name, iterations))
    raise AssertionError('unreachable: the stages never end')


class RunEnd:
    """Ends a training run where the authors' loop would: after ``num_epochs`` of their passes, extended
    phases included, or after ``rounds`` whole rounds.

    The training model calls :meth:`observe` after every step; the train loader
    (:func:`~cliplit_basicsr.data.loaders.training_loader`) stops yielding batches once :attr:`ended`, so
    BasicSR's loop ends the run there, saves the latest checkpoint and validates as at any run's end.
    The counts are part of the training state (:meth:`state_dict`).

    Args:
        nominal: the run's length with no phase extended (``train.total_iter`` for BasicSR's ETA).
        passes: the loaders' pass lengths.
        prompt_learning: whether rounds have a prompt refinement.
        num_epochs: the authors' pass budget; or None with ``rounds``.
        rounds: whole rounds to train; or None with ``num_epochs``.
    """

    def __init__(
        self,
        nominal: RunLength,
        passes: PassLengths,
        prompt_learning: bool,
        num_epochs: Optional[int] = None,
        rounds: Optional[int] = None,
    ) -> None:
        if (num_epochs is None) == (rounds is None):
            raise ValueError('RunEnd: give num_epochs or rounds')
        self.nominal, self.passes, self.prompt_learning = nominal, passes, prompt_learning
        self.num_epochs, self.rounds = num_epochs, rounds
        self.passes_done = self.rounds_done = self.steps = 0  # steps: in the current phase
        self.phase: Optional[Phase] = None

    @property
    def max_iterations(self) -> int:
        """An upper bound of the run's iterations, for BasicSR's own loop bound."""
        if self.num_epochs is not None:
            return self.num_epochs * max(self.passes.network, self.passes.prompt_refinement, self.passes.prompt_init)
        return ROUNDS_BOUND * self.nominal.total_iter

    def start(self, phase: Phase) -> None:
        """The run's first step belongs to ``phase`` (unless a resumed state says where the run is)."""
        if self.phase is None:
            self.phase = phase

    def observe(self, phase: Phase, ended_phase: bool, next_phase: Phase) -> None:
        """Account for a step of ``phase``; ``ended_phase``: the step ended it and ``next_phase`` follows."""
        self.steps += 1
        if ended_phase:
            self.passes_done += math.ceil(self.steps / self.passes.of_phase(phase))
            self.passes_done += switch_after(phase, self.prompt_learning)
            round_ends = Phase.PROMPT_REFINEMENT if self.prompt_learning else Phase.ENHANCEMENT
            self.rounds_done += phase is round_ends
            self.steps = 0
        self.phase = next_phase

    @property
    def ended(self) -> bool:
        """Whether the run is over: the next step would be past the authors' last pass, or the rounds are done."""
        if self.rounds is not None:
            return self.rounds_done >= self.rounds
        next_pass = self.passes_done + math.ceil((self.steps + 1) / self.passes.of_phase(self.phase))
        return next_pass > self.num_epochs

    def __deepcopy__(self, memo) -> 'RunEnd':
        """The tracker itself: it lives in the options (``opt['run_length']``), which BasicSR's ``build_model``
        deep-copies, and the model and the train loader must share one."""
        return self

    @property
    def budget(self) -> str:
        """What ends the run, in words: ``'2 rounds'`` or ``"the authors' 2000 passes"``."""
        return f'{self.rounds} rounds' if self.rounds is not None else f"the authors' {self.num_epochs} passes"

    def describe(self) -> str:
        return f'{self.budget}; with no phase extended, {self.nominal.describe()}'

    __str__ = describe

    def state_dict(self) -> dict:
        """Plain values for the training state."""
        phase = None if self.phase is None else self.phase.value
        return {'passes_done': self.passes_done, 'rounds_done': self.rounds_done, 'steps': self.steps, 'phase': phase}

    def load_state_dict(self, state: dict) -> None:
        self.passes_done, self.rounds_done, self.steps = state['passes_done'], state['rounds_done'], state['steps']
        self.phase = None if state['phase'] is None else Phase(state['phase'])
