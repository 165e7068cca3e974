"""The four CLIP-LIT losses (``docs/method.md``), batched, registered in BasicSR's ``LOSS_REGISTRY``.

Each loss returns ``loss_weight`` times the authors' unscaled value; the YAML sets the authors' scales
(CLIP-Enhance 320, identity 25 (x0.9 in the total), ranking 200). How the training model calls them:

* Enhancement phase (gradients to the images, hence to the enhancement network)::

      with torch.no_grad():
          text = net_prompt()                        # (2, D), frozen prompt, once per phase
      l_clip = cri_clip(enhanced, text)              # CLIPLITEnhanceLoss
      l_id = cri_identity(enhanced, input)           # CLIPLITIdentityLoss (input is a constant target)

* Prompt phases (gradients to the prompt embedding only)::

      feats = {k: bare_prompt.encode_images(imgs[k]) for k in sets}   # once per set, no autograd
      text = net_prompt()                                              # with autograd
      l_init = cri_prompt_init(text, bare_prompt.encode_images(pool_images), labels)   # CLIPLITPromptInitLoss
      l_rank = cri_rank(text, feats['backlit'], feats['welllit'], feats['it'], feats['it1'])  # CLIPLITPromptRankingLoss

Each image set passes CLIP once per call, as one batch: there is no loop over images.
"""

from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from cliplit_basicsr.choices import AUTO
from cliplit_basicsr.clip import (
    DEFAULT_PRETRAINED,
    LOGIT_SCALE,
    RN_MODEL,
    VIT_MODEL,
    check_amp,
    check_clip_weights,
    image_features,
    load_clip,
    negative_scores,
    prompt_logits,
    require_resnet,
    resnet_feature_maps,
)
from cliplit_basicsr.transfer import to_device

DEFAULT_LAYER_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 0.5)  # RN maps [stem, layer1, layer2, layer3, layer4]
DEFAULT_MARGINS = {'rank2': (1.0, 0.2), 'rank3': (0.9, 0.2), 'rank4': (0.9, 0.1)}  # (large, small)
RANK_ORDERS = ('code', 'paper')
IDENTITY_PRECISIONS = (AUTO, 'fp32', 'fp16')


class _FrozenCLIPLoss(nn.Module):
    """A loss that runs a shared frozen CLIP; the model is fetched per device and never registered."""

    def __init__(self, loss_weight: float, clip_model: str, clip_pretrained: Optional[str], amp: Optional[str]):
        super().__init__()
        check_clip_weights(clip_model, clip_pretrained)  # fail at build time, not at the first iteration
        self.loss_weight = loss_weight
        self.clip_model, self.clip_pretrained, self.amp = clip_model, clip_pretrained, check_amp(amp)

    def clip(self, device: torch.device):
        """The shared frozen CLIP on ``device``."""
        return load_clip(self.clip_model, self.clip_pretrained, device)


