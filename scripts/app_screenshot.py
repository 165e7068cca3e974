"""The README's screenshot of cliplit-app: a bundled sample enhanced, at a strength, ready to download.

    python scripts/app_screenshot.py [--photo PATH] [--strength 0.8] [-o docs/images/cliplit_app.png]

Needs Gradio, Playwright and Chromium (``scripts/install.sh``); enhances on the CPU (about 15 s for a sample).
"""

import argparse
import shutil
from pathlib import Path

import cliplit_basicsr
from cliplit_basicsr.app import STRENGTHS, build_app, launch
from cliplit_basicsr.atomic_io import atomic_write_path
from cliplit_basicsr.enhancer import CLIPLITEnhancer

REPO = Path(__file__).resolve().parents[1]
SAMPLE = Path(cliplit_basicsr.__file__).parent / 'samples' / '110_51093502029_o.jpg'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--photo', type=Path, default=SAMPLE)
    parser.add_argument('--strength', type=float, default=0.8)
    parser.add_argument('-o', '--output', type=Path, default=REPO / 'docs' / 'images' / 'cliplit_app.png')
    args = parser.parse_args()
    from playwright.sync_api import expect, sync_playwright

    demo = build_app(CLIPLITEnhancer('official', 'cpu'))
    url = launch(demo)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which('chromium'), headless=True)
            page = browser.new_page(viewport={'width': 1280, 'height': 860})
            page.goto(url)
            page.locator('#photos input[type=file]').set_input_files(args.photo)
            expect(page.locator('#status')).to_contain_text('enhanced', timeout=300_000)
            page.locator('#strength input[type=range]').focus()
            for _ in range(round((1.0 - args.strength) / STRENGTHS[2])):
                page.keyboard.press('ArrowLeft')
            page.wait_for_timeout(1500)  # the preview at that strength arrives
            page.locator('#make-download').click()
            expect(page.locator('#download a').first).to_be_visible(timeout=60_000)
            args.output.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write_path(args.output) as temporary:
                page.screenshot(path=temporary, type='png', full_page=True)
            browser.close()
    finally:
        demo.close()
    print(f'wrote {args.output}')


if __name__ == '__main__':
    main()
