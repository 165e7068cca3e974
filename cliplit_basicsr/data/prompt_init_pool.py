"""Prompt initialisation's images: backlit and well-lit images in one pool, as the authors' loader has them.

The authors' ``dataloader_prompt_add.py`` cycles the shorter of the backlit and well-lit lists to the
longer one's length, joins the two, shuffles the whole and labels each image by its folder (0 backlit,
1 well-lit). Each image gets its own augmentation draw, and a batch of 16 is any 16 images of the pool:
its mix of the two classes varies from batch to batch, around half and half.
"""

from typing import Dict

import torch
from torch.utils.data import Dataset

from cliplit_basicsr.data.unpaired_dataset import CLIPLITUnpairedDataset
from cliplit_basicsr.transfer import to_device

BACKLIT, WELLLIT = 0, 1  # the authors' labels (cross-entropy targets)


class PromptInitPool(Dataset):
    """The images of a backlit + well-lit :class:`CLIPLITUnpairedDataset` as one labelled pool.

    Items ``0 .. n-1`` are the backlit list cycled to ``n = len(pairs)`` (label 0), items ``n .. 2n-1`` the
    well-lit list likewise (label 1); the sampler shuffles them. An item holds ``label``, ``index`` (in its
    own list), ``path`` and ``aug`` (its own draw); :meth:`images` gathers a batch's pixels.
    """

    def __init__(self, pairs: CLIPLITUnpairedDataset) -> None:
        if not pairs.use_welllit:
            raise ValueError('PromptInitPool needs a dataset with well-lit images (use_welllit: true)')
        self.pairs = pairs

    def __len__(self) -> int:
        return 2 * len(self.pairs)

    def __getitem__(self, item: int) -> Dict:
        label = BACKLIT if item < len(self.pairs) else WELLLIT
        position = item - label * len(self.pairs)
        source = self.pairs.backlit if label == BACKLIT else self.pairs.welllit
        index = position % len(source)
        return {'label': label, 'index': index, 'path': source.names[index], 'aug': self.pairs.draw()}

    def images(self, batch: dict, device: torch.device) -> torch.Tensor:
        """The un-augmented images of a collated ``batch``, in its order: (B, 3, S, S) float32 on ``device``."""
        resident = self.pairs.resident(device)
        backlit = batch['label'] == BACKLIT
        parts = [resident['backlit'].take(batch['index'][backlit]), resident['welllit'].take(batch['index'][~backlit])]
        order = torch.cat([backlit.nonzero(), (~backlit).nonzero()]).flatten()  # batch position of each row
        return torch.cat(parts)[to_device(torch.argsort(order), device)]