@LOSS_REGISTRY.register()
class CLIPLITEnhanceLoss(_FrozenCLIPLoss):
    """CLIP-Enhance loss: mean over the batch of the negative score S(I_t) (authors' ``L_clip_from_feature``).

    ``forward(enhanced (B,3,H,W) in [0,1], text_features (2,D)) -> loss_weight * mean_b S(enhanced_b)``.
    Gradients reach ``enhanced``; pass ``text_features`` computed once per phase without autograd.
    """

    reduction = 'mean'  # over the batch (read by the training model when it splits a batch)

    def __init__(
        self,
        loss_weight: float = 1.0,
        clip_model: str = VIT_MODEL,
        clip_pretrained: Optional[str] = DEFAULT_PRETRAINED,
        logit_scale: float = LOGIT_SCALE,
        amp: Optional[str] = None,
    ):
        super().__init__(loss_weight, clip_model, clip_pretrained, amp)
        self.logit_scale = logit_scale

    def negative_scores(self, images: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """S(I) (B,) of each image: the negative (backlit) prompt's softmax probability."""
        features = image_features(self.clip(images.device), images, self.amp)
        return negative_scores(features, text_features, self.logit_scale)

    def forward(self, enhanced: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        return self.loss_weight * self.negative_scores(enhanced, text_features).mean()


@LOSS_REGISTRY.register()
class CLIPLITIdentityLoss(_FrozenCLIPLoss):
    """Identity loss on the five RN maps (authors' ``L_clip_MSE``): summed over the batch, not averaged.

    ``forward(enhanced, target) -> loss_weight * sum_b sum_l w_l * MSE(map_l(enhanced_b), map_l(target_b))``
    with per-map MSE averaged over C*H*W and ``layer_weights`` w applied as given (not normalised).
    ``target`` (the backlit input) is a constant: its maps are computed without autograd.
    The reconstruction stage uses ``layer_weights: [1, 1, 1, 1, 1]``.

    ``precision``: ``'fp16'`` runs the RN as the authors' CUDA run did (OpenAI's loader keeps its fp16
    conv, linear and attention weights on a GPU): fp16 weights (BatchNorm's stay fp32), fp16 feature maps,
    their MSE and the weighted sum in fp16. ``'fp32'`` runs it in float32 (the parity fixtures' numerics).
    ``'auto'`` (default): fp16 on CUDA, where users train, unless ``amp`` is set; fp32 on a CPU, where
    fp16 convolutions are slow or emulated. ``docs/differences.md`` gives the measured difference.
    """

    reduction = 'sum'  # over the batch, as the authors' (read by the training model when it splits a batch)

    def __init__(
        self,
        loss_weight: float = 1.0,
        layer_weights: Sequence[float] = DEFAULT_LAYER_WEIGHTS,
        clip_model: str = RN_MODEL,
        clip_pretrained: Optional[str] = DEFAULT_PRETRAINED,
        amp: Optional[str] = None,
        precision: str = AUTO,
    ):
        super().__init__(loss_weight, clip_model, clip_pretrained, amp)
        if precision not in IDENTITY_PRECISIONS:
            raise ValueError(
                f"CLIPLITIdentityLoss: precision '{precision}' is not one of {', '.join(IDENTITY_PRECISIONS)}"
            )
        if precision == 'fp16' and self.amp is not None:
            raise ValueError("CLIPLITIdentityLoss: precision fp16 (the authors' fp16 RN) and amp exclude each other")
        self.precision = precision
        if len(layer_weights) != len(DEFAULT_LAYER_WEIGHTS):
            raise ValueError(
                f'CLIPLITIdentityLoss: layer_weights needs 5 values (stem, layer1-4), got {list(layer_weights)}'
            )
        self.layer_weights = tuple(float(w) for w in layer_weights)
        self._weights_on: Dict[tuple, torch.Tensor] = {}

    def clip(self, device: torch.device):
        model = super().clip(device)
        require_resnet(model, self.clip_model)
        return model

    def precision_on(self, device: torch.device) -> str:
        """``'fp16'`` or ``'fp32'``: the precision the RN runs in on ``device`` (``auto`` resolved)."""
        if self.precision != AUTO:
            return self.precision
        return 'fp16' if torch.device(device).type == 'cuda' and self.amp is None else 'fp32'

    def per_image_layer_mse(self, enhanced: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Unweighted MSE (B,5) between the maps of ``enhanced`` and ``target``, per image and map (float16
        with ``precision`` fp16, float32 otherwise)."""
        if enhanced.shape != target.shape:
            raise ValueError(
                f'CLIPLITIdentityLoss: enhanced {tuple(enhanced.shape)} and target {tuple(target.shape)} shapes differ'
            )
        model, precision = self.clip(enhanced.device), self.precision_on(enhanced.device)
        maps = resnet_feature_maps(model, enhanced, self.amp, precision)
        with torch.no_grad():
            target_maps = resnet_feature_maps(model, target, self.amp, precision)
        return torch.stack([(m - t).pow(2).flatten(1).mean(1) for m, t in zip(maps, target_maps)], dim=1)

    def forward(self, enhanced: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mse = self.per_image_layer_mse(enhanced, target)
        key = (mse.device, mse.dtype)
        if key not in self._weights_on:  # made once per device: a step copies nothing from the host
            self._weights_on[key] = torch.tensor(self.layer_weights, dtype=mse.dtype, device=mse.device)
        return self.loss_weight * (mse * self._weights_on[key]).sum()


@LOSS_REGISTRY.register()
class CLIPLITPromptInitLoss(nn.Module):
    """Prompt initialisation: cross-entropy of ``logit_scale * cos`` with label 0 = backlit, 1 = well-lit.

    ``forward(text_features (2,D), image_features (B,D) or (B,1,D), labels (B,))``, image features
    precomputed without autograd (e.g. ``CLIPLITPromptPair.encode_images``); averaged over the B images.
    """

    def __init__(self, loss_weight: float = 1.0, logit_scale: float = LOGIT_SCALE):
        super().__init__()
        self.loss_weight, self.logit_scale = loss_weight, logit_scale

    def forward(self, text_features: torch.Tensor, image_features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = prompt_logits(image_features, text_features, self.logit_scale)
        return self.loss_weight * F.cross_entropy(logits, to_device(labels, logits.device).long())


@LOSS_REGISTRY.register()
class CLIPLITPromptRankingLoss(nn.Module):
    """Prompt refinement: margin ranking on negative scores S (authors' ``four_margin_loss``).

    With ``R(a, b, m) = mean_i max(0, m - (S(a_i) - S(b_i)))`` ("a more backlit than b by m") and the
    form's margins (large M, small m), chosen by which feature sets are given:

    * ``forward(text, backlit, welllit)``: ``R(b, w, M)`` (before any enhanced output exists);
    * ``forward(text, backlit, welllit, newest)``: ``R(b, w, M) + R(b, t, M) + R(t, w, m)``;
    * ``forward(text, backlit, welllit, newest, previous)``: ``R(b, w, M) + R(b, X, M) + R(X, Y, m) + R(Y, w, m)``
      with ``order: code`` X = newest, Y = previous (the authors' code, the released model) or
      ``order: paper`` X = previous, Y = newest (the paper's equation).

    Features are (B,D) or (B,1,D) image features aligned by index, precomputed without autograd;
    ``margins`` maps ``rank2``/``rank3``/``rank4`` to ``[large, small]`` (defaults: the authors', docs/method.md).
    """

    def __init__(
        self,
        loss_weight: float = 1.0,
        margins: Optional[Dict[str, Sequence[float]]] = None,
        order: str = 'code',
        logit_scale: float = LOGIT_SCALE,
    ):
        super().__init__()
        if order not in RANK_ORDERS:
            raise ValueError(f"CLIPLITPromptRankingLoss: order '{order}' is not one of {', '.join(RANK_ORDERS)}")
        unknown = set(margins or {}) - set(DEFAULT_MARGINS)
        if unknown:
            raise ValueError(f'CLIPLITPromptRankingLoss: margins {sorted(unknown)} unknown; use rank2, rank3, rank4')
        self.margins = {k: tuple(float(m) for m in v) for k, v in {**DEFAULT_MARGINS, **(margins or {})}.items()}
        self.loss_weight, self.order, self.logit_scale = loss_weight, order, logit_scale

    def forward(
        self,
        text_features: torch.Tensor,
        backlit: torch.Tensor,
        welllit: torch.Tensor,
        newest: Optional[torch.Tensor] = None,
        previous: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        if previous is not None and newest is None:
            raise ValueError('CLIPLITPromptRankingLoss: previous outputs given without the newest ones')
        sets = [s for s in (backlit, welllit, newest, previous) if s is not None]
        scores = negative_scores(torch.cat([s.flatten(0, -2) for s in sets]), text_features, self.logit_scale)
        s_b, s_w, *s_out = scores.split([s.flatten(0, -2).shape[0] for s in sets])
        large, small = self.margins[f'rank{len(sets)}']

        def rank(a: torch.Tensor, b: torch.Tensor, margin: float) -> torch.Tensor:
            return F.margin_ranking_loss(a, b, torch.ones_like(a), margin=margin)

        loss = rank(s_b, s_w, large)
        if len(s_out) == 1:
            loss = loss + rank(s_b, s_out[0], large) + rank(s_out[0], s_w, small)
        elif len(s_out) == 2:
            more, less = s_out if self.order == 'code' else s_out[::-1]
            loss = loss + rank(s_b, more, large) + rank(more, less, small) + rank(less, s_w, small)
        return self.loss_weight * loss
