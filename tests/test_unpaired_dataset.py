"""The unpaired training dataset and the authors' augmentation (docs/method.md, Data)."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from basicsr.data import build_dataset
from PIL import Image

import cliplit_basicsr  # noqa: F401  (registers the dataset)
from cliplit_basicsr.data.augment import AugmentParams, apply_augmentation, augment, augment_batch, draw_augmentation
from cliplit_basicsr.data.unpaired_dataset import set_network_batch_loading
from cliplit_basicsr.errors import CLIPLITError, ImageReadError, one_line_message

SAMPLES = Path(cliplit_basicsr.__file__).parent / 'samples'
SIZE = 32


def _write(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


def _noise(rng, h, w, c=3, dtype=np.uint8):
    high = np.iinfo(dtype).max + 1
    shape = (h, w) if c == 1 else (h, w, c)
    return rng.integers(0, high, shape, dtype=np.int64).astype(dtype)


def _folder(root: Path, count: int, prefix: str, rng, shape=(40, 56)) -> Path:
    for i in range(count):
        _write(root / f'{prefix}{i}.png', _noise(rng, *shape))
    return root


def _dataset(backlit, welllit=None, **options):
    opt = {
        'type': 'CLIPLITUnpairedDataset',
        'name': 'train',
        'phase': 'train',
        'dataroot_backlit': None if backlit is None else str(backlit),
        'image_size': SIZE,
        'augment': False,
        'use_welllit': welllit is not None,
    }
    if welllit is not None:
        opt['dataroot_welllit'] = str(welllit)
    opt.update(options)
    return build_dataset(opt)


def _pil_lanczos(path: Path, size: int) -> np.ndarray:
    """The authors' loading: PIL open, antialiased Lanczos resize, / 255."""
    return np.asarray(Image.open(path).resize((size, size), Image.Resampling.LANCZOS), dtype=np.float32) / 255


def _hwc(tensor: torch.Tensor) -> np.ndarray:
    return tensor.permute(1, 2, 0).numpy()


@pytest.mark.parametrize('n_backlit, n_welllit', [(3, 5), (5, 2)])
def test_shorter_list_is_cycled(tmp_path, n_backlit, n_welllit):
    rng = np.random.default_rng(0)
    ds = _dataset(_folder(tmp_path / 'b', n_backlit, 'b', rng), _folder(tmp_path / 'w', n_welllit, 'w', rng))
    assert len(ds) == max(n_backlit, n_welllit) and ds.num_backlit == n_backlit
    for item in range(len(ds)):
        sample = ds[item]
        assert sample['index'] == item % n_backlit
        assert Path(sample['backlit_path']).name == f'b{item % n_backlit}.png'
        assert Path(sample['welllit_path']).name == f'w{item % n_welllit}.png'


def test_backlit_only_dataset(tmp_path):
    ds = _dataset(_folder(tmp_path / 'b', 3, 'b', np.random.default_rng(0)))
    sample = ds[2]
    assert len(ds) == 3 and 'welllit' not in sample and 'welllit_path' not in sample
    assert sample['backlit'].shape == (3, SIZE, SIZE)


@pytest.mark.parametrize('dtype', [np.uint8, np.uint16])
def test_cached_images_equal_fresh_ones_and_are_not_read_again(tmp_path, dtype):
    rng = np.random.default_rng(21)
    for i in range(3):
        _write(tmp_path / 'b' / f'b{i}.png', _noise(rng, 40, 56, dtype=dtype))
        _write(tmp_path / 'w' / f'w{i}.png', _noise(rng, 48, 36, dtype=dtype))
    options = dict(augment=True, zoom_range=[0.5, 1.5])
    fresh, cached = (_dataset(tmp_path / 'b', tmp_path / 'w', cache_resized=keep, **options) for keep in (False, True))

    def epoch(dataset, number):
        items = []
        for i in range(len(dataset)):
            np.random.seed(100 * number + i)  # the same augmentation draws for both datasets
            items.append(dataset[i])
        return items

    expected = [epoch(fresh, number) for number in range(2)]
    for number in range(2):
        for i, item in enumerate(epoch(cached, number)):
            for key in ('backlit', 'welllit'):
                assert torch.equal(item[key], expected[number][i][key]), (number, i, key)
        for path in list((tmp_path / 'b').iterdir()) + list((tmp_path / 'w').iterdir()):
            path.write_bytes(b'')  # from now on only the cache can serve these images
    with pytest.raises(ImageReadError):
        fresh[0]


