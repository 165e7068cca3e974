"""Extra metrics (LPIPS, MUSIQ through pyiqa), registered in BasicSR's METRIC_REGISTRY."""
