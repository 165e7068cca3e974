"""Install cliplit_basicsr, its start-up hook and its console scripts."""

import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
HOOK_PTH = 'zz_cliplit_basicsr_hook.pth'  # sorts after __editable__*.pth, so the hook module is importable


class BuildPyWithHook(build_py):
    """Also install the hook's ``.pth`` at the root of site-packages.

    A wheel's root is site-packages, so the file goes to ``build_lib`` for a normal build, and straight
    into the editable wheel's root (``install_lib`` of its ``install`` command) for ``pip install -e``,
    whose build folder is not packed. Either way it is in the wheel's RECORD, so uninstall removes it.
    (``data_files`` would put it under ``<prefix>/`` where Python never reads ``.pth`` files.)
    """

    def run(self):
        super().run()
        target_dir = self.get_finalized_command('install').install_lib if self.editable_mode else self.build_lib
        self.mkpath(target_dir)
        self.copy_file(os.path.join(HERE, HOOK_PTH), os.path.join(target_dir, HOOK_PTH))

    def get_outputs(self, include_bytecode=1):
        outputs = super().get_outputs(include_bytecode)
        return outputs if self.editable_mode else outputs + [os.path.join(self.build_lib, HOOK_PTH)]


def read_file(name):
    with open(os.path.join(HERE, name), encoding='utf-8') as f:
        return f.read()


def read_version():
    namespace = {}
    exec(read_file(os.path.join('cliplit_basicsr', 'version.py')), namespace)
    return namespace['__version__']


setup(
    name='cliplit_basicsr',
    version=read_version(),
    description='CLIP-LIT backlit image enhancement (Liang et al., ICCV 2023) as a BasicSR plugin',
    long_description=read_file('README.md'),
    long_description_content_type='text/markdown',
    license="S-Lab License 1.0 (authors' checkpoints); see README",
    python_requires='>=3.10',  # the hook reads sys.orig_argv
    packages=find_packages(include=['cliplit_basicsr', 'cliplit_basicsr.*']),
    py_modules=['_cliplit_basicsr_hook'],
    package_data={'cliplit_basicsr': ['weights/*.pth', 'weights/*.md', 'samples/*.jpg']},
    include_package_data=True,
    install_requires=[
        'torch',
        'torchvision',
        'basicsr==1.4.2',
        'open_clip_torch>=3,<4',
        'opencv-python',
        'lmdb',
        'pyyaml',
        'pyiqa',
        'pillow-heif',
        'av>=18,<19',  # the display-matrix and colour API of PyAV 18
        'tqdm',
        'numpy',
    ],
    extras_require={
        'export': ['onnx>=1.16', 'onnxscript', 'onnxruntime'],
        'app': ['gradio>=6,<7'],
        'test': [
            'pytest',
            'pytest-timeout',
            'psutil',
            'ruff==0.17.6',
            'onnx>=1.16',
            'onnxscript',
            'onnxruntime',
            'playwright',  # drives the system's Chromium in the web app's test (no browser download)
        ],
        'dev': ['pre-commit'],
    },
    entry_points={
        'console_scripts': [
            'cliplit-enhance=cliplit_basicsr.cli:main',
            'cliplit-train=cliplit_basicsr.train:main',
            'cliplit-test=cliplit_basicsr.test:main',
            'cliplit-export=cliplit_basicsr.export:main',
            'cliplit-app=cliplit_basicsr.app:main',
        ]
    },
    cmdclass={'build_py': BuildPyWithHook},
)