def test_skipped_loading_reaches_persistent_workers_and_spares_prompt_sets(tmp_path):
    rng = np.random.default_rng(31)
    backlit, welllit = _folder(tmp_path / 'b', 4, 'b', rng), _folder(tmp_path / 'w', 4, 'w', rng)
    network_set, prompt_set = _dataset(backlit), _dataset(backlit, welllit)
    loader = torch.utils.data.DataLoader(network_set, batch_size=2, num_workers=2, persistent_workers=True)
    expected = torch.stack([network_set[i]['backlit'] for i in range(4)])
    assert torch.equal(torch.cat([batch['backlit'] for batch in loader]), expected)  # workers now forked
    try:
        set_network_batch_loading(False)
        skipped = list(loader)
        assert [set(batch) for batch in skipped] == [{'deferred_item'}] * 2
        assert torch.cat([batch['deferred_item'] for batch in skipped]).tolist() == [0, 1, 2, 3]
        assert torch.equal(torch.stack([network_set.load_item(i)['backlit'] for i in range(4)]), expected)
        assert {'backlit', 'welllit'} <= set(prompt_set[0])
    finally:
        set_network_batch_loading(True)
    assert torch.equal(torch.cat([batch['backlit'] for batch in loader]), expected)


def test_shapes_and_ranges_with_augmentation(tmp_path):
    rng = np.random.default_rng(1)
    ds = _dataset(
        _folder(tmp_path / 'b', 2, 'b', rng),
        _folder(tmp_path / 'w', 3, 'w', rng, shape=(70, 30)),
        augment=True,
        zoom_range=[0.5, 1.5],
    )
    np.random.seed(0)
    for item in list(range(len(ds))) * 4:
        sample = ds[item]
        for key in ('backlit', 'welllit'):
            assert sample[key].dtype == torch.float32 and sample[key].shape == (3, SIZE, SIZE)
            assert 0 <= sample[key].min() and sample[key].max() <= 1


def test_resize_is_the_authors_pil_lanczos(tmp_path):
    """8-bit images give exactly what PIL's Image.open(...).resize(..., LANCZOS) gives (the authors' code)."""
    path = _write(tmp_path / 'b' / 'x.png', _noise(np.random.default_rng(2), 45, 61))
    got = _hwc(_dataset(tmp_path / 'b')[0]['backlit'])
    np.testing.assert_array_equal(got, _pil_lanczos(path, SIZE))


def test_real_jpegs_are_the_authors_pil_pixels():
    """JPEGs are decoded by Pillow, as the authors' loaders read them: the same pixels exactly."""
    ds = _dataset(SAMPLES, image_size=64)
    for index, name in enumerate(ds.backlit.names):
        np.testing.assert_array_equal(ds.load_backlit(index), _pil_lanczos(Path(name), 64))


def test_exif_orientation_is_ignored_like_pil(tmp_path):
    """PIL's Image.open (the authors' reader) does not apply EXIF rotation; neither may the dataset."""
    img = np.zeros((SIZE, 2 * SIZE, 3), np.uint8)
    img[:, :SIZE] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    (tmp_path / 'b').mkdir()
    Image.fromarray(img).save(tmp_path / 'b' / 'o.jpg', exif=exif.tobytes(), quality=95)
    got = _dataset(tmp_path / 'b', image_size=2 * SIZE)[0]['backlit']
    assert got[:, :, :SIZE].mean() > 0.9 and got[:, :, SIZE:].mean() < 0.1  # left half stays white


def test_gray_is_replicated_to_rgb(tmp_path):
    gray = _noise(np.random.default_rng(3), 40, 40, c=1)
    path = _write(tmp_path / 'b' / 'g.png', gray)
    got = _hwc(_dataset(tmp_path / 'b')[0]['backlit'])
    expected = _pil_lanczos(path, SIZE)  # PIL keeps mode L: (S, S)
    for channel in range(3):
        np.testing.assert_array_equal(got[:, :, channel], expected)


