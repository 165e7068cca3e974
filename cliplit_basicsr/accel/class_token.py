"""ViT image features without the work that CLIP's pooling throws away.

A ViT that pools its class token reads only that token of its last block's output. The block still needs
every token as attention keys and values, but only the class token's own attention row, output
projection and MLP: for ViT-B/32 that saves most of a block's FLOPs. The maths is the same up to
float rounding, gradients included (the outputs not computed are never read).
"""

import copy
import itertools
from typing import Optional

import torch
from torch import nn

from .config import CACHE


class ClassTokenBlock(nn.Module):
    """A ViT's last ``ResidualAttentionBlock`` evaluated for the class token only: (B,L,D) -> (B,1,D)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        block = self.block
        tokens = block.ln_1(x)
        cls = x[:, :1] + block.ls_1(block.attention(tokens[:, :1], tokens, tokens, attn_mask=attn_mask))
        return cls + block.ls_2(block.mlp(block.ln_2(cls)))


def pools_class_token(visual: nn.Module) -> bool:
    """Whether ``visual`` is an open_clip ViT whose output is its last block's class token, and only that."""
    from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

    if not isinstance(visual, VisionTransformer) or visual.attn_pool is not None or visual.output_tokens:
        return False
    last = visual.transformer.resblocks[-1]
    return (
        visual.pool_type == 'tok'
        and visual.transformer.batch_first
        and type(last) is ResidualAttentionBlock
        and not hasattr(last, 'ln_1_kv')
    )


def weight_sharing_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters and buffers are the original tensors (its submodules
    can then be replaced without touching ``module``)."""
    shared = {id(t): t for t in itertools.chain(module.parameters(), module.buffers())}
    return copy.deepcopy(module, shared)


def _class_token_copy(visual: nn.Module) -> Optional[nn.Module]:
    if not pools_class_token(visual):
        return None
    tower = weight_sharing_copy(visual)
    tower.transformer.resblocks[-1] = ClassTokenBlock(tower.transformer.resblocks[-1])
    return tower


def class_token_tower(visual: nn.Module) -> nn.Module:
    """``visual``, or, for a ViT that pools its class token, a copy sharing its weights whose last block
    computes that token only (:class:`ClassTokenBlock`); made once per tower."""
    return CACHE.derived('class_token', visual, lambda: _class_token_copy(visual)) or visual
