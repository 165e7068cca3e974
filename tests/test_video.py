"""Videos: enhanced frame by frame into the same container, timestamps, rotation, colour and audio kept."""

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

import cliplit_basicsr
from cliplit_basicsr.cli import main
from cliplit_basicsr.enhancer import CLIPLITEnhancer
from cliplit_basicsr.video import VideoError, enhance_video

SAMPLE = sorted((Path(cliplit_basicsr.__file__).parent / 'samples').glob('*.jpg'))[0]
SIZE = (96, 64)  # width, height: even, as 4:2:0 needs


@pytest.fixture(scope='module')
def photo() -> np.ndarray:
    with Image.open(SAMPLE) as image:
        return np.asarray(image.convert('RGB').resize((SIZE[0] + 16, SIZE[1]), Image.Resampling.LANCZOS))


def make_clip(path: Path, photo: np.ndarray, pts=(0, 1, 2, 4, 5, 8), codec='libx264', audio=True, rotation=0):
    """A pan across ``photo`` with the frame timestamps ``pts`` (1/24 s each: gaps make it variable-rate) and
    a sine sound track."""
    with av.open(str(path), 'w') as container:
        video = container.add_stream(codec, rate=24)
        video.width, video.height, video.pix_fmt = *SIZE, 'yuv420p'
        video.time_base = Fraction(1, 24)
        video.options = {'crf': '10'} if codec == 'libx264' else {'crf': '10', 'b': '0'}
        if rotation:
            video.set_display_rotation(rotation)
        sound = container.add_stream('aac', rate=16000) if audio else None
        for index, stamp in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(photo[:, 2 * index : 2 * index + SIZE[0]]), 'rgb24')
            frame.pts, frame.time_base = stamp, Fraction(1, 24)
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if sound is not None:
            samples = (0.2 * np.sin(np.arange(16000 // 2) * 2 * np.pi * 440 / 16000)).astype(np.float32)
            chunk = sound.codec_context.frame_size or 1024
            for start in range(0, len(samples) - chunk, chunk):
                frame = av.AudioFrame.from_ndarray(samples[None, start : start + chunk], format='fltp', layout='mono')
                frame.sample_rate, frame.pts = 16000, start
                for packet in sound.encode(frame):
                    container.mux(packet)
            for packet in sound.encode(None):
                container.mux(packet)
    return path


def describe(path: Path) -> dict:
    """Frame timestamps, size, rotation, codec, frames (RGB) and the audio packets' bytes of a video file."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        info = {
            'codec': stream.codec_context.name,
            'pts': [f.pts for f in frames],
            'time_base': stream.time_base,
            'size': (frames[0].width, frames[0].height),
            'rotation': frames[0].rotation,
            'rgb': [f.to_ndarray(format='rgb24') for f in frames],
        }
    with av.open(str(path)) as container:
        audio = (
            [bytes(p) for p in container.demux(container.streams.audio) if p.size] if container.streams.audio else []
        )
    return dict(info, audio=audio)


def test_cli_enhances_a_variable_rate_clip_keeping_timestamps_rotation_and_audio(tmp_path, photo):
    (tmp_path / 'in').mkdir()
    source = make_clip(tmp_path / 'in' / 'clip.mp4', photo, rotation=90)
    assert main(['-i', str(tmp_path / 'in'), '-o', str(tmp_path / 'out'), '--device', 'cpu']) == 0
    before, after = describe(source), describe(tmp_path / 'out' / 'clip.mp4')
    assert after['codec'] == 'h264' and after['size'] == before['size'] == SIZE
    assert [p * after['time_base'] for p in after['pts']] == [p * before['time_base'] for p in before['pts']]
    assert after['rotation'] == before['rotation'] != 0
    assert after['audio'] == before['audio'] and len(before['audio']) > 5  # copied packet by packet
    enhancer = CLIPLITEnhancer('official', 'cpu')
    for decoded, written in zip(before['rgb'], after['rgb']):
        expected = enhancer.enhance(torch.from_numpy(decoded).permute(2, 0, 1)[None].float() / 255)
        expected = (expected[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        assert np.abs(written.astype(int) - expected).mean() < 4  # the enhanced frame, H.264-coded at crf 18


def test_vp9_in_webm_stays_vp9_and_codec_and_crf_are_chosen(tmp_path, photo):
    source = make_clip(tmp_path / 'clip.webm', photo, codec='libvpx-vp9', audio=False)
    report = enhance_video(source, tmp_path / 'same.webm', lambda x: x, progress=False)
    assert (report.frames, report.input_codec, report.output_codec) == (6, 'vp9', 'libvpx-vp9')
    assert describe(tmp_path / 'same.webm')['codec'] == 'vp9'
    enhance_video(source, tmp_path / 'av1.mkv', lambda x: x, codec='av1', crf=40, progress=False)
    assert describe(tmp_path / 'av1.mkv')['codec'] in ('libdav1d', 'av1')


def test_a_codec_the_container_cannot_hold_is_one_line(tmp_path, photo):
    source = make_clip(tmp_path / 'clip.webm', photo, codec='libvpx-vp9', audio=False)
    with pytest.raises(VideoError, match='WebM holds VP8, VP9 or AV1 video only'):
        enhance_video(source, tmp_path / 'out.webm', lambda x: x, codec='h264', progress=False)
    assert not (tmp_path / 'out.webm').exists()


def test_bad_videos_are_one_line_each_and_the_others_go_on(tmp_path, photo, capsys):
    folder = tmp_path / 'in'
    folder.mkdir()
    good = make_clip(folder / 'good.mp4', photo, audio=False)
    (folder / 'truncated.mp4').write_bytes(good.read_bytes()[: len(good.read_bytes()) // 3])
    with av.open(str(folder / 'sound_only.mp4'), 'w') as container:  # a file with no video stream
        sound = container.add_stream('aac', rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format='fltp', layout='mono')
        frame.sample_rate, frame.pts = 16000, 0
        for packet in [*sound.encode(frame), *sound.encode(None)]:
            container.mux(packet)
    assert main(['-i', str(folder), '-o', str(tmp_path / 'out'), '--device', 'cpu']) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith('error:')]
    assert len(errors) == 2
    assert any(e.startswith(f'error: {folder / "sound_only.mp4"}: no video stream') for e in errors)
    assert any(e.startswith(f'error: {folder / "truncated.mp4"}: ') for e in errors)
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['good.mp4']


def test_an_interrupted_run_leaves_no_output(tmp_path, photo):
    source = make_clip(tmp_path / 'clip.mp4', photo)
    calls = []

    def fails_on_the_second_batch(frames):
        calls.append(len(frames))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return frames

    with pytest.raises(KeyboardInterrupt):
        enhance_video(source, tmp_path / 'out.mp4', fails_on_the_second_batch, batch=2, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['clip.mp4']
