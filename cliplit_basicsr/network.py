"""CLIP-LIT's enhancement network: a light-map estimator (``docs/method.md``), in plain PyTorch.

A faithful port of the authors' ``UNet_emb_oneBranch_symmetry`` (test script) and
``UNet_emb_oneBranch_symmetry_noreflect`` (training script): parameter names match their checkpoints, so a
state dict with the ``module.`` prefix removed loads as is. The module stays plain and differentiable
(training uses it). :meth:`CLIPLITNet.layout` describes its layers in order, which is what the tiled
inference engine (:mod:`cliplit_basicsr.engine.tiled`) runs; the reference engine runs ``forward`` itself.

Nothing here imports BasicSR, so that enhancing photos never does: :mod:`cliplit_basicsr.archs.cliplit_arch`
registers the class as ``type: CLIPLITNet``.
"""

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

PPM_BINS = (1, 2, 3, 6)


@dataclass(frozen=True)
class Conv:
    """A 3x3 convolution ``name`` (stride 1, padding 1) and the activation after it (``'leaky_relu'``,
    ``'relu'`` or None); ``reflect``: reflect padding, else zeros."""

    name: str
    in_channels: int
    out_channels: int
    reflect: bool
    activation: Optional[str]


@dataclass(frozen=True)
class Residual:
    """A :class:`ResidualBlock` ``name``: two bias-free reflect-padded 3x3 convs of ``channels``."""

    name: str
    channels: int


@dataclass(frozen=True)
class Pyramid:
    """The pyramid pooling ``name`` over the whole image: per bin count, average pooling, a 1x1 conv to
    ``branch_channels`` and a PReLU, upsampled back (bilinear, ``align_corners=True``); then a zero-padded
    3x3 fuse conv of [input, branches] back to ``channels`` and a one-parameter PReLU."""

    name: str
    channels: int
    bins: Tuple[int, ...]
    branch_channels: int


@dataclass(frozen=True)
class Layout:
    """The network's layers in order: ``head`` (up to the pyramid pooling), ``pyramid``, ``tail``."""

    head: Tuple[Union[Conv, Residual], ...]
    pyramid: Pyramid
    tail: Tuple[Union[Conv, Residual], ...]
    leaky_slope: float

    @staticmethod
    def convs(stages: Sequence[Union[Conv, Residual]]) -> int:
        """How many 3x3 convs ``stages`` run: each widens the pixels an output depends on by one."""
        return sum(2 if isinstance(stage, Residual) else 1 for stage in stages)

    @property
    def head_halo(self) -> int:
        return self.convs(self.head)

    @property
    def tail_halo(self) -> int:
        return self.convs(self.tail) + 1  # and the pyramid's fuse conv


class ResidualBlock(nn.Module):
    """Two bias-free 3x3 convs with reflect padding, identity skip, LeakyReLU(0.2) after the sum."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False, padding_mode='reflect')
        self.relu = nn.LeakyReLU(0.2, inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False, padding_mode='reflect')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.relu(self.conv1(x)))
        return self.relu(out + x)


class PPM(nn.Module):
    """Pyramid pooling: whole-image average pools at several bin counts, projected and upsampled back."""

    def __init__(self, in_dim: int, reduction_dim: int, bins: Sequence[int]):
        super().__init__()
        self.features = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(in_dim, reduction_dim, 1, bias=False), nn.PReLU())
            for b in bins
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(in_dim + reduction_dim * len(bins), in_dim, 3, 1, 1, bias=False), nn.PReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        branches = [F.interpolate(f(x), size, mode='bilinear', align_corners=True) for f in self.features]
        return self.fuse(torch.cat([x] + branches, 1))


class CLIPLITNet(nn.Module):
    """Estimates the light map ``L`` (B,1,H,W) of a backlit image ``x`` (B,3,H,W) in [0,1].

    The enhanced image is ``clamp(x / L, 0, 1)``. ``padding`` selects the padding of ``cond1``, ``condx``,
    ``condy`` and ``cond_add1``: ``'zeros'`` as the authors train, ``'reflect'`` as their test script infers.
    The residual blocks always pad by reflection and the PPM fuse conv by zeros.
    """

    def __init__(self, padding: str = 'zeros'):
        super().__init__()
        if padding not in ('zeros', 'reflect'):
            raise ValueError(f"padding must be 'zeros' or 'reflect', got {padding!r}")
        self.padding = padding
        self.cond1 = nn.Conv2d(3, 32, 3, 1, 1, bias=True, padding_mode=padding)
        self.cond_add1 = nn.Conv2d(32, 1, 3, 1, 1, bias=True, padding_mode=padding)
        self.condx = nn.Conv2d(32, 64, 3, 1, 1, bias=True, padding_mode=padding)
        self.condy = nn.Conv2d(64, 32, 3, 1, 1, bias=True, padding_mode=padding)
        self.relu = nn.ReLU(inplace=True)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)
        self.ResidualBlock1 = ResidualBlock(32)
        self.ResidualBlock2 = ResidualBlock(32)
        self.ResidualBlock3 = ResidualBlock(64)
        self.ResidualBlock4 = ResidualBlock(64)
        self.ResidualBlock5 = ResidualBlock(32)
        self.ResidualBlock6 = ResidualBlock(32)
        self.PPM1 = PPM(32, 8, PPM_BINS)
        self.init_weights()

    def init_weights(self) -> None:
        """The authors' ``weights_init``: every conv weight ~ N(0, 0.02); biases keep PyTorch's default."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)

    def layout(self) -> Layout:
        """The layers :meth:`forward` runs, in order, read off the modules."""

        def conv(name: str, activation: Optional[str]) -> Conv:
            module = getattr(self, name)
            reflect = module.padding_mode == 'reflect'
            return Conv(name, module.in_channels, module.out_channels, reflect, activation)

        def residual(name: str) -> Residual:
            return Residual(name, getattr(self, name).conv1.in_channels)

        ppm = self.PPM1
        bins = tuple(branch[0].output_size for branch in ppm.features)
        pyramid = Pyramid('PPM1', ppm.fuse[0].out_channels, bins, ppm.features[0][1].out_channels)
        head = (conv('cond1', 'leaky_relu'), residual('ResidualBlock1'), residual('ResidualBlock2'))
        tail = (
            conv('condx', None),
            residual('ResidualBlock3'),
            residual('ResidualBlock4'),
            conv('condy', None),
            residual('ResidualBlock5'),
            residual('ResidualBlock6'),
            conv('cond_add1', 'relu'),
        )
        return Layout(head, pyramid, tail, self.lrelu.negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.lrelu(self.cond1(x))
        feat = self.PPM1(self.ResidualBlock2(self.ResidualBlock1(feat)))
        feat = self.ResidualBlock4(self.ResidualBlock3(self.condx(feat)))
        feat = self.ResidualBlock6(self.ResidualBlock5(self.condy(feat)))
        return self.relu(self.cond_add1(feat))
