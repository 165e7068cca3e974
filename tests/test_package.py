"""What importing the package does: once BasicSR is imported, its classes are in every BasicSR registry; and
enhancing loads nothing heavy."""

import textwrap

import pytest
from support import run_python

import cliplit_basicsr  # noqa: F401  (registers the plugin once BasicSR is imported)


def test_classes_are_in_every_basicsr_registry_once_basicsr_is_imported():
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

    for registry in (ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY):
        modules = {getattr(obj, '__module__', '') for obj in registry._obj_map.values()}
        assert any(m.startswith('cliplit_basicsr.') for m in modules), f'nothing registered in {registry._name}'


@pytest.mark.slow
def test_enhancement_does_not_import_open_clip(tmp_path):
    """open_clip and timm cost ~85 MB of resident memory and seconds of start-up; only CLIP users load them."""
    code = textwrap.dedent("""
        import sys
        import cliplit_basicsr
        from cliplit_basicsr.enhancer import CLIPLITEnhancer
        CLIPLITEnhancer('official', 'cpu').enhance(__import__('numpy').zeros((8, 8, 3), 'uint8'))
        print(sorted(m for m in ('open_clip', 'timm', 'transformers', 'pyiqa') if m in sys.modules))
        from cliplit_basicsr.clip import preprocess_images
        preprocess_images(__import__('torch').zeros(1, 3, 8, 8))
        print('open_clip' in sys.modules)
    """)
    result = run_python(['-c', code], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ['[]', 'True']


def test_the_names_users_choose_among_are_those_the_engines_take():
    from cliplit_basicsr import choices, engine

    assert tuple(engine.ENGINES) == choices.ENGINES
    assert all(choices.torch_dtype(name).is_floating_point for name in choices.PRECISIONS)
