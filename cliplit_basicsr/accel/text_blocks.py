"""open_clip's transformer block on contiguous (N*L, D) rows: the same maths, without the transposes.

``nn.MultiheadAttention`` with ``batch_first`` transposes its input to (L, N, D) and projects that
non-contiguous tensor, which PyTorch runs as one small GEMM per sequence position against a broadcast
weight (forward and backward). For the prompt pair's text forward (2 prompts of 18 positions) that was
a third of the step's text time. :func:`block_forward` computes the block with the in-projection on
the contiguous rows and attention by ``scaled_dot_product_attention``, and its four linear layers by
:func:`.onednn_linear.linear` (oneDNN on fp32 CPU, forward and backward); it is differentiable.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .onednn_linear import linear


def is_plain_block(block: nn.Module) -> bool:
    """Whether ``block`` is an open_clip ``ResidualAttentionBlock`` whose attention :func:`block_forward`
    computes: batch-first, one packed in-projection, no extra key/value bias or zero attention, no
    separate key/value norm, an MLP of ``c_fc``, ``gelu``, optional ``ln``, ``c_proj``."""
    from open_clip.transformer import ResidualAttentionBlock

    if type(block) is not ResidualAttentionBlock or hasattr(block, 'ln_1_kv'):
        return False
    attn, mlp = block.attn, block.mlp
    return (
        isinstance(attn, nn.MultiheadAttention)
        and attn.batch_first
        and attn._qkv_same_embed_dim
        and attn.bias_k is None
        and not attn.add_zero_attn
        and isinstance(mlp, nn.Sequential)
        and [name for name, _ in mlp.named_children()] in (['c_fc', 'gelu', 'c_proj'], ['c_fc', 'gelu', 'ln', 'c_proj'])
        and isinstance(mlp.c_fc, nn.Linear)
        and isinstance(mlp.c_proj, nn.Linear)
    )


def attention_heads(projections: torch.Tensor, batch: int, heads: int) -> torch.Tensor:
    """(rows, 3*D) packed q, k, v projections -> stacked as (3, batch, heads, L, D / heads) views."""
    width = projections.shape[-1] // (3 * heads)
    return projections.view(batch, -1, 3, heads, width).permute(2, 0, 3, 1, 4)


def block_forward(block: nn.Module, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``block(x, attn_mask=attn_mask)`` for a plain block (:func:`is_plain_block`) on x (N, L, D)."""
    attn = block.attn
    batch, length, width = x.shape
    dropout = attn.dropout if attn.training else 0.0
    q, k, v = attention_heads(linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias), batch, attn.num_heads)
    mask = None if attn_mask is None else attn_mask.to(x.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    x = x + block.ls_1(
        linear(out.transpose(1, 2).reshape(batch, length, width), attn.out_proj.weight, attn.out_proj.bias)
    )
    mlp = block.mlp
    h = mlp.gelu(linear(block.ln_2(x), mlp.c_fc.weight, mlp.c_fc.bias))
    h = mlp.ln(h) if hasattr(mlp, 'ln') else h
    return x + block.ls_2(linear(h, mlp.c_proj.weight, mlp.c_proj.bias))


def transformer_forward(
    transformer: nn.Module, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """``transformer(x, attn_mask=attn_mask)`` for an open_clip ``Transformer`` on x (N, L, D), through
    :func:`block_forward` where every block is plain (and no gradient checkpointing is asked for)."""
    blocks = transformer.resblocks
    if getattr(transformer, 'grad_checkpointing', False) or not all(is_plain_block(b) for b in blocks):
        return transformer(x, attn_mask=attn_mask)
    for block in blocks:
        x = block_forward(block, x, attn_mask)
    return x
