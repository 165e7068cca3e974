"""Host-to-device copies that do not make the host wait for the device.

A copy from ordinary (pageable) host memory to a GPU blocks until the GPU has run everything queued before
it: in a training step that is a synchronisation per batch. Copied from pinned memory with
``non_blocking=True``, the copy is queued like a kernel and the host goes on. The training step sends its
indices, labels and augmentation parameters this way.
"""

import torch


def to_device(value: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``value`` on ``device``; a host tensor goes to a GPU through pinned memory, without a synchronisation."""
    if value.device == device:
        return value
    if torch.device(device).type == 'cuda' and value.device.type == 'cpu':
        return value.pin_memory().to(device, non_blocking=True)
    return value.to(device)
