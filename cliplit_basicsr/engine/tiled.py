"""The tiled engine: :class:`~cliplit_basicsr.network.CLIPLITNet`'s layers, as its
:meth:`~cliplit_basicsr.network.CLIPLITNet.layout` lists them, run tile by tile in bounded memory.

The computation is the network's own, rearranged for speed and memory:

* activations are channels-last and live in a few buffers reused by every tile; each conv accumulates
  into its output buffer (in place by oneDNN on a CPU with the fast paths on), so residual sums cost no
  extra pass and no full-tile tensor is allocated per layer;
* reflect padding costs no padded copy: each conv pads with zeros and only its one-pixel output border is
  recomputed from a reflect-padded 3-pixel strip, and only on the sides on the image border
  (:func:`.geometry.conv_add`);
* exact tiling: the pyramid pooling averages the *whole* feature map, so a first pass over tiles (halo: the
  head's 3x3 convs) sums those averages (:mod:`.pyramid`); a second pass runs the network on tiles with the
  head's and the tail's halo, feeding the pyramid branches computed from the whole image. When the whole
  image's head features fit in ``HEAD_CACHE_BYTES``, the first pass keeps them and the second runs only the
  tail, with the tail's halo. Each tile's core is then what the full-frame network gives, up to float
  rounding. Each conv skips the halo rows it would get wrong (:mod:`.geometry`).

``precision='fp32'`` is the exact path (TF32 off on CUDA); ``'bf16'`` and ``'fp16'`` run the convolutions
in reduced precision, with the pooling statistics and the final division in fp32.
"""

import contextlib
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from cliplit_basicsr import accel
from cliplit_basicsr.choices import DEFAULT_TILES, torch_dtype
from cliplit_basicsr.network import Conv, Residual

from .geometry import (
    EVERYWHERE,
    NO_BORDER,
    Border,
    Region,
    Rows,
    conv_add,
    conv_add_plain,
    conv_rows,
    crop,
    row_slice,
    tiles,
    valid_rows,
)
from .maths import exact_math, light_to_output
from .pyramid import ExactPyramid

# Keep the whole image's head features when they fit in this (a 2048x1536 photo in fp32); larger images
# recompute the head in the second pass instead (docs/benchmarks.md has the peak memory).
HEAD_CACHE_BYTES = 384 * 2**20


