"""Fast, exact inference for :class:`~cliplit_basicsr.archs.cliplit_arch.CLIPLITNet`.

The computation is the network's own, rearranged for speed and bounded memory:

* activations are channels-last and live in a few buffers reused by every tile; each conv accumulates
  into its output buffer (oneDNN's sum post-op on CPU), so residual sums cost no extra pass and no
  full-tile tensor is allocated per layer;
* reflect padding costs no padded copy: each conv runs with oneDNN's built-in zero padding and only its
  one-pixel output border is recomputed from a reflect-padded 3-pixel strip, and only on the sides that
  lie on the image border (elsewhere a tile's edge is halo, discarded anyway);
* exact tiling: the pyramid pooling (PPM) averages the *whole* feature map, so a first pass over tiles
  (halo ``HEAD_HALO``) accumulates those averages; a second pass runs the whole network on tiles with a
  halo of ``HEAD_HALO + TAIL_HALO`` pixels (one per 3x3 conv), feeding the PPM branches computed from the
  global averages. The branches are never materialised: their part of the fuse conv is a GEMM on the
  tiny pooled maps (see ``_fuse_branch_term``). When the whole image's head features fit in
  ``HEAD_CACHE_BYTES``, the first pass keeps them and the second runs only the tail, with a halo of
  ``TAIL_HALO``. Each tile's core is then what the full-frame network gives, up to float rounding. Each
  conv skips the halo row it would get wrong, so the rows to compute shrink layer by layer towards the
  core (one image of a batch at a time).

``precision='fp32'`` is the exact path (TF32 is disabled on CUDA); ``'bf16'`` (CPUs with AMX, CUDA) and
``'fp16'`` (CUDA) run convolutions in reduced precision, with pooling statistics and the final division in
fp32.
"""

import contextlib
import math
from typing import Callable, List, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from . import accel
from .archs.cliplit_arch import PPM_BINS

PRECISIONS = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
# Core tile size by device type. On CPU, 384 has 6% fewer halo FLOPs than 256 and measured 2-4% faster;
# 512 is no faster and its buffers would take the 3 MP photos' peak RSS past 1.5 GB. On CUDA, big tiles
# keep the GPU busy.
DEFAULT_TILES = {'cpu': 384, 'cuda': 1024}
HEAD_HALO = 5  # 3x3 convs before the PPM: cond1 and two residual blocks
TAIL_HALO = 12  # 3x3 convs from the PPM fuse conv to cond_add1
LEAKY_SLOPE = 0.2
# Keep the whole image's head features when they fit in this: 3.1 MP in fp32 (a 2048x1536 photo), 6.3 MP in
# bf16. The process holds about 1 GB besides (torch and BasicSR imported, tile buffers at tile 384, the
# image): with a full cache, peak RSS measured 1.44 GB. Larger images recompute the head instead.
HEAD_CACHE_BYTES = 384 * 2**20

Region = Tuple[int, int, int, int]  # y0, y1, x0, x1 (end exclusive)
Rows = Tuple[int, int]  # the rows [start, end) of a tile's window on which an activation is valid
Reader = Callable[[Region], torch.Tensor]
Writer = Callable[[Region, torch.Tensor], None]
Border = Tuple[bool, bool, bool, bool]  # which sides (top, bottom, left, right) lie on the image border
NO_BORDER: Border = (False, False, False, False)


def _conv_add_fallback(
    out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], row_pad: int
) -> None:
    """``out += conv3x3(x)``, zero padding (``row_pad`` rows, 1 column), through a temporary (CUDA caches
    its allocations)."""
    out.add_(F.conv2d(x, weight, bias, padding=(row_pad, 1)))


