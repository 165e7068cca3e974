"""The prompt phases' data: the loaders of ``prompt_dataset``, their epochs and pairings.

The training model builds them itself (BasicSR's loop only knows ``datasets.train``), with BasicSR's
``build_dataset`` / ``build_dataloader`` and an ``EnlargedSampler``, so LMDB and distributed sampling serve
both prompt phases, as the authors' code has them:

* prompt refinement ranks (backlit, well-lit) pairs of :class:`CLIPLITUnpairedDataset`, ``batch_size_per_gpu``
  pairs a batch; each refinement phase pairs the two lists anew (:meth:`PromptLoaders.pair_for_round`), as
  the authors rebuild their ranking loader, reproducibly from the run's seed and the round;
* prompt initialisation draws ``batch_size_per_gpu`` images a batch from the backlit and well-lit images
  pooled (:class:`~cliplit_basicsr.data.prompt_init_pool.PromptInitPool`).

Each phase starts a fresh epoch (:meth:`PromptLoaders.end_epochs`), as the authors' loops restart their
loaders; the epoch counts are part of the training state, so a resumed run shuffles as the original.
"""

from copy import deepcopy
from typing import Dict

from basicsr.data import build_dataset
from basicsr.data.data_sampler import EnlargedSampler

from cliplit_basicsr.data.loaders import build_training_loader
from cliplit_basicsr.data.prompt_init_pool import PromptInitPool
from cliplit_basicsr.errors import OptionError, require_positive_int

from .schedule import Phase

RANK, INIT = 'rank', 'init'


class PromptLoaders:
    """The ``rank`` and ``init`` loaders of ``opt['prompt_dataset']`` and where each is in its epochs."""

    def __init__(self, opt: dict) -> None:
        dataset_opt = opt.get('prompt_dataset')
        if not isinstance(dataset_opt, dict):
            raise OptionError('prompt_dataset: missing (backlit and well-lit images for the prompt phases)')
        dataset_opt = dict(deepcopy(dataset_opt), phase='train')
        require_positive_int(dataset_opt.get('batch_size_per_gpu'), 'prompt_dataset.batch_size_per_gpu')
        self.seed = int(opt['manual_seed'])
        self.pairs = build_dataset(dataset_opt)
        if not getattr(self.pairs, 'use_welllit', False):
            raise OptionError('prompt_dataset.use_welllit: the prompt phases need well-lit images')
        self.pool = PromptInitPool(self.pairs)
        self._loaders: Dict[str, dict] = {}
        for name, dataset in ((RANK, self.pairs), (INIT, self.pool)):
            sampler = EnlargedSampler(dataset, opt['world_size'], opt['rank'], 1)
            loader = build_training_loader(dataset, dataset_opt, opt, sampler)
            self._loaders[name] = {'loader': loader, 'sampler': sampler, 'epoch': 0, 'iter': None}

    def next_batch(self, phase: Phase) -> dict:
        """The next batch of ``phase``'s loader, starting its next epoch where one ends."""
        state = self._loaders[INIT if phase is Phase.PROMPT_INIT else RANK]
        while True:
            if state['iter'] is None:
                state['sampler'].set_epoch(state['epoch'])
                state['iter'] = iter(state['loader'])
            try:
                return next(state['iter'])
            except StopIteration:
                state['iter'], state['epoch'] = None, state['epoch'] + 1

    def end_epochs(self) -> None:
        """Leave the loaders' current epochs: the next phase starts a fresh, reshuffled one."""
        for state in self._loaders.values():
            if state['iter'] is not None:
                state['iter'], state['epoch'] = None, state['epoch'] + 1

    def pair_for_round(self, round_: int) -> None:
        """Pair the backlit and well-lit lists for the prompt refinement of ``round_``: the same pairs for the
        same seed and round, on every process and after a resume. Call it before the phase's first batch."""
        self.pairs.redraw_pairing((self.seed, round_))

    def state_dict(self) -> Dict[str, int]:
        """Each loader's epoch: plain values for the training state."""
        return {name: state['epoch'] for name, state in self._loaders.items()}

    def load_state_dict(self, epochs: Dict[str, int]) -> None:
        for name, epoch in epochs.items():
            if name in self._loaders:
                self._loaders[name].update(epoch=epoch, iter=None)