class TiledEngine:
    """A frozen copy of a CLIPLITNet's weights on ``device`` in ``precision``, run tile by tile.

    Args:
        net: the network (either padding variant); its weights are copied, the module is not changed.
        device: where to compute.
        precision: ``'fp32'`` (exact), ``'bf16'`` or ``'fp16'``.
        tile: core tile size in pixels; ``None``: the device's default (``DEFAULT_TILES``); ``0`` runs the
            whole image as one tile (memory grows with the image: about 1 GB per megapixel).
        head_cache_bytes: keep the whole image's head features between the passes up to this size.
    """

    def __init__(
        self,
        net: nn.Module,
        device: torch.device,
        precision: str = 'fp32',
        tile: Optional[int] = None,
        head_cache_bytes: int = HEAD_CACHE_BYTES,
    ):
        self.device = torch.device(device)
        self.precision, self.dtype = precision, torch_dtype(precision)
        self.tile = DEFAULT_TILES.get(self.device.type, DEFAULT_TILES['cuda']) if tile is None else tile
        self.head_cache_bytes = head_cache_bytes
        self.layout = net.layout()
        self._check_layout()
        state = {k: v.detach().to(self.device) for k, v in net.state_dict().items()}
        self.weights = {
            k: (v.to(self.dtype).contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v.to(self.dtype))
            for k, v in state.items()
        }
        self.pyramid = ExactPyramid(self.layout.pyramid, state, self.dtype)
        self.weights[f'{self.layout.pyramid.name}.fuse.head.weight'] = self.pyramid.head_weight
        self._conv_add_op = accel.conv_add_op(self.device, self.dtype, conv_add_plain)
        self._buffers: Dict[str, torch.Tensor] = {}

    def _check_layout(self) -> None:
        """The buffer plan needs each plain conv to change the width (its output cannot share its input's
        buffer) and the tail to end in the one-channel light map."""
        for stage in self.layout.head + self.layout.tail:
            if isinstance(stage, Conv) and stage.in_channels == stage.out_channels:
                raise ValueError(f'TiledEngine: conv {stage.name} keeps {stage.in_channels} channels')
        last = self.layout.tail[-1]
        if not (isinstance(last, Conv) and last.out_channels == 1 and last.activation == 'relu'):
            raise ValueError('TiledEngine: the tail must end in a one-channel ReLU conv (the light map)')

    # --- the network, layer by layer, in reused activation buffers ---------------------------------
    def _buffer(self, name: str, batch: int, channels: int, height: int, width: int) -> torch.Tensor:
        """A channels-last (batch, channels, height, width) view of the reusable buffer ``name``: every tile
        reuses the same memory (fresh full-tile activations would be paged in again at every tile)."""
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
        ``out`` now holds the layer's output (:func:`.geometry.valid_rows`).
        """
        target = row_slice(out, conv_rows(rows, border))
        if not accumulate:
            target.zero_()
        weight, bias = self.weights[f'{name}.weight'], self.weights.get(f'{name}.bias')
        conv_add(self._conv_add_op, target, row_slice(x, rows), weight, bias, reflect, int(border[0] or border[1]))
        return valid_rows(rows, border)

    def _conv(self, stage: Conv, out: torch.Tensor, x: torch.Tensor, rows: Rows, border: Border) -> Rows:
        rows = self._conv_into(out, x, rows, stage.name, border, border if stage.reflect else NO_BORDER)
        if stage.activation == 'leaky_relu':
            F.leaky_relu_(row_slice(out, rows), self.layout.leaky_slope)
        elif stage.activation == 'relu':
            F.relu_(row_slice(out, rows))
        return rows

    def _residual(self, stage: Residual, x: torch.Tensor, rows: Rows, border: Border) -> Rows:
        """``x = lrelu(x + conv2(lrelu(conv1(x))))``, in place; both convs pad by reflection."""
        mid = self._buffer('mid', *x.shape)  # one buffer for blocks of any width
        mid_rows = self._conv_into(mid, x, rows, f'{stage.name}.conv1', border, border)
        F.leaky_relu_(row_slice(mid, mid_rows), self.layout.leaky_slope)
        rows = self._conv_into(x, mid, mid_rows, f'{stage.name}.conv2', border, border, accumulate=True)
        F.leaky_relu_(row_slice(x, rows), self.layout.leaky_slope)
        return rows

    def _stages(
        self, stages: Sequence[Union[Conv, Residual]], x: torch.Tensor, rows: Rows, border: Border, part: str
    ) -> Tuple[torch.Tensor, Rows]:
        """Run ``stages`` on ``x`` (valid on ``rows``): plain convs write into ``part``'s buffer of their
        width, residual blocks work in place. Returns the last activation and its valid rows."""
        batch, _, height, width = x.shape
        for stage in stages:
            if isinstance(stage, Residual):
                rows = self._residual(stage, x, rows, border)
                continue
            if stage.out_channels == 1:  # the light map: 1 where not computed, so that I / L stays finite
                out = torch.ones(batch, 1, height, width, dtype=self.dtype, device=self.device)
            else:
                out = self._buffer(f'{part}{stage.out_channels}', batch, stage.out_channels, height, width)
            rows, x = self._conv(stage, out, x, rows, border), out
        return x, rows

    def _head(self, image: torch.Tensor, border: Border) -> Tuple[torch.Tensor, Rows]:
        """The head's layers on ``image``: the features the pyramid pools and their valid rows."""
        x = image.to(self.dtype).contiguous(memory_format=torch.channels_last)
        return self._stages(self.layout.head, x, (0, x.shape[2]), border, 'head')

    def _tail(
        self,
        feat: torch.Tensor,
        rows: Rows,
        taps: List[torch.Tensor],
        size: Tuple[int, int],
        window: Region,
        border: Border,
    ) -> torch.Tensor:
        """The pyramid's fuse conv and the tail: the light map (B,1,h,w), float32, over ``window`` of an image
        of ``size`` (right on the core), from the window's head features ``feat`` (NHWC (B,h,w,C), valid on
        ``rows``; a view of the head cache is only read) and the pyramid's ``taps``.

        The fuse conv sees the head features and the upsampled branches side by side. It runs as its head
        half (a conv) added to its branch half (:meth:`.pyramid.ExactPyramid.branch_term`): the branches are
        never materialised or concatenated.
        """
        batch, height, width, channels = feat.shape
        head = feat.permute(0, 3, 1, 2)
        if not head.is_contiguous(memory_format=torch.channels_last):  # a window of the head cache
            head = self._buffer(f'head{channels}', batch, channels, height, width).copy_(head)
        fused = self._buffer(f'tail{channels}', batch, channels, height, width)
        fuse_rows = conv_rows(rows, border)
        region = (window[0] + fuse_rows[0], window[0] + fuse_rows[1]) + window[2:]
        self.pyramid.branch_term(taps, size, region, row_slice(fused, fuse_rows).permute(0, 2, 3, 1))
        name = f'{self.layout.pyramid.name}.fuse.head'
        rows = self._conv_into(fused, head, rows, name, border, NO_BORDER, accumulate=True)
        F.leaky_relu_(row_slice(fused, rows), self.pyramid.fuse_slope)
        light, _ = self._stages(self.layout.tail, fused, rows, border, 'tail')
        return light.float()

    # --- driving it -------------------------------------------------------------------------------
    def _pooled_averages(
        self, read, batch: int, height: int, width: int, cache: Optional[torch.Tensor], tile_done: Callable[[], None]
    ) -> List[torch.Tensor]:
        """First pass: the pyramid's averages of the whole image's head features, tile by tile; with
        ``cache`` (B,H,W,C), the head features of every pixel are also kept there."""
        sums = self.pyramid.start_sums(batch, height, width, self.device)
        for core, window, border in tiles(height, width, self.tile, self.layout.head_halo):
            feat, _ = self._head(read(window), border)
            feat = crop(feat, core, window)
            if cache is not None:
                cache[:, core[0] : core[1], core[2] : core[3]] = feat.permute(0, 2, 3, 1)
            self.pyramid.add_region_sums(sums, feat, core)
            tile_done()
        return self.pyramid.averages(sums)

    def _head_cache(self, batch: int, height: int, width: int) -> Optional[torch.Tensor]:
        """An NHWC buffer for the whole image's head features, if it fits in ``head_cache_bytes``: the second
        pass then reads exact head features instead of recomputing them, and needs the tail's halo only."""
        channels = self.layout.pyramid.channels
        if batch * height * width * channels * self.pyramid.head_weight.element_size() > self.head_cache_bytes:
            return None
        return torch.empty(batch, height, width, channels, dtype=self.dtype, device=self.device)

    @contextlib.contextmanager
    def _released_buffers(self):
        """Hand the activation buffers back after each image: an idle engine holds no tile memory."""
        try:
            yield
        finally:
            self._buffers.clear()

    def run(
        self,
        read,
        write,
        batch: int,
        height: int,
        width: int,
        strength: float = 1.0,
        progress: Optional[Callable[[float], None]] = None,
    ) -> None:
        """Enhance an image of ``batch`` x 3 x ``height`` x ``width`` given only by region access
        (:class:`cliplit_basicsr.engine.Engine`); ``progress`` gets the fraction done after each tile of
        each pass."""
        if height < 2 or width < 2:
            raise ValueError(f'image is {height}x{width}; CLIP-LIT needs at least 2x2 pixels')
        if batch > 1:  # one image at a time: a window's rows are then contiguous in memory
            outputs: Dict[Region, list] = {}
            for index in range(batch):
                self.run(
                    lambda region, i=index: read(region)[i : i + 1],
                    lambda region, *maps: outputs.setdefault(region, []).append(maps),
                    1,
                    height,
                    width,
                    strength,
                    progress and (lambda fraction, i=index: progress((i + fraction) / batch)),
                )
            for region, parts in outputs.items():
                write(region, *(torch.cat(maps) for maps in zip(*parts)))
            return
        size = (height, width)
        with exact_math(self.device, self.precision), self._released_buffers():
            if len(tiles(height, width, self.tile, 0)) == 1:  # one tile: the whole image, no second pass
                region = (0, height, 0, width)
                image = read(region)
                feat, rows = self._head(image, EVERYWHERE)
                taps = self.pyramid.taps([F.adaptive_avg_pool2d(feat.float(), b) for b in self.layout.pyramid.bins])
                light = self._tail(feat.permute(0, 2, 3, 1), rows, taps, size, region, EVERYWHERE)
                write(region, light_to_output(image, light, strength), light)
                if progress is not None:
                    progress(1.0)
                return
            steps, done = 2 * len(tiles(height, width, self.tile, 0)), 0  # the two passes, tile by tile

            def tile_done() -> None:
                nonlocal done
                done += 1
                if progress is not None:
                    progress(done / steps)

            cache = self._head_cache(batch, height, width)
            taps = self.pyramid.taps(self._pooled_averages(read, batch, height, width, cache, tile_done))
            halo = self.layout.tail_halo + (self.layout.head_halo if cache is None else 0)
            for core, window, border in tiles(height, width, self.tile, halo):
                image = read(window)
                y0, y1, x0, x1 = window
                if cache is None:
                    feat, rows = self._head(image, border)
                    feat = feat.permute(0, 2, 3, 1)
                else:
                    feat, rows = cache[:, y0:y1, x0:x1], (0, y1 - y0)
                light = crop(self._tail(feat, rows, taps, size, window, border), core, window)
                write(core, light_to_output(crop(image, core, window), light, strength), light)
                tile_done()