def _conv_add(
    conv_add: Callable,
    out: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    reflect: Border,
    row_pad: int = 1,
) -> None:
    """``out += conv3x3(x)``, stride 1, padding ``row_pad`` rows and 1 column: zeros, except reflect on the
    sides flagged in ``reflect`` (top and bottom only with ``row_pad`` 1).

    Only the outermost output rows/cols see the padding, so instead of padding a copy of ``x`` they are
    recomputed from reflect-padded 3-pixel strips (before ``out`` is overwritten, as they add to it too).
    """
    top, bottom, left, right = reflect
    fixes = []
    if top:
        fixes.append(((slice(None), slice(None), slice(0, 1)), F.pad(x[:, :, :2], (1, 1, 1, 0), mode='reflect')))
    if bottom:
        fixes.append(((slice(None), slice(None), slice(-1, None)), F.pad(x[:, :, -2:], (1, 1, 0, 1), mode='reflect')))
    if left:
        fixes.append(
            (
                (slice(None), slice(None), slice(None), slice(0, 1)),
                F.pad(x[:, :, :, :2], (1, 0, row_pad, row_pad), mode='reflect'),
            )
        )
    if right:
        fixes.append(
            (
                (slice(None), slice(None), slice(None), slice(-1, None)),
                F.pad(x[:, :, :, -2:], (0, 1, row_pad, row_pad), mode='reflect'),
            )
        )
    fixes = [(index, out[index] + F.conv2d(strip, weight, bias)) for index, strip in fixes]
    conv_add(out, x, weight, bias, row_pad)
    for index, value in fixes:
        out[index] = value


def _conv_rows(rows: Rows, border: Border) -> Rows:
    """The window rows a 3x3 conv computes from input rows ``rows``: every row where the tile meets the
    image border (it pads there), one row less where it meets halo (that row would be wrong anyway)."""
    row_pad = int(border[0] or border[1])
    return rows[0] + 1 - row_pad, rows[1] - 1 + row_pad


def _valid_rows(rows: Rows, border: Border) -> Rows:
    """The window rows a 3x3 conv's output is right on, from input rows ``rows``: halo edges lose one."""
    return rows[0] + (not border[0]), rows[1] - (not border[1])


def _row_slice(tensor: torch.Tensor, rows: Rows) -> torch.Tensor:
    return tensor[:, :, rows[0] : rows[1]]


def _crop(tensor: torch.Tensor, core: Region, window: Region) -> torch.Tensor:
    """The part of ``tensor`` (B,C,h,w), which covers ``window``, that covers ``core``."""
    return tensor[:, :, core[0] - window[0] : core[1] - window[0], core[2] - window[2] : core[3] - window[2]]


