"""``train.cuda_graphs``: a network phase's step (forward, losses, backward, Adam) replayed as one CUDA graph.

On a GPU the network phases' step launches a few thousand kernels (the light-map network, the ViT-B/32 and
RN101 towers forward and backward, Adam), each too short to hide its launch. Their shapes and the tensors
they read do not change within a phase, so the step can be captured once and replayed: the same kernels on
the same memory, launched by one call. PyTorch's whole-network capture recipe
(https://pytorch.org/docs/stable/notes/cuda.html#whole-network-capture) is followed: a few eager steps on
a side stream first, Adam in its ``capturable`` form (its step count on the device), the batch copied into
the graph's static input before each replay.

A graph reads the tensors it was captured with, so whatever replaces them ends it: a phase transition (the
frozen text features are recomputed), the network's restart (a fresh Adam state), a resume. An epoch's
last, smaller batch runs eagerly beside the graph. Learning rates are baked into the captured Adam step,
so runs with a learning-rate scheduler or warm-up are refused, as are fp16's gradient scaler (it reads
back at every step), ``torch.compile`` (its ``reduce-overhead`` mode is its own graphs), DDP and
DataParallel.
"""

import warnings
from typing import Callable, Dict, Hashable, Optional, Tuple

import torch

from cliplit_basicsr.errors import OptionError, require_flag

Terms = Dict[str, torch.Tensor]
# capture(fn) -> (replay, outputs): records fn's work once; each replay() redoes it, rewriting outputs
Capture = Callable[[Callable[[], Terms]], Tuple[Callable[[], None], Terms]]
# eager steps before a capture: lazy set-up (cuBLAS/cuDNN handles, autograd's streams, CLIP loading, Adam's
# state) must happen outside it; PyTorch's recipe uses 3
WARMUP_STEPS = 3


def cuda_graphs_option(value, opt: dict, device: torch.device) -> bool:
    """``train.cuda_graphs`` checked against the run it would capture; a one-line :class:`OptionError` says
    why a run cannot use it."""
    if not require_flag(value, 'train.cuda_graphs'):
        return False
    train = opt['train']
    reasons = [
        (torch.device(device).type != 'cuda', f'needs a CUDA GPU; this run trains on {torch.device(device).type}'),
        (opt.get('dist', False), "runs without torchrun (DDP's gradient all-reduce is not captured)"),
        (opt.get('num_gpu', 1) not in (0, 1), 'captures one GPU: set num_gpu: 1 (BasicSR would use DataParallel)'),
        (train.get('network_amp') == 'fp16', "fp16's gradient scaler reads back every step: use bf16 or fp32"),
        (train.get('compile_network', False), 'choose it or train.compile_network, not both'),
        (bool(train.get('scheduler')), 'the learning rate is captured as a number: remove train.scheduler'),
        (train.get('warmup_iter', -1) > 0, 'the learning rate is captured as a number: remove train.warmup_iter'),
    ]
    for refused, reason in reasons:
        if refused:
            raise OptionError(f'train.cuda_graphs: {reason}')
    return True


def set_capturable(optimizer: torch.optim.Optimizer, capturable: bool) -> None:
    """Adam with its step count on the parameters' device (``capturable``), as capture needs, or back.

    Loading a saved optimizer state restores the saving run's flag, so a resumed run sets its own again.
    """
    for group in optimizer.param_groups:
        group['capturable'] = capturable
        for param in group['params']:
            state = optimizer.state.get(param)
            if state and torch.is_tensor(state.get('step')):
                state['step'] = state['step'].to(param.device if capturable else 'cpu', torch.float32)


def capture_cuda_graph(fn: Callable[[], Terms]) -> Tuple[Callable[[], None], Terms]:
    """Capture ``fn``'s kernels in a CUDA graph (nothing runs yet); returns its replay and ``fn``'s outputs."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = fn()
    return graph.replay, outputs


def _eager_step(step: Callable[[torch.Tensor], Terms], images: torch.Tensor) -> Terms:
    """One ordinary step; on CUDA on a side stream, where the warm-up before a capture has to run. Adam's
    warning that its capturable form runs outside a capture is silenced here, where that is intended."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='.*capturable=True.*without CUDA graph capture')
        if images.device.type != 'cuda':
            return step(images)
        side = torch.cuda.Stream(images.device)
        side.wait_stream(torch.cuda.current_stream(images.device))
        with torch.cuda.stream(side):
            terms = step(images)
        torch.cuda.current_stream(images.device).wait_stream(side)
        return terms


class GraphedStep:
    """Runs a step function as a replayed graph while its key (the phase) stays the same.

    ``step(images)`` must be a full optimizer step on ``images`` returning 0-dim loss tensors, with no host
    reads (the training step is tested for that under ``set_sync_debug_mode``). Under a new key, batches run
    eagerly until one shape has run ``warmup`` times (the loader's full batch: at most one batch an epoch is
    smaller); the next batch of that shape is captured, on a static copy, and replayed, and so is every
    later one: every call is one training step. A batch of another shape (an epoch's last, partial one)
    runs eagerly beside the graph: it updates the parameters and Adam's state in place, where the graph
    reads them, and the graph keeps its own gradient buffers.
    """

    def __init__(self, capture: Capture = capture_cuda_graph, warmup: int = WARMUP_STEPS) -> None:
        self._capture = capture
        self._warmup = warmup
        self.captures = 0  # graphs captured so far (the model logs each)
        self.reset()

    @property
    def captured(self) -> bool:
        return self._replay is not None

    def reset(self) -> None:
        """Drop the graph (and its memory): the next step warms up and captures afresh."""
        self._key: Optional[Hashable] = None
        self._eager_steps: Dict[torch.Size, int] = {}  # per batch shape, since the key's first step
        self._input: Optional[torch.Tensor] = None
        self._replay: Optional[Callable[[], None]] = None
        self._outputs: Terms = {}

    def __call__(self, key: Hashable, images: torch.Tensor, step: Callable[[torch.Tensor], Terms]) -> Terms:
        if key != self._key:
            self.reset()
            self._key = key
        if self._replay is None and self._eager_steps.get(images.shape, 0) >= self._warmup:
            self._input = images.clone()
            static_input = self._input
            self._replay, self._outputs = self._capture(lambda: step(static_input))
            self.captures += 1
        if self._replay is None or images.shape != self._input.shape:
            self._eager_steps[images.shape] = self._eager_steps.get(images.shape, 0) + 1
            return _eager_step(step, images)
        self._input.copy_(images)
        self._replay()
        return {name: value.clone() for name, value in self._outputs.items()}  # the next replay rewrites them
