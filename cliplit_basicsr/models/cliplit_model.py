"""CLIP-LIT training as a BasicSR model: the authors' alternating two-phase optimisation.

Each BasicSR iteration is one step of the phase that :class:`~.schedule.TrainingSchedule` says is current:

* ``reconstruction`` / ``enhancement``: the light-map network ``net_g`` learns from BasicSR's own train
  batches (``datasets.train``: backlit images, default 8 @ 512); the prompt pair is frozen and its text
  features are computed once per phase. A batch goes through forward and backward ``train.micro_batch``
  images at a time (default ``auto``: one on CPU, the whole batch on GPU) and one Adam step follows: the
  same step with a fraction of the activation memory (:mod:`.micro_batch`).
* ``prompt_init`` / ``prompt_refinement``: the prompt pair ``net_prompt`` learns from the loaders of the
  top-level ``prompt_dataset`` section (:mod:`.prompt_loaders`), ranking against the outputs of the kept
  best networks of the newest rounds (:mod:`.kept_networks`).

Data: every training set is decoded once and kept on the training device
(:mod:`cliplit_basicsr.data.resident`); the loaders yield indices and augmentation draws, and a batch is a
gather and one batched augmentation on the device (:func:`~cliplit_basicsr.data.augment.augment_batch`).

Distributed: both learnable parts are wrapped in DDP (``model_to_device``); every value the schedule
decides on is all-reduced (mean over ranks) first, so all ranks take the same branch; only rank 0 writes
files. Saving and resuming: :mod:`.run_state`; set-up from the options: :mod:`.training_setup`.
"""

import contextlib
from collections import OrderedDict
from copy import deepcopy
from os import path as osp
from typing import Dict, Optional

import torch
import torch.distributed as dist
from basicsr.archs import build_network
from basicsr.data import build_dataset
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import MODEL_REGISTRY

from cliplit_basicsr.atomic_io import atomic_torch_save
from cliplit_basicsr.checkpoint import OFFICIAL_CHECKPOINT
from cliplit_basicsr.choices import AUTO
from cliplit_basicsr.cpu_allocator import allocator_note
from cliplit_basicsr.data.augment import augment_batch_, repeat_draws
from cliplit_basicsr.data.resident import ResidentImages, as_float
from cliplit_basicsr.errors import OptionError, require_flag
from cliplit_basicsr.options import TrainOptions, schedule_options, starting_point
from cliplit_basicsr.transfer import to_device

from .cliplit_eval_model import CLIPLITEvalModel
from .feature_cache import FeatureCache, prompt_feature_keys
from .graphed_step import GraphedStep, cuda_graphs_option, set_capturable
from .kept_networks import KeptNetworks
from .micro_batch import backward_in_micro_batches, batch_share
from .network_precision import network_precision_option
from .prompt_loaders import PromptLoaders
from .run_length import RunEnd
from .run_state import RunStateMixin
from .schedule import Phase, StepOutcome, TrainingSchedule
from .training_setup import build_adam, build_loss, build_prompt_pair, micro_batch_option, y_psnr

INIT_CHECKPOINT = OFFICIAL_CHECKPOINT.parent / 'init_enhancement_model.pth'  # the network after reconstruction
TRAIN_EPS = 1e-9  # the authors' training divides by L + 1e-9
EXTENSION_WARNING = 10  # warn each time a phase has been extended another 10 times in a row
TOTAL_TERM = {
    Phase.RECONSTRUCTION: 'l_recon',
    Phase.ENHANCEMENT: 'l_enhance',
    Phase.PROMPT_INIT: 'l_prompt_init',
    Phase.PROMPT_REFINEMENT: 'l_prompt_rank',
}
THRESHOLD_OPTION = {
    Phase.ENHANCEMENT: 'train.schedule.enhancement_loss_threshold',
    Phase.PROMPT_INIT: 'train.schedule.prompt_loss_threshold',
    Phase.PROMPT_REFINEMENT: 'train.schedule.prompt_loss_threshold',
}