def _adaptive_bounds(length: int, bins: int) -> List[Tuple[int, int]]:
    """The index ranges that ``AdaptiveAvgPool2d(bins)`` averages along an axis of ``length``."""
    return [((i * length) // bins, -(-(i + 1) * length // bins)) for i in range(bins)]


def _indicator(bounds: List[Tuple[int, int]], start: int, end: int, device: torch.device) -> torch.Tensor:
    """(len(bounds), end - start) 0/1 matrix: which of the pixels ``start..end-1`` each range covers."""
    index = torch.arange(start, end, device=device)
    return torch.stack([((index >= lo) & (index < hi)).float() for lo, hi in bounds])


def _interp_matrix(bins: int, length: int) -> torch.Tensor:
    """(bins, length) weights of bilinear ``align_corners=True`` upsampling from ``bins`` to ``length``."""
    eye = torch.eye(bins, dtype=torch.float32).unsqueeze(0)
    return F.interpolate(eye, size=length, mode='linear', align_corners=True)[0]


def _shifted_columns(matrix: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """(3, rows, end - start): columns ``start + d - 1 .. end + d - 2`` of ``matrix`` for d = 0, 1, 2 (a 3x3
    conv's taps along one axis), zero where they fall outside the matrix (the conv's zero padding)."""
    padded = F.pad(matrix, (1, 1))
    return torch.stack([padded[:, start + d : end + d] for d in range(3)])


def _split(length: int, tile: int) -> List[Tuple[int, int]]:
    """Split ``[0, length)`` into near-equal parts no longer than ``tile``."""
    parts = max(1, math.ceil(length / tile))
    bounds = [round(i * length / parts) for i in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


class FastCLIPLIT:
    """A frozen copy of a CLIPLITNet's weights on ``device`` in ``precision``, run tile by tile.

    Args:
        net: the network (either padding variant); its weights are copied, the module is not changed.
        device: where to compute.
        precision: ``'fp32'`` (exact), ``'bf16'`` or ``'fp16'``.
        tile: core tile size in pixels; ``None``: the device's default (``DEFAULT_TILES``); ``0`` runs the
            whole image at once (memory grows with the image: about 1 GB per megapixel).
    """

    def __init__(self, net: nn.Module, device: torch.device, precision: str = 'fp32', tile: Optional[int] = None):
        if precision not in PRECISIONS:
            raise ValueError(f'precision must be one of {", ".join(PRECISIONS)}, got {precision!r}')
        self.device = torch.device(device)
        self.precision = precision
        self.dtype = PRECISIONS[precision]
        self.tile = DEFAULT_TILES.get(self.device.type, DEFAULT_TILES['cuda']) if tile is None else tile
        self.reflect_cond = net.padding == 'reflect'
        state = {k: v.detach().to(self.device) for k, v in net.state_dict().items()}
        self.weights = {
            k: (v.to(self.dtype).contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v.to(self.dtype))
            for k, v in state.items()
        }
        self.ppm_weights = [
            (state[f'PPM1.features.{i}.1.weight'].float(), state[f'PPM1.features.{i}.2.weight'].float())
            for i in range(len(PPM_BINS))
        ]
        self.fuse_slope = float(state['PPM1.fuse.1.weight'])
        head_channels = state['cond1.weight'].shape[0]
        self.weights['PPM1.fuse.head.weight'] = self.weights['PPM1.fuse.0.weight'][:, :head_channels].contiguous(
            memory_format=torch.channels_last
        )
        self.fuse_branch_weight = state['PPM1.fuse.0.weight'][:, head_channels:].float()  # (32, 4 x 8, 3, 3)
        self._conv_add_op = accel.conv_add_op(self.device, self.dtype) or _conv_add_fallback
        self._buffers = {}

    # --- the network, layer by layer, in reused activation buffers ---------------------------------
    def _buffer(self, name: str, batch: int, channels: int, height: int, width: int) -> torch.Tensor:
        """A channels-last (batch, channels, height, width) view of the reusable buffer ``name``.

        Every tile reuses the same memory: fresh full-tile activations would cost page faults that take as
        long as the convolutions (the allocator hands large blocks back to the system after each use).
        """
        numel = batch * channels * height * width
        flat = self._buffers.get(name)
        if flat is None or flat.numel() < numel:
            flat = self._buffers[name] = torch.empty(numel, dtype=self.dtype, device=self.device)
        return flat[:numel].view(batch, height, width, channels).permute(0, 3, 1, 2)

    def _conv_into(
        self,
        out: torch.Tensor,
        x: torch.Tensor,
        rows: Rows,
        name: str,
        border: Border,
        reflect: Border,
        accumulate: bool = False,
    ) -> Rows:
        """``out = conv(x)`` (or ``out += conv(x)`` with ``accumulate``) for the conv layer ``name``.

        ``x`` and ``out`` are whole-window buffers; ``x`` is valid on ``rows``. Returns the rows on which
        ``out`` now holds the layer's output. Rows are not computed past what the halo needs: a window's
        edge inside the image loses a row per conv, so the halo rows cost fewer FLOPs layer after layer
        (columns keep the window's width: a column crop would not be contiguous in memory).
        """
        target = _row_slice(out, _conv_rows(rows, border))
        if not accumulate:
            target.zero_()
        _conv_add(
            self._conv_add_op,
            target,
            _row_slice(x, rows),
            self.weights[f'{name}.weight'],
            self.weights.get(f'{name}.bias'),
            reflect,
            int(border[0] or border[1]),
        )
        return _valid_rows(rows, border)

    def _cond(self, name: str, out: torch.Tensor, x: torch.Tensor, rows: Rows, border: Border) -> Rows:
        return self._conv_into(out, x, rows, name, border, border if self.reflect_cond else NO_BORDER)

    def _residual_block(self, name: str, x: torch.Tensor, rows: Rows, border: Border) -> Rows:
        """``x = lrelu(x + conv2(lrelu(conv1(x))))``, in place."""
        mid = self._buffer('mid', *x.shape)  # one buffer for the 32- and the 64-channel blocks
        mid_rows = self._conv_into(mid, x, rows, f'{name}.conv1', border, border)
        F.leaky_relu_(_row_slice(mid, mid_rows), LEAKY_SLOPE)
        rows = self._conv_into(x, mid, mid_rows, f'{name}.conv2', border, border, accumulate=True)
        F.leaky_relu_(_row_slice(x, rows), LEAKY_SLOPE)
        return rows

    def _head(self, x: torch.Tensor, border: Border) -> Tuple[torch.Tensor, Rows]:
        """cond1 .. ResidualBlock2: the features the PPM pools (the buffer ``head``) and their valid rows."""
        x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
        feat = self._buffer('head', x.shape[0], 32, x.shape[2], x.shape[3])
        rows = self._cond('cond1', feat, x, (0, x.shape[2]), border)
        F.leaky_relu_(_row_slice(feat, rows), LEAKY_SLOPE)
        rows = self._residual_block('ResidualBlock1', feat, rows, border)
        return feat, self._residual_block('ResidualBlock2', feat, rows, border)

    def _tail(
        self,
        feat: torch.Tensor,
        rows: Rows,
        taps: List[torch.Tensor],
        size: Tuple[int, int],
        window: Region,
        border: Border,
    ) -> torch.Tensor:
        """PPM fuse .. cond_add1: the light map (B,1,h,w) over ``window`` of an image of ``size`` (right on
        the core), from the window's head features ``feat`` (NHWC (B,h,w,32), valid on ``rows``; a view of
        the head cache is only read) and the PPM branches' ``taps`` (:meth:`_fuse_branch_taps`).

        The fuse conv sees the head features and the upsampled PPM branches side by side. It runs as its
        head half (a conv) added to its branch half (:meth:`_fuse_branch_term`): the branches are never
        materialised or concatenated.
        """
        batch, height, width, channels = feat.shape
        head = feat.permute(0, 3, 1, 2)
        if not head.is_contiguous(memory_format=torch.channels_last):  # a window of the head cache
            head = self._buffer('head', batch, channels, height, width).copy_(head)
        narrow = self._buffer('narrow', batch, channels, height, width)
        fuse_rows = _conv_rows(rows, border)
        self._fuse_branch_term(
            taps,
            size,
            (window[0] + fuse_rows[0], window[0] + fuse_rows[1]) + window[2:],
            _row_slice(narrow, fuse_rows).permute(0, 2, 3, 1),
        )
        rows = self._conv_into(narrow, head, rows, 'PPM1.fuse.head', border, NO_BORDER, accumulate=True)
        F.leaky_relu_(_row_slice(narrow, rows), self.fuse_slope)  # a one-parameter PReLU is a leaky ReLU
        wide = self._buffer('wide', batch, 2 * channels, height, width)
        rows = self._cond('condx', wide, narrow, rows, border)
        for block in ('ResidualBlock3', 'ResidualBlock4'):
            rows = self._residual_block(block, wide, rows, border)
        rows = self._cond('condy', narrow, wide, rows, border)
        for block in ('ResidualBlock5', 'ResidualBlock6'):
            rows = self._residual_block(block, narrow, rows, border)
        light = torch.ones(batch, 1, height, width, dtype=self.dtype, device=self.device)  # 1 where not computed
        rows = self._cond('cond_add1', light, narrow, rows, border)
        F.relu_(_row_slice(light, rows))
        return light.float()

    def _fuse_branch_taps(self, pooled: List[torch.Tensor]) -> List[torch.Tensor]:
        """Per PPM bin count, the tiny branch maps projected by each tap of the fuse conv's branch half:
        (B, 3, 3, 32, bins, bins), from the whole image's ``pooled`` averages (once per image)."""
        taps, start = [], 0
        for avg, (proj, slope) in zip(pooled, self.ppm_weights):
            small = F.prelu(F.conv2d(avg, proj), slope)  # (B, 8, bins, bins)
            weight = self.fuse_branch_weight[:, start : start + small.shape[1]]  # (32, 8, 3, 3)
            start += small.shape[1]
            taps.append(torch.einsum('ocyx,ncij->nyxoij', weight, small))
        return taps

    def _fuse_branch_term(
        self, taps: List[torch.Tensor], size: Tuple[int, int], region: Region, out: torch.Tensor
    ) -> None:
        """Write into ``out`` (B,h,w,32), NHWC, the fuse conv's response to the upsampled PPM branches over
        ``region`` of an image of ``size``, with the fuse conv's zero padding at the image border.

        A branch is a bilinear upsampling ``rows^T @ small @ cols`` of a tiny map, so its 3x3 conv is a
        sum over the taps of the same upsampling, with rows and cols shifted by the tap, of the tiny maps
        projected by the tap's weights (``taps``). All bin counts and tap rows make one GEMM, (h, 3 x 12) @
        (3 x 12, w * 32), whose output is NHWC: 2.3 kFLOP a pixel instead of the conv's 18 kFLOP.
        """
        y0, y1, x0, x1 = region
        batch, width, channels = out.shape[0], x1 - x0, out.shape[3]
        row_parts, col_parts = [], []
        for tap in taps:
            bins = tap.shape[-1]
            rows = _shifted_columns(_interp_matrix(bins, size[0]).to(self.device), y0, y1)  # (3, bins, h)
            cols = _shifted_columns(_interp_matrix(bins, size[1]).to(self.device), x0, x1)  # (3, bins, w)
            row_parts.append(rows.reshape(-1, y1 - y0))
            col_parts.append(torch.einsum('xjw,nyxoij->nyiwo', cols, tap).reshape(batch, -1, width * channels))
        rows, blocks = torch.cat(row_parts).t(), torch.cat(col_parts, 1)  # (h, 36), (B, 36, w * 32)
        # in the engine's precision: in bf16 this moved no output value against fp32 and saves a pass
        torch.matmul(rows.to(out.dtype), blocks.to(out.dtype), out=out.view(batch, y1 - y0, width * channels))

    # --- driving it -------------------------------------------------------------------------------
    def _tiles(self, height: int, width: int, halo: int) -> List[Tuple[Region, Region, Border]]:
        """(core, window, border) per tile: cores partition the image; each window holds its core plus
        ``halo`` pixels on every side that is not on the image border. All windows have the same size
        (windows at the border shift inwards rather than shrink), so every tile's buffers are alike."""
        if not self.tile:
            return [((0, height, 0, width), (0, height, 0, width), (True, True, True, True))]
        axes = []
        for length in (height, width):
            cores = _split(length, self.tile)
            size = min(length, max(end - start for start, end in cores) + 2 * halo)
            axes.append([(core, min(max(core[0] - halo, 0), length - size), size) for core in cores])
        tiles = []
        for (y0, y1), wy, sy in axes[0]:
            for (x0, x1), wx, sx in axes[1]:
                border = (wy == 0, wy + sy == height, wx == 0, wx + sx == width)
                tiles.append(((y0, y1, x0, x1), (wy, wy + sy, wx, wx + sx), border))
        return tiles

    def _pooled_stats(
        self, read: Reader, batch: int, height: int, width: int, cache: Optional[torch.Tensor]
    ) -> List[torch.Tensor]:
        """First pass: the PPM's adaptive averages of the whole image's head features, tile by tile.

        With ``cache`` (B,H,W,32), the head features of every pixel are also kept there."""
        bounds = [(_adaptive_bounds(height, b), _adaptive_bounds(width, b)) for b in PPM_BINS]
        sums = [torch.zeros(batch, 32, b, b, dtype=torch.float64, device=self.device) for b in PPM_BINS]
        for core, outer, border in self._tiles(height, width, HEAD_HALO):
            feat, _ = self._head(read(outer), border)
            y0, y1, x0, x1 = core
            feat = _crop(feat, core, outer)
            if cache is not None:
                cache[:, y0:y1, x0:x1] = feat.permute(0, 2, 3, 1)
            nhwc = feat.float().permute(0, 2, 3, 1).contiguous()
            # region sums of this tile as GEMMs on the NHWC layout: the rows of every bin at once,
            # (sum of bins, h) @ (h, w*c), which reads the tile once; then (bins, w) @ (w, c) per bin count
            rows = torch.cat([_indicator(row_bounds, y0, y1, self.device) for row_bounds, _ in bounds])
            per_row = torch.matmul(rows, nhwc.reshape(batch, y1 - y0, -1)).view(batch, -1, x1 - x0, nhwc.shape[3])
            for total, per_bin_row, (row_bounds, col_bounds) in zip(sums, per_row.split(PPM_BINS, 1), bounds):
                cols = _indicator(col_bounds, x0, x1, self.device)
                region_sums = torch.matmul(cols, per_bin_row.reshape(-1, x1 - x0, nhwc.shape[3]))
                total += region_sums.view(batch, len(row_bounds), len(col_bounds), -1).permute(0, 3, 1, 2).double()
        counts = [
            torch.tensor(
                [[(r1 - r0) * (c1 - c0) for c0, c1 in cb] for r0, r1 in rb], dtype=torch.float64, device=self.device
            )
            for rb, cb in bounds
        ]
        return [(total / count).float() for total, count in zip(sums, counts)]

    @contextlib.contextmanager
    def _exact_math(self):
        """Inference mode; on CUDA, fp32 means fp32 (no TF32)."""
        cudnn_tf32, matmul_tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        if self.device.type == 'cuda' and self.precision == 'fp32':
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            with torch.inference_mode():
                yield
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn_tf32, matmul_tf32

    def _head_cache(self, batch: int, height: int, width: int) -> Optional[torch.Tensor]:
        """An NHWC buffer for the whole image's head features, if it fits in ``HEAD_CACHE_BYTES``.

        With it, the second pass reads exact head features instead of recomputing them, and its tiles
        need a halo of ``TAIL_HALO`` only: fewer FLOPs for the memory of one 32-channel feature map.
        """
        channels = self.ppm_weights[0][0].shape[1]
        if batch * height * width * channels * self.weights['cond1.weight'].element_size() > HEAD_CACHE_BYTES:
            return None
        return torch.empty(batch, height, width, channels, dtype=self.dtype, device=self.device)

    @contextlib.contextmanager
    def _released_buffers(self):
        """Hand the activation buffers back after each image: an idle enhancer holds no tile memory."""
        try:
            yield
        finally:
            self._buffers.clear()

    def run(self, read: Reader, write: Writer, batch: int, height: int, width: int) -> None:
        """Enhance an image of ``batch`` x 3 x ``height`` x ``width`` given only by region access.

        ``read(region)`` returns the input over ``region`` as float32 (B,3,h,w) in [0,1] on the device;
        ``write(region, enhanced)`` receives ``clamp(I / L, 0, 1)`` over each core region, once per pixel.
        """
        if height < 2 or width < 2:
            raise ValueError(f'image is {height}x{width}; CLIP-LIT needs at least 2x2 pixels')
        if batch > 1:  # one image at a time: a window's rows are then contiguous in memory
            outputs = {}
            for index in range(batch):
                self.run(
                    lambda region, i=index: read(region)[i : i + 1],
                    lambda region, enhanced: outputs.setdefault(region, []).append(enhanced),
                    1,
                    height,
                    width,
                )
            for region, parts in outputs.items():
                write(region, torch.cat(parts))
            return
        size = (height, width)
        with self._exact_math(), self._released_buffers():
            whole = self._tiles(height, width, 0)
            if len(whole) == 1:  # one tile: the whole image, no second pass
                ((region, _, everywhere),) = whole
                image = read(region)
                feat, rows = self._head(image, everywhere)
                taps = self._fuse_branch_taps([F.adaptive_avg_pool2d(feat.float(), b) for b in PPM_BINS])
                light = self._tail(feat.permute(0, 2, 3, 1), rows, taps, size, region, everywhere)
                write(region, torch.clamp(image / light, 0, 1))
                return
            cache = self._head_cache(batch, height, width)
            taps = self._fuse_branch_taps(self._pooled_stats(read, batch, height, width, cache))
            for core, outer, border in self._tiles(
                height, width, TAIL_HALO if cache is not None else HEAD_HALO + TAIL_HALO
            ):
                image = read(outer)
                y0, y1, x0, x1 = outer
                if cache is None:
                    feat, rows = self._head(image, border)
                    feat = feat.permute(0, 2, 3, 1)
                else:
                    feat, rows = cache[:, y0:y1, x0:x1], (0, y1 - y0)
                light = self._tail(feat, rows, taps, size, outer, border)
                write(core, torch.clamp(_crop(image, core, outer) / _crop(light, core, outer), 0, 1))


def enhance_tensor(
    net: nn.Module, img: torch.Tensor, tile: Optional[int] = None, precision: str = 'fp32'
) -> torch.Tensor:
    """Exact full-image CLIP-LIT enhancement ``clamp(img / net(img), 0, 1)`` of ``img`` (B,3,H,W) in [0,1].

    Runs on ``img.device`` with ``net``'s current weights and padding variant, tile by tile (memory stays
    bounded whatever the size); in fp32 it equals the plain forward up to float rounding. Use it for
    validation and test of a model being trained.
    """
    engine = FastCLIPLIT(net, img.device, precision, tile)
    out = torch.empty(img.shape, dtype=torch.float32, device=img.device)

    def read(region: Region) -> torch.Tensor:
        y0, y1, x0, x1 = region
        return img[:, :, y0:y1, x0:x1].float()

    def write(region: Region, enhanced: torch.Tensor) -> None:
        y0, y1, x0, x1 = region
        out[:, :, y0:y1, x0:x1] = enhanced

    engine.run(read, write, img.shape[0], img.shape[2], img.shape[3])
    return out
