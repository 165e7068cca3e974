"""Benchmark ``cliplit-app`` through its HTTP API, as the page uses it: the strength slider's update time for a
12 MP photo, the time to the first result for a 3 MP photo, and two people dropping a 3 MP photo at once.

    python scripts/bench_app.py [--device cpu] [--moves 10]

The app runs in this process on a free local port; ``gradio_client`` plays the browser (it uploads the photo and
downloads every image the page would show). The 12 MP photo is a bundled sample upscaled to 4000x3000. The
slider's time is the median over ``--moves`` strengths of one ``/preview`` call (compute, encode, transfer),
with the session's compute alone beside it (on a made-up light map: the arithmetic is the same). Prints a
markdown table for docs/benchmarks.md.
"""

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')

from cliplit_basicsr.app import build_app, launch  # noqa: E402
from cliplit_basicsr.enhancer import CLIPLITEnhancer  # noqa: E402
from cliplit_basicsr.image_io import read_image  # noqa: E402
from cliplit_basicsr.photo_metadata import Metadata  # noqa: E402
from cliplit_basicsr.photo_session import EnhancedPhoto  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1] / 'cliplit_basicsr' / 'samples'
PHOTO_3MP = SAMPLES / '110_51093502029_o.jpg'  # 2048x1536
OTHER_3MP = SAMPLES / '111_51093504404_o.jpg'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--moves', type=int, default=10)
    args = parser.parse_args()
    from gradio_client import Client, handle_file

    enhancer = CLIPLITEnhancer('official', args.device)
    runs, engine_run = [], enhancer.engine.run

    def timed_run(*run_args, **kwargs):  # when the network runs, to show the queue
        started = time.perf_counter()
        engine_run(*run_args, **kwargs)
        runs.append((started, time.perf_counter()))

    enhancer.engine.run = timed_run
    demo = build_app(enhancer)
    url, rows = launch(demo), []
    with tempfile.TemporaryDirectory() as folder:
        photo_12mp = Path(folder) / 'photo_12mp.jpg'
        cv2.imwrite(str(photo_12mp), cv2.resize(read_image(PHOTO_3MP), (4000, 3000), interpolation=cv2.INTER_CUBIC))

        client = Client(url, verbose=False)
        started = time.perf_counter()
        client.predict([handle_file(PHOTO_3MP)], 1.0, api_name='/enhance')
        rows.append(('time to the first result, 3 MP photo (upload to previews shown)', time.perf_counter() - started))

        client = Client(url, verbose=False)
        started = time.perf_counter()
        client.predict([handle_file(photo_12mp)], 1.0, api_name='/enhance')
        rows.append(('time to the first result, 12 MP photo', time.perf_counter() - started))
        strengths = [0.3 + 1.4 * i / max(1, args.moves - 1) for i in range(args.moves)]
        times = []
        for strength in strengths:
            started = time.perf_counter()
            client.predict(strength, api_name='/preview')
            times.append(time.perf_counter() - started)
        rows.append(
            (f'strength slider update, 12 MP photo (median of {args.moves} moves, HTTP)', statistics.median(times))
        )
        pixels = read_image(photo_12mp)  # the same arithmetic whatever L's values: a made-up light map will do
        light = np.random.default_rng(0).uniform(0.1, 1.0, pixels.shape[:2]).astype(np.float32)
        session = EnhancedPhoto('photo_12mp.jpg', str(photo_12mp), pixels, Metadata(), light)
        times = []
        for strength in strengths:
            started = time.perf_counter()
            session.preview(strength)
            times.append(time.perf_counter() - started)
        rows.append(('of which the preview computation (median)', statistics.median(times)))
        started = time.perf_counter()
        client.predict(0.7, api_name='/download')
        rows.append(('full-resolution PNG download, 12 MP photo', time.perf_counter() - started))

        people, spans, start = [Client(url, verbose=False) for _ in range(2)], [None, None], time.perf_counter()
        del runs[:]

        def drop(person: int, photo: Path) -> None:
            people[person].predict([handle_file(photo)], 1.0, api_name='/enhance')
            spans[person] = time.perf_counter() - start

        threads = [threading.Thread(target=drop, args=(i, p)) for i, p in enumerate((PHOTO_3MP, OTHER_3MP))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    demo.close()

    print(f'| measurement ({args.device}) | seconds |\n|---|---|')
    for name, seconds in rows:
        print(f'| {name} | {seconds:.2f} |')
    network = ', '.join(f'{a - start:.1f}-{b - start:.1f} s' for a, b in sorted(runs))
    print(f'| two people drop a 3 MP photo at once: both get their result, after | {spans[0]:.1f} and {spans[1]:.1f} |')
    print(f'\nnetwork runs of the two requests (one at a time, queued): {network}')


if __name__ == '__main__':
    main()
