"""The unpaired training dataset: listing, pairing, decoding and resizing, resident images (docs/method.md, Data)."""

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from basicsr.data import build_dataset
from PIL import Image

import cliplit_basicsr  # noqa: F401  (registers the dataset)
from cliplit_basicsr.data.augment import AugmentParams
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


def _image(dataset, index: int = 0, key: str = 'backlit') -> torch.Tensor:
    """Resident image ``index`` of ``key``, un-augmented: (3, S, S) float32 in [0, 1]."""
    return dataset.resident(torch.device('cpu'))[key].take(torch.tensor([index]))[0]


@pytest.mark.parametrize('n_backlit, n_welllit', [(3, 5), (5, 2)])
def test_shorter_list_is_cycled(tmp_path, n_backlit, n_welllit):
    rng = np.random.default_rng(0)
    ds = _dataset(_folder(tmp_path / 'b', n_backlit, 'b', rng), _folder(tmp_path / 'w', n_welllit, 'w', rng))
    assert len(ds) == max(n_backlit, n_welllit) and len(ds.backlit) == n_backlit
    for item in range(len(ds)):
        sample = ds[item]
        assert sample['index'] == item % n_backlit
        assert Path(sample['backlit_path']).name == f'b{item % n_backlit}.png'
        assert Path(sample['welllit_path']).name == f'w{item % n_welllit}.png'


def test_backlit_only_dataset(tmp_path):
    ds = _dataset(_folder(tmp_path / 'b', 3, 'b', np.random.default_rng(0)))
    sample = ds[2]
    assert len(ds) == 3 and 'welllit_index' not in sample and 'welllit_path' not in sample
    assert set(ds.resident(torch.device('cpu'))) == {'backlit'}
    assert _image(ds, 2).shape == (3, SIZE, SIZE)


@pytest.mark.parametrize('dtype, stored', [(np.uint8, torch.uint8), (np.uint16, torch.float32)])
def test_resident_images_are_decoded_once_and_equal_fresh_ones(tmp_path, dtype, stored):
    rng = np.random.default_rng(21)
    for i in range(3):
        _write(tmp_path / 'b' / f'b{i}.png', _noise(rng, 40, 56, dtype=dtype))
        _write(tmp_path / 'w' / f'w{i}.png', _noise(rng, 48, 36, dtype=dtype))
    ds = _dataset(tmp_path / 'b', tmp_path / 'w')
    resident = ds.resident(torch.device('cpu'))
    expected = {
        'backlit': [ds.backlit.load(i, SIZE) for i in range(3)],
        'welllit': [ds.welllit.load(i, SIZE) for i in range(3)],
    }
    for path in list((tmp_path / 'b').iterdir()) + list((tmp_path / 'w').iterdir()):
        path.write_bytes(b'')  # from now on only the resident copies can serve these images
    assert ds.resident(torch.device('cpu')) is resident
    for key in ('backlit', 'welllit'):
        assert resident[key].images.dtype == stored and resident[key].images.shape == (3, 3, SIZE, SIZE)
        for i in range(3):
            np.testing.assert_array_equal(_hwc(_image(ds, i, key)), expected[key][i])
    with pytest.raises(ImageReadError):
        _dataset(tmp_path / 'b').resident(torch.device('cpu'))


def test_items_hold_indices_and_a_draw_no_pixels(tmp_path):
    rng = np.random.default_rng(1)
    ds = _dataset(
        _folder(tmp_path / 'b', 2, 'b', rng),
        _folder(tmp_path / 'w', 3, 'w', rng, shape=(70, 30)),
        augment=True,
        zoom_range=[0.5, 1.5],
    )
    np.random.seed(0)
    sample = ds[1]
    assert set(sample) == {'index', 'backlit_path', 'welllit_index', 'welllit_path', 'aug'}
    assert set(sample['aug']) == set(AugmentParams().as_dict())
    assert _dataset(tmp_path / 'b')[0]['aug'] == AugmentParams().as_dict()  # augment: false


def test_retired_option_is_accepted_with_a_warning(tmp_path, caplog):
    logger = logging.getLogger('basicsr')  # BasicSR's root logger does not propagate
    logger.addHandler(caplog.handler)
    try:
        ds = _dataset(_folder(tmp_path / 'b', 1, 'b', np.random.default_rng(2)), cache_resized=True)
    finally:
        logger.removeHandler(caplog.handler)
    assert len(ds) == 1
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        'CLIPLITUnpairedDataset: option cache_resized is no longer needed (every image is decoded once and kept '
        'resident)'
    ]


def test_resize_is_the_authors_pil_lanczos(tmp_path):
    """8-bit images give exactly what PIL's Image.open(...).resize(..., LANCZOS) gives (the authors' code)."""
    path = _write(tmp_path / 'b' / 'x.png', _noise(np.random.default_rng(2), 45, 61))
    got = _hwc(_image(_dataset(tmp_path / 'b')))
    np.testing.assert_array_equal(got, _pil_lanczos(path, SIZE))


def test_real_jpegs_are_the_authors_pil_pixels():
    """JPEGs are decoded by Pillow, as the authors' loaders read them: the same pixels exactly."""
    ds = _dataset(SAMPLES, image_size=64)
    for index, name in enumerate(ds.backlit.names):
        np.testing.assert_array_equal(_hwc(_image(ds, index)), _pil_lanczos(Path(name), 64))


