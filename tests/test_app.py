"""cliplit-app: the photo session (the network once per photo, previews from its light map, downloads that are
cliplit-enhance's files), the queue with two people at once, and the page in a real headless Chromium."""

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms

import cliplit_basicsr
from cliplit_basicsr.app import main as app_main
from cliplit_basicsr.app import parse_args, serving_line
from cliplit_basicsr.cli import main as enhance_main
from cliplit_basicsr.enhancer import CLIPLITEnhancer
from cliplit_basicsr.errors import ImageReadError
from cliplit_basicsr.image_io import read_image
from cliplit_basicsr.photo_metadata import ORIENTATION_TAG, read_metadata
from cliplit_basicsr.photo_session import enhance_photo, output_names

os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')
# Gradio's queue calls pandas options that pandas 3 deprecates: not ours to fix
pytestmark = pytest.mark.filterwarnings('ignore:.*(no_silent_downcasting|The copy keyword):DeprecationWarning')
SAMPLES = Path(cliplit_basicsr.__file__).parent / 'samples'
SMALLEST_SAMPLE = min(SAMPLES.glob('*.jpg'), key=lambda path: path.stat().st_size)  # 564x845


class CountingEnhancer(CLIPLITEnhancer):
    """Records when each network run starts and ends."""

    def __init__(self):
        super().__init__('official', 'cpu')
        self.runs, run = [], self.engine.run

        def timed_run(*args, **kwargs):
            started = time.perf_counter()
            run(*args, **kwargs)
            self.runs.append((started, time.perf_counter()))

        self.engine.run = timed_run


@pytest.fixture(scope='module')
def enhancer():
    return CountingEnhancer()


def _photo(folder: Path, name: str, size=(120, 90), kind: str = 'jpeg') -> Path:
    """A reduced sample: a phone JPEG stored sideways (EXIF orientation 6) with an sRGB profile, or a 16-bit
    RGBA PNG."""
    with Image.open(SMALLEST_SAMPLE) as image:
        rgb = image.convert('RGB').resize(size, Image.Resampling.LANCZOS)
    path = folder / name
    if kind == 'jpeg':
        exif = Image.Exif()
        exif[ORIENTATION_TAG], exif[0x010F] = 6, 'PhoneMaker'
        icc = ImageCms.ImageCmsProfile(ImageCms.createProfile('sRGB')).tobytes()
        rgb.save(path, 'JPEG', quality=90, exif=exif.tobytes(), icc_profile=icc)
    else:
        bgr16 = np.asarray(rgb)[:, :, ::-1].astype(np.uint16) * 257 + 100
        alpha = np.linspace(0, 65535, size[0] * size[1]).reshape(size[1], size[0]).astype(np.uint16)
        cv2.imwrite(str(path), np.dstack([bgr16, alpha]))
    return path


def _cliplit_enhance(source: Path, folder: Path, strength: float) -> Path:
    """cliplit-enhance's output of ``source`` at ``strength``, with its defaults (PNG, metadata kept)."""
    assert enhance_main(['-i', str(source), '-o', str(folder), '--device', 'cpu', '--strength', str(strength)]) == 0
    return folder / f'{source.stem}.png'


# --- the photo session ------------------------------------------------------------------------------------------
def test_network_runs_once_per_photo(tmp_path, enhancer):
    runs = len(enhancer.runs)
    photo = enhance_photo(_photo(tmp_path, 'sideways.jpg'), enhancer, preview_side=64)
    previews = [photo.preview(s) for s in (0.0, 0.5, 1.0, 1.5)]
    photo.output(0.6)
    photo.write(tmp_path / 'out.png', 1.3)
    assert len(enhancer.runs) == runs + 1
    assert previews[0].shape == (64, 48, 3) and previews[0].dtype == np.uint8  # upright: 90x120, reduced
    assert [p.mean() for p in previews] == sorted(p.mean() for p in previews)  # brighter with the strength
    assert photo.light_map_preview().shape == (64, 48)


