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
    assert result.stdout.splitlines() == ['False []', "['_ShimFinder']"]


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
    result = run_python(['-m', module, '-opt', 'missing.yml'], cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == 'error: cannot read option file missing.yml: No such file or directory'
