"""Extra metrics (LPIPS, MUSIQ through pyiqa), registered in BasicSR's METRIC_REGISTRY."""

from .metric_util import needs_reference
from .pyiqa_metric import MetricWeightsError, calculate_cliplit_lpips, calculate_cliplit_musiq, get_pyiqa_metric

__all__ = [
    'calculate_cliplit_lpips',
    'calculate_cliplit_musiq',
    'get_pyiqa_metric',
    'MetricWeightsError',
    'needs_reference',
]
