"""How long the authors' training runs, in iterations: the default ``train.total_iter: auto``.

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
batch sizes, schedule and starting point.

The count assumes no phase is extended. An extension moves the authors' run end by less than one pass
(their budget is counted in passes, each holding about the same number of iterations), while this
package's run, whose length BasicSR fixes in iterations before training starts, ends at the same
iteration: the last phase is that many iterations shorter or longer than theirs.
"""

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

from .schedule import ScheduleOptions

AUTHORS_NUM_EPOCHS = 2000  # train.py's --num_epochs default (also in its README's from-scratch command)


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


@dataclass(frozen=True)
class RunLength:
    """A run's length: ``total_iter`` and how it divides into stages (for the log)."""

    total_iter: int
    rounds: float  # completed rounds, plus the completed share of a last, partial round
    stages: Tuple[Tuple[str, int], ...]  # (stage, iterations) in order, e.g. ('round 1 enhancement', 2100)

    def describe(self) -> str:
        parts: List[str] = []
        for name, iterations in self.stages:
            if name.startswith('round '):
                continue
            parts.append(f'{name} {iterations}')
        full = [n for n, _ in self.stages if n.startswith('round ') and n.endswith('refinement')]
        rounds = f'{self.rounds:.2f}'.rstrip('0').rstrip('.')
        parts.append(f'{rounds} rounds ({len(full)} with prompt refinement)')
        return f'{self.total_iter} iterations: ' + ', '.join(parts)


def _stages(options: ScheduleOptions, passes: PassLengths, prompt_init: bool, reconstruction: bool):
    """(name, iterations, iterations a pass, followed by a switch pass) in the authors' order, forever."""
    if prompt_init and options.prompt_learning:
        yield 'prompt initialisation', options.prompt_init_iters, passes.prompt_init, True
    if reconstruction:
        yield 'reconstruction', options.reconstruction_iters, passes.network, True
    round_ = 0
    while True:
        round_ += 1
        yield f'round {round_} enhancement', options.enhancement_iters, passes.network, not options.prompt_learning
        if options.prompt_learning:
            refinement = options.prompt_refinement_iters
            yield f'round {round_} prompt refinement', refinement, passes.prompt_refinement, True


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
    for name, iterations, per_pass, switch in _stages(options, passes, prompt_init, reconstruction):
        needed = math.ceil(iterations / per_pass) if iterations else 0
        done = iterations if needed <= left else left * per_pass
        left -= min(needed, left)
        if done:
            total += done
            stages.append((name, done))
            if name.startswith('round '):
                cycle = options.enhancement_iters + (options.prompt_refinement_iters * options.prompt_learning)
                rounds += done / cycle
        if left and switch:
            left -= 1
        if not left:
            return RunLength(total, round(rounds, 4), tuple(stages))
    raise AssertionError('unreachable: the stages never end')


def rounds_run(
    options: ScheduleOptions, rounds: int, prompt_init: bool, reconstruction: bool, passes: Optional[PassLengths] = None
) -> RunLength:
    """The iterations of ``rounds`` whole rounds after the stages before them, no phase extended."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f'rounds must be a positive integer, got {rounds!r}')
    total, stages = 0, []
    for name, iterations, _, _ in _stages(options, passes or PassLengths(1, 1, 1), prompt_init, reconstruction):
        if name.startswith(f'round {rounds + 1} '):
            return RunLength(total, float(rounds), tuple(stages))
        total += iterations
        stages.append((name, iterations))
    raise AssertionError('unreachable: the stages never end')