@MODEL_REGISTRY.register()
class CLIPLITModel(RunStateMixin, CLIPLITEvalModel):
    """Trains CLIP-LIT's network and prompt pair with the authors' iterative schedule.

    Option sections: ``network_g`` (CLIPLITNet, training variant ``padding: zeros``), ``network_prompt``
    (CLIPLITPromptPair), ``path.pretrain_network_g`` (``init``, the default: the authors' network after
    reconstruction, which skips that stage; ``~``: train from scratch), ``path.pretrain_network_prompt``
    (a prompt file skips prompt initialisation), ``prompt_dataset`` and ``train`` (see
    ``options/train_cliplit.yml``).
    """

    def __init__(self, opt: dict):
        if opt['train'].get('total_iter') == AUTO and 'run_length' not in opt:
            raise OptionError(
                "train.total_iter: auto is resolved by the plugin's entry points: run cliplit-train or python -m "
                'basicsr.train, or call train_pipeline inside cliplit_basicsr.basicsr_compat.hosting_cliplit()'
            )
        opt['path'].setdefault('pretrain_network_g', 'init')
        if opt['path']['pretrain_network_g'] == 'init':
            opt['path']['pretrain_network_g'] = str(INIT_CHECKPOINT)
        super().__init__(opt)

    def init_training_settings(self) -> None:
        train_opt = TrainOptions.of(self.opt)
        logger = get_root_logger()
        self.net_g.train()
        self.schedule_options = schedule_options(self.opt)
        learn = self.schedule_options.prompt_learning
        prompt_init, reconstruction = starting_point(self.opt, learn)
        self.prompt_loaders = PromptLoaders(self.opt) if learn else None
        self.net_prompt = self.model_to_device(build_prompt_pair(self.opt))
        self.schedule = TrainingSchedule(self.schedule_options, prompt_init=prompt_init, reconstruction=reconstruction)

        self.micro_batch = micro_batch_option(train_opt.micro_batch, self.device)
        self.network_precision = network_precision_option(train_opt.network_amp, self.device)
        if require_flag(train_opt.compile_network, 'train.compile_network'):  # in place: the state dict keeps its keys
            self.get_bare_model(self.net_g).compile()
            logger.info('train.compile_network: the light-map network runs through torch.compile')
        self.cri_clip = build_loss(self.opt, 'clip_opt', self.device)
        self.cri_identity = build_loss(self.opt, 'identity_opt', self.device)
        self.cri_reconstruction = build_loss(self.opt, 'reconstruction_opt', self.device)
        if learn:
            self.cri_prompt_init = build_loss(self.opt, 'prompt_init_opt', self.device)
            self.cri_ranking = build_loss(self.opt, 'ranking_opt', self.device)

        self.optimizer_g = build_adam(self, 'optim_g', self.net_g.parameters())
        self.graphed_step = None
        if cuda_graphs_option(train_opt.cuda_graphs, self.opt, self.device):
            self.graphed_step = GraphedStep()
            set_capturable(self.optimizer_g, True)
            logger.info("train.cuda_graphs: each network phase's step is captured once and replayed as a CUDA graph")
        self.optimizer_prompt = build_adam(self, 'optim_prompt', self.net_prompt.parameters())
        self.optimizers = [self.optimizer_g, self.optimizer_prompt]
        if train_opt.scheduler:
            self.setup_schedulers()  # BasicSR gives every optimizer the same schedule

        padding = self.get_bare_model(self.net_g).padding
        self.kept = KeptNetworks(lambda: self._prompt_images()['backlit'], padding, self.device)
        self._text_features: Optional[torch.Tensor] = None
        # datasets.train's backlit images: BasicSR's loader has its own instance of the set, which only indexes
        network_set = build_dataset(dict(self.opt['datasets']['train'], phase='train', use_welllit=False))
        self.network_images = network_set.resident(self.device)
        if learn:
            self._prompt_images()
        cache = require_flag(train_opt.prompt_feature_cache, 'train.prompt_feature_cache')
        self._feature_cache = FeatureCache() if cache else None
        self.log_dict = OrderedDict()
        self.run_end = self.opt.get('run_length') if isinstance(self.opt.get('run_length'), RunEnd) else None
        if self.run_end is not None:
            self.run_end.start(self.schedule.phase)
            logger.info(f'Run length (train.total_iter: auto): {self.run_end.describe()}')
        logger.info(f'CLIP-LIT schedule starts with {self.schedule.describe()}')
        if self.device.type == 'cpu':
            logger.info(allocator_note())

    # -- data ----------------------------------------------------------------------------------------
    def _prompt_images(self) -> Dict[str, ResidentImages]:
        return self.prompt_loaders.pairs.resident(self.device)

    def feed_data(self, data: dict) -> None:
        """Training batches carry backlit ``index`` and ``aug`` (gathered and augmented here, in network
        phases); validation ones BasicSR's ``lq`` (and ``gt``)."""
        if 'lq' in data:
            super().feed_data(data)
        elif self.schedule.phase.trains_network:
            self.lq = augment_batch_(self.network_images['backlit'].take(data['index']), data['aug'])
        else:
            self.lq = None  # BasicSR's loop fetches a datasets.train batch in prompt phases too

    def _ranked_outputs(self, slot: int) -> torch.Tensor:
        """The enhanced training set of ``slot`` (:meth:`KeptNetworks.outputs`); the features of outputs of
        rounds no longer ranked are dropped from the feature cache when a new round's are made."""
        round_ = self.schedule.slot_rounds[slot]
        if self._feature_cache is not None and not self.kept.has_outputs(slot, round_):
            self._feature_cache.forget(lambda key: key[0] != 'output' or key[1] in self.schedule.slot_rounds)
        return self.kept.outputs(slot, round_)

    # -- one step ------------------------------------------------------------------------------------
    def _all_reduce_mean(self, values: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The mean over ranks of each value, as 0-dim tensors on the device: nothing is read here (the
        schedule reads what it decides on, BasicSR's logger what it prints)."""
        stacked = torch.stack([v.detach().float().reshape(()) for v in values.values()])
        if self.opt['dist']:
            dist.all_reduce(stacked)
            stacked /= self.opt['world_size']
        return dict(zip(values, stacked.unbind()))

    def _text_features_frozen(self) -> torch.Tensor:
        if self._text_features is None:
            with torch.no_grad():
                self._text_features = self.get_bare_model(self.net_prompt)().detach()
        return self._text_features

    def _network_terms(self, phase: Phase, lq: torch.Tensor, share: float) -> Dict[str, torch.Tensor]:
        """The loss terms of ``lq`` (``share`` of this process's batch), each as its part of the whole
        batch's term (:func:`~.micro_batch.batch_share`)."""
        ws = self.opt['world_size']
        with self.network_precision.autocast():
            light_map = self.net_g(lq)
        output = torch.clamp(lq / (light_map.float() + TRAIN_EPS), 0, 1)
        if phase is Phase.RECONSTRUCTION:
            terms = {'l_recon': batch_share(self.cri_reconstruction, self.cri_reconstruction(output, lq), share, ws)}
            with torch.no_grad():
                terms['psnr_recon'] = y_psnr(lq, output) * share
            return terms
        terms = {
            'l_clip': batch_share(self.cri_clip, self.cri_clip(output, self._text_features_frozen()), share, ws),
            'l_identity': batch_share(self.cri_identity, self.cri_identity(output, lq), share, ws),
        }
        terms['l_enhance'] = terms['l_clip'] + terms['l_identity']
        return terms

    def _network_step(self, phase: Phase) -> Dict[str, torch.Tensor]:
        """One Adam step of ``net_g`` on ``self.lq``; with ``train.cuda_graphs`` a replay of the phase's graph."""
        if self.graphed_step is None:
            return self._network_step_on(phase, self.lq)
        captures = self.graphed_step.captures
        terms = self.graphed_step(phase, self.lq, lambda images: self._network_step_on(phase, images))
        if self.graphed_step.captures != captures:
            get_root_logger().info(
                f'[round {self.schedule.round}] {phase.value} step captured as a CUDA graph for batches of '
                f'{tuple(self.lq.shape)}'
            )
        return terms

    def _network_step_on(self, phase: Phase, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """One Adam step of ``net_g`` on ``images``, forward/backward ``train.micro_batch`` images at a time."""
        no_sync = getattr(self.net_g, 'no_sync', contextlib.nullcontext)  # DDP: reduce gradients once per step
        self.optimizer_g.zero_grad()
        terms = backward_in_micro_batches(
            images,
            self.micro_batch,
            lambda lq, share: self._network_terms(phase, lq, share),
            TOTAL_TERM[phase],
            no_sync,
            self.network_precision.backward,
        )
        self.network_precision.step(self.optimizer_g)
        return terms

    def _image_sets(self, phase: Phase, batch: dict) -> list:
        """The augmented image batches a prompt step scores, in the order of its loss's arguments: one
        augmentation of their concatenation, each set under the batch's draws."""
        if phase is Phase.PROMPT_INIT:
            return [augment_batch_(self.prompt_loaders.pool.images(batch, self.device), batch['aug'])]
        resident = self._prompt_images()
        sets = [resident['backlit'].take(batch['index']), resident['welllit'].take(batch['welllit_index'])]
        if self.schedule.ranking_slots():
            index = to_device(batch['index'], self.device)
            sets += [as_float(self._ranked_outputs(slot)[index]) for slot in self.schedule.ranking_slots()]
        return list(augment_batch_(torch.cat(sets), repeat_draws(batch['aug'], len(sets))).split(len(sets[0])))

    def _prompt_step(self, phase: Phase) -> Dict[str, torch.Tensor]:
        prompt = self.get_bare_model(self.net_prompt)
        batch = self.prompt_loaders.next_batch(phase)
        sets = self._image_sets(phase, batch)
        if self._feature_cache is None:
            features = prompt.encode_images(torch.cat(sets))
        else:
            features = self._feature_cache.encode(
                prompt.encode_images, sets, prompt_feature_keys(phase, batch, self.schedule)
            )
        text = self.net_prompt(None)  # a placeholder argument: see CLIPLITPromptPair.forward
        if phase is Phase.PROMPT_INIT:
            terms = {'l_prompt_init': self.cri_prompt_init(text, features, batch['label'])}
        else:
            terms = {'l_prompt_rank': self.cri_ranking(text, *features.split(len(batch['index'])))}
        self.optimizer_prompt.zero_grad()
        next(iter(terms.values())).backward()
        self.optimizer_prompt.step()
        return terms

    def optimize_parameters(self, current_iter: int) -> None:
        phase, round_ = self.schedule.phase, self.schedule.round
        terms = self._network_step(phase) if phase.trains_network else self._prompt_step(phase)
        reduced = self._all_reduce_mean(terms)
        outcome = self.schedule.step(current_iter, reduced[TOTAL_TERM[phase]], reduced.get('psnr_recon'))
        self._apply(outcome, current_iter, phase, round_)
        self.log_dict = OrderedDict(round=float(round_), **reduced)
        if self.run_end is not None:
            self.run_end.observe(phase, outcome.transition is not None, self.schedule.phase)
            if self.run_end.ended:
                get_root_logger().info(
                    f'Run complete at iter {current_iter} ({self.run_end.budget}): '
                    f'{self.run_end.rounds_done} rounds, in {self.schedule.describe()}'
                )

    # -- schedule events -----------------------------------------------------------------------------
    def _apply(self, outcome: StepOutcome, current_iter: int, phase: Phase, round_: int) -> None:
        logger = get_root_logger()
        if outcome.snapshot_slot is not None:
            self.kept.snapshot(outcome.snapshot_slot, self.get_bare_model(self.net_g))
        if outcome.save_prompt:
            self._save_prompt_file(f'prompt_pair_round{round_}_best.pth')
        if outcome.restart_network:
            self._restart_network()
            logger.info(
                f'[round {round_}] reconstruction PSNR below {self.schedule_options.restart_psnr} dB at '
                f'iter {current_iter}: network re-initialised, stage now {self.schedule.phase_length} iterations'
            )
        if outcome.extended:
            logger.info(
                f'[round {round_}] {phase.value} extended to {self.schedule.phase_length} iterations at '
                f'iter {current_iter} (loss above threshold)'
            )
            if self.schedule.extensions % EXTENSION_WARNING == 0:
                ends = (
                    'the run ends at train.total_iter'
                    if self.run_end is None
                    else "each extension uses the run's passes"
                )
                logger.warning(
                    f'[round {round_}] {phase.value} extended {self.schedule.extensions} times in a row: its loss '
                    f'stays above {THRESHOLD_OPTION[phase]}; {ends}'
                )
        if outcome.transition:
            self._enter(*outcome.transition, current_iter, round_)

    def _enter(self, old: Phase, new: Phase, current_iter: int, round_: int) -> None:
        """Start phase ``new`` after ``old`` ended in ``round_``."""
        self._end_graph()
        if self.prompt_loaders is not None:
            self.prompt_loaders.end_epochs()
        if old is Phase.ENHANCEMENT:
            self._save_round_best(round_)
        if new is Phase.ENHANCEMENT:
            self._text_features = None  # the prompt pair may have changed
        extra = ''
        if new is Phase.PROMPT_REFINEMENT:
            self.prompt_loaders.pair_for_round(self.schedule.round)
            rounds = [self.schedule.slot_rounds[s] for s in self.schedule.ranking_slots()]
            extra = f' ranking with the outputs of rounds {rounds} (newest first)'
        get_root_logger().info(
            f'Phase {old.value} -> {new.value} at iter {current_iter}: now round {self.schedule.round}{extra}'
        )

    def _restart_network(self) -> None:
        """A fresh random network (conv weights N(0, 0.02), default biases) and a fresh Adam state."""
        net = self.get_bare_model(self.net_g)
        net.load_state_dict(build_network(deepcopy(self.opt['network_g'])).state_dict())
        if self.opt['dist']:
            for tensor in net.state_dict().values():
                dist.broadcast(tensor, 0)
        self.optimizer_g.state.clear()
        self._end_graph()

    def _end_graph(self) -> None:
        """With ``train.cuda_graphs``: the captured step read tensors that are being replaced; capture anew."""
        if self.graphed_step is not None:
            self.graphed_step.reset()

    @master_only
    def _save_prompt_file(self, filename: str) -> None:
        self.get_bare_model(self.net_prompt).save_file(osp.join(self.opt['path']['models'], filename))

    @master_only
    def _save_round_best(self, round_: int) -> None:
        state = self.kept.of_round(round_, self.schedule.slot_rounds)
        if state is not None:
            path = osp.join(self.opt['path']['models'], f'net_g_round{round_}_best.pth')
            atomic_torch_save({'params': {k: v.cpu() for k, v in state.items()}}, path)
