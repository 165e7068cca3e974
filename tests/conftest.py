"""Shared test fixtures: where the authors' reference material lives, and how its absence is handled.

The reference folder (``../shared/reference`` beside the repository, or ``CLIPLIT_REFERENCE_DIR``) is not part
of the repository.
Where it is absent (a user's clone) the tests that need it skip with a one-line reason; CI sets
``CLIPLIT_REQUIRE_REFERENCE=1`` so that a missing folder fails instead of skipping.
"""

import os
from pathlib import Path

import pytest

os.environ.setdefault('HF_HUB_OFFLINE', '1')

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get('CLIPLIT_REFERENCE_DIR', REPO_ROOT.parent / 'shared' / 'reference'))


def _require(path: Path, what: str) -> Path:
    if path.exists():
        return path
    message = f'{what} not found at {path}'
    if os.environ.get('CLIPLIT_REQUIRE_REFERENCE'):
        pytest.fail(message + ' (CLIPLIT_REQUIRE_REFERENCE is set)', pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope='session')
def reference_dir() -> Path:
    """The authors' checkpoints, samples and expected outputs."""
    return _require(REFERENCE_DIR, 'reference folder')


@pytest.fixture(scope='session')
def parity_dir() -> Path:
    """The tiny-CLIP parity fixtures (``CLIPLIT_PARITY_DIR`` overrides the default location)."""
    return _require(Path(os.environ.get('CLIPLIT_PARITY_DIR', REFERENCE_DIR / 'parity')), 'parity fixtures')


@pytest.fixture(scope='session')
def parity_fixtures(parity_dir):
    """The values the authors' code computes with the tiny CLIP models (``fixtures.pt``)."""
    import torch

    return torch.load(parity_dir / 'fixtures.pt', weights_only=False)


@pytest.fixture(scope='session')
def vit_file(parity_dir) -> str:
    """The tiny ViT parity checkpoint, in OpenAI's format."""
    return str(parity_dir / 'tiny_vit_openai.pt')


@pytest.fixture(scope='session')
def small_images():
    """Two random RGB images of 40x56 in [0, 1], the same in every test."""
    import torch

    return torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(0))


@pytest.fixture(params=[True, False], ids=['accel', 'plain'])
def accel_mode(request):
    """Runs a test with the fast paths on and with them off (``cliplit_basicsr.accel``)."""
    from cliplit_basicsr.accel import accel

    with accel(request.param):
        yield request.param
