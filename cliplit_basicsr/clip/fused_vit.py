"""ViT image features without autograd on CPU in fp32, with oneDNN doing the work between the GEMMs.

Prompt steps encode up to 64 images a step without autograd, and open_clip's ViT forward spends a third
of that time outside its GEMMs: QuickGELU's three passes over the 4x-wide MLP activations, residual adds,
a dispatch mode per op and the patch-embedding convolution. :func:`fused_vit_tower` is a copy of the
tower, sharing its weights, whose parts run the same maths through oneDNN's fused epilogues
(``torch.ops.mkldnn._linear_pointwise``):

* the GEMMs read their weights in oneDNN's blocked layout, packed once (and again when a weight changes
  in place) instead of reordered at every call: 8% faster, for a packed copy of the tower's weights
  (350 MB for ViT-B/32);
* QuickGELU ``x * sigmoid(1.702 x)`` is oneDNN's swish post-op ``z * sigmoid(z)`` on ``z = 1.702 x``: the
  1.702 goes into ``c_fc``'s packed weight and its bias, the 1/1.702 into ``c_proj``'s packed weight;
* the attention's output projection and ``c_proj`` add the residual as a binary post-op;
* the patch embedding is one GEMM over the unfolded patches instead of a strided convolution;
* the last block computes the class token only, as :func:`class_token_tower` explains.

Only float rounding changes. The blocks have no autograd: they refuse inputs that need gradients.
"""
import functools
import weakref
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import attention_heads, is_plain_block
from .class_token import pools_class_token, weight_sharing_copy
from .onednn_gemm import PackedWeights, onednn_gemms_available

QUICK_GELU_SCALE = 1.702
_TOWERS: 'weakref.WeakKeyDictionary[nn.Module, Optional[nn.Module]]' = weakref.WeakKeyDictionary()
_pointwise = torch.ops.mkldnn._linear_pointwise  # x @ W.T + b, then an elementwise post-op


def _linear_add(x: torch.Tensor, other: torch.Tensor, weight: torch.Tensor,
                bias: Optional[torch.Tensor]) -> torch.Tensor:
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
        heads = attn.num_heads
        x = F.layer_norm(tokens, (width, ), ln.weight, ln.bias, ln.eps).view(batch * length, width)
        weight, bias = attn.in_proj_weight, attn.in_proj_bias
        if self.class_token_only:  # query: the class token; keys and values: every token
            q = _pointwise(x.view(batch, length, width)[:, 0], self.packed('q', weight[:width]),
                        None if bias is None else bias[:width], 'none', [], '')
            q = q.view(batch, 1, heads, -1).transpose(1, 2)
            kv_bias = None if bias is None else bias[width:]
            kv = _pointwise(x, self.packed('kv', weight[width:]), kv_bias, 'none', [], '')
            k, v = attention_heads(kv, batch, heads, parts=2)
        else:
            q, k, v = attention_heads(_pointwise(x, self.packed('qkv', weight), bias, 'none', [], ''), batch, heads)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(-1, width)
        return _linear_add(out, residual, self.packed('out', attn.out_proj.weight), attn.out_proj.bias)

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
    return (type(mlp.gelu) is QuickGELU and isinstance(getattr(mlp, 'ln', nn.Identity()), nn.Identity)
            and isinstance(block.ls_1, nn.Identity) and isinstance(block.ls_2, nn.Identity)
            and all(type(ln) in (LayerNorm, nn.LayerNorm) and ln.weight is not None for ln in (block.ln_1, block.ln_2)))


@functools.lru_cache(maxsize=None)
def fused_ops_available() -> bool:
    """Whether oneDNN's linear op with packed weights and the swish and binary-add post-ops is here and right."""
    if not onednn_gemms_available():
        return False
    gen = torch.Generator().manual_seed(0)
    x, weight, bias, other = (torch.randn(*shape, generator=gen) for shape in ((5, 7), (3, 7), (3, ), (5, 3)))
    expected = F.linear(x, weight, bias)
    try:
        packed = PackedWeights()('weight', weight)
        swish = _pointwise(x, packed, bias, 'swish', [], '')
        added = _linear_add(x, other, packed, bias)
    except (AttributeError, RuntimeError):
        return False
    return torch.allclose(swish, F.silu(expected), atol=1e-5) and torch.allclose(added, expected + other, atol=1e-5)


def fused_vit_tower(visual: nn.Module) -> Optional[nn.Module]:
    """For an eval-mode open_clip ViT that pools its class token and has plain blocks, on a PyTorch with
    oneDNN: a copy sharing its weights that runs on oneDNN's fused ops (no autograd; see the module
    docstring). None otherwise. Made once per tower."""
    if visual not in _TOWERS:
        tower = None
        blocks = getattr(getattr(visual, 'transformer', None), 'resblocks', None)
        if (fused_ops_available() and pools_class_token(visual) and not visual.training
                and all(_fusable(b) for b in blocks)):
            conv = visual.conv1
            if conv.stride == conv.kernel_size and conv.padding == (0, 0) and conv.groups == 1 \
                    and conv.dilation == (1, 1):
                tower = weight_sharing_copy(visual)
                tower.conv1 = PatchEmbedding(tower.conv1)
                resblocks = tower.transformer.resblocks
                for i, block in enumerate(resblocks):
                    resblocks[i] = FusedBlock(block, class_token_only=i == len(resblocks) - 1)
        _TOWERS[visual] = tower
    return _TOWERS[visual]
