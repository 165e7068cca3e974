"""CLIP-LIT option files: checks and derived values, before BasicSR writes anything.

:func:`cliplit_basicsr.basicsr_compat.parse_options` calls these for option files whose ``model_type`` is
one of this package's models, so a bad option ends the command with one line and no ``experiments/`` or
``results/`` folder left behind. :func:`prepare` takes BasicSR's parsed options: every dataset root
(``datasets.*``, ``prompt_dataset``) must exist and hold images, and ``train.total_iter: auto`` becomes the
authors' run length (:mod:`cliplit_basicsr.models.run_length`).
"""

from dataclasses import dataclass, fields
from typing import Dict, Iterator, Optional, Tuple, Union

from .choices import AUTO
from .errors import OptionError

MODEL_TYPES = frozenset({'CLIPLITModel', 'CLIPLITEvalModel'})


# Options the training model reads; anything else in these sections is a typo, reported as one line.
TOP_LEVEL_KEYS = frozenset(
    {
        'name',
        'model_type',
        'scale',
        'num_gpu',
        'manual_seed',
        'datasets',
        'network_g',
        'network_prompt',
        'path',
        'train',
        'val',
        'logger',
        'dist_params',
        'find_unused_parameters',
        'prompt_dataset',
        # added by BasicSR's parse_options / train_pipeline
        'dist',
        'rank',
        'world_size',
        'auto_resume',
        'is_train',
        'root_path',
        'run_length',  # added by prepare
    }
)


@dataclass(frozen=True)
class TrainOptions:
    """The ``train`` section of a ``CLIPLITModel`` option file, with its defaults (``docs/training.md``).

    ``total_iter``: a number of iterations or ``auto`` (the authors' run length); ``optim_g`` /
    ``optim_prompt``: Adam for the network and the prompt pair; ``scheduler``: BasicSR's, for both;
    ``schedule``: :class:`~cliplit_basicsr.models.schedule.ScheduleOptions`; ``*_opt``: the four losses and
    the reconstruction loss; ``micro_batch``: images per forward/backward (``auto``, a number, or ``~`` for
    the whole batch); ``network_amp``: ``~`` (fp32), ``bf16`` or ``fp16``; ``compile_network``: the
    light-map network through ``torch.compile``; ``cuda_graphs``: the network phases' step replayed as a CUDA
    graph; ``prompt_feature_cache``: keep the CLIP features of prompt images that recur exactly.
    """

    total_iter: Union[int, str] = AUTO
    optim_g: Optional[dict] = None
    optim_prompt: Optional[dict] = None
    scheduler: Optional[dict] = None
    schedule: Optional[dict] = None
    clip_opt: Optional[dict] = None
    identity_opt: Optional[dict] = None
    reconstruction_opt: Optional[dict] = None
    prompt_init_opt: Optional[dict] = None
    ranking_opt: Optional[dict] = None
    micro_batch: Union[int, str, None] = AUTO
    network_amp: Optional[str] = None
    compile_network: bool = False
    cuda_graphs: bool = False
    prompt_feature_cache: bool = True
    warmup_iter: int = -1  # read by BasicSR's loop: learning-rate warm-up

    @classmethod
    def of(cls, opt: dict) -> 'TrainOptions':
        """The ``train`` section of BasicSR's parsed ``opt``; an unknown key is a one-line :class:`OptionError`."""
        try:
            return cls(**(opt.get('train') or {}))
        except TypeError as err:  # an unknown key: check_training_options names it where prepare runs
            raise OptionError(f'train: {err}') from None


TRAIN_KEYS = frozenset(field.name for field in fields(TrainOptions))
PATH_KEYS = frozenset(
    {
        'pretrain_network_g',
        'strict_load_g',
        'param_key_g',
        'pretrain_network_prompt',
        'resume_state',
        'ignore_resume_networks',
        'experiments_root',
        'models',
        'training_states',
        'log',
        'visualization',
    }
)


def check_training_options(opt: dict) -> None:
    """Raise :class:`OptionError` naming the first unknown key of the sections the training model reads."""
    from .models.schedule import ScheduleOptions

    sections = [
        ('', opt, TOP_LEVEL_KEYS),
        ('train.', opt.get('train') or {}, TRAIN_KEYS),
        ('path.', opt.get('path') or {}, PATH_KEYS),
        ('train.schedule.', (opt.get('train') or {}).get('schedule') or {}, ScheduleOptions.names()),
    ]
    for prefix, section, known in sections:
        if not isinstance(section, dict):
            raise OptionError(f'{prefix.rstrip(".")}: expected a mapping, got {section!r}')
        for key in section:
            if key not in known:
                raise OptionError(
                    f'unknown option {prefix}{key} (model {opt.get("model_type")}; '
                    f'known here: {", ".join(sorted(known))})'
                )


def is_cliplit(opt: dict) -> bool:
    """Whether an option mapping is for one of this package's models."""
    return isinstance(opt, dict) and opt.get('model_type') in MODEL_TYPES


def _dataset_sections(opt: dict) -> Iterator[Tuple[str, dict]]:
    for phase, section in (opt.get('datasets') or {}).items():
        yield f'datasets.{phase}', section
    if opt.get('prompt_dataset') is not None:
        yield 'prompt_dataset', opt['prompt_dataset']


