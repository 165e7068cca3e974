"""cliplit-enhance on people's photo folders: upright phone photos, metadata and colour profiles kept, the
formats they use, light maps, comparison strips, a strength control and a summary. Made from the bundled
samples (a reduced copy keeps the tests fast)."""

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

import cliplit_basicsr
from cliplit_basicsr.cli import main
from cliplit_basicsr.engine import run_on_tensor
from cliplit_basicsr.enhancer import CLIPLITEnhancer
from cliplit_basicsr.image_io import read_image
from cliplit_basicsr.photo_metadata import ORIENTATION_TAG

SAMPLE = sorted((Path(cliplit_basicsr.__file__).parent / 'samples').glob('*.jpg'))[0]
# PIL's transpose for each EXIF orientation: the stored image is the upright one put through its inverse
STORED = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,  # shown with ROTATE_270: stored rotated the other way
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@pytest.fixture(scope='module')
def upright(tmp_path_factory) -> Image.Image:
    """A bundled sample, reduced to 96x72 (wider than high, so that a wrong rotation shows in the shape)."""
    with Image.open(SAMPLE) as image:
        return image.convert('RGB').resize((96, 72), Image.Resampling.LANCZOS)


@pytest.fixture(scope='module')
def enhancer():
    return CLIPLITEnhancer('official', 'cpu')


def _exif(orientation: int, gps: bool = False) -> Image.Exif:
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    exif[0x010F] = 'PhoneMaker'  # Make
    exif[0x0110] = 'Phone 12'  # Model
    exif[0x0132] = '2026:12:03 10:11:12'  # DateTime
    if gps:
        exif.get_ifd(0x8825).update({1: 'N', 2: (52.0, 31.0, 12.0)})  # GPSLatitudeRef, GPSLatitude
    return exif


def _stored(upright: Image.Image, orientation: int) -> Image.Image:
    return upright if STORED[orientation] is None else upright.transpose(STORED[orientation])


def _enhance(tmp_path: Path, source: Path, *extra: str, name: str = 'out') -> Path:
    out = tmp_path / name
    assert main(['-i', str(source), '-o', str(out), '--device', 'cpu', *extra]) == 0
    return out


@pytest.mark.parametrize('orientation', range(1, 9))
def test_every_exif_orientation_is_enhanced_upright(tmp_path, upright, enhancer, orientation):
    """A lossless PNG stored transformed with an orientation tag gives the enhancement of the upright image,
    bit for bit, written upright with the tag reset."""
    source = tmp_path / f'photo_{orientation}.png'
    _stored(upright, orientation).save(source, exif=_exif(orientation).tobytes())
    out = _enhance(tmp_path, source) / f'photo_{orientation}.png'
    expected = enhancer.enhance(np.ascontiguousarray(np.asarray(upright)[:, :, ::-1]))
    np.testing.assert_array_equal(read_image(out), expected)
    with Image.open(out) as written:
        exif = written.getexif()
        assert exif[ORIENTATION_TAG] == 1 and exif[0x0110] == 'Phone 12'


def test_a_phone_jpeg_with_an_orientation_tag(tmp_path, upright):
    """What phones write: a JPEG stored sideways (orientation 6). It comes out upright (portrait), with its
    EXIF fields, as viewers show the input."""
    source = tmp_path / 'IMG_0001.jpg'
    _stored(upright, 6).save(source, quality=95, exif=_exif(6, gps=True).tobytes())
    with Image.open(source) as stored:
        assert stored.size == (72, 96)  # stored landscape-sideways
    out = _enhance(tmp_path, source, '--ext', 'auto') / 'IMG_0001.jpg'
    with Image.open(out) as written:
        assert written.format == 'JPEG' and written.size == (96, 72)  # upright, as a viewer shows the input
        exif = written.getexif()
        assert exif[ORIENTATION_TAG] == 1 and exif[0x010F] == 'PhoneMaker' and exif[0x0132] == '2026:12:03 10:11:12'
        assert exif.get_ifd(0x8825)[1] == 'N'  # the GPS block


def test_photos_without_a_tag_keep_the_plain_path(tmp_path, upright, enhancer):
    source = tmp_path / 'plain.jpg'
    upright.save(source, quality=90)  # no EXIF at all
    out = _enhance(tmp_path, source) / 'plain.png'
    np.testing.assert_array_equal(read_image(out), enhancer.enhance(read_image(source)))


def _icc_profile(space: str = 'sRGB') -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile(space)).tobytes()


