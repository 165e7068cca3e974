"""Loading CLIP-LIT enhancement-network checkpoints in the forms they come in.

Accepted: a plain state dict (the authors' files carry DataParallel's ``module.`` prefix) or BasicSR's
wrapped form ``{'params': ..., 'params_ema': ...}`` (``params_ema`` preferred, as Real-ESRGAN does).
Anything else raises :class:`CheckpointError` with a one-line message naming the file.
"""

from pathlib import Path
from typing import Dict, Union

import torch
from torch import nn

from cliplit_basicsr.errors import CLIPLITError

OFFICIAL_CHECKPOINT = Path(__file__).resolve().parent / 'weights' / 'enhancement_model.pth'
PathLike = Union[str, Path]


class CheckpointError(CLIPLITError, ValueError):
    """A file that is not a loadable CLIP-LIT enhancement-network checkpoint."""


def resolve_checkpoint(ckpt: PathLike) -> Path:
    """Map ``'official'`` to the packaged final model of the authors; check that other paths exist."""
    path = OFFICIAL_CHECKPOINT if str(ckpt) == 'official' else Path(ckpt)
    if not path.is_file():
        raise CheckpointError(f'checkpoint {path}: no such file')
    return path


def _summarise(keys) -> str:
    keys = sorted(keys)
    shown = ', '.join(keys[:3])
    return shown + (f' (+{len(keys) - 3} more)' if len(keys) > 3 else '')


def read_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    """Read a checkpoint file and return its state dict with wrappers and ``module.`` prefixes removed."""
    with open(path, 'rb') as f:
        magic = f.read(4)
    if not (magic.startswith(b'PK\x03\x04') or magic.startswith(b'\x80')):  # zip (torch.save) or pickle
        raise CheckpointError(f'checkpoint {path}: not a torch file')
    try:
        data = torch.load(path, map_location='cpu', weights_only=True)
    except Exception:  # torch raises many types for corrupt files or pickled non-tensor objects
        raise CheckpointError(
            f'checkpoint {path}: cannot be loaded as tensors (corrupt, or it holds objects other than a state dict)'
        ) from None
    if isinstance(data, dict):
        for wrapper in ('params_ema', 'params'):
            if isinstance(data.get(wrapper), dict):
                data = data[wrapper]
                break
    if (
        not isinstance(data, dict)
        or not data
        or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in data.items())
    ):
        raise CheckpointError(f'checkpoint {path}: not a state dict of tensors')
    return {k[len('module.') :] if k.startswith('module.') else k: v for k, v in data.items()}


def load_checkpoint(net: nn.Module, path: PathLike) -> nn.Module:
    """Load ``path`` into ``net`` strictly (all keys and shapes must match); returns ``net``."""
    state = read_state_dict(path)
    expected = net.state_dict()
    missing, unexpected = expected.keys() - state.keys(), state.keys() - expected.keys()
    if missing or unexpected:
        parts = ([f'missing keys {_summarise(missing)}'] if missing else []) + (
            [f'unexpected keys {_summarise(unexpected)}'] if unexpected else []
        )
        raise CheckpointError(f'checkpoint {path}: does not match {type(net).__name__}: ' + '; '.join(parts))
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise CheckpointError(
                f'checkpoint {path}: {key} has shape {tuple(value.shape)}, '
                f'{type(net).__name__} expects {tuple(expected[key].shape)}'
            )
    net.load_state_dict(state, strict=True)
    return net
