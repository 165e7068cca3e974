"""The pyramid pooling of a tiled image, exactly: whole-image averages gathered tile by tile, and the fuse
conv's response to the upsampled branches computed from them without materialising the branches.

The pooling averages the *whole* feature map, so the tiled engine's first pass sums each tile's head
features into the bins' regions (:meth:`ExactPyramid.add_region_sums`). A branch is then a bilinear
upsampling ``rows^T @ small @ cols`` of a tiny map, so the fuse conv's 3x3 response to it is a sum over the
taps of the same upsampling, rows and columns shifted by the tap, of the tiny maps projected by the tap's
weights (:meth:`ExactPyramid.taps`); every bin count and tap row together make one GEMM per tile
(:meth:`ExactPyramid.branch_term`), a fraction of the fuse conv's FLOPs on the branches' channels.
"""

from typing import Dict, List, Tuple

import torch
from torch.nn import functional as F

from cliplit_basicsr.network import Pyramid

from .geometry import Region

Bounds = List[Tuple[int, int]]


def adaptive_bounds(length: int, bins: int) -> Bounds:
    """The index ranges that ``AdaptiveAvgPool2d(bins)`` averages along an axis of ``length``."""
    return [((i * length) // bins, -(-(i + 1) * length // bins)) for i in range(bins)]


def indicator(bounds: Bounds, start: int, end: int, device: torch.device) -> torch.Tensor:
    """(len(bounds), end - start) 0/1 matrix: which of the pixels ``start..end-1`` each range covers."""
    index = torch.arange(start, end, device=device)
    return torch.stack([((index >= lo) & (index < hi)).float() for lo, hi in bounds])


def interp_matrix(bins: int, length: int) -> torch.Tensor:
    """(bins, length) weights of bilinear ``align_corners=True`` upsampling from ``bins`` to ``length``."""
    eye = torch.eye(bins, dtype=torch.float32).unsqueeze(0)
    return F.interpolate(eye, size=length, mode='linear', align_corners=True)[0]


def shifted_columns(matrix: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """(3, rows, end - start): columns ``start + d - 1 .. end + d - 2`` of ``matrix`` for d = 0, 1, 2 (a 3x3
    conv's taps along one axis), zero where they fall outside the matrix (the conv's zero padding)."""
    padded = F.pad(matrix, (1, 1))
    return torch.stack([padded[:, start + d : end + d] for d in range(3)])


class ExactPyramid:
    """A :class:`Pyramid`'s weights (from a network ``state`` dict on ``device``) and its exact tiled maths.

    The fuse conv is split into its head half (a 3x3 conv on the features, run by the engine with
    :attr:`head_weight`) and its branch half (:meth:`branch_term`).
    """

    def __init__(self, pyramid: Pyramid, state: Dict[str, torch.Tensor], dtype: torch.dtype) -> None:
        self.pyramid = pyramid
        name = pyramid.name
        self.projections = [
            (state[f'{name}.features.{i}.1.weight'].float(), state[f'{name}.features.{i}.2.weight'].float())
            for i in range(len(pyramid.bins))
        ]
        fuse = state[f'{name}.fuse.0.weight']
        self.fuse_slope = float(state[f'{name}.fuse.1.weight'])  # a one-parameter PReLU is a leaky ReLU
        self.head_weight = fuse[:, : pyramid.channels].to(dtype).contiguous(memory_format=torch.channels_last)
        self.branch_weight = fuse[:, pyramid.channels :].float()  # (channels, bins x branch channels, 3, 3)

    def start_sums(self, batch: int, height: int, width: int, device: torch.device) -> List[torch.Tensor]:
        """Zeroed per-bin sums for an image of ``height`` x ``width`` (float64: exact over any size)."""
        self._bounds = [(adaptive_bounds(height, b), adaptive_bounds(width, b)) for b in self.pyramid.bins]
        channels = self.pyramid.channels
        return [torch.zeros(batch, channels, b, b, dtype=torch.float64, device=device) for b in self.pyramid.bins]

    def add_region_sums(self, sums: List[torch.Tensor], feat: torch.Tensor, core: Region) -> None:
        """Add the head features ``feat`` (B,C,h,w) of the tile ``core`` to every bin region's sum.

        As GEMMs on the NHWC layout: the rows of every bin at once, (sum of bins, h) @ (h, w*c), which reads
        the tile once; then (bins, w) @ (w, c) per bin count.
        """
        batch, device = feat.shape[0], feat.device
        y0, y1, x0, x1 = core
        nhwc = feat.float().permute(0, 2, 3, 1).contiguous()
        rows = torch.cat([indicator(row_bounds, y0, y1, device) for row_bounds, _ in self._bounds])
        per_row = torch.matmul(rows, nhwc.reshape(batch, y1 - y0, -1)).view(batch, -1, x1 - x0, nhwc.shape[3])
        for total, per_bin_row, (row_bounds, col_bounds) in zip(
            sums, per_row.split(self.pyramid.bins, 1), self._bounds
        ):
            cols = indicator(col_bounds, x0, x1, device)
            region_sums = torch.matmul(cols, per_bin_row.reshape(-1, x1 - x0, nhwc.shape[3]))
            total += region_sums.view(batch, len(row_bounds), len(col_bounds), -1).permute(0, 3, 1, 2).double()

    def averages(self, sums: List[torch.Tensor]) -> List[torch.Tensor]:
        """The adaptive averages (what ``AdaptiveAvgPool2d`` gives) from the whole image's sums."""
        device = sums[0].device
        counts = [
            torch.tensor(
                [[(r1 - r0) * (c1 - c0) for c0, c1 in cb] for r0, r1 in rb], dtype=torch.float64, device=device
            )
            for rb, cb in self._bounds
        ]
        return [(total / count).float() for total, count in zip(sums, counts)]

    def taps(self, pooled: List[torch.Tensor]) -> List[torch.Tensor]:
        """Per bin count, the tiny branch maps projected by each tap of the fuse conv's branch half:
        (B, 3, 3, channels, bins, bins), from the whole image's ``pooled`` averages (once per image)."""
        taps, start = [], 0
        for avg, (projection, slope) in zip(pooled, self.projections):
            small = F.prelu(F.conv2d(avg, projection), slope)  # (B, branch channels, bins, bins)
            weight = self.branch_weight[:, start : start + small.shape[1]]
            start += small.shape[1]
            taps.append(torch.einsum('ocyx,ncij->nyxoij', weight, small))
        return taps

    def branch_term(self, taps: List[torch.Tensor], size: Tuple[int, int], region: Region, out: torch.Tensor) -> None:
        """Write into ``out`` (B,h,w,C), NHWC, the fuse conv's response to the upsampled branches over
        ``region`` of an image of ``size``, with the fuse conv's zero padding at the image border."""
        y0, y1, x0, x1 = region
        batch, width, channels, device = out.shape[0], x1 - x0, out.shape[3], out.device
        row_parts, col_parts = [], []
        for tap in taps:
            bins = tap.shape[-1]
            rows = shifted_columns(interp_matrix(bins, size[0]).to(device), y0, y1)  # (3, bins, h)
            cols = shifted_columns(interp_matrix(bins, size[1]).to(device), x0, x1)  # (3, bins, w)
            row_parts.append(rows.reshape(-1, y1 - y0))
            col_parts.append(torch.einsum('xjw,nyxoij->nyiwo', cols, tap).reshape(batch, -1, width * channels))
        rows, blocks = torch.cat(row_parts).t(), torch.cat(col_parts, 1)  # (h, 3 x bins), (B, 3 x bins, w * C)
        # in the engine's precision: in bf16 this moves no output value against fp32, and saves a pass
        torch.matmul(rows.to(out.dtype), blocks.to(out.dtype), out=out.view(batch, y1 - y0, width * channels))
