"""``cliplit-export``: the enhancement network as an ONNX model that maps an image to the enhanced image.

The model is the authors' inference variant (reflect padding) with the output formula inside:
``enhanced = clamp(image / L, 0, 1)`` of an RGB image (N, 3, H, W) in [0, 1], for any height and width.
The pyramid pooling looks at the whole image, so tiling would change the result (and a fixed pooling
kernel would be right at one size only): its adaptive average pooling is written as two averaging
matrices built from the input's size at run time (:class:`SizeFreeAdaptiveAvgPool2d`), the same averages
``nn.AdaptiveAvgPool2d`` takes, at every size. Runs in onnxruntime without torch (README).
"""

import argparse
import copy
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from cliplit_basicsr.atomic_io import atomic_write_path
from cliplit_basicsr.checkpoint import load_checkpoint, resolve_checkpoint
from cliplit_basicsr.choices import torch_dtype
from cliplit_basicsr.errors import UsageError, exit_on_user_error
from cliplit_basicsr.network import CLIPLITNet

EXPORT_PRECISIONS = ('fp32', 'fp16')
DEFAULT_OPSET = 18
OPSETS = (18, 25)  # what torch's exporter (through onnxscript) converts to
LICENCE = 'S-Lab License 1.0 (non-commercial use only), the authors of CLIP-LIT'


def averaging_matrix(length: torch.Tensor, bins: int, like: torch.Tensor) -> torch.Tensor:
    """(bins, length) rows that average the index ranges ``AdaptiveAvgPool2d(bins)`` averages along an axis of
    ``length``: ``[floor(i L / bins), ceil((i + 1) L / bins))``. ``length`` may be known only at run time."""
    index = torch.arange(length, device=like.device)
    bin_index = torch.arange(bins, device=like.device).unsqueeze(1)
    start = (bin_index * length) // bins
    end = ((bin_index + 1) * length + bins - 1) // bins
    inside = (index >= start) & (index < end)
    return inside.to(like.dtype) / (end - start).to(like.dtype)


class SizeFreeAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d(bins)`` as two matrix products, exportable with a run-time input size."""

    def __init__(self, bins: int):
        super().__init__()
        self.bins = bins

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = averaging_matrix(x.shape[-2], self.bins, x)
        cols = averaging_matrix(x.shape[-1], self.bins, x)
        return rows @ x @ cols.transpose(0, 1)


class ImageToImage(nn.Module):
    """``clamp(image / net(image), 0, 1)``: a CLIP-LIT network as an image-to-image model (what is exported)."""

    def __init__(self, net: CLIPLITNet):
        super().__init__()
        self.net = copy.deepcopy(net)
        for branch in self.net.PPM1.features:
            branch[0] = SizeFreeAdaptiveAvgPool2d(branch[0].output_size)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.clamp(image / self.net(image), 0, 1)


def export_onnx(
    output: 'str | Path',
    ckpt: str = 'official',
    precision: str = 'fp32',
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Write the ONNX model of the checkpoint ``ckpt`` (``'official'`` or a path) to ``output``.

    Args:
        output: the ``.onnx`` file to write (atomically: an interrupted export leaves no file).
        ckpt: the checkpoint, loaded into the reflect-padding variant the authors infer with.
        precision: ``'fp32'`` (exact) or ``'fp16'`` (weights and activations in half precision, for GPUs).
        opset: the ONNX opset.

    Returns the path written. The model's input ``image`` and output ``enhanced`` are (N, 3, H, W) RGB in
    [0, 1], N, H and W dynamic; its metadata names the checkpoint, the padding and the licence.
    """
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise UsageError("cliplit-export needs onnx and onnxscript: pip install 'cliplit_basicsr[export]'") from None

    if precision not in EXPORT_PRECISIONS:
        raise UsageError(f'--precision {precision}: expected one of {", ".join(EXPORT_PRECISIONS)}')
    if not OPSETS[0] <= opset <= OPSETS[1]:
        raise UsageError(f'--opset {opset}: the exporter writes opsets {OPSETS[0]} to {OPSETS[1]}')
    path = resolve_checkpoint(ckpt)
    model = ImageToImage(load_checkpoint(CLIPLITNet(padding='reflect'), path))
    dtype = torch_dtype(precision)
    model = model.to(dtype).eval()
    example = torch.rand(1, 3, 64, 96, dtype=dtype)
    dim = torch.export.Dim
    dims = {0: dim('batch', min=1), 2: dim('height', min=2), 3: dim('width', min=2)}
    program = torch.onnx.export(
        model,
        (example,),
        input_names=['image'],
        output_names=['enhanced'],
        opset_version=opset,
        dynamic_shapes={'image': dims},
        dynamo=True,
        verbose=False,
        external_data=False,
    )
    proto = program.model_proto
    metadata = {
        'checkpoint': path.name,
        'padding': 'reflect',
        'precision': precision,
        'formula': 'enhanced = clamp(image / L, 0, 1); image RGB in [0, 1], NCHW',
        'licence': LICENCE,
    }
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write_path(output) as temporary:
        onnx.save(proto, temporary)
    return output


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='cliplit-export', description=__doc__.splitlines()[0])
    parser.add_argument('-o', '--output', default='cliplit.onnx', help='the .onnx file to write')
    parser.add_argument('--ckpt', default='official', help="'official' (the authors' model) or a checkpoint path")
    parser.add_argument('--precision', default='fp32', choices=EXPORT_PRECISIONS, help='fp32 (exact) or fp16')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET, help=f'ONNX opset (default {DEFAULT_OPSET})')
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    written = export_onnx(args.output, args.ckpt, args.precision, args.opset)
    print(f'cliplit-export: wrote {written} ({written.stat().st_size / 2**20:.1f} MiB)', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
