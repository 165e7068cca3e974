"""Fast paths of CLIP-LIT, behind one switch (:mod:`.config`), beside plain maths that never needs them.

Each stays because ``scripts/bench_fast_paths.py`` shows it makes a step or inference at least 1.3x faster
on a CPU, or because it computes less on every device (the text transformer's length, the class-token
tower); ``docs/benchmarks.md`` has the table.

Every computation that has a fast path asks one of the functions below first; each returns ``None`` where
its fast path does not apply (switch off, another device or dtype, autograd needed, a tower it does not
compute) or is off (a private op the installed PyTorch lacks or changed, a failure at run time: one warning,
:mod:`.config`), and the caller then runs the plain open_clip / PyTorch computation, a branch away
(``cliplit_basicsr/clip``, ``cliplit_basicsr/engine``). Only float rounding differs between the two; the
parity, golden and CLIP tests run under both settings.

* :func:`vit_image_features`: ViT image features without autograd on a fp32 CPU run on oneDNN's fused ops
  (:mod:`.fused_vit`), otherwise the last block computes the class token only (:mod:`.class_token`);
* :func:`bf16_image_tower`: CPU bf16 image forwards on a bf16 copy of the tower, not under autocast;
* :func:`text_transformer`: the prompt pair's text transformer up to the pooled position, on contiguous
  rows with oneDNN's GEMMs forward and backward (:mod:`.text_blocks`, :mod:`.onednn_linear`);
* :func:`conv_add_op`: the tiled enhancement engine's convolutions accumulate in place with oneDNN
  (:mod:`.conv_add`).
"""

import copy
from typing import Callable, Optional

import torch
from torch import nn

from .config import CACHE, accel, clear_caches, op_available, set_accel, step_aside, use_accel

__all__ = [
    'accel',
    'bf16_image_tower',
    'clear_caches',
    'conv_add_op',
    'op_available',
    'set_accel',
    'text_transformer',
    'use_accel',
    'vit_image_features',
]


def _exact_cpu_without_autograd(pixels: torch.Tensor, amp: Optional[str]) -> bool:
    return amp is None and not torch.is_grad_enabled() and pixels.device.type == 'cpu' and pixels.dtype == torch.float32


def _guarded(name: str, fast: Callable[[], object]) -> Optional[object]:
    """``fast()``, or None if the fast path ``name`` failed at run time, now or before (it stays off)."""
    if CACHE.failed.get(name):
        return None
    try:
        return fast()
    except (AttributeError, RuntimeError, TypeError, NotImplementedError) as error:
        step_aside(name, error)
        return None


def bf16_image_tower(visual: nn.Module, device: torch.device, amp: Optional[str]) -> Optional[nn.Module]:
    """For CPU bf16 (``amp: bf16``): a frozen bf16 copy of ``visual``, made once. Under autocast every frozen
    weight is cast again at every call (autocast caches casts of trainable leaves only), so the copy runs the
    GEMMs in bf16 directly. Elsewhere None: autocast (:func:`cliplit_basicsr.clip.precision.clip_autocast`)."""
    if not use_accel() or torch.device(device).type != 'cpu' or amp != 'bf16':
        return None
    return CACHE.derived('bf16', visual, lambda: copy.deepcopy(visual).to(torch.bfloat16).eval().requires_grad_(False))


def vit_image_features(visual: nn.Module, pixels: torch.Tensor, amp: Optional[str]) -> Optional[torch.Tensor]:
    """``visual(pixels)`` for a ViT, faster; None where no fast path applies (module docstring)."""
    if not use_accel():
        return None
    from .class_token import class_token_tower
    from .fused_vit import fused_vit_tower

    if _exact_cpu_without_autograd(pixels, amp):
        fused = fused_vit_tower(visual)
        if fused is not None:
            features = _guarded('fused_vit', lambda: fused(pixels))
            if features is not None:
                return features
    tower = class_token_tower(visual)
    return None if tower is visual else tower(pixels)


def text_transformer(
    transformer: nn.Module, x: torch.Tensor, attn_mask: Optional[torch.Tensor], length: int
) -> Optional[torch.Tensor]:
    """open_clip's text ``transformer`` on ``x`` (N, L, D), computed only for the first ``length`` positions
    (those up to the last pooled one: under the causal mask they never see later ones), on contiguous rows;
    the result covers those ``length`` positions. None with the switch off."""
    if not use_accel():
        return None
    from .text_blocks import transformer_forward

    mask = attn_mask[:length, :length] if attn_mask is not None else None
    return _guarded('text_blocks', lambda: transformer_forward(transformer, x[:, :length], mask))


def conv_add_op(device: torch.device, dtype: torch.dtype, plain: Callable) -> Callable:
    """The tiled engine's ``out += conv3x3(x)``: oneDNN's in-place conv-add on a CPU that has it (see
    :mod:`.conv_add`), falling back to ``plain`` (``F.conv2d``'s result added) elsewhere, or for good after a
    failure (one warning)."""
    if not use_accel() or torch.device(device).type != 'cpu':
        return plain
    from .conv_add import conv_add_onednn, conv_add_works

    name = f'conv_add_{dtype}'
    if not op_available(name, lambda: conv_add_works(dtype)):
        return plain

    def conv_add(*args) -> None:
        if _guarded(name, lambda: conv_add_onednn(*args) or True) is None:
            plain(*args)

    return conv_add