def test_exif_orientation_is_ignored_like_pil(tmp_path):
    """PIL's Image.open (the authors' reader) does not apply EXIF rotation; neither may the dataset."""
    img = np.zeros((SIZE, 2 * SIZE, 3), np.uint8)
    img[:, :SIZE] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    (tmp_path / 'b').mkdir()
    Image.fromarray(img).save(tmp_path / 'b' / 'o.jpg', exif=exif.tobytes(), quality=95)
    got = _image(_dataset(tmp_path / 'b', image_size=2 * SIZE))
    assert got[:, :, :SIZE].mean() > 0.9 and got[:, :, SIZE:].mean() < 0.1  # left half stays white


def test_gray_is_replicated_to_rgb(tmp_path):
    gray = _noise(np.random.default_rng(3), 40, 40, c=1)
    path = _write(tmp_path / 'b' / 'g.png', gray)
    got = _hwc(_image(_dataset(tmp_path / 'b')))
    expected = _pil_lanczos(path, SIZE)  # PIL keeps mode L: (S, S)
    for channel in range(3):
        np.testing.assert_array_equal(got[:, :, channel], expected)


def test_alpha_is_dropped(tmp_path):
    rng = np.random.default_rng(4)
    bgr = _noise(rng, 40, 40)
    alpha = _noise(rng, 40, 40, c=1)
    _write(tmp_path / 'rgba' / 'a.png', np.dstack([bgr, alpha]))
    _write(tmp_path / 'rgb' / 'a.png', bgr)
    got = _image(_dataset(tmp_path / 'rgba'))
    torch.testing.assert_close(got, _image(_dataset(tmp_path / 'rgb')), rtol=0, atol=0)


def test_16_bit_keeps_its_precision(tmp_path):
    ramp = (np.arange(SIZE * SIZE * 3, dtype=np.int64) * 21 % 65536).astype(np.uint16).reshape(SIZE, SIZE, 3)
    _write(tmp_path / 'b' / 'deep.png', ramp)
    got = _hwc(_image(_dataset(tmp_path / 'b')))  # already at SIZE: no resampling
    np.testing.assert_allclose(got, ramp[:, :, ::-1] / 65535, rtol=0, atol=1e-7)


def test_16_bit_resize_agrees_with_8_bit(tmp_path):
    """On a smooth image (no clipped overshoot) float and 8-bit Lanczos differ by the 8-bit roundings only."""
    img8 = cv2.GaussianBlur(_noise(np.random.default_rng(5), 50, 45), (0, 0), 3)
    _write(tmp_path / 'b8' / 'x.png', img8)
    _write(tmp_path / 'b16' / 'x.png', img8.astype(np.uint16) * 257)  # the same values, 16-bit
    got16 = _image(_dataset(tmp_path / 'b16'))
    got8 = _image(_dataset(tmp_path / 'b8'))
    assert 0 <= got16.min() and got16.max() <= 1
    assert (got16 - got8).abs().max() <= 1 / 255  # Pillow rounds 8-bit images after each of its two passes


def test_unreadable_image_is_one_line_error_when_the_set_is_decoded(tmp_path):
    _folder(tmp_path / 'b', 2, 'b', np.random.default_rng(12))
    (tmp_path / 'b' / 'broken.jpg').write_bytes(b'not an image')
    ds = _dataset(tmp_path / 'b')
    with pytest.raises(ImageReadError) as info:
        ds.resident(torch.device('cpu'))
    broken = tmp_path / 'b' / 'broken.jpg'
    assert one_line_message(info.value) == f'{broken}: cannot decode image (corrupt or unsupported format)'


def test_empty_file_is_reported(tmp_path):
    (tmp_path / 'b').mkdir()
    (tmp_path / 'b' / 'empty.png').write_bytes(b'')
    with pytest.raises(ImageReadError, match='empty.png'):
        _dataset(tmp_path / 'b').resident(torch.device('cpu'))


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


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
@pytest.mark.parametrize('share', [0.25, 0.0], ids=['on the GPU', 'in pinned host memory'])
def test_resident_images_on_cuda_as_basicsr_names_the_device(tmp_path, monkeypatch, share):
    """BasicSR's model device is ``cuda`` without an index; a set too large for the device (here: any)
    stays in pinned host memory. Either way a gather gives the CPU's pixels, on the GPU."""
    import cliplit_basicsr.data.resident as resident_module

    monkeypatch.setattr(resident_module, 'DEVICE_SHARE', share)
    ds = _dataset(_folder(tmp_path / 'b', 3, 'b', np.random.default_rng(40)))
    images = resident_module.ResidentImages(ds.backlit, SIZE, torch.device('cuda'), 'dataroot_backlit')
    assert images.on_device == (share > 0) and images.images.is_pinned() == (share == 0)
    picked = images.take(torch.tensor([2, 0]))
    assert picked.is_cuda
    expected = resident_module.ResidentImages(ds.backlit, SIZE, torch.device('cpu'), 'b').take(torch.tensor([2, 0]))
    assert torch.equal(picked.cpu(), expected)
