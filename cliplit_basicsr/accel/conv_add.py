"""The tiled engine's 3x3 convolutions, accumulated in place by oneDNN on a CPU.

The engine adds each convolution's output into a reused buffer (residual sums, the PPM fuse conv's two
halves). oneDNN's sum post-op writes the result straight into that buffer: a fresh full-tile output from
``F.conv2d`` would cost page faults that take about as long as the convolution on a CPU, and one more pass
to add it. In fp32 the result is bit-identical to ``out + F.conv2d(x, ...)``.
"""

from typing import Optional

import torch


def conv_add_onednn(
    out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], row_pad: int
) -> None:
    """``out += conv3x3(x)``, zero padding (``row_pad`` rows, 1 column), written by oneDNN into ``out``."""
    torch.ops.mkldnn._convolution_pointwise_.binary(
        out, x, weight, bias, [row_pad, 1], [1, 1], [1, 1], 1, 'add', None, None, [], None
    )


def conv_add_works(dtype: torch.dtype) -> bool:
    """Whether this PyTorch build runs oneDNN's in-place conv-add for ``dtype`` on this CPU, and right."""
    x = torch.ones(1, 2, 4, 4, dtype=dtype).contiguous(memory_format=torch.channels_last)
    out = torch.zeros_like(x)
    weight = torch.ones(2, 2, 3, 3, dtype=dtype).contiguous(memory_format=torch.channels_last)
    conv_add_onednn(out, x, weight, None, 1)
    return float(out[0, 0, 1, 1]) == 18.0