@pytest.mark.parametrize('strength', [1.0, 0.6])
@pytest.mark.parametrize('kind', ['jpeg', 'png16'])
def test_download_is_cliplit_enhance_file(tmp_path, enhancer, kind, strength):
    source = _photo(tmp_path, 'photo.jpg' if kind == 'jpeg' else 'photo.png', kind=kind)
    expected = _cliplit_enhance(source, tmp_path / 'cli', strength)
    ours = tmp_path / 'app' / 'photo.png'
    ours.parent.mkdir()
    enhance_photo(source, enhancer).write(ours, strength)
    assert np.array_equal(read_image(ours), read_image(expected))
    assert ours.read_bytes() == expected.read_bytes()  # metadata and encoding too
    if kind == 'jpeg':
        metadata = read_metadata(ours.read_bytes())[1]
        assert metadata.icc_profile and b'PhoneMaker' in metadata.exif


def test_unreadable_photo_is_named(tmp_path, enhancer):
    broken = tmp_path / 'upload-7f3a' / 'holiday.jpg'
    broken.parent.mkdir()
    broken.write_bytes(b'\xff\xd8\xff not really a JPEG')
    with pytest.raises(ImageReadError, match=r'^holiday\.jpg: cannot decode JPEG') as caught:
        enhance_photo(broken, enhancer)
    assert 'upload-7f3a' not in str(caught.value)
    tiny = tmp_path / 'tiny.png'
    cv2.imwrite(str(tiny), np.zeros((1, 5, 3), np.uint8))
    with pytest.raises(ImageReadError, match=r'^tiny\.png: image is 1x5'):
        enhance_photo(tiny, enhancer)


def test_output_names_are_cliplit_enhance_names():
    assert output_names(['a.jpg', 'b.heic', 'a.png']) == ['a_jpg.png', 'b.png', 'a_png.png']
    assert output_names(['IMG.JPG', 'b.png', 'IMG.JPG', 'IMG.JPG']) == ['IMG.png', 'b.png', 'IMG_2.png', 'IMG_3.png']


def test_command_line(capsys):
    args = parse_args([])
    assert (args.host, args.port, args.device, args.precision, args.tile) == ('127.0.0.1', 7860, 'auto', 'fp32', None)
    assert 'this machine only' in serving_line('127.0.0.1', 7860)
    with pytest.raises(SystemExit):
        app_main(['--port', '70000'])
    assert capsys.readouterr().err == 'error: --port 70000: expected 1 to 65535\n'
    code = 'import sys; from cliplit_basicsr.app import parse_args; parse_args([]); '
    code += "print(sorted({'torch', 'gradio', 'cv2'} & set(sys.modules)))"
    imported = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    assert imported.strip() == '[]'  # --help answers before anything heavy is imported


# --- the page -------------------------------------------------------------------------------------------------
def _missing(what: str) -> None:
    """Skip with one line; fail in CI, where the page's tests must run."""
    if os.environ.get('CI', '').lower() not in ('', '0', 'false'):
        pytest.fail(f'{what}; CI must run the web app tests', pytrace=False)
    pytest.skip(what)


