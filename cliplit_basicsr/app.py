"""``cliplit-app``: a web page on this machine to enhance photos, compare, tune the strength and download.

A person drops photos, compares each before and after, tunes the strength and downloads the result at full
resolution. Each photo goes through the network once, for its light map; the strength slider then re-renders
the preview from that map, and the download is the file ``cliplit-enhance -i photo -o folder --strength s``
writes (:mod:`cliplit_basicsr.photo_session`). Enhancements run one at a time, in a queue that shows each
person their place; previews and downloads run beside it. The page is Gradio's, so :func:`build_app` also runs
as a Hugging Face Space. It listens on 127.0.0.1 (this machine only) unless ``--host`` says otherwise.
"""

import argparse
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

from cliplit_basicsr.cli import add_model_options
from cliplit_basicsr.errors import CLIPLITError, UsageError, exit_on_user_error, one_line_message

STRENGTHS = (0.0, 2.0, 0.05)  # the slider's minimum, maximum and step
PREVIEW_CONCURRENCY = 4  # previews are cheap: several at once, beside the one enhancement


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='cliplit-app', description=__doc__.splitlines()[0].replace('``', ''))
    add = parser.add_argument
    add('--host', default='127.0.0.1', help='address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: all)')
    add('--port', type=int, default=7860, help='port to listen on (default 7860)')
    add_model_options(parser)
    return parser.parse_args(argv)


def serving_line(host: str, port: int) -> str:
    """What ``cliplit-app`` prints once it serves: where, and who can connect."""
    if host in ('127.0.0.1', 'localhost', '::1'):
        return (
            f'cliplit-app: serving on http://{host}:{port} '
            '(this machine only; --host 0.0.0.0 to let others on your network connect)'
        )
    return f'cliplit-app: serving on http://{host}:{port} (others on your network can connect)'


