"""ViT image features without autograd on CPU in fp32, with oneDNN doing the work between the GEMMs.

Prompt steps encode up to 64 images a step without autograd, and open_clip's ViT forward spends much of
that time outside its GEMMs: QuickGELU's three passes over the 4x-wide MLP activations, residual adds,
PyTorch's per-op dispatch and the patch-embedding convolution. :func:`fused_vit_tower` is a copy of the
tower, sharing its weights, whose parts run the same maths through oneDNN's fused epilogues
(``torch.ops.mkldnn._linear_pointwise``):

* the GEMMs read their weights in oneDNN's blocked layout, packed once (and again when a weight changes
  in place) instead of reordered at every call, for a packed copy of the tower's weights;
* QuickGELU ``x * sigmoid(1.702 x)`` is oneDNN's swish post-op ``z * sigmoid(z)`` on ``z = 1.702 x``: the
  1.702 goes into ``c_fc``'s packed weight and its bias, the 1/1.702 into ``c_proj``'s packed weight;
* the attention's output projection and ``c_proj`` add the residual as a binary post-op;
* the patch embedding is one GEMM over the unfolded patches instead of a strided convolution;
* the last block computes the class token only, as :func:`class_token_tower` explains, and its attention
  reads the normed tokens directly instead of projecting every token's key and value.

Only float rounding changes. The blocks have no autograd: they refuse inputs that need gradients.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .class_token import pools_class_token, weight_sharing_copy
from .config import CACHE, op_available
from .onednn_linear import PackedWeights, onednn_linear_available
from .text_blocks import attention_heads, is_plain_block

QUICK_GELU_SCALE = 1.702
_pointwise = torch.ops.mkldnn._linear_pointwise  # x @ W.T + b, then an elementwise post-op


def _linear_add(
    x: torch.Tensor, other: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]
) -> torch.Tensor:
    """``x @ weight.T + bias + other`` by oneDNN, the addition fused into the GEMM."""
    return torch.ops.mkldnn._linear_pointwise.binary(x, other, weight, bias, 'add')


def _no_autograd(x: torch.Tensor) -> None:
    if torch.is_grad_enabled() and x.requires_grad:
        raise RuntimeError('fused_vit_tower: its oneDNN blocks have no autograd; run it under torch.no_grad()')


class PatchEmbedding(nn.Module):
    """A ViT's patch convolution (kernel = stride, no padding) as one GEMM over the unfolded patches;
    returns (B, width, grid_h, grid_w) like the convolution (a permuted view of the GEMM's output)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv, self.packed = conv, PackedWeights()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        _no_autograd(pixels)
        conv = self.conv
        (ph, pw), (batch, channels, height, width) = conv.kernel_size, pixels.shape
        if height % ph or width % pw:  # the convolution drops the remainder: leave that case to it
            return conv(pixels)
        gh, gw = height // ph, width // pw
        patches = pixels.view(batch, channels, gh, ph, gw, pw).permute(0, 2, 4, 1, 3, 5)
        patches = patches.reshape(batch * gh * gw, channels * ph * pw)
        weight = self.packed('weight', conv.weight.view(conv.out_channels, -1))
        out = _pointwise(patches, weight, conv.bias, 'none', [], '')
        return out.view(batch, gh, gw, -1).permute(0, 3, 1, 2)


class FusedBlock(nn.Module):
    """An open_clip ``ResidualAttentionBlock`` (pre-norm attention, QuickGELU MLP, no layer scale) without
    autograd on oneDNN: (B,L,D) -> (B,L,D), or (B,1,D) with ``class_token_only`` (the ViT's last block)."""

    def __init__(self, block: nn.Module, class_token_only: bool):
        super().__init__()
        self.block, self.class_token_only, self.packed = block, class_token_only, PackedWeights()

    def _attention(self, tokens: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """``residual + attn(ln_1(tokens))`` (rows: tokens, or class tokens only), as (rows, D)."""
        attn, ln = self.block.attn, self.block.ln_1
        batch, length, width = tokens.shape
        normed = F.layer_norm(tokens, (width,), ln.weight, ln.bias, ln.eps)
        if self.class_token_only:
            out = self._class_token_attention(normed)
        else:
            qkv = _pointwise(
                normed.view(batch * length, width),
                self.packed('qkv', attn.in_proj_weight),
                attn.in_proj_bias,
                'none',
                [],
                '',
            )
            q, k, v = attention_heads(qkv, batch, attn.num_heads)
            out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(-1, width)
        return _linear_add(out, residual, self.packed('out', attn.out_proj.weight), attn.out_proj.bias)

    def _class_token_attention(self, normed: torch.Tensor) -> torch.Tensor:
        """The class token's attention (B, D), before the output projection, from the normed tokens (B, L, D),
        without projecting the keys and values of all L tokens (most of the last block's time). Per head,
        ``q.(Wk x + bk) = (Wk^T q).x + q.bk``, whose last term is the same for every key and cancels in the
        softmax, and ``sum_l p_l (Wv x_l + bv) = Wv (sum_l p_l x_l) + bv`` because the attention weights
        ``p`` sum to one."""
        attn = self.block.attn
        batch, length, width = normed.shape
        heads, weight, bias = attn.num_heads, attn.in_proj_weight, attn.in_proj_bias
        head_width = width // heads
        scale = head_width**-0.5  # scaled_dot_product_attention's, applied to the query
        q = _pointwise(
            normed[:, 0],
            self.packed('q', weight[:width], scale),
            None if bias is None else bias[:width] * scale,
            'none',
            [],
            '',
        )
        key_weights = weight[width : 2 * width].view(heads, head_width, width)
        value_weights = weight[2 * width :].view(heads, head_width, width)
        keys = torch.bmm(q.view(batch, heads, head_width).transpose(0, 1), key_weights)  # (H, B, D): Wk^T q
        scores = torch.bmm(keys.transpose(0, 1), normed.transpose(1, 2))  # (B, H, L)
        mixed = torch.bmm(scores.softmax(dim=-1), normed)  # (B, H, D): sum_l p_l x_l
        values = torch.bmm(mixed.transpose(0, 1), value_weights.transpose(1, 2)).transpose(0, 1).reshape(batch, width)
        return values if bias is None else values + bias[2 * width :]

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        """``x + c_proj(QuickGELU(c_fc(ln_2(x))))`` on (rows, D)."""
        ln, mlp = self.block.ln_2, self.block.mlp
        h = F.layer_norm(x, x.shape[-1:], ln.weight, ln.bias, ln.eps)
        fc_bias = None if mlp.c_fc.bias is None else mlp.c_fc.bias * QUICK_GELU_SCALE
        h = _pointwise(h, self.packed('fc', mlp.c_fc.weight, QUICK_GELU_SCALE), fc_bias, 'swish', [], '')
        return _linear_add(h, x, self.packed('proj', mlp.c_proj.weight, 1 / QUICK_GELU_SCALE), mlp.c_proj.bias)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        _no_autograd(x)
        if attn_mask is not None:
            raise ValueError('FusedBlock: a ViT block takes no attention mask')
        batch, length, width = x.shape
        x = x.contiguous()
        residual = x[:, 0].contiguous() if self.class_token_only else x.view(batch * length, width)
        return self._mlp(self._attention(x, residual)).view(batch, -1, width)


def _fusable(block: nn.Module) -> bool:
    """Whether ``block`` is the plain open_clip block :class:`FusedBlock` computes."""
    from open_clip.transformer import LayerNorm, QuickGELU

    if not is_plain_block(block):
        return False
    mlp = block.mlp
    return (
        type(mlp.gelu) is QuickGELU
        and isinstance(getattr(mlp, 'ln', nn.Identity()), nn.Identity)
        and isinstance(block.ls_1, nn.Identity)
        and isinstance(block.ls_2, nn.Identity)
        and all(type(ln) in (LayerNorm, nn.LayerNorm) and ln.weight is not None for ln in (block.ln_1, block.ln_2))
    )


def _probe() -> bool:
    if not onednn_linear_available():
        return False
    gen = torch.Generator().manual_seed(0)
    x, weight, bias, other = (torch.randn(*shape, generator=gen) for shape in ((5, 7), (3, 7), (3,), (5, 3)))
    expected = F.linear(x, weight, bias)
    packed = PackedWeights()('weight', weight)
    swish = _pointwise(x, packed, bias, 'swish', [], '')
    added = _linear_add(x, other, packed, bias)
    return torch.allclose(swish, F.silu(expected), atol=1e-5) and torch.allclose(added, expected + other, atol=1e-5)


def fused_ops_available() -> bool:
    """Whether oneDNN's linear op with packed weights and the swish and binary-add post-ops is here and right."""
    return op_available('fused_vit', _probe)


def _fused_copy(visual: nn.Module) -> Optional[nn.Module]:
    blocks = getattr(getattr(visual, 'transformer', None), 'resblocks', None)
    if not (fused_ops_available() and pools_class_token(visual) and all(_fusable(b) for b in blocks)):
        return None
    conv = visual.conv1
    if conv.stride != conv.kernel_size or conv.padding != (0, 0) or conv.groups != 1 or conv.dilation != (1, 1):
        return None
    tower = weight_sharing_copy(visual)
    tower.conv1 = PatchEmbedding(tower.conv1)
    resblocks = tower.transformer.resblocks
    for i, block in enumerate(resblocks):
        resblocks[i] = FusedBlock(block, class_token_only=i == len(resblocks) - 1)
    return tower


def fused_vit_tower(visual: nn.Module) -> Optional[nn.Module]:
    """For an eval-mode open_clip ViT that pools its class token and has plain blocks, on a PyTorch with
    oneDNN: a copy sharing its weights that runs on oneDNN's fused ops (no autograd; see the module
    docstring). None otherwise. Made once per tower."""
    if visual.training:
        return None
    return CACHE.derived('fused_vit', visual, lambda: _fused_copy(visual))
