"""What every engine shares: its precisions, exact arithmetic, the output formula and its rounding."""

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def exact_math(device: torch.device, precision: str) -> Iterator[None]:
    """Inference mode; on CUDA, fp32 means fp32 (TF32 off)."""
    cudnn_tf32, matmul_tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    if torch.device(device).type == 'cuda' and precision == 'fp32':
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.inference_mode():
            yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn_tf32, matmul_tf32


def light_to_output(image: torch.Tensor, light: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """``clamp(I / L^strength, 0, 1)``: the authors' ``clamp(I / L, 0, 1)`` (no epsilon) at strength 1,
    the input itself at 0, less brightening below 1 and more above."""
    if strength == 1:
        return torch.clamp(image / light, 0, 1)
    # L^s in float64, then rounded: float32 pow gives a different last bit on a quarter of the values in
    # its vectorised kernel and in its scalar one (AVX-512), so the result would depend on where a value
    # falls in a tile. Rounded from float64 it is the same whatever the layout (the nearest float32 but
    # where L^s lies within 1e-16 of a tie), so the web app's outputs equal cliplit-enhance's.
    return torch.clamp(image / light.double().pow(strength).float(), 0, 1)


def quantise(values: torch.Tensor, peak: float) -> torch.Tensor:
    """[0, 1] floats to integers of ``peak`` (255, 65535) as ``torchvision.utils.save_image`` rounds, which
    is how the authors' code writes every image: ``x * peak + 0.5``, clamped, truncated (int32)."""
    return values.mul(peak).add_(0.5).clamp_(0, peak).to(torch.int32)