def build_app(enhancer=None, preview_side: Optional[int] = None):
    """The page, queued, as a ``gradio.Blocks`` to ``launch()`` (a Hugging Face Space's ``app.py``:
    ``from cliplit_basicsr.app import build_app; build_app().launch()``).

    Args:
        enhancer: the :class:`~cliplit_basicsr.enhancer.CLIPLITEnhancer` every person shares (default: the
            official model on the best device).
        preview_side: the previews' long side in pixels (default: ``photo_session.PREVIEW_SIDE``).
    """
    import gradio as gr
    import torch

    from cliplit_basicsr.enhancer import CLIPLITEnhancer
    from cliplit_basicsr.image_io import IMAGE_EXTENSIONS
    from cliplit_basicsr.photo_session import PREVIEW_SIDE, enhance_photo, output_names

    enhancer = enhancer or CLIPLITEnhancer()
    preview_side = preview_side or PREVIEW_SIDE
    downloads = tempfile.TemporaryDirectory(prefix='cliplit-app-')  # removed with the app

    def views(photos: List, index: int, strength: float):
        """The comparison slider and the light map of photo ``index``."""
        if not photos:
            return None, None
        return (photos[index].before, photos[index].preview(strength)), photos[index].light_map_preview()

    def enhance(files: Optional[List[str]], strength: float, photos: List, progress=gr.Progress()):
        files = files or []

        def step(number: int):  # the progress bar over all the photos, from one photo's fraction done
            return lambda fraction: progress(
                (number + fraction) / len(files), desc=f'Enhancing {Path(files[number]).name}'
            )

        known = {photo.source: photo for photo in photos}
        enhanced, messages = [], []
        for number, path in enumerate(files):
            name = Path(path).name
            if path in known:  # a photo already enhanced (an upload's path is its content's hash)
                enhanced.append(known[path])
                continue
            step(number)(0.0)
            try:
                enhanced.append(enhance_photo(path, enhancer, name, step(number), preview_side))
            except (CLIPLITError, ValueError) as err:  # the page says which photo, and the others go on
                messages.append(one_line_message(err))
            except (MemoryError, torch.OutOfMemoryError):
                messages.append(f'{name}: too large to enhance on this machine (out of memory)')
            else:
                continue
            gr.Warning(messages[-1])
        messages += [warning for photo in enhanced for warning in photo.warnings]
        status = f'{len(enhanced)} of {len(files)} photo{"s" if len(files) > 1 else ""} enhanced.' if files else ''
        status += ''.join(f'\n- {message}' for message in messages)
        gallery = [(photo.preview(strength), photo.name) for photo in enhanced]
        compare, light = views(enhanced, 0, strength)
        return enhanced, 0, gr.Gallery(gallery, visible=len(enhanced) > 1), compare, light, status, None

    def select(strength: float, photos: List, event: gr.SelectData):
        return (event.index, *views(photos, event.index, strength), None)

    def preview(strength: float, photos: List, index: int):
        """The comparison at ``strength``; a download made at another strength is taken off the page."""
        if not photos:
            return gr.skip(), gr.skip()
        return (photos[index].before, photos[index].preview(strength)), None

    def download(strength: float, photos: List, index: int, folder: Optional[str]):
        if not photos:
            raise gr.Error('Drop a photo first.')
        if folder:  # this person's previous download: Gradio has served its own copy
            shutil.rmtree(folder, ignore_errors=True)
        folder = tempfile.mkdtemp(dir=downloads.name)
        path = Path(folder) / output_names([photo.name for photo in photos])[index]
        try:
            photos[index].write(path, strength)
        except (CLIPLITError, ValueError) as err:
            raise gr.Error(one_line_message(err)) from None
        return str(path), folder

    with gr.Blocks(title='CLIP-LIT', delete_cache=(3600, 3600), analytics_enabled=False) as demo:
        photos, selected = gr.State([]), gr.State(0)
        folder = gr.State(None, delete_callback=lambda path: path and shutil.rmtree(path, ignore_errors=True))
        gr.Markdown(
            '## CLIP-LIT: backlit photo enhancement\n'
            'Drop one or several photos. The network runs once per photo; the strength slider then changes '
            'the result at once, and the download is the full-resolution PNG at that strength, with the '
            "photo's metadata."
        )
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                files = gr.File(
                    label='Photos', file_count='multiple', file_types=list(IMAGE_EXTENSIONS), elem_id='photos'
                )
                strength = gr.Slider(
                    *STRENGTHS[:2],
                    value=1.0,
                    step=STRENGTHS[2],
                    precision=2,  # the strength a person sets is the number cliplit-enhance --strength takes
                    label='Strength',
                    info="1: the model's result; 0: the photo as it is; above 1: brighter",
                    elem_id='strength',
                )
                status = gr.Markdown(elem_id='status')
                gallery = gr.Gallery(
                    label='Your photos (pick one)',
                    columns=4,
                    height=160,
                    allow_preview=False,
                    visible=False,
                    elem_id='gallery',
                )
                make = gr.Button('Full-resolution PNG', variant='primary', elem_id='make-download')
                result = gr.File(label='Download', interactive=False, height=110, elem_id='download')
            with gr.Column(scale=2):
                compare = gr.ImageSlider(
                    label='Before | after',
                    type='numpy',
                    format='jpeg',
                    interactive=False,
                    max_height=640,
                    elem_id='compare',
                )
                light = gr.Image(
                    label='Light map', type='numpy', format='jpeg', interactive=False, height=240, elem_id='light-map'
                )

        preview_options = dict(concurrency_id='preview', concurrency_limit=PREVIEW_CONCURRENCY, show_progress='hidden')
        strength.change(
            preview,
            [strength, photos, selected],
            [compare, result],
            api_name='preview',
            trigger_mode='always_last',
            **preview_options,
        )
        files.change(
            enhance,
            [files, strength, photos],
            [photos, selected, gallery, compare, light, status, result],
            api_name='enhance',
            concurrency_limit=1,  # one photo at a time through the network: the others queue
            show_progress_on=[compare],
        ).then(  # the strength may have moved while the network ran
            preview, [strength, photos, selected], [compare, result], api_visibility='private', **preview_options
        )
        gallery.select(
            select,
            [strength, photos],
            [selected, compare, light, result],
            api_visibility='private',
            concurrency_id='preview',
            concurrency_limit=PREVIEW_CONCURRENCY,
        )
        make.click(
            download,
            [strength, photos, selected, folder],
            [result, folder],
            api_name='download',
            concurrency_limit=1,  # downloads one at a time: full-resolution PNGs take memory and cores
        )
    return demo.queue(default_concurrency_limit=1)


def launch(demo, host: str = '127.0.0.1', port: int = 0) -> str:
    """Serve ``demo`` (from :func:`build_app`) in background threads on ``host``:``port`` and return its
    address; ``port`` 0 takes a free one (scripts and tests). Raises ``OSError`` where it cannot listen."""
    if port == 0:
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    demo.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True)
    return f'http://{host}:{port}/'


@exit_on_user_error
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if not 1 <= args.port <= 65535:
        raise UsageError(f'--port {args.port}: expected 1 to 65535')
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UsageError("cliplit-app needs Gradio: pip install 'cliplit_basicsr[app]'") from None
    from cliplit_basicsr.enhancer import CLIPLITEnhancer

    demo = build_app(CLIPLITEnhancer(args.ckpt, args.device, args.precision, args.tile, args.engine))
    try:
        launch(demo, args.host, args.port)
    except OSError:
        raise UsageError(f'cannot listen on {args.host}:{args.port} (in use? --port picks another)') from None
    print(serving_line(args.host, args.port), flush=True)
    demo.block_thread()  # until Ctrl-C, which closes the server
    return 0


if __name__ == '__main__':
    sys.exit(main())
