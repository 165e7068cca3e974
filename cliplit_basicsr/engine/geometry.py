"""Tiles, halos and the rows a convolution can compute on a tile: the tiled engine's geometry.

A tile is a *core* (a block of the partition of the image) inside a *window* (the core plus halo pixels on
every side that is not on the image border). Each 3x3 convolution computes one row fewer where the window
meets halo (that row would be wrong), so the valid rows shrink layer by layer towards the core; columns
keep the window's width, so every view of an activation stays contiguous in memory.
"""

import math
from typing import Callable, List, Optional, Tuple

import torch
from torch.nn import functional as F

Region = Tuple[int, int, int, int]  # y0, y1, x0, x1 (end exclusive)
Rows = Tuple[int, int]  # the rows [start, end) of a tile's window on which an activation is valid
Border = Tuple[bool, bool, bool, bool]  # which sides (top, bottom, left, right) lie on the image border
NO_BORDER: Border = (False, False, False, False)
EVERYWHERE: Border = (True, True, True, True)
ConvAdd = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor], int], None]


def conv_add_plain(
    out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], row_pad: int
) -> None:
    """``out += conv3x3(x)``, zero padding (``row_pad`` rows, 1 column), through a temporary."""
    out.add_(F.conv2d(x, weight, bias, padding=(row_pad, 1)))


def conv_add(
    add: ConvAdd,
    out: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    reflect: Border,
    row_pad: int = 1,
) -> None:
    """``out += conv3x3(x)`` by ``add`` (:func:`conv_add_plain` or a fast path's), stride 1, padding ``row_pad``
    rows and 1 column: zeros, except reflect on the sides flagged in ``reflect``.

    Only the outermost output rows/cols see the padding, so instead of padding a copy of ``x`` they are
    recomputed from reflect-padded 3-pixel strips (before ``out`` is overwritten, as they add to it too).
    """
    top, bottom, left, right = reflect
    every = slice(None)
    fixes = []
    if top:
        fixes.append(((every, every, slice(0, 1)), F.pad(x[:, :, :2], (1, 1, 1, 0), mode='reflect')))
    if bottom:
        fixes.append(((every, every, slice(-1, None)), F.pad(x[:, :, -2:], (1, 1, 0, 1), mode='reflect')))
    if left:
        strip = F.pad(x[:, :, :, :2], (1, 0, row_pad, row_pad), mode='reflect')
        fixes.append(((every, every, every, slice(0, 1)), strip))
    if right:
        strip = F.pad(x[:, :, :, -2:], (0, 1, row_pad, row_pad), mode='reflect')
        fixes.append(((every, every, every, slice(-1, None)), strip))
    fixes = [(index, out[index] + F.conv2d(strip, weight, bias)) for index, strip in fixes]
    add(out, x, weight, bias, row_pad)
    for index, value in fixes:
        out[index] = value


def conv_rows(rows: Rows, border: Border) -> Rows:
    """The window rows a 3x3 conv computes from input rows ``rows``: every row where the tile meets the
    image border (it pads there), one row less where it meets halo (that row would be wrong anyway)."""
    row_pad = int(border[0] or border[1])
    return rows[0] + 1 - row_pad, rows[1] - 1 + row_pad


def valid_rows(rows: Rows, border: Border) -> Rows:
    """The window rows a 3x3 conv's output is right on, from input rows ``rows``: halo edges lose one."""
    return rows[0] + (not border[0]), rows[1] - (not border[1])


def row_slice(tensor: torch.Tensor, rows: Rows) -> torch.Tensor:
    return tensor[:, :, rows[0] : rows[1]]


def crop(tensor: torch.Tensor, core: Region, window: Region) -> torch.Tensor:
    """The part of ``tensor`` (B,C,h,w), which covers ``window``, that covers ``core``."""
    return tensor[:, :, core[0] - window[0] : core[1] - window[0], core[2] - window[2] : core[3] - window[2]]


def split(length: int, tile: int) -> List[Tuple[int, int]]:
    """Split ``[0, length)`` into near-equal parts no longer than ``tile``."""
    parts = max(1, math.ceil(length / tile))
    bounds = [round(i * length / parts) for i in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def tiles(height: int, width: int, tile: int, halo: int) -> List[Tuple[Region, Region, Border]]:
    """(core, window, border) per tile of core size ``tile`` (0: one tile, the whole image): cores partition
    the image; each window holds its core plus ``halo`` pixels on every side that is not on the image border.
    All windows have the same size (windows at the border shift inwards rather than shrink), so every tile's
    buffers are alike."""
    if not tile:
        return [((0, height, 0, width), (0, height, 0, width), EVERYWHERE)]
    axes = []
    for length in (height, width):
        cores = split(length, tile)
        size = min(length, max(end - start for start, end in cores) + 2 * halo)
        axes.append([(core, min(max(core[0] - halo, 0), length - size), size) for core in cores])
    result = []
    for (y0, y1), wy, sy in axes[0]:
        for (x0, x1), wx, sx in axes[1]:
            border = (wy == 0, wy + sy == height, wx == 0, wx + sx == width)
            result.append(((y0, y1, x0, x1), (wy, wy + sy, wx, wx + sx), border))
    return result