def image_counts(opt: dict) -> Dict[str, int]:
    """Check every dataset root of ``opt`` (folder with images, or an LMDB made by ``scripts/create_lmdb.py``)
    and return its image count by option key (``datasets.train.dataroot_backlit``, ...); a missing or
    empty root raises a one-line error naming the option key and the path."""
    from .data.image_source import ImageSource

    counts = {}
    for where, section in _dataset_sections(opt):
        if not isinstance(section, dict):
            raise OptionError(f'{where}: expected a mapping of dataset options, got {section!r}')
        backend = section.get('io_backend') or {'type': 'disk'}
        if not isinstance(backend, dict):
            raise OptionError(f'{where}.io_backend: expected a mapping such as {{type: disk}}, got {backend!r}')
        for key, root in section.items():
            if key.startswith('dataroot') and root is not None:
                option = f'{where}.{key}'
                counts[option] = len(ImageSource(str(root), backend, option))
    return counts


def schedule_options(opt: dict):
    """The run's :class:`~cliplit_basicsr.models.schedule.ScheduleOptions` (``train.schedule``); a bad value
    is a one-line :class:`OptionError`."""
    from .models.schedule import ScheduleOptions

    try:
        return ScheduleOptions(**((opt.get('train') or {}).get('schedule') or {}))
    except TypeError as err:
        raise OptionError(f'train.schedule: {err}') from None


def starting_point(opt: dict, prompt_learning: bool) -> Tuple[bool, bool]:
    """(whether the run initialises the prompt pair, whether it trains the reconstruction stage): without
    ``path.pretrain_network_prompt`` and ``path.pretrain_network_g: ~`` respectively."""
    path = opt.get('path') or {}
    return prompt_learning and not path.get('pretrain_network_prompt'), path.get('pretrain_network_g', 'init') is None


def run_end(opt: dict, counts: Dict[str, int]):
    """The :class:`~cliplit_basicsr.models.run_length.RunEnd` that ``train.total_iter: auto`` stands for:
    ``train.schedule.rounds`` rounds, or the authors' ``train.schedule.authors_num_epochs`` passes."""
    from .models.run_length import PassLengths, RunEnd, authors_run, rounds_run

    options = schedule_options(opt)
    prompt_init, reconstruction = starting_point(opt, options.prompt_learning)
    train_set = opt['datasets'].get('train') or {}
    backlit = counts.get('datasets.train.dataroot_backlit')
    if backlit is None:
        raise OptionError('train.total_iter: auto needs datasets.train.dataroot_backlit (the backlit images)')
    prompt = opt.get('prompt_dataset') or {}
    passes = PassLengths.of(
        backlit,
        int(train_set.get('batch_size_per_gpu', 1)),
        counts.get('prompt_dataset.dataroot_backlit', backlit),
        counts.get('prompt_dataset.dataroot_welllit', 0),
        int(prompt.get('batch_size_per_gpu', 1)),
        int(opt.get('world_size', 1)),
    )
    if options.rounds is not None:
        nominal = rounds_run(options, options.rounds, prompt_init, reconstruction)
        return RunEnd(nominal, passes, options.prompt_learning, rounds=options.rounds)
    nominal = authors_run(options, passes, prompt_init, reconstruction, options.authors_num_epochs)
    return RunEnd(nominal, passes, options.prompt_learning, num_epochs=options.authors_num_epochs)


def resolve_total_iter(opt: dict, counts: Dict[str, int]):
    """For ``train.total_iter: auto``: the run's :class:`~cliplit_basicsr.models.run_length.RunEnd`, with
    ``train.total_iter`` set to its nominal length (BasicSR's ETA); None when the option file gives a number
    of iterations, which BasicSR's loop then trains exactly."""
    train = opt.get('train')
    if not isinstance(train, dict):
        raise OptionError('train: missing (the training options)')
    total = train.get('total_iter', TrainOptions.total_iter)
    rounds = schedule_options(opt).rounds
    if total != AUTO:
        if rounds is not None:
            raise OptionError('train.schedule.rounds needs train.total_iter: auto (the run length is one or the other)')
        if isinstance(total, bool) or not isinstance(total, (int, float)) or total < 1 or int(total) != total:
            raise OptionError(f'train.total_iter: expected a positive number of iterations or auto, got {total!r}')
        return None
    prefetch = ((opt.get('datasets') or {}).get('train') or {}).get('prefetch_mode')
    if prefetch is not None:
        raise OptionError(
            f'datasets.train.prefetch_mode: {prefetch} loads batches ahead, so a train.total_iter: auto run could '
            "not end where the authors' loop does; use ~ (or a number for train.total_iter)"
        )
    end = run_end(opt, counts)
    train['total_iter'] = end.nominal.total_iter
    return end


def prepare(opt: dict) -> None:
    """Check and complete BasicSR's parsed ``opt`` of a CLIP-LIT run (module docstring)."""
    if opt.get('is_train') and opt.get('model_type') == 'CLIPLITModel':
        check_training_options(opt)
    counts = image_counts(opt)
    if opt.get('is_train'):
        end = resolve_total_iter(opt, counts)
        if end is not None:
            opt['run_length'] = end  # the model and the train loader end the run with it
