"""Which BasicSR metrics need a ground-truth image."""

import inspect

from basicsr.utils.registry import METRIC_REGISTRY


def needs_reference(metric_type: str) -> bool:
    """True when the registered metric ``metric_type`` requires ``img2`` (the ground truth).

    BasicSR passes ``img2`` only for sets with ground truth, so a metric that declares ``img2`` without a
    default (PSNR, SSIM, LPIPS) is full-reference; one without it, or with a default (NIQE, MUSIQ), is not.
    """
    parameter = inspect.signature(METRIC_REGISTRY.get(metric_type)).parameters.get('img2')
    return parameter is not None and parameter.default is inspect.Parameter.empty