def test_alpha_is_dropped(tmp_path):
    rng = np.random.default_rng(4)
    bgr = _noise(rng, 40, 40)
    alpha = _noise(rng, 40, 40, c=1)
    _write(tmp_path / 'rgba' / 'a.png', np.dstack([bgr, alpha]))
    _write(tmp_path / 'rgb' / 'a.png', bgr)
    got = _dataset(tmp_path / 'rgba')[0]['backlit']
    torch.testing.assert_close(got, _dataset(tmp_path / 'rgb')[0]['backlit'], rtol=0, atol=0)


def test_16_bit_keeps_its_precision(tmp_path):
    ramp = (np.arange(SIZE * SIZE * 3, dtype=np.int64) * 21 % 65536).astype(np.uint16).reshape(SIZE, SIZE, 3)
    _write(tmp_path / 'b' / 'deep.png', ramp)
    got = _hwc(_dataset(tmp_path / 'b')[0]['backlit'])  # already at SIZE: no resampling
    np.testing.assert_allclose(got, ramp[:, :, ::-1] / 65535, rtol=0, atol=1e-7)


def test_16_bit_resize_agrees_with_8_bit(tmp_path):
    """On a smooth image (no clipped overshoot) float and 8-bit Lanczos differ by the 8-bit roundings only."""
    img8 = cv2.GaussianBlur(_noise(np.random.default_rng(5), 50, 45), (0, 0), 3)
    _write(tmp_path / 'b8' / 'x.png', img8)
    _write(tmp_path / 'b16' / 'x.png', img8.astype(np.uint16) * 257)  # the same values, 16-bit
    got16 = _dataset(tmp_path / 'b16')[0]['backlit']
    got8 = _dataset(tmp_path / 'b8')[0]['backlit']
    assert 0 <= got16.min() and got16.max() <= 1
    assert (got16 - got8).abs().max() <= 1 / 255  # Pillow rounds 8-bit images after each of its two passes


def test_one_draw_is_shared_by_backlit_and_welllit(tmp_path):
    """Identical images stay identical after augmentation only if they share the draw."""
    img = _noise(np.random.default_rng(6), 48, 48)
    _write(tmp_path / 'b' / 'x.png', img)
    _write(tmp_path / 'w' / 'x.png', img)
    ds = _dataset(tmp_path / 'b', tmp_path / 'w', augment=True, zoom_range=[0.5, 1.5])
    plain = _dataset(tmp_path / 'b')[0]['backlit']
    np.random.seed(1)
    changed = 0
    for _ in range(12):
        sample = ds[0]
        torch.testing.assert_close(sample['backlit'], sample['welllit'], rtol=0, atol=0)
        changed += not torch.equal(sample['backlit'], plain)
    assert changed >= 6  # P(no change) = 1/8 * 0.7 * 0.7 per item


def test_model_can_replay_a_batch_draw(tmp_path):
    """augment_batch(un-augmented images, batch['aug']) reproduces the batch: how I_t / I_t-1 get I_b's draw."""
    rng = np.random.default_rng(7)
    ds = _dataset(
        _folder(tmp_path / 'b', 3, 'b', rng), _folder(tmp_path / 'w', 4, 'w', rng), augment=True, zoom_range=[0.5, 1.5]
    )
    np.random.seed(2)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, num_workers=0)))
    bank = torch.stack([torch.from_numpy(ds.load_backlit(i)).permute(2, 0, 1) for i in range(ds.num_backlit)])
    replayed = augment_batch(bank[batch['index']], batch['aug'])
    torch.testing.assert_close(replayed, batch['backlit'], rtol=0, atol=0)
    assert batch['aug']['zoom'].any() or batch['aug']['rotate'].any() or batch['aug']['hflip'].any()


def test_seeded_draws_are_reproducible(tmp_path):
    rng = np.random.default_rng(8)
    ds = _dataset(_folder(tmp_path / 'b', 2, 'b', rng), augment=True, zoom_range=[0.7, 1.3])
    np.random.seed(3)
    first = [ds[i]['backlit'] for i in range(2)]
    np.random.seed(3)
    torch.testing.assert_close([ds[i]['backlit'] for i in range(2)], first, rtol=0, atol=0)
    assert augment([np.zeros((4, 4, 3))], (0.7, 1.3), np.random.default_rng(0))[0].shape == (4, 4, 3)


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


