"""Installing the plugin changes nothing for other BasicSR software in the same environment.

Other plugins can register BasicSR's common names, another model trains to the same weights with and
without the plugin (and without any environment the plugin would add), only the package is importable
from the repository, and OpenCV keeps its GUI.
"""

import json
import re
import textwrap
from pathlib import Path

import pytest
import torch
from support import REPO_ROOT, run_python, tiny_sr_options, write_options, write_sr_pairs


@pytest.mark.slow
def test_registered_names_leave_common_names_free(tmp_path):
    """Another plugin registering BasicSR-wide names (as many BasicSR-based repositories do) imports beside
    this one; every name this package registers carries its own prefix."""
    code = textwrap.dedent("""
        import basicsr  # the start-up hook imports the plugin right after
        from basicsr.utils import registry as r
        from torch import nn

        def calculate_lpips(img, img2, **kwargs): return 0.0
        def calculate_musiq(img, **kwargs): return 0.0
        r.METRIC_REGISTRY.register(calculate_lpips)
        r.METRIC_REGISTRY.register(calculate_musiq)
        for name in ('PromptRankingLoss', 'PromptInitLoss', 'CLIPEnhanceLoss', 'CLIPIdentityLoss'):
            r.LOSS_REGISTRY.register(type(name, (nn.Module,), {}))
        registries = (r.ARCH_REGISTRY, r.DATASET_REGISTRY, r.LOSS_REGISTRY, r.METRIC_REGISTRY, r.MODEL_REGISTRY)
        ours = [name for registry in registries for name, obj in registry._obj_map.items()
                if getattr(obj, '__module__', '').startswith('cliplit_basicsr')]
        print(sorted(ours))
    """)
    result = run_python(['-c', code], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    names = eval(result.stdout.strip())
    assert names and all(name.startswith(('CLIPLIT', 'calculate_cliplit_')) for name in names), names


ENV_PROBE = """
import json, os
with open(os.environ['ENV_PROBE'], 'a') as probe:
    probe.write(json.dumps([os.getpid(), {k: v for k, v in os.environ.items() if k.startswith('MALLOC_')}]) + '\\n')
"""
WITHOUT_PLUGIN = """
import importlib.machinery, importlib.util, os, sys
import _cliplit_basicsr_hook as hook
# BasicSR 1.4.2 cannot import on current torchvision without the module the hook provides; provide it alone
spec = importlib.machinery.ModuleSpec(hook._SHIM_NAME, hook._FunctionalTensorLoader())
sys.modules[hook._SHIM_NAME] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sys.modules[hook._SHIM_NAME])
import basicsr.train
assert 'cliplit_basicsr' not in sys.modules
basicsr.train.train_pipeline(os.getcwd())
"""


def _train_sr(workdir: Path, options: Path, with_plugin: bool) -> dict:
    """Train the tiny SRModel with BasicSR's own script (with the plugin's hook) or without the plugin;
    returns the final weights and the MALLOC_* variables each started interpreter saw."""
    workdir.mkdir()
    probe_dir = workdir / 'site'
    probe_dir.mkdir()
    (probe_dir / 'sitecustomize.py').write_text(ENV_PROBE)  # runs at every interpreter start
    env = {'PYTHONPATH': str(probe_dir), 'ENV_PROBE': str(workdir / 'env.jsonl'), 'CUDA_VISIBLE_DEVICES': ''}
    if with_plugin:
        command = ['-m', 'basicsr.train', '-opt', str(options)]
    else:
        command = ['-c', WITHOUT_PLUGIN, '-opt', str(options)]
        env['CLIPLIT_BASICSR_NO_HOOK'] = '1'
    result = run_python(command, cwd=workdir, env_update=env)
    assert result.returncode == 0, result.stderr[-3000:]
    weights = torch.load(workdir / 'experiments' / 'tiny_sr' / 'models' / 'net_g_latest.pth', weights_only=True)
    starts = [json.loads(line) for line in (workdir / 'env.jsonl').read_text().splitlines()]
    return {'weights': weights['params'], 'starts': starts}


@pytest.mark.slow
def test_another_model_trains_to_the_same_weights_with_and_without_the_plugin(tmp_path):
    options = tiny_sr_options(write_sr_pairs(tmp_path / 'data'), num_worker_per_gpu=2, persistent_workers=True)
    options['train']['total_iter'] = 4  # two epochs: persistent workers carry over
    option_file = write_options(tmp_path / 'tiny_sr.yml', options)
    plugin = _train_sr(tmp_path / 'with_plugin', option_file, with_plugin=True)
    plain = _train_sr(tmp_path / 'without_plugin', option_file, with_plugin=False)
    assert plugin['weights'].keys() == plain['weights'].keys()
    for key, value in plain['weights'].items():
        assert torch.equal(plugin['weights'][key], value), key
    assert [env for _, env in plugin['starts']] == [{}], 'the plugin restarted or changed the environment'


@pytest.mark.slow
def test_only_the_package_is_importable_from_the_repository(tmp_path):
    names = sorted(p.stem for p in REPO_ROOT.iterdir() if not p.name.startswith(('.', '_')) and p.name != 'build')
    code = textwrap.dedent(f"""
        import importlib.util, json
        found = {{}}
        for name in {names!r}:
            spec = importlib.util.find_spec(name)
            locations = list(spec.submodule_search_locations or []) if spec else []
            found[name] = [str(p) for p in ([spec.origin] if spec and spec.origin else []) + locations]
        print(json.dumps(found))
    """)
    result = run_python(['-c', code], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    from_repo = {
        name
        for name, paths in json.loads(result.stdout).items()
        if any(Path(p).resolve().is_relative_to(REPO_ROOT) for p in paths)
    }
    assert from_repo == {'cliplit_basicsr'}


@pytest.mark.slow
def test_opencv_keeps_its_gui(tmp_path):
    """pyiqa pulls opencv-python-headless, whose cv2 would replace BasicSR's opencv-python (no GUI for any
    project of the environment); the README's install leaves one OpenCV with a GUI backend."""
    result = run_python(['-c', 'import cv2; print(cv2.getBuildInformation())'], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    backend = re.search(r'^\s*GUI:\s*(\S+)', result.stdout, re.MULTILINE)
    assert backend is not None and backend.group(1) != 'NONE', 'cv2 has no GUI backend'
