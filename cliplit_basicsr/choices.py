"""What a user chooses among, by name, importable without torch: the command line parses its arguments
(and answers ``--help``) before it imports anything heavy.

``PRECISIONS`` is the package's one map from a precision's name to its torch dtype: inference
(``--precision``), the CLIP towers' ``amp`` and the network's ``train.network_amp`` all take these names.
"""

from typing import Dict, Tuple

AUTO = 'auto'  # the value of every option that the package works out for itself (run length, micro-batch...)
PRECISIONS: Dict[str, str] = {'fp32': 'float32', 'bf16': 'bfloat16', 'fp16': 'float16'}
REDUCED_PRECISIONS: Tuple[str, ...] = ('bf16', 'fp16')  # what an autocast option (``amp``) may ask for
ENGINES: Tuple[str, ...] = ('tiled', 'reference')  # cliplit_basicsr.engine.ENGINES maps them to classes
# Core tile size of the tiled engine by device type: on a CPU, small enough for the buffers of a tile to
# stay in memory that is already paged in and for little memory in all; on CUDA, big tiles keep the GPU busy.
DEFAULT_TILES: Dict[str, int] = {'cpu': 384, 'cuda': 1024}
OUTPUT_FORMATS: Tuple[str, ...] = ('png', 'jpg', 'webp', 'tif', 'heic')


def torch_dtype(precision: str):
    """The torch dtype of a precision name (``'fp32'``, ``'bf16'``, ``'fp16'``); ``ValueError`` otherwise."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {", ".join(PRECISIONS)}, got {precision!r}')
    return getattr(torch, PRECISIONS[precision])
