"""CLIP image features of prompt-phase images, kept for the images that recur pixel for pixel.

A prompt batch holds training images resized to the prompt size and augmented (docs/method.md). Flips and the
transpose (p = 0.5 each) only move pixels, so an image drawn without zoom and without rotation
(p = 0.7 x 0.7 = 0.49) is one of 8 exact variants of its resized image, and the frozen ViT gives it the
same features every time. Those features are kept (one D-vector each); a step sends only the other
images through CLIP, about half of them once a long run has drawn every variant (each backlit and
well-lit image is drawn hundreds of times over the authors' schedule). Only the order of floating-point
sums can differ from encoding the image again, as it can between any two batch compositions.

Keys name the image exactly: its set and index (enhanced outputs also the round of the network that
produced them) and its flip/transpose code; images with zoom or rotation get no key.
"""

from typing import Callable, Dict, Hashable, List, Mapping, Optional, Sequence, Union

import torch

Key = Optional[Hashable]


def exact_variants(aug: Mapping[str, torch.Tensor]) -> List[Optional[int]]:
    """Per image of a collated batch of augmentation draws (`AugmentParams.as_dict`): its flip/transpose
    code 0-7 when the draw only flips and transposes, None when it zooms or rotates."""
    codes = (aug['hflip'].long() + 2 * aug['vflip'].long() + 4 * aug['transpose'].long()).tolist()
    warped = (aug['zoom'].bool() | aug['rotate'].bool()).tolist()
    return [None if w else code for code, w in zip(codes, warped)]


class FeatureCache:
    """Features by key; :meth:`encode` computes only the missing ones, in one batch."""

    def __init__(self) -> None:
        self._features: Dict[Hashable, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._features)

    def encode(
        self,
        encode_images: Callable[[torch.Tensor], torch.Tensor],
        images: Union[torch.Tensor, Sequence[torch.Tensor]],
        keys: Sequence[Key],
    ) -> torch.Tensor:
        """Features of ``images`` (N, ...), or of a list of batches taken as their concatenation, in order:
        kept ones where ``keys[i]`` was seen before, the others from one ``encode_images`` call (and kept
        where their key is not None). Only the images to encode are copied into that call's batch."""
        rows = list(images) if torch.is_tensor(images) else [image for batch in images for image in batch]
        if len(keys) != len(rows):
            raise ValueError(f'FeatureCache.encode: {len(keys)} keys for {len(rows)} images')
        missing = [i for i, key in enumerate(keys) if key is None or key not in self._features]
        fresh = encode_images(torch.stack([rows[i] for i in missing])) if missing else None
        for row, i in enumerate(missing):
            if keys[i] is not None:
                self._features[keys[i]] = fresh[row]
        fresh_rows = dict(zip(missing, fresh if fresh is not None else ()))
        return torch.stack([fresh_rows[i] if i in fresh_rows else self._features[key] for i, key in enumerate(keys)])

    def forget(self, keep: Callable[[Hashable], bool]) -> None:
        """Drop every entry whose key ``keep`` rejects (e.g. outputs of a network no longer used)."""
        self._features = {key: value for key, value in self._features.items() if keep(key)}


def prompt_feature_keys(phase, batch: dict, schedule) -> List[Key]:
    """The keys of a prompt batch's images, in the order the training model encodes them: (set, round of the
    network behind an enhanced output or None, index, flip/transpose code); None for zoomed or rotated ones.

    Prompt initialisation: its pooled images (``label`` 0 backlit, 1 well-lit). Prompt refinement: the
    backlit, then the well-lit images, then the enhanced outputs of each slot ``schedule`` ranks.
    """
    from cliplit_basicsr.data.prompt_init_pool import BACKLIT

    from .schedule import Phase

    if phase is Phase.PROMPT_INIT:
        names = ['backlit' if label == BACKLIT else 'welllit' for label in batch['label'].tolist()]
        sources = [(name, None, [index]) for name, index in zip(names, batch['index'].tolist())]
        variants = [[code] for code in exact_variants(batch['aug'])]
    else:
        sources = [('backlit', None, batch['index'].tolist()), ('welllit', None, batch['welllit_index'].tolist())]
        rounds = [schedule.slot_rounds[slot] for slot in schedule.ranking_slots()]
        sources += [('output', round_, batch['index'].tolist()) for round_ in rounds]
        variants = [exact_variants(batch['aug'])] * len(sources)
    return [
        None if code is None else (name, round_, index, code)
        for (name, round_, indices), codes in zip(sources, variants)
        for index, code in zip(indices, codes)
    ]
