"""open_clip's transformer block on contiguous (N*L, D) rows: the same maths, without the transposes.

``nn.MultiheadAttention`` with ``batch_first`` transposes its input to (L, N, D) and projects that
non-contiguous tensor, which PyTorch runs as one small GEMM per sequence position against a broadcast
weight (forward and backward). For the prompt pair's text forward (2 prompts of 18 positions) that was
a third of the step's text time. :func:`block_forward` computes the block with the in-projection on
the contiguous rows and attention by ``scaled_dot_product_attention``; it is differentiable.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def is_plain_block(block: nn.Module) -> bool:
    """Whether ``block`` is an open_clip ``ResidualAttentionBlock`` whose attention :func:`block_forward`
    computes: batch-first, one packed in-projection, no extra key/value bias or zero attention, no
    separate key/value norm."""
    from open_clip.transformer import ResidualAttentionBlock
    if type(block) is not ResidualAttentionBlock or hasattr(block, 'ln_1_kv'):
        return False
    attn = block.attn
    return (isinstance(attn, nn.MultiheadAttention) and attn.batch_first and attn._qkv_same_embed_dim
            and attn.bias_k is None and not attn.add_zero_attn)


def attention_heads(qkv: torch.Tensor, batch: int, heads: int) -> torch.Tensor:
    """(rows, 3D) packed projections -> q, k, v stacked as (3, batch, heads, L, D / heads) views."""
    return qkv.view(batch, -1, 3, heads, qkv.shape[-1] // (3 * heads)).permute(2, 0, 3, 1, 4)


def block_forward(block: nn.Module, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``block(x, attn_mask=attn_mask)`` for a plain block (:func:`is_plain_block`) on x (N, L, D)."""
    attn = block.attn
    batch, length, width = x.shape
    dropout = attn.dropout if attn.training else 0.0
    q, k, v = attention_heads(F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias), batch, attn.num_heads)
    mask = None if attn_mask is None else attn_mask.to(x.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    x = x + block.ls_1(attn.out_proj(out.transpose(1, 2).reshape(batch, length, width)))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def transformer_forward(transformer: nn.Module, x: torch.Tensor,
                        attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``transformer(x, attn_mask=attn_mask)`` for an open_clip ``Transformer`` on x (N, L, D), through
    :func:`block_forward` where every block is plain (and no gradient checkpointing is asked for)."""
    blocks = transformer.resblocks
    if getattr(transformer, 'grad_checkpointing', False) or not all(is_plain_block(b) for b in blocks):
        return transformer(x, attn_mask=attn_mask)
    for block in blocks:
        x = block_forward(block, x, attn_mask)
    return x
