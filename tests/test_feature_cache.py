"""Prompt-phase CLIP features kept for images that recur exactly (flips/transpose only) and recomputed for
warped ones; the keys a batch gets from its augmentation draws."""

import pytest
import torch
from torch.utils.data import default_collate

from cliplit_basicsr.data.augment import AugmentParams, augment_batch
from cliplit_basicsr.models.feature_cache import FeatureCache, exact_variants


class CountingEncoder:
    """A stand-in image encoder (a fixed random projection) that records how many images it encoded."""

    def __init__(self):
        self.weight = torch.randn(3 * 8 * 8, 5, generator=torch.Generator().manual_seed(0))
        self.encoded = 0

    def __call__(self, images):
        self.encoded += len(images)
        return images.flatten(1) @ self.weight


def test_kept_features_equal_fresh_ones_and_only_missing_images_are_encoded():
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    encoder, cache = CountingEncoder(), FeatureCache()
    first = cache.encode(encoder, images, ['a', 'b', None, 'c'])
    assert encoder.encoded == 4 and len(cache) == 3
    torch.testing.assert_close(first, encoder(images), rtol=0, atol=0)
    encoder.encoded = 0
    again = cache.encode(encoder, images[[2, 1, 0]], [None, 'b', 'a'])
    assert encoder.encoded == 1  # only the keyless image
    torch.testing.assert_close(again, first[[2, 1, 0]], rtol=0, atol=0)
    encoder.encoded = 0
    cache.encode(encoder, images[:2], ['a', 'b'])
    assert encoder.encoded == 0
    cache.forget(lambda key: key != 'a')
    assert len(cache) == 2
    cache.encode(encoder, images[:1], ['a'])
    assert encoder.encoded == 1


def test_a_list_of_batches_is_their_concatenation():
    images = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    encoder, cache = CountingEncoder(), FeatureCache()
    cache.encode(encoder, images[:1], ['a'])
    encoder.encoded = 0
    features = cache.encode(encoder, [images[:2], images[2:]], ['a', None, 'b', None, 'c'])
    assert encoder.encoded == 4
    torch.testing.assert_close(features, encoder(images))  # fp32 defaults: other batches round differently
    with pytest.raises(ValueError, match='4 keys for 5 images'):
        cache.encode(encoder, [images[:2], images[2:]], ['a', 'b', 'c', 'd'])


def test_key_count_must_match_the_images():
    with pytest.raises(ValueError, match='2 keys for 3 images'):
        FeatureCache().encode(CountingEncoder(), torch.rand(3, 3, 8, 8), ['a', 'b'])


def test_exact_variants_name_the_flip_transpose_image_and_refuse_warped_draws():
    draws = [
        AugmentParams(),
        AugmentParams(hflip=True),
        AugmentParams(vflip=True, transpose=True),
        AugmentParams(hflip=True, zoom=True, zoom_x=1.2, zoom_y=0.8),
        AugmentParams(rotate=True, angle=10.0),
        AugmentParams(hflip=True, vflip=True, transpose=True),
    ]
    assert exact_variants(default_collate([d.as_dict() for d in draws])) == [0, 1, 6, None, None, 7]


def test_draws_with_the_same_code_give_the_same_pixels():
    """What makes a code a valid key: the same image under two draws with one code is pixel-identical,
    and the 8 codes give 8 different images."""
    image = torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(2))
    by_code = {}
    for hflip in (False, True):
        for vflip in (False, True):
            for transpose in (False, True):
                for zoom_x in (0.9, 1.1):  # carried by the draw, but unused without its flag
                    draw = AugmentParams(hflip, vflip, transpose, zoom=False, zoom_x=zoom_x)
                    batch = default_collate([draw.as_dict()])
                    code = exact_variants(batch)[0]
                    out = augment_batch(image, batch)
                    if code in by_code:
                        assert torch.equal(out, by_code[code])
                    by_code[code] = out
    assert sorted(by_code) == list(range(8))
    assert len({tuple(v.flatten().tolist()) for v in by_code.values()}) == 8