@pytest.fixture(scope='module')
def server(enhancer):
    try:
        import gradio  # noqa: F401
        import gradio_client  # noqa: F401
    except ImportError:
        _missing("Gradio is not installed (pip install -e '.[app]')")
    from cliplit_basicsr.app import build_app, launch

    demo = build_app(enhancer)
    yield launch(demo)
    demo.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_people_at_once(tmp_path, server, enhancer):
    """Two people drop photos at the same moment: the network runs one after the other, each gets their own
    photo back; a broken upload is named on the page and the app goes on serving."""
    from gradio_client import Client, handle_file

    wide, tall = _photo(tmp_path, 'wide.jpg', (200, 150)), _photo(tmp_path, 'tall.png', (90, 160), 'png16')
    broken = tmp_path / 'broken.jpg'
    broken.write_bytes(b'\xff\xd8\xff broken')
    people = [Client(server, verbose=False) for _ in range(2)]
    runs, results = len(enhancer.runs), [None, None]

    def drop(person: int, files) -> None:
        results[person] = people[person].predict([handle_file(f) for f in files], 1.0, api_name='/enhance')

    threads = [threading.Thread(target=drop, args=(0, [wide])), threading.Thread(target=drop, args=(1, [tall, broken]))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
        assert not thread.is_alive(), 'an enhancement request did not finish in 90 s'
    assert results[0][-2] == '1 of 1 photo enhanced.'
    assert results[1][-2].startswith('1 of 2 photos enhanced.\n- broken.jpg: cannot decode JPEG')
    (first, first_end), (second, _) = sorted(enhancer.runs[runs:])
    assert second >= first_end  # queued: one network run at a time
    (before, after), download = people[1].predict(0.4, api_name='/preview')  # each person's own photo
    assert download is None  # a download made at another strength is taken off the page
    assert read_image(after).shape[:2] == read_image(before).shape[:2] == (160, 90)
    (before, after), _ = people[0].predict(0.4, api_name='/preview')
    assert read_image(after).shape[:2] == (200, 150)  # upright: stored sideways


def _chromium() -> str:
    """Debian's Chromium and Playwright to drive it."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[test]')")
    browser = shutil.which('chromium') or shutil.which('chromium-browser')
    if not browser:
        _missing('no Chromium: sudo apt-get install chromium (scripts/install.sh does it as root)')
    return browser


CHANGED = 'src => document.querySelectorAll("#compare img")[1]?.getAttribute("src") !== src'  # a new "after"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_page_in_a_browser(tmp_path, server):
    """Drop a sample photo and another, pick each in the gallery, move the strength slider with the keyboard,
    download: the file is cliplit-enhance's at that strength. Nothing is fetched from outside the machine."""
    from playwright.sync_api import expect, sync_playwright

    browser_path = _chromium()
    expected = _cliplit_enhance(SMALLEST_SAMPLE, tmp_path / 'cli', 0.6)
    outside = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, headless=True)
        try:
            page = browser.new_page(accept_downloads=True)
            page.on(
                'request', lambda r: None if r.url.startswith((server, 'data:', 'blob:')) else outside.append(r.url)
            )
            page.goto(server)
            page.locator('#photos input[type=file]').set_input_files([SMALLEST_SAMPLE, _photo(tmp_path, 'small.jpg')])
            expect(page.locator('#status')).to_contain_text('2 of 2 photos enhanced', timeout=90_000)
            after = page.locator('#compare img').last
            expect(after).to_be_visible()
            for pick in (1, 0):  # the other photo, then the sample again
                shown = after.get_attribute('src')
                page.locator('#gallery button.thumbnail-item').nth(pick).click()
                page.wait_for_function(CHANGED, arg=shown)
            page.locator('#strength input[type=range]').focus()
            shown = after.get_attribute('src')
            for _ in range(8):  # 1.0 - 8 steps of 0.05
                page.keyboard.press('ArrowLeft')
            expect(page.locator('#strength input[type=number]')).to_have_value('0.6')
            page.wait_for_function(CHANGED, arg=shown)
            page.wait_for_timeout(1500)  # the last of the slider's previews (each clears the download) is done
            page.locator('#make-download').click()
            with page.expect_download(timeout=60_000) as download:
                page.locator('#download a').first.click()
            download.value.save_as(tmp_path / 'downloaded.png')
            name = download.value.suggested_filename
        finally:
            browser.close()
    assert name == expected.name
    assert np.array_equal(read_image(tmp_path / 'downloaded.png'), read_image(expected))
    assert (tmp_path / 'downloaded.png').read_bytes() == expected.read_bytes()
    assert outside == []