@pytest.mark.parametrize('ext', ['png', 'jpg', 'webp', 'tif'])
def test_icc_profile_and_exif_are_kept(tmp_path, upright, ext):
    profile = _icc_profile()
    source = tmp_path / 'profiled.jpg'
    upright.save(source, quality=95, icc_profile=profile, exif=_exif(1).tobytes())
    out = _enhance(tmp_path, source, '--ext', ext) / f'profiled.{ext}'
    with Image.open(out) as written:
        assert written.info.get('icc_profile') == profile  # byte for byte
        assert written.getexif()[0x0110] == 'Phone 12'
    stripped = _enhance(tmp_path, source, '--ext', ext, '--strip-metadata', name='stripped') / f'profiled.{ext}'
    with Image.open(stripped) as written:
        assert 'icc_profile' not in written.info and 0x0110 not in written.getexif()


def test_a_profile_that_is_not_rgb_is_dropped_with_a_warning(tmp_path, upright, capsys):
    """A gray photo's gray profile cannot describe the RGB output it becomes; it is not carried."""
    source = tmp_path / 'gray.jpg'
    upright.convert('L').save(source, quality=95, icc_profile=_icc_profile('LAB'))
    with Image.open(_enhance(tmp_path, source) / 'gray.png') as written:
        assert written.mode == 'RGB' and 'icc_profile' not in written.info
    assert 'ICC profile dropped (a Lab profile cannot describe the RGB output)' in capsys.readouterr().err


