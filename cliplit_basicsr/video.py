"""Enhancing videos frame by frame, with PyAV (FFmpeg's libraries, bundled with H.264, HEVC, VP9 and AAC).

The output keeps the input's container family, frame rate and timestamps (constant or variable: every frame
keeps its own), resolution, rotation and colour metadata; audio and subtitle streams are copied packet by
packet, untouched. The video is encoded with the input's codec where it can be written, else H.264 (VP9 in
WebM). A reader thread decodes, the caller's thread enhances batches of frames on the enhancer's device and
a writer thread encodes and muxes, each handing over through a short queue: decoding, enhancement and
encoding overlap and memory stays bounded whatever the length. The file is written atomically: an
interrupted run or a failure leaves no truncated output.
"""

import contextlib
import os
import queue
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Union

import numpy as np
import torch

from cliplit_basicsr.atomic_io import atomic_write_path
from cliplit_basicsr.engine import quantise
from cliplit_basicsr.errors import DataError, one_line_message

PathLike = Union[str, os.PathLike]
CONTAINERS = {'.mp4': 'mp4', '.m4v': 'mp4', '.mov': 'mov', '.mkv': 'matroska', '.webm': 'webm', '.avi': 'avi'}
VIDEO_EXTENSIONS = tuple(CONTAINERS)
# The encoder that writes each decoded codec again; a codec not listed here is written as H.264.
ENCODERS = {'h264': 'libx264', 'hevc': 'libx265', 'vp9': 'libvpx-vp9', 'vp8': 'libvpx', 'av1': 'libsvtav1'}
WEBM_CODECS = ('vp8', 'vp9', 'av1')
TRUNCATED_SHARE = 0.9  # fewer frames than this share of what the container announces: a truncated file
DEFAULT_CRF = {'libx264': 18, 'libx265': 20, 'libvpx-vp9': 24, 'libvpx': 10, 'libsvtav1': 30}
_END = object()


class VideoError(DataError):
    """A video that cannot be read or written; the message names the file and the reason."""


def is_video_file(path: PathLike) -> bool:
    """Whether ``path`` has a video file extension."""
    return os.fspath(path).lower().endswith(VIDEO_EXTENSIONS)


@dataclass
class VideoReport:
    """What was read and written: frames, duration (s), average frame rate, codecs and copied streams."""

    frames: int
    duration: float
    fps: float
    megapixels: float
    input_codec: str
    output_codec: str
    copied_streams: List[str]


def _encoder_name(decoded: str, container: str, requested: Optional[str]) -> str:
    """The encoder to write: ``requested`` (a codec or encoder name), else the input's codec again where an
    encoder for it exists (and WebM holds it), else H.264 (VP9 in WebM)."""
    import av

    fallback = 'libvpx-vp9' if container == 'webm' else 'libx264'
    name = ENCODERS.get(requested, requested) if requested else ENCODERS.get(decoded, fallback)
    if container == 'webm' and not requested and decoded not in WEBM_CODECS:
        name = fallback
    try:
        codec = av.codec.Codec(name, 'w')
    except Exception:
        if requested:
            raise VideoError(f'--codec {requested}: no such video encoder in this FFmpeg') from None
        name, codec = fallback, av.codec.Codec(fallback, 'w')
    if container == 'webm' and codec.name not in ('libvpx', 'libvpx-vp9', 'libsvtav1', 'libaom-av1'):
        raise VideoError(f'--codec {requested}: WebM holds VP8, VP9 or AV1 video only')
    return name


def _pixel_format(encoder, decoded_format: str, same_codec: bool) -> str:
    """The input's pixel format where the encoder takes it and the codec is the input's (10-bit stays 10-bit);
    else 4:2:0, which every player decodes (10 bits where the input had more than 8 and the encoder takes it)."""
    supported = [f.name for f in (encoder.codec.video_formats or [])]
    if same_codec and decoded_format in supported:
        return decoded_format
    return 'yuv420p10le' if _deep(decoded_format) and 'yuv420p10le' in supported else 'yuv420p'


def _deep(pixel_format: str) -> bool:
    import av

    return max((c.bits for c in av.VideoFormat(pixel_format).components), default=8) > 8


class _Pipeline:
    """A thread that runs ``work(item)`` for each item put, in order; its first error is re-raised."""

    def __init__(self, name: str, work: Callable[[object], None], depth: int) -> None:
        self.items: queue.Queue = queue.Queue(maxsize=depth)
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, args=(work,), name=name, daemon=True)
        self.thread.start()

    def _run(self, work) -> None:
        while True:
            item = self.items.get()
            if item is _END:
                return
            if self.error is None:
                try:
                    work(item)
                except BaseException as error:  # handed to the caller's thread, which raises it
                    self.error = error

    def put(self, item) -> None:
        self.check()
        self.items.put(item)

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self, abort: bool = False) -> None:
        """Wait for the items put so far; with ``abort`` (an error elsewhere, which the caller raises) drop them
        and raise nothing."""
        if abort:
            self.error = self.error or RuntimeError('aborted')
        self.items.put(_END)
        self.thread.join()
        if not abort:
            self.check()


