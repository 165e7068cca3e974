"""Video: the flicker the enhancement adds, and frames per second of ``enhance_video``.

Flicker: a clip made from a bundled sample photo, panned slowly (``--pan`` pixels a frame) with fresh
sensor-like noise in every frame (Gaussian, ``--noise`` /255, on the linear values), enhanced frame by frame
(the arrays, no codec in between). Printed: the mean absolute change between consecutive frames of the
output against the same figure of the input (1/255 units); the same for the light map's coarse part (the
frame averaged over 32x32 blocks: what the whole-image pyramid pooling would make flicker); and, for a clip
with a hard cut between two photos, the same figures at the cut and away from it.

Speed: ``enhance_video`` on a synthetic 1080p clip (decode, enhance, encode to H.264), frames per second on
``--device``. Example: ``python scripts/bench_video.py --frames 24``.
"""

import argparse
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

SAMPLES = Path(__file__).resolve().parents[1] / 'cliplit_basicsr' / 'samples'


def pan_clip(photo: np.ndarray, frames: int, size: tuple, pan: int, noise: float, seed: int) -> np.ndarray:
    """(frames, H, W, 3) uint8: a ``size`` (W, H) window moving ``pan`` pixels a frame, fresh noise each."""
    rng = np.random.default_rng(seed)
    width, height = size
    clip = []
    for index in range(frames):
        window = photo[:height, index * pan : index * pan + width].astype(np.float32)
        clip.append(np.clip(window + rng.normal(0, noise, window.shape), 0, 255).astype(np.uint8))
    return np.stack(clip)


def enhance_frames(enhancer, clip: np.ndarray) -> tuple:
    """The enhanced frames (uint8) and light maps (float32) of ``clip``, frame by frame."""
    outputs, lights = [], []
    for frame in clip:
        enhanced, light = enhancer.enhance(np.ascontiguousarray(frame[:, :, ::-1]), return_light_map=True)
        outputs.append(enhanced[:, :, ::-1])
        lights.append(light)
    return np.stack(outputs), np.stack(lights)


def change(frames: np.ndarray) -> np.ndarray:
    """Mean absolute change between consecutive frames, one figure per pair (in the frames' units)."""
    return np.abs(np.diff(frames.astype(np.float32), axis=0)).reshape(len(frames) - 1, -1).mean(axis=1)


def coarse(maps: np.ndarray, block: int = 32) -> np.ndarray:
    frames, height, width = maps.shape[:3]
    h, w = height // block * block, width // block * block
    return maps[:, :h, :w].reshape(frames, h // block, block, w // block, block).mean(axis=(2, 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--frames', type=int, default=24, help='frames of each flicker clip')
    parser.add_argument('--size', type=int, nargs=2, default=[640, 360], help='W H of the flicker clips')
    parser.add_argument('--pan', type=int, default=1, help='pixels the window moves a frame')
    parser.add_argument('--noise', type=float, default=3.0, help='sensor-like noise, sigma in 1/255')
    parser.add_argument('--speed-frames', type=int, default=8, help='frames of the 1080p speed clip (0: skip)')
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args()

    from PIL import Image

    from cliplit_basicsr.enhancer import CLIPLITEnhancer

    enhancer = CLIPLITEnhancer('official', args.device)
    photos = sorted(SAMPLES.glob('*.jpg'))
    width, height = args.size
    resized = []
    for path in photos[:2]:
        with Image.open(path) as image:
            scale = max((width + args.pan * args.frames) / image.width, height / image.height)
            size = (round(image.width * scale) + 1, round(image.height * scale) + 1)
            resized.append(np.asarray(image.convert('RGB').resize(size, Image.Resampling.LANCZOS)))

    clip = pan_clip(resized[0], args.frames, (width, height), args.pan, args.noise, seed=0)
    out, light = enhance_frames(enhancer, clip)
    print(f'flicker: {args.frames} frames of {width}x{height}, pan {args.pan} px/frame, noise sigma {args.noise}/255')
    print(f'  input  mean |frame(t) - frame(t-1)|: {change(clip).mean():.3f}/255')
    print(f'  output mean |frame(t) - frame(t-1)|: {change(out).mean():.3f}/255')
    print(f'  light map, 32x32 block means, mean |L(t) - L(t-1)|: {change(coarse(light)).mean() * 255:.4f}/255')
    print(f'  light map frame mean over time: {light.mean(axis=(1, 2)).std() * 255:.4f}/255 standard deviation')

    half = args.frames // 2
    cut = np.concatenate(
        [clip[:half], pan_clip(resized[1], args.frames - half, (width, height), args.pan, args.noise, seed=1)]
    )
    out_cut, light_cut = enhance_frames(enhancer, cut)
    steps, light_steps = change(out_cut), change(coarse(light_cut)) * 255
    away = np.delete(np.arange(len(steps)), half - 1)
    print(
        f'hard cut at frame {half}: output change {steps[half - 1]:.2f}/255 at the cut, '
        f'{steps[away].mean():.3f}/255 elsewhere; light map (32x32 blocks) {light_steps[half - 1]:.3f}/255 at the '
        f'cut, {light_steps[away].mean():.4f}/255 elsewhere'
    )

    if args.speed_frames:
        import av

        from cliplit_basicsr.video import enhance_video

        with tempfile.TemporaryDirectory() as folder:
            source = Path(folder) / 'clip1080.mp4'
            with av.open(str(source), 'w') as container:
                stream = container.add_stream('libx264', rate=30)
                stream.width, stream.height, stream.pix_fmt = 1920, 1080, 'yuv420p'
                big = np.asarray(Image.open(photos[0]).convert('RGB').resize((1920 + args.speed_frames, 1080)))
                for index in range(args.speed_frames):
                    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(big[:, index : index + 1920]), 'rgb24')
                    frame.pts, frame.time_base = index, Fraction(1, 30)
                    for packet in stream.encode(frame):
                        container.mux(packet)
                for packet in stream.encode(None):
                    container.mux(packet)
            started = time.perf_counter()
            report = enhance_video(source, Path(folder) / 'out.mp4', lambda x: enhancer.enhance(x), progress=False)
            seconds = time.perf_counter() - started
        print(
            f'speed: {report.frames} frames of 1920x1080 on {args.device} in {seconds:.1f} s: '
            f'{report.frames / seconds:.3f} frames/s ({seconds / report.megapixels:.2f} s/MP, coding included)'
        )


if __name__ == '__main__':
    main()