@pytest.mark.parametrize('orientation', [1, 6])
def test_xmp_is_kept_only_where_it_cannot_turn_the_upright_output(tmp_path, upright, orientation):
    """XMP can repeat the orientation (tiff:Orientation): carried for upright photos, dropped for turned ones."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_itxt('XML:com.adobe.xmp', f'<x:xmpmeta><tiff:Orientation>{orientation}</tiff:Orientation></x:xmpmeta>')
    source = tmp_path / 'xmp.png'
    _stored(upright, orientation).save(source, pnginfo=info, exif=_exif(orientation).tobytes())
    with Image.open(_enhance(tmp_path, source) / 'xmp.png') as written:
        assert ('XML:com.adobe.xmp' in written.text) == (orientation == 1)


def test_png_text_chunks_are_kept(tmp_path, upright):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text('Title', 'Backlit pier')
    info.add_itxt('Description', 'Gegenlicht am Steg', lang='de')
    source = tmp_path / 'annotated.png'
    upright.save(source, pnginfo=info)
    with Image.open(_enhance(tmp_path, source) / 'annotated.png') as written:
        assert written.text['Title'] == 'Backlit pier' and written.text['Description'] == 'Gegenlicht am Steg'


@pytest.mark.parametrize(
    'ext, dtype, warned',
    [('png', np.uint16, False), ('tif', np.uint16, False), ('jpg', np.uint8, True), ('webp', np.uint8, True)],
)
def test_formats_and_bit_depths(tmp_path, upright, capsys, ext, dtype, warned):
    source = tmp_path / 'deep.png'
    rgb16 = (np.asarray(upright).astype(np.uint16) * 257)[:, :, ::-1]
    assert cv2.imwrite(str(source), rgb16)
    out = _enhance(tmp_path, source, '--ext', ext) / f'deep.{ext}'
    pixels = read_image(out)
    assert pixels.dtype == dtype and pixels.shape == (72, 96, 3)
    assert ('holds 8 bits a channel' in capsys.readouterr().err) is warned


def test_recursive_tree_is_mirrored_and_name_clashes_are_kept_apart(tmp_path, upright):
    tree = tmp_path / 'holiday'
    for folder in ('day1', 'day2/evening'):
        (tree / folder).mkdir(parents=True)
    upright.save(tree / 'cover.jpg')
    upright.save(tree / 'day1' / 'pier.jpg')
    upright.save(tree / 'day1' / 'pier.jpeg')  # the same stem and format: a clash in the output folder
    upright.save(tree / 'day1' / 'pier.png')  # the same stem, another format: no clash
    upright.save(tree / 'day2' / 'evening' / 'sunset.webp')
    out = _enhance(tmp_path, tree, '--recursive', '--suffix', '_lit', '--ext', 'auto')
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob('*') if p.is_file())
    assert written == [
        'cover_lit.jpg',
        'day1/pier_jpeg_lit.jpg',
        'day1/pier_jpg_lit.jpg',
        'day1/pier_lit.png',
        'day2/evening/sunset_lit.webp',
    ]


def test_existing_outputs_are_kept_unless_overwrite(tmp_path, upright, capsys):
    source = tmp_path / 'photo.png'
    upright.save(source)
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'photo.png').write_bytes(b'mine')
    assert main(['-i', str(source), '-o', str(out), '--device', 'cpu']) == 0
    err = capsys.readouterr().err
    assert (out / 'photo.png').read_bytes() == b'mine'
    assert 'skipping' in err and '--overwrite' in err and '1 skipped (outputs exist)' in err
    assert main(['-i', str(source), '-o', str(out), '--device', 'cpu', '--overwrite']) == 0
    assert read_image(out / 'photo.png').shape == (72, 96, 3)


@pytest.mark.parametrize('strength', [0.0, 1.0, 2.0])
def test_strength(tmp_path, upright, enhancer, strength):
    source = tmp_path / 'photo.png'
    upright.save(source)
    out = read_image(_enhance(tmp_path, source, '--strength', str(strength)) / 'photo.png').astype(int)
    stored = read_image(source).astype(int)
    if strength == 0:
        np.testing.assert_array_equal(out, stored)  # the input back
    elif strength == 1:
        np.testing.assert_array_equal(out, enhancer.enhance(read_image(source)))  # exactly today's output
    else:  # I / L^2 from the light map, rounded as the outputs are: within a level (float rounding)
        _, light = enhancer.enhance(read_image(source), return_light_map=True)
        expected = np.floor(np.clip(stored / 255.0 / light[:, :, None] ** strength, 0, 1) * 255 + 0.5)
        assert np.abs(out - expected).max() <= 1


def test_brightness_rises_monotonically_with_strength(upright, enhancer):
    bgr = np.ascontiguousarray(np.asarray(upright)[:, :, ::-1])
    means = [enhancer.enhance(bgr, strength=s).mean() for s in (0.0, 0.25, 0.5, 1.0, 1.5, 2.0)]
    assert means == sorted(means) and means[0] == pytest.approx(bgr.mean()) and means[-1] > means[3]


def test_the_light_map_is_kept_only_when_asked_for(upright, enhancer):
    bgr = np.ascontiguousarray(np.asarray(upright)[:, :, ::-1])
    out, light = enhancer.enhance(bgr, return_light_map=True)
    assert light.shape == bgr.shape[:2] and light.dtype == np.float32
    np.testing.assert_array_equal(enhancer.enhance(bgr), out)
    rgb = torch.from_numpy(np.asarray(upright).copy()).permute(2, 0, 1).float() / 255
    out_tensor, light_tensor = enhancer.enhance(rgb, return_light_map=True)
    assert light_tensor.shape == (1,) + rgb.shape[1:]
    torch.testing.assert_close(enhancer.enhance(rgb), out_tensor, rtol=0, atol=0)
    assert run_on_tensor(enhancer.engine, rgb[None])[1] is None  # no whole-image plane allocated


def test_light_map_and_comparison_strip(tmp_path, upright, enhancer):
    source = tmp_path / 'photo.png'
    upright.save(source)
    out = _enhance(tmp_path, source, '--save-light-map', '--compare', '300')
    bgr = read_image(source)
    _, light = enhancer.enhance(bgr, return_light_map=True)
    light_image = read_image(out / 'photo_light.png')
    assert light_image.shape == (72, 96) and light_image.dtype == np.uint8
    np.testing.assert_array_equal(light_image, np.floor(np.clip(light, 0, 1) * 255 + 0.5).astype(np.uint8))
    strip = read_image(out / 'photo_compare.png')
    assert strip.shape == (75, 300, 3)  # three panels of 100 x 75 (the photo's aspect)


def test_a_corrupt_exif_block_drops_the_metadata_with_a_warning(tmp_path, upright, enhancer, capsys):
    source = tmp_path / 'broken.jpg'
    good = io.BytesIO()
    upright.save(good, 'JPEG', quality=95, exif=_exif(1).tobytes())
    data = bytearray(good.getvalue())
    at = data.find(b'Exif\x00\x00') + 6
    data[at : at + 8] = b'XX\x00\x2a\xff\xff\xff\xff'  # neither byte order: not a TIFF header
    source.write_bytes(bytes(data))
    out = _enhance(tmp_path, source) / 'broken.png'
    assert 'metadata dropped' in capsys.readouterr().err
    np.testing.assert_array_equal(read_image(out), enhancer.enhance(read_image(source)))


@pytest.mark.slow
def test_file_sizes_of_one_sample_in_each_format(tmp_path, capsys):
    """Every format writes a valid image of the sample (the note quotes these sizes)."""
    sizes = {}
    for ext in ('png', 'jpg', 'webp', 'tif'):
        path = _enhance(tmp_path, SAMPLE, '--ext', ext, name=ext) / f'{SAMPLE.stem}.{ext}'
        assert read_image(path).shape == read_image(SAMPLE).shape
        sizes[ext] = path.stat().st_size
    assert sizes['jpg'] < sizes['png'] and sizes['webp'] < sizes['png']