def test_flips_and_transpose_semantics():
    img = np.arange(3 * 4 * 3, dtype=np.float32).reshape(3, 4, 3)
    (out,) = apply_augmentation([img], AugmentParams(hflip=True))
    np.testing.assert_array_equal(out, img[:, ::-1])
    (out,) = apply_augmentation([img], AugmentParams(vflip=True, transpose=True))
    np.testing.assert_array_equal(out, img[::-1].transpose(1, 0, 2))


def test_rotation_is_counter_clockwise_about_the_centre():
    img = np.random.default_rng(10).random((9, 9, 3), dtype=np.float32)
    (out,) = apply_augmentation([img], AugmentParams(rotate=True, angle=90.0))
    np.testing.assert_allclose(out, np.rot90(img), atol=1e-5)


def test_zoom_is_the_authors_centred_affine():
    """The authors' zoom: offset (n/2 + 0.5) . diag(zx, zy) . offset^-1 fed to warpAffine, reflect borders."""
    img = np.random.default_rng(11).random((16, 16, 3), dtype=np.float32)
    zx, zy = 1.3, 0.6
    centre = 16 / 2 + 0.5
    offset = np.array([[1, 0, centre], [0, 1, centre], [0, 0, 1]])
    reset = np.array([[1, 0, -centre], [0, 1, -centre], [0, 0, 1]])
    matrix = offset @ np.diag([zx, zy, 1]) @ reset
    expected = cv2.warpAffine(img, matrix[:2], (16, 16), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    (out,) = apply_augmentation([img], AugmentParams(zoom=True, zoom_x=zx, zoom_y=zy))
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert not np.allclose(out, img)


def test_unreadable_image_is_one_line_error_from_a_worker(tmp_path):
    _folder(tmp_path / 'b', 2, 'b', np.random.default_rng(12))
    (tmp_path / 'b' / 'broken.jpg').write_bytes(b'not an image')
    ds = _dataset(tmp_path / 'b')
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=1)
    with pytest.raises(ImageReadError) as info:
        next(iter(loader))
    broken = tmp_path / 'b' / 'broken.jpg'
    assert one_line_message(info.value) == f'{broken}: cannot decode image (corrupt or unsupported format)'


def test_empty_file_is_reported(tmp_path):
    (tmp_path / 'b').mkdir()
    (tmp_path / 'b' / 'empty.png').write_bytes(b'')
    with pytest.raises(ImageReadError, match='empty.png'):
        _dataset(tmp_path / 'b')[0]


@pytest.mark.parametrize(
    'options, pattern',
    [
        ({'dataroot_backlit': 'MISSING'}, 'dataroot_backlit: folder .* does not exist'),
        ({'dataroot_backlit': 'EMPTY'}, 'dataroot_backlit: no images'),
        ({'dataroot_backlit': None}, 'dataroot_backlit: missing'),
        ({'use_welllit': True}, 'dataroot_welllit: missing'),
        ({'use_hflip': True}, 'unknown option.*use_hflip'),
        ({'image_size': None}, 'image_size: expected a positive integer'),
        ({'augment': True}, r'zoom_range: expected \[low, high\]'),
        ({'augment': True, 'zoom_range': [1.5, 0.5]}, 'zoom_range: expected 0 < low <= high'),
        ({'io_backend': {'type': 'lmdb'}}, 'is not an LMDB made by scripts/create_lmdb.py'),
        ({'io_backend': {'type': 'ftp'}}, "io_backend.type: 'ftp' is not supported"),
        (
            {'persistent_workers': True, 'num_worker_per_gpu': 0},
            'persistent_workers: true needs num_worker_per_gpu > 0',
        ),
        ({'cache_resized': 'yes'}, 'cache_resized: expected true or false'),
    ],
)
def test_bad_options_and_roots_are_one_line_errors(tmp_path, options, pattern):
    _folder(tmp_path / 'b', 1, 'b', np.random.default_rng(13))
    (tmp_path / 'EMPTY').mkdir()
    (tmp_path / 'EMPTY' / 'notes.txt').write_text('not an image')
    if options.get('dataroot_backlit') in ('MISSING', 'EMPTY'):
        options['dataroot_backlit'] = str(tmp_path / options['dataroot_backlit'])
    opt = {'dataroot_backlit': str(tmp_path / 'b'), **options}
    with pytest.raises(CLIPLITError, match=pattern) as info:
        _dataset(**{'backlit': opt.pop('dataroot_backlit')}, **opt)
    assert '\n' not in str(info.value)
