"""The authors' augmentation, batched in torch: draw by draw against OpenCV, and the draws' statistics."""

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from cliplit_basicsr.data.augment import AugmentParams, augment_batch, augment_batch_, draw_augmentation, repeat_draws

# The same bilinear weights up to float32 sampling coordinates (their error grows with the image side).
# Measured on uniform noise, 200 draws, borders included: max 1.5e-5 at 64², 5.6e-5 at 256² (0.014/255).
OPENCV_TOLERANCE = 1e-4


def opencv_augment(img: np.ndarray, params: AugmentParams) -> np.ndarray:
    """The authors' augmentation of one HWC float32 image: flips and transpose, then ``cv2.warpAffine`` zoom
    about (w/2 + 0.5, h/2 + 0.5) and rotation about (w // 2, h // 2), bilinear, ``BORDER_REFLECT``."""
    if params.hflip:
        img = img[:, ::-1]
    if params.vflip:
        img = img[::-1]
    if params.transpose:
        img = img.transpose(1, 0, 2)
    img = np.ascontiguousarray(img)
    h, w = img.shape[:2]
    warp = dict(dsize=(w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if params.zoom:
        cx, cy = w / 2 + 0.5, h / 2 + 0.5
        matrix = np.array([[params.zoom_x, 0, cx * (1 - params.zoom_x)], [0, params.zoom_y, cy * (1 - params.zoom_y)]])
        img = cv2.warpAffine(img, matrix, **warp)
    if params.rotate:
        img = cv2.warpAffine(img, cv2.getRotationMatrix2D((w // 2, h // 2), params.angle, 1.0), **warp)
    return img


def _batch(draws):
    return default_collate([d.as_dict() for d in draws])


def _torch(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2)


def _numpy(images: torch.Tensor) -> np.ndarray:
    return images.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize('size', [65, 256])
def test_every_draw_matches_opencv_inside_and_at_the_borders(size):
    rng = np.random.default_rng(0)
    images = rng.random((40, size, size, 3), dtype=np.float32)  # uniform noise: the largest interpolation error
    draws = [draw_augmentation((0.5, 1.5), rng) for _ in range(32)] + [
        AugmentParams(zoom=True, zoom_x=0.5, zoom_y=1.5),  # zoom out: reflection over a wide border
        AugmentParams(rotate=True, angle=90.0),
        AugmentParams(rotate=True, angle=-89.9),
        AugmentParams(hflip=True, transpose=True, zoom=True, zoom_x=1.3, zoom_y=0.7, rotate=True, angle=45.0),
        AugmentParams(zoom=True, zoom_x=1.0, zoom_y=1.0),
        AugmentParams(rotate=True, angle=0.0),
        AugmentParams(vflip=True),
        AugmentParams(),
    ]
    got = _numpy(augment_batch(_torch(images), _batch(draws)))
    border = np.ones((size, size), bool)
    border[8:-8, 8:-8] = False
    worst_inside = worst_border = 0.0
    for image, draw, out in zip(images, draws, got):
        diff = np.abs(out - opencv_augment(image, draw)).max(axis=2)
        worst_inside, worst_border = max(worst_inside, diff[~border].max()), max(worst_border, diff[border].max())
        if not (draw.zoom or draw.rotate):
            assert diff.max() == 0, draw  # flips and transpose move pixels exactly
    assert worst_inside <= OPENCV_TOLERANCE and worst_border <= OPENCV_TOLERANCE, (worst_inside, worst_border)
    assert sum(d.zoom for d in draws) >= 5 and sum(d.rotate for d in draws) >= 5


def test_flips_and_transpose_semantics():
    img = np.arange(4 * 4 * 3, dtype=np.float32).reshape(1, 4, 4, 3)
    out = _numpy(augment_batch(_torch(img), _batch([AugmentParams(hflip=True)])))
    np.testing.assert_array_equal(out[0], img[0, :, ::-1])
    out = _numpy(augment_batch(_torch(img), _batch([AugmentParams(vflip=True, transpose=True)])))
    np.testing.assert_array_equal(out[0], img[0, ::-1].transpose(1, 0, 2))


def test_rotation_is_counter_clockwise_about_the_centre():
    img = np.random.default_rng(10).random((1, 9, 9, 3), dtype=np.float32)
    out = _numpy(augment_batch(_torch(img), _batch([AugmentParams(rotate=True, angle=90.0)])))
    np.testing.assert_allclose(out[0], np.rot90(img[0]), atol=1e-5)


def test_a_tuple_shares_its_draws_position_by_position():
    """The ranking tuple is augmented as one batch: each of its sets under the batch's draws."""
    rng = np.random.default_rng(3)
    images = _torch(rng.random((4, 32, 32, 3), dtype=np.float32))
    draws = _batch([draw_augmentation((0.5, 1.5), rng) for _ in range(4)])
    together = augment_batch(torch.cat([images, images.flip(1), images]), repeat_draws(draws, 3))
    alone = augment_batch(images, draws)
    assert torch.equal(together[:4], alone) and torch.equal(together[8:], alone)
    torch.testing.assert_close(together[4:8], augment_batch(images.flip(1), draws), rtol=0, atol=0)


def test_the_in_place_form_writes_the_same_images_into_its_argument():
    rng = np.random.default_rng(4)
    images = _torch(rng.random((6, 32, 32, 3), dtype=np.float32))
    draws = _batch([draw_augmentation((0.5, 1.5), rng) for _ in range(6)])
    kept = images.clone()
    copied = augment_batch(images, draws)
    assert torch.equal(images, kept)  # augment_batch leaves its argument alone
    assert augment_batch_(images, draws) is images and torch.equal(images, copied)
    with pytest.raises(ValueError, match='float32 images expected'):
        augment_batch_(kept.double(), draws)


def test_non_square_images_are_refused():
    with pytest.raises(ValueError, match='square images expected'):
        augment_batch(torch.zeros(1, 3, 4, 5), _batch([AugmentParams()]))


def test_seeded_draws_are_reproducible():
    first = [draw_augmentation((0.7, 1.3), np.random.default_rng(8)) for _ in range(3)]
    assert first == [draw_augmentation((0.7, 1.3), np.random.default_rng(8)) for _ in range(3)]
    np.random.seed(3)
    global_state = [draw_augmentation((0.7, 1.3)) for _ in range(3)]
    np.random.seed(3)
    assert global_state == [draw_augmentation((0.7, 1.3)) for _ in range(3)]


def test_draw_probabilities_and_ranges():
    rng = np.random.default_rng(9)
    draws = [draw_augmentation((0.5, 1.5), rng) for _ in range(20000)]
    for name, prob in [('hflip', 0.5), ('vflip', 0.5), ('transpose', 0.5), ('zoom', 0.3), ('rotate', 0.3)]:
        assert abs(np.mean([getattr(d, name) for d in draws]) - prob) < 0.015, name
    angles = np.array([d.angle for d in draws])
    zooms = np.array([(d.zoom_x, d.zoom_y) for d in draws])
    assert -90 <= angles.min() < -89 and 89 < angles.max() <= 90
    assert 0.5 <= zooms.min() < 0.51 and 1.49 < zooms.max() <= 1.5
    assert abs(np.corrcoef(zooms.T)[0, 1]) < 0.05  # independent factors per axis
    flags = np.array([[d.hflip, d.vflip, d.transpose, d.zoom, d.rotate] for d in draws], float)
    assert np.abs(np.corrcoef(flags.T) - np.eye(5)).max() < 0.05  # independent flags


def test_the_zoom_is_the_authors_centred_affine():
    """The authors' zoom: offset (n/2 + 0.5) . diag(zx, zy) . offset^-1 fed to warpAffine, reflect borders."""
    img = np.random.default_rng(11).random((1, 16, 16, 3), dtype=np.float32)
    zx, zy = 1.3, 0.6
    centre = 16 / 2 + 0.5
    offset = np.array([[1, 0, centre], [0, 1, centre], [0, 0, 1]])
    reset = np.array([[1, 0, -centre], [0, 1, -centre], [0, 0, 1]])
    matrix = offset @ np.diag([zx, zy, 1]) @ reset
    expected = cv2.warpAffine(img[0], matrix[:2], (16, 16), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    out = _numpy(augment_batch(_torch(img), _batch([AugmentParams(zoom=True, zoom_x=zx, zoom_y=zy)])))
    np.testing.assert_allclose(out[0], expected, atol=OPENCV_TOLERANCE)
    assert not np.allclose(out[0], img[0])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_on_cuda_the_same_as_on_the_cpu_without_a_synchronisation():
    rng = np.random.default_rng(4)
    images = _torch(rng.random((8, 64, 64, 3), dtype=np.float32))
    draws = _batch([draw_augmentation((0.5, 1.5), rng) for _ in range(8)])
    on_gpu = images.cuda()
    augment_batch(on_gpu, draws)  # warm-up: first calls may allocate
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        out = augment_batch(on_gpu, draws)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.testing.assert_close(out.cpu(), augment_batch(images, draws), rtol=0, atol=1e-5)
