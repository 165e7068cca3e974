"""CLIPLITEnhancer on every input kind, and cliplit-enhance on good, odd and bad inputs."""

import os

import cv2
import numpy as np
import pytest
import torch

from cliplit_basicsr.checkpoint import OFFICIAL_CHECKPOINT, load_checkpoint
from cliplit_basicsr.cli import main
from cliplit_basicsr.enhancer import CLIPLITEnhancer, DeviceError, apply_light_map
from cliplit_basicsr.image_io import ImageWriteError, read_image, write_png
from cliplit_basicsr.network import CLIPLITNet

H, W = 40, 56


@pytest.fixture(scope='module')
def enhancer():
    return CLIPLITEnhancer('official', 'cpu')


@pytest.fixture(scope='module')
def reference_net():
    """The plain network (not the fast engine) as the independent reference."""
    return load_checkpoint(CLIPLITNet('reflect'), OFFICIAL_CHECKPOINT).eval()


def plain_enhance(net, rgb: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.clamp(rgb / net(rgb), 0, 1)


def quantise(enhanced: torch.Tensor, peak: int) -> np.ndarray:
    """torchvision save_image rounding: x * peak + 0.5, clamp, truncate; (1,3,H,W) RGB -> HxWx3 BGR."""
    q = enhanced[0].mul(peak).add_(0.5).clamp_(0, peak).to(torch.int32).permute(1, 2, 0).numpy()
    return q[:, :, ::-1].astype(np.int64)


def backlit_bgr(dtype=np.uint8, seed=0) -> np.ndarray:
    """A smooth dark-to-bright image with noise: dark regions exercise the light-map division."""
    rng = np.random.default_rng(seed)
    peak = np.iinfo(dtype).max
    ramp = np.linspace(0.05, 0.9, W)[None, :, None] * np.linspace(0.3, 1.0, H)[:, None, None]
    img = np.clip(ramp * np.array([0.8, 1.0, 0.7]) + rng.normal(0, 0.03, (H, W, 3)), 0, 1)
    return np.round(img * peak).astype(dtype)


def to_rgb_tensor(bgr: np.ndarray) -> torch.Tensor:
    peak = np.iinfo(bgr.dtype).max
    return torch.from_numpy(bgr[:, :, ::-1].astype(np.float32) / peak).permute(2, 0, 1)[None]


def assert_rounding_equal(ours: np.ndarray, expected: np.ndarray) -> None:
    """Equal up to float rounding, which can flip a value sitting on a rounding boundary by one level."""
    diff = np.abs(ours.astype(np.int64) - expected)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


@pytest.mark.parametrize('dtype', [np.uint8, np.uint16])
def test_numpy_bgr(enhancer, reference_net, dtype):
    bgr = backlit_bgr(dtype)
    out = enhancer.enhance(bgr)
    assert out.dtype == dtype and out.shape == bgr.shape
    assert_rounding_equal(out, quantise(plain_enhance(reference_net, to_rgb_tensor(bgr)), np.iinfo(dtype).max))


def test_gray_is_enhanced_as_rgb(enhancer, reference_net):
    gray = backlit_bgr()[:, :, 1]
    out = enhancer.enhance(gray)
    assert out.shape == (H, W, 3)
    rgb = torch.from_numpy(gray.astype(np.float32) / 255)[None, None].expand(1, 3, H, W)
    assert_rounding_equal(out, quantise(plain_enhance(reference_net, rgb), 255))


def test_rgba_keeps_alpha(enhancer):
    bgr = backlit_bgr()
    alpha = np.random.default_rng(1).integers(0, 256, (H, W), dtype=np.uint8)
    out = enhancer.enhance(np.dstack([bgr, alpha]))
    assert out.shape == (H, W, 4)
    assert np.array_equal(out[:, :, 3], alpha)
    assert np.array_equal(out[:, :, :3], enhancer.enhance(bgr))


@pytest.mark.parametrize('strength', [1.0, 0.6, 1.37])
def test_apply_light_map_is_enhance(strength):
    """The output at any strength, from the light map alone, is enhance()'s, bit for bit (tiles of 24: the
    engine's regions are not apply_light_map's rows)."""
    enhancer = CLIPLITEnhancer('official', 'cpu', tile=24)
    alpha = np.random.default_rng(1).integers(0, 65536, (H, W), dtype=np.uint16)
    for image in (
        backlit_bgr(),
        backlit_bgr(np.uint16),
        backlit_bgr()[:, :, 1],
        np.dstack([backlit_bgr(np.uint16), alpha]),
    ):
        _, light = enhancer.enhance(image, return_light_map=True)
        assert np.array_equal(apply_light_map(image, light, strength), enhancer.enhance(image, strength=strength))
    with pytest.raises(ValueError, match='light map'):
        apply_light_map(backlit_bgr(), light[1:], strength)


def test_progress_tile_by_tile():
    fractions = []
    CLIPLITEnhancer('official', 'cpu', tile=24).enhance(backlit_bgr(), progress=fractions.append)
    assert fractions == [step / 12 for step in range(1, 13)]  # 6 tiles, in each of the two passes
    fractions.clear()
    CLIPLITEnhancer('official', 'cpu', engine='reference').enhance(backlit_bgr(), progress=fractions.append)
    assert fractions == [1.0]


@pytest.mark.parametrize('batched', [False, True])
def test_tensor_input(enhancer, reference_net, batched):
    rgb = torch.cat([to_rgb_tensor(backlit_bgr(seed=s)) for s in (0, 1)])
    expected = plain_enhance(reference_net, rgb)
    out = enhancer.enhance(rgb if batched else rgb[0])
    assert out.shape == (rgb if batched else rgb[0]).shape and out.dtype == torch.float32
    torch.testing.assert_close(out, expected if batched else expected[0], rtol=0, atol=1e-5)


def test_bad_inputs_to_api(enhancer):
    with pytest.raises(ValueError, match='float'):
        enhancer.enhance(torch.zeros(3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match='gray, BGR or BGRA'):
        enhancer.enhance(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(ValueError, match='at least 2x2'):
        enhancer.enhance(np.zeros((1, 8, 3), np.uint8))
    with pytest.raises(DeviceError, match='unknown'):
        CLIPLITEnhancer(device='tpu')
    with pytest.raises(DeviceError, match='precision'):
        CLIPLITEnhancer(device='cpu', precision='int8')


def test_bf16_path_stays_close(reference_net):
    bgr = backlit_bgr()
    out = CLIPLITEnhancer('official', 'cpu', precision='bf16').enhance(bgr).astype(np.int64)
    expected = quantise(plain_enhance(reference_net, to_rgb_tensor(bgr)), 255)
    assert np.abs(out - expected).mean() < 1.0  # reduced precision: within a level on average


@pytest.fixture
def input_folder(tmp_path):
    folder = tmp_path / 'in'
    folder.mkdir()
    bgr = backlit_bgr()
    cv2.imwrite(str(folder / 'colour.jpg'), bgr)
    cv2.imwrite(str(folder / 'gray.png'), bgr[:, :, 0])
    cv2.imwrite(str(folder / 'deep.png'), backlit_bgr(np.uint16))
    cv2.imwrite(str(folder / 'alpha.png'), np.dstack([bgr, np.full((H, W), 77, np.uint8)]))
    (folder / 'notes.txt').write_text('not an image')
    jpeg = (folder / 'colour.jpg').read_bytes()
    (folder / 'truncated.jpg').write_bytes(jpeg[: len(jpeg) // 2])
    (folder / 'garbage.png').write_bytes(b'\x89PNG not really')
    return folder


def test_cli_folder(input_folder, tmp_path, capsys):
    out = tmp_path / 'out' / 'nested'
    assert main(['-i', str(input_folder), '-o', str(out), '--device', 'cpu']) == 1
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    assert 'skipping' in err and 'notes.txt' in err
    for bad in ('truncated.jpg', 'garbage.png'):
        lines = [line for line in err.splitlines() if bad in line and line.startswith('error:')]
        assert len(lines) == 1, err
    summary = err.splitlines()[-1]
    assert summary.startswith('cliplit-enhance: 4 of 6 images enhanced, 0.0 MP in ')
    assert summary.endswith(f'; 2 failed: {input_folder / "garbage.png"}, {input_folder / "truncated.jpg"}')
    assert sorted(p.name for p in out.iterdir()) == ['alpha.png', 'colour.png', 'deep.png', 'gray.png']
    assert read_image(out / 'colour.png').shape == (H, W, 3)
    assert read_image(out / 'gray.png').shape == (H, W, 3)
    assert read_image(out / 'deep.png').dtype == np.uint16
    alpha = read_image(out / 'alpha.png')
    assert alpha.shape == (H, W, 4) and (alpha[:, :, 3] == 77).all()


def test_cli_single_file_matches_api(input_folder, tmp_path, enhancer):
    source = input_folder / 'colour.jpg'
    assert main(['-i', str(source), '-o', str(tmp_path), '--device', 'cpu', '--tile', '16']) == 0
    assert np.array_equal(read_image(tmp_path / 'colour.png'), enhancer.enhance(read_image(source)))


@pytest.mark.parametrize(
    'args, message',
    [
        (['-i', '{missing}'], 'no such file or folder'),
        (['-o', '{file}/sub'], 'not a writable folder'),
        (['--device', 'tpu'], "device 'tpu' is unknown"),
        (['--ckpt', '{file}'], 'not a torch file'),
        (['--ckpt', '{missing}'], 'no such file'),
    ],
)
def test_cli_bad_arguments_one_line(input_folder, tmp_path, capsys, args, message):
    paths = {'missing': tmp_path / 'absent', 'file': input_folder / 'notes.txt'}
    argv = {'-i': str(input_folder), '-o': str(tmp_path / 'out'), '--device': 'cpu'}
    for key, value in zip(args[::2], args[1::2]):
        argv[key] = value.format(**paths)
    with pytest.raises(SystemExit) as info:
        main([item for pair in argv.items() for item in pair])
    assert info.value.code != 0
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and message in errors[0] and 'Traceback' not in err, err


def test_png_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / 'result.png'
    write_png(target, np.zeros((4, 4, 3), np.uint8))
    before = target.read_bytes()

    def interrupted(src, dst):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(os, 'replace', interrupted)
    with pytest.raises(ImageWriteError, match='result.png'):
        write_png(target, np.full((4, 4, 3), 255, np.uint8))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ['result.png']