def _read(path: Path, video_index: int, copied: List[int], depth: int) -> Iterator[tuple]:
    """('frame', frame) for each decoded frame of the video stream and ('packet', (stream index, packet)) for
    each packet of the ``copied`` streams, in the file's order; decoded by a reader thread ``depth`` items ahead."""
    import av

    items: queue.Queue = queue.Queue(maxsize=depth)
    failure: List[BaseException] = []
    stop = threading.Event()  # the consumer has gone (an error, an interruption): stop reading

    def read() -> None:
        try:
            with av.open(os.fspath(path)) as container:
                streams = [container.streams[video_index]] + [container.streams[i] for i in copied]
                for packet in container.demux(streams):
                    if packet.stream.index == video_index:
                        decoded = [('frame', frame) for frame in packet.decode()]
                    else:  # the demuxer's flush packets (no timestamp) carry nothing
                        decoded = [('packet', (packet.stream.index, packet))] if packet.dts is not None else []
                    for item in decoded:
                        if stop.is_set():
                            return
                        items.put(item)
        except BaseException as error:
            failure.append(error)
        finally:
            items.put(_END)

    thread = threading.Thread(target=read, name='cliplit-video-reader', daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _END:
                break
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # make room for the reader's last put, so that it sees the stop
            try:
                items.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()
    if failure:
        raise failure[0]


def enhance_video(
    source: PathLike,
    output: PathLike,
    enhance: Callable[[torch.Tensor], torch.Tensor],
    codec: Optional[str] = None,
    crf: Optional[int] = None,
    batch: int = 4,
    progress: bool = True,
) -> VideoReport:
    """Enhance the video ``source`` into ``output`` (same container family; see the module docstring).

    Args:
        source: the video file.
        output: the file to write, with the container's extension; written atomically.
        enhance: maps a batch of frames (B, 3, H, W), RGB float in [0, 1] on any device, to the enhanced batch
            (e.g. ``lambda x: enhancer.enhance(x, strength=s)`` of a ``CLIPLITEnhancer``).
        codec: the video codec or encoder to write (``h264``, ``hevc``, ``vp9``, ``av1``, ``libx264``...);
            default: the input's where it can be written, else H.264 (VP9 in WebM).
        crf: the encoder's constant-quality factor (lower is better); default per encoder (``DEFAULT_CRF``).
        batch: frames enhanced together.
        progress: show a progress bar (frames/s and time left).

    Returns a :class:`VideoReport`; raises :class:`VideoError` (one line, naming the file) for a file without a
    readable video stream, a codec the container cannot hold, or a decoding or encoding failure.
    """
    import av
    from tqdm import tqdm

    source, output = Path(source), Path(output)
    container = CONTAINERS.get(output.suffix.lower())
    if container is None:
        raise VideoError(f'{output}: not a video extension ({", ".join(VIDEO_EXTENSIONS)})')
    try:
        with av.open(os.fspath(source)) as probe:
            if not probe.streams.video:
                raise VideoError(f'{source}: no video stream')
            stream = probe.streams.best('video')
            first = next(probe.decode(stream), None)
            if first is None:
                raise VideoError(f'{source}: the video stream has no decodable frame')
            rate = stream.average_rate or stream.guessed_rate or Fraction(30)
            info = {
                'index': stream.index,
                'codec': stream.codec_context.codec.canonical_name,  # 'av1', not its decoder 'libdav1d'
                'time_base': stream.time_base,
                'rate': rate,
                'width': first.width,
                'height': first.height,
                'format': first.format.name,
                'rotation': first.rotation,
                'colour': {k: getattr(first, k) for k in ('color_primaries', 'color_trc', 'colorspace', 'color_range')},
                'frames': stream.frames,  # 0 where the container does not say (Matroska, WebM)
                'copied': [s.index for s in probe.streams if s.type in ('audio', 'subtitle')],
                'seconds': float(probe.duration) / 1e6 if probe.duration else 0.0,
            }
    except VideoError:
        raise
    except (av.FFmpegError, OSError, ValueError, StopIteration) as error:
        raise VideoError(f'{source}: cannot read the video ({one_line_message(error, 200)})') from None

    encoder_name = _encoder_name(info['codec'], container, codec)
    estimate = info['frames'] or round(info['seconds'] * float(info['rate']))  # for the progress bar
    written = 0
    try:
        with atomic_write_path(output) as temporary, av.open(temporary, 'w', format=container) as destination:
            with av.open(os.fspath(source)) as template:
                destination.metadata.update(template.metadata)  # creation time, make, location...
                copies = {}
                for index in info['copied']:
                    copies[index] = destination.add_stream_from_template(template.streams[index])
                    copies[index].metadata.update(template.streams[index].metadata)  # language, title
                    copies[index].disposition = template.streams[index].disposition
            encoder = destination.add_stream(encoder_name, rate=info['rate'])
            encoder.width, encoder.height = info['width'], info['height']
            encoder.time_base = info['time_base']
            encoder.codec_context.time_base = info['time_base']
            same_codec = ENCODERS.get(info['codec']) == encoder_name
            encoder.pix_fmt = _pixel_format(encoder, info['format'], same_codec)
            colour = info['colour']
            for key, value in colour.items():  # the tags; the conversion below keeps the values they describe
                setattr(encoder.codec_context, key, value)
            to_output = {
                'format': encoder.pix_fmt,
                'dst_colorspace': colour['colorspace'],
                'dst_color_range': colour['color_range'],
            }
            encoder.options = {'crf': str(DEFAULT_CRF.get(encoder_name, 20) if crf is None else crf)}
            if encoder_name in ('libvpx-vp9', 'libvpx'):
                encoder.options['b'] = '0'  # constant quality
            if encoder_name == 'libx265':
                encoder.options['x265-params'] = 'log-level=error'
                if container in ('mp4', 'mov'):
                    encoder.codec_tag = 'hvc1'  # the tag Apple's players need for HEVC
            if info['rotation']:
                encoder.set_display_rotation(info['rotation'])
            deep = _deep(encoder.pix_fmt) or _deep(info['format'])
            rgb, peak, dtype = ('rgb48le', 65535.0, np.uint16) if deep else ('rgb24', 255.0, np.uint8)

            def write(item) -> None:
                kind, value = item
                if kind == 'packet':
                    index, packet = value
                    packet.stream = copies[index]
                    destination.mux(packet)
                    return
                for packet in encoder.encode(value):  # value None: the encoder's last packets
                    destination.mux(packet)

            writer = _Pipeline('cliplit-video-writer', write, depth=4 * batch)
            bar = tqdm(total=estimate or None, unit='frame', desc=source.name, disable=not progress, leave=False)
            pending: List[tuple] = []
            span: List[Optional[int]] = [None, None]  # the first and the last frame's timestamps

            def flush() -> None:
                nonlocal written
                frames = [value for kind, value in pending if kind == 'frame']
                if frames:
                    pixels = np.stack(
                        [f.reformat(format=rgb, src_color_range=f.color_range).to_ndarray() for f in frames]
                    )
                    images = torch.from_numpy(pixels.astype(np.float32) / peak).permute(0, 3, 1, 2)
                    enhanced = quantise(enhance(images).float().cpu(), peak).permute(0, 2, 3, 1).numpy().astype(dtype)
                    out = iter(enhanced)
                for kind, value in pending:
                    if kind == 'frame':
                        frame = av.VideoFrame.from_ndarray(next(out), format=rgb).reformat(**to_output)
                        frame.pts, frame.time_base = value.pts, value.time_base
                        span[0] = value.pts if span[0] is None else span[0]
                        span[1] = value.pts
                        value = frame
                    writer.put((kind, value))
                written += len(frames)
                bar.update(len(frames))
                pending.clear()

            try:
                with contextlib.closing(_read(source, info['index'], info['copied'], depth=4 * batch)) as items:
                    for item in items:
                        pending.append(item)
                        if sum(kind == 'frame' for kind, _ in pending) == batch:
                            flush()
                flush()
                if written < info['frames'] * TRUNCATED_SHARE:  # where the container says how many there are
                    raise VideoError(f'{source}: truncated ({written} of {info["frames"]} frames could be decoded)')
                writer.put(('frame', None))
            except BaseException:
                writer.close(abort=True)
                raise
            finally:
                bar.close()
            writer.close()
    except VideoError:
        raise
    except (av.FFmpegError, ValueError, OSError) as error:
        raise VideoError(f'{source}: cannot enhance the video ({one_line_message(error, 200)})') from None
    duration = 0.0 if span[0] is None else float((span[1] - span[0]) * info['time_base']) + 1 / float(info['rate'])
    return VideoReport(
        frames=written,
        duration=duration,
        megapixels=written * info['width'] * info['height'] / 1e6,
        fps=float(info['rate']),
        input_codec=info['codec'],
        output_codec=encoder_name,
        copied_streams=[str(i) for i in info['copied']],
    )
