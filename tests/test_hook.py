"""The start-up hook: what the literal ``python -m basicsr.train`` / ``basicsr.test`` need, and nothing else.

Tests that start a fresh interpreter need the package installed (README command 1): the hook is a
``.pth`` file in site-packages. They run from a temporary directory so that the repository is not on
``sys.path`` by accident.
"""

import textwrap

import pytest
from support import run_python

import _cliplit_basicsr_hook as hook


@pytest.mark.slow
def test_importing_basicsr_first_registers_the_plugin(tmp_path):
    code = textwrap.dedent("""
        import sys
        import basicsr
        from basicsr.utils.registry import ARCH_REGISTRY
        assert 'cliplit_basicsr' in sys.modules, 'plugin not imported after basicsr'
        assert any(o.__module__.startswith('cliplit_basicsr.') for o in ARCH_REGISTRY._obj_map.values())
        print('plugin registered')
    """)
    result = run_python(['-c', code], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert 'plugin registered' in result.stdout


REGISTERED = """
from basicsr.utils import registry
names = [n for r in (registry.ARCH_REGISTRY, registry.MODEL_REGISTRY, registry.LOSS_REGISTRY) for n in r._obj_map]
print('registered' if {'CLIPLITNet', 'CLIPLITModel', 'CLIPLITIdentityLoss'} <= set(names) else 'missing')
"""


@pytest.mark.slow
@pytest.mark.parametrize('hook', ['on', 'off'])
@pytest.mark.parametrize('first', ['plugin', 'basicsr'])
def test_the_plugin_registers_whichever_is_imported_first(tmp_path, hook, first):
    """With or without the start-up hook: the moment BasicSR is imported, or at once if it already is."""
    imports = {
        'plugin': 'import cliplit_basicsr\nimport basicsr\n',
        # without the hook nothing provides BasicSR's torchvision module: the test aliases it by hand
        'basicsr': 'import sys, torchvision.transforms._functional_tensor as f\n'
        "sys.modules.setdefault('torchvision.transforms.functional_tensor', f)\n"
        'import basicsr\nimport cliplit_basicsr\n',
    }
    env = {'CLIPLIT_BASICSR_NO_HOOK': '1'} if hook == 'off' else {}
    result = run_python(['-c', imports[first] + REGISTERED], cwd=tmp_path, env_update=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ['registered']


@pytest.mark.slow
@pytest.mark.parametrize(
    'module', ['cliplit_basicsr', 'cliplit_basicsr.cli', 'cliplit_basicsr.enhancer', 'cliplit_basicsr.photo_folder']
)
def test_enhancing_imports_neither_basicsr_nor_open_clip(tmp_path, module):
    code = f'import sys, {module}\nprint(sorted(m for m in ("basicsr", "open_clip", "torch") if m in sys.modules))'
    result = run_python(['-c', code], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == ('[]' if module in ('cliplit_basicsr', 'cliplit_basicsr.cli') else "['torch']")


@pytest.mark.slow
def test_importing_basicsr_leaves_warnings_filters_and_basicsr_functions_alone(tmp_path):
    code = textwrap.dedent("""
        import warnings
        before = list(warnings.filters)
        import basicsr, basicsr.train
        from basicsr.models.base_model import BaseModel
        from basicsr.utils import options
        assert 'cliplit_basicsr.registration' in __import__('sys').modules
        # torch, numpy, scipy and sympy add filters of their own as they load; none may mention BasicSR
        added = [f for f in warnings.filters if f not in before and f[1] is not None]
        assert not [f for f in added if 'basicsr' in f[1].pattern or 'sys.modules' in f[1].pattern], added
        patched = [f for f in (options.parse_options, options.init_dist, basicsr.train.load_resume_state,
                               basicsr.train.create_train_val_dataloader, BaseModel.model_to_device)
                   if not f.__module__.startswith('basicsr.')]
        print(patched)
    """)
    result = run_python(['-c', code], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == '[]'


@pytest.mark.slow
def test_interpreter_start_runs_the_hook_without_importing_torch(tmp_path):
    result = run_python(['-X', 'importtime', '-c', 'pass'], cwd=tmp_path)
    imported = {line.rsplit('|', 1)[-1].strip() for line in result.stderr.splitlines() if '|' in line}
    assert '_cliplit_basicsr_hook' in imported, 'the .pth hook is not installed in site-packages'
    heavy = {name for name in imported if name.split('.')[0] in {'torch', 'numpy', 'basicsr', 'cliplit_basicsr'}}
    assert not heavy, f'interpreter start imports {sorted(heavy)}'


@pytest.mark.slow
def test_disabled_hook_runs_nothing_at_start_up(tmp_path):
    code = textwrap.dedent("""
        import sys
        print('_cliplit_basicsr_hook' in sys.modules, [type(f).__name__ for f in sys.meta_path if 'cliplit' in
              type(f).__module__])
        import cliplit_basicsr  # the package still imports: it supplies the torchvision module itself
        print(sorted(type(f).__name__ for f in sys.meta_path if type(f).__module__ == '_cliplit_basicsr_hook'))
    """)
    result = run_python(['-c', code], cwd=tmp_path, env_update={'CLIPLIT_BASICSR_NO_HOOK': '1'})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ['False []', "['_PluginFinder']"]


@pytest.mark.slow
def test_disabled_hook_leaves_basicsr_commands_to_basicsr(tmp_path):
    result = run_python(
        ['-m', 'basicsr.train', '-opt', 'x.yml'], cwd=tmp_path, env_update={'CLIPLIT_BASICSR_NO_HOOK': '1'}
    )
    assert result.returncode != 0
    assert 'functional_tensor' in result.stderr  # BasicSR 1.4.2's own import failure, no hand-over


def test_functional_tensor_shim_is_a_new_module_with_the_private_modules_names():
    import torchvision.transforms._functional_tensor as private
    import torchvision.transforms.functional_tensor as shim

    assert shim is not private
    assert shim.__name__ == 'torchvision.transforms.functional_tensor'
    assert shim.rgb_to_grayscale is private.rgb_to_grayscale


@pytest.mark.parametrize(
    'argv, expected',
    [
        (['python', '-m', 'basicsr.train', '-opt', 'x.yml'], 'basicsr.train'),
        (['python', '-u', '-m', 'basicsr.train'], 'basicsr.train'),
        (['python', '-mbasicsr.test'], 'basicsr.test'),
        (['python', '-Bum', 'basicsr.train'], 'basicsr.train'),
        (['python', '-X', 'importtime', '-W', 'ignore', '-m', 'basicsr.train'], 'basicsr.train'),
        (['python', '--check-hash-based-pycs', 'always', '-m', 'basicsr.test'], 'basicsr.test'),
        (['python', 'train.py', '-m', 'basicsr.train'], None),
        (['python', '-c', 'pass', '-m', 'basicsr.train'], None),
        (['python', '-X', '-m'], None),
        (['python'], None),
    ],
)
def test_run_module_name_reads_the_interpreter_arguments(argv, expected):
    assert hook.run_module_name(argv) == expected


@pytest.mark.parametrize('value, expected', [(None, True), ('', True), ('0', True), ('1', False), ('yes', False)])
def test_the_disable_variable(value, expected):
    assert hook.enabled({} if value is None else {hook.DISABLE_VARIABLE: value}) is expected


@pytest.mark.slow
@pytest.mark.parametrize('module', ['basicsr.train', 'basicsr.test'])  # handed over to cliplit_basicsr's
def test_basicsr_commands_are_handed_over_and_report_a_missing_option_file_in_one_line(tmp_path, module):
    result = run_python(['-m', module, '-opt', 'missing.yml'], cwd=tmp_path, env_update={'PYTHONWARNINGS': ''})
    assert result.returncode == 1
    # one line: not even runpy's warning that basicsr/__init__ imported the module it runs (nothing runs twice)
    assert result.stderr.strip() == 'error: cannot read option file missing.yml: No such file or directory'
