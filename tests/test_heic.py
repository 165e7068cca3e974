"""iPhone HEIC photos: read upright with their EXIF and ICC profile, 10-bit kept at 16 bits, written as HEIC."""

import io
from pathlib import Path

import numpy as np
import pillow_heif
import pytest
from PIL import Image, ImageCms

import cliplit_basicsr
from cliplit_basicsr.cli import main
from cliplit_basicsr.enhancer import CLIPLITEnhancer
from cliplit_basicsr.image_io import read_image, read_photo
from cliplit_basicsr.photo_metadata import ORIENTATION_TAG

SAMPLE = sorted((Path(cliplit_basicsr.__file__).parent / 'samples').glob('*.jpg'))[0]


@pytest.fixture(scope='module')
def upright() -> np.ndarray:
    """A bundled sample as RGB uint8, 96x72: wider than high, so that a wrong rotation shows in the shape."""
    with Image.open(SAMPLE) as image:
        return np.asarray(image.convert('RGB').resize((96, 72), Image.Resampling.LANCZOS))


def _heic(path: Path, rgb: np.ndarray, orientation: int = 1, icc: bool = False, quality: int = 100) -> Path:
    """Write ``rgb`` (uint8 or uint16) as HEIC; with ``orientation`` the stored pixels are rotated and the file
    says how to show them (pillow-heif turns EXIF orientation 6 into HEIF's own rotation, as phones do)."""
    mode = 'RGB;16' if rgb.dtype == np.uint16 else 'RGB'
    stored = np.rot90(rgb, 1) if orientation == 6 else rgb  # shown turned 90 degrees clockwise
    heif = pillow_heif.from_bytes(mode, (stored.shape[1], stored.shape[0]), np.ascontiguousarray(stored).tobytes())
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    exif[0x010F] = 'Apple'  # Make
    options = {'exif': exif.tobytes()}
    if icc:
        options['icc_profile'] = ImageCms.ImageCmsProfile(ImageCms.createProfile('sRGB')).tobytes()
    heif.save(path, quality=quality, **options)
    return path


def test_a_rotated_heic_is_read_upright_with_its_metadata(tmp_path, upright):
    path = _heic(tmp_path / 'IMG_0001.HEIC', upright, orientation=6, icc=True)
    pixels, metadata, warnings = read_photo(path)
    assert warnings == [] and pixels.dtype == np.uint8 and pixels.shape == (72, 96, 3)
    assert np.abs(pixels[:, :, ::-1].astype(int) - upright).mean() < 3  # HEVC at quality 100, upright
    exif = Image.Exif()
    exif.load(metadata.exif)
    assert exif[ORIENTATION_TAG] == 1 and exif[0x010F] == 'Apple'
    assert ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(metadata.icc_profile)))


def test_ten_bit_heic_stays_sixteen_bit_in_png(tmp_path, upright):
    rgb16 = upright.astype(np.uint16) * 257
    source = _heic(tmp_path / 'deep.heic', rgb16)
    assert read_image(source).dtype == np.uint16
    assert main(['-i', str(source), '-o', str(tmp_path / 'out'), '--device', 'cpu']) == 0
    out = read_image(tmp_path / 'out' / 'deep.png')
    assert out.dtype == np.uint16 and out.max() > 255  # a 16-bit PNG


def test_ext_auto_writes_heic_with_the_metadata(tmp_path, upright):
    (tmp_path / 'in').mkdir()
    source = _heic(tmp_path / 'in' / 'IMG_0002.heic', upright, orientation=6, icc=True)
    assert main(['-i', str(tmp_path / 'in'), '-o', str(tmp_path / 'out'), '--ext', 'auto', '--device', 'cpu']) == 0
    written = tmp_path / 'out' / 'IMG_0002.heic'
    heif = pillow_heif.open_heif(written)
    assert heif.size == (96, 72) and heif.info.get('icc_profile')
    exif = Image.Exif()
    exif.load(heif.info['exif'])
    assert exif[ORIENTATION_TAG] == 1 and exif[0x010F] == 'Apple'
    pixels, _, _ = read_photo(source)
    expected = CLIPLITEnhancer('official', 'cpu').enhance(pixels)
    assert np.abs(read_image(written).astype(int) - expected).mean() < 3  # the enhanced photo, HEVC-coded


def test_a_corrupt_heic_is_one_line_and_the_others_go_on(tmp_path, upright, capsys):
    (tmp_path / 'in').mkdir()
    good = _heic(tmp_path / 'in' / 'good.heic', upright)
    (tmp_path / 'in' / 'broken.heic').write_bytes(good.read_bytes()[:300])
    assert main(['-i', str(tmp_path / 'in'), '-o', str(tmp_path / 'out'), '--device', 'cpu']) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and errors[0].startswith(f'error: {tmp_path / "in" / "broken.heic"}: cannot decode')
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['good.png']
