"""Random weights in the shapes pyiqa's LPIPS and MUSIQ load, so their plumbing runs offline.

The scores they give mean nothing; they exercise the real call path (file loading, colour order, the
metric table) without the downloads pyiqa would otherwise need.
"""

import os
from pathlib import Path
from types import SimpleNamespace

import torch


def _fake_alexnet_checkpoint(torch_home: Path) -> None:
    """torchvision's AlexNet file where torchvision looks for it (``TORCH_HOME``); it is never hash-checked
    once present. LPIPS uses only the conv features: those are random, the unused classifier is stored as
    broadcast zeros to keep the file small."""
    from torchvision.models import AlexNet_Weights, alexnet

    with torch.device('meta'):
        shapes = {k: v.shape for k, v in alexnet().state_dict().items()}
    state = {
        k: (torch.randn(shape) * 0.05 if k.startswith('features') else torch.zeros(()).expand(shape))
        for k, shape in shapes.items()
    }
    folder = torch_home / 'hub' / 'checkpoints'
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / Path(AlexNet_Weights.IMAGENET1K_V1.url).name)


def make_pyiqa_test_weights(folder: Path) -> SimpleNamespace:
    """Write random weights under ``folder``; returns the ``torch_home`` to set as ``TORCH_HOME`` and the
    ``lpips`` and ``musiq`` files to pass as ``pretrained_model_path``."""
    from pyiqa.archs.lpips_arch import LPIPS
    from pyiqa.archs.musiq_arch import MUSIQ

    torch.manual_seed(0)
    torch_home = folder / 'torch_home'
    _fake_alexnet_checkpoint(torch_home)
    previous = os.environ.get('TORCH_HOME')
    os.environ['TORCH_HOME'] = str(torch_home)
    try:
        lpips = LPIPS(pretrained=False, net='alex')
    finally:
        if previous is None:
            del os.environ['TORCH_HOME']
        else:
            os.environ['TORCH_HOME'] = previous
    for parameter in lpips.lins.parameters():  # LPIPS registers each layer twice (lin<k> and lins.<k>)
        torch.nn.init.uniform_(parameter)
    lins = {k: v for k, v in lpips.state_dict().items() if k.startswith('lin')}
    files = SimpleNamespace(torch_home=torch_home, lpips=folder / 'lpips_random.pth', musiq=folder / 'musiq_random.pth')
    torch.save(lins, files.lpips)
    torch.save(MUSIQ(pretrained=False).state_dict(), files.musiq)
    return files
