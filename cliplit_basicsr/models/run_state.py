"""What a CLIP-LIT training run saves and restores, in BasicSR's ``save`` / ``resume_training`` interface.

BasicSR saves the networks and a training state of optimizers and schedulers; a CLIP-LIT run adds the
schedule's state machine, the kept networks of the newest rounds, the prompt loaders' epochs, the run's end
and the fp16 gradient scaler, so that a resumed run continues exactly where the killed one was. Files are
written atomically, networks first: a kill in between leaves the previous state complete.
"""

from os import path as osp

from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only

from cliplit_basicsr.atomic_io import atomic_torch_save
from cliplit_basicsr.errors import OptionError

from .graphed_step import set_capturable
from .schedule import Phase


class RunStateMixin:
    """Saving and resuming of :class:`~.cliplit_model.CLIPLITModel` (put before BasicSR's classes)."""

    def save(self, epoch: int, current_iter: int) -> None:
        """Networks first, then the training state: a kill in between leaves the previous state complete."""
        self.save_network(self.net_g, 'net_g', current_iter)
        self.save_network(self.net_prompt, 'net_prompt', current_iter)
        self.save_training_state(epoch, current_iter)

    def training_state(self, epoch: int, current_iter: int) -> dict:
        """BasicSR's training state plus everything the schedule and the kept networks need."""
        return {
            'epoch': epoch,
            'iter': current_iter,
            'optimizers': [o.state_dict() for o in self.optimizers],
            'schedulers': [s.state_dict() for s in self.schedulers],
            'cliplit': {
                'schedule': self.schedule.state_dict(),
                'kept_networks': self.kept.state_dict(),
                'prompt_loader_epochs': {} if self.prompt_loaders is None else self.prompt_loaders.state_dict(),
                'run_end': None if self.run_end is None else self.run_end.state_dict(),
                'grad_scaler': self.network_precision.state_dict(),
            },
        }

    @master_only
    def save_training_state(self, epoch: int, current_iter: int) -> None:
        if current_iter == -1:
            return
        path = osp.join(self.opt['path']['training_states'], f'{current_iter}.state')
        atomic_torch_save(self.training_state(epoch, current_iter), path)

    def resume_training(self, resume_state: dict) -> None:
        if 'cliplit' not in resume_state:
            raise OptionError(
                f'path.resume_state: {self.opt["path"].get("resume_state")} is not a CLIP-LIT training state '
                '(no schedule)'
            )
        super().resume_training(resume_state)
        extra = resume_state['cliplit']
        self.schedule.load_state_dict(extra['schedule'])
        self.kept.load_state_dict(extra['kept_networks'])
        self.network_precision.load_state_dict(extra.get('grad_scaler'))
        if self.run_end is not None:
            if extra.get('run_end') is None:
                raise OptionError(
                    f'path.resume_state: {self.opt["path"].get("resume_state")} was trained with a number for '
                    'train.total_iter, which has no pass count for train.total_iter: auto; resume with that number'
                )
            self.run_end.load_state_dict(extra['run_end'])
        if self.prompt_loaders is not None:
            self.prompt_loaders.load_state_dict(extra.get('prompt_loader_epochs', {}))
            if self.schedule.phase is Phase.PROMPT_REFINEMENT:
                self.prompt_loaders.pair_for_round(self.schedule.round)
        self._text_features = None
        # Adam's loaded state carries the saving run's capturable flag (True after train.cuda_graphs), which
        # a CPU refuses: this run's own applies
        set_capturable(
            self.optimizer_g, self.graphed_step is not None or self.opt['train']['optim_g'].get('capturable', False)
        )
        self._end_graph()
        get_root_logger().info(f'Resumed CLIP-LIT schedule: {self.schedule.describe()}')
