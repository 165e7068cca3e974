"""Install cliplit_basicsr, its start-up hook and its console scripts."""
import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HOOK_PTH = 'zz_cliplit_basicsr_hook.pth'  # sorts after __editable__*.pth, so the package is importable


class BuildPyWithHook(build_py):
    """Also place the hook's ``.pth`` at the root of site-packages (or of the editable wheel)."""

    def run(self):
        super().run()
        here = os.path.dirname(os.path.abspath(__file__))
        shutil.copy(os.path.join(here, HOOK_PTH), os.path.join(self.build_lib, HOOK_PTH))

    def get_outputs(self, include_bytecode=1):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, HOOK_PTH)]




def read_readme():
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'README.md'), encoding='utf-8') as f:
        return f.read()


setup(
    name='cliplit_basicsr',
    version='0.1.0',
    description='CLIP-LIT backlit image enhancement (Liang et al., ICCV 2023) as a BasicSR plugin',
    long_description=read_readme(),
    long_description_content_type='text/markdown',
    license='S-Lab License 1.0 (authors\' checkpoints); see README',
    python_requires='>=3.9',
    packages=find_packages(include=['cliplit_basicsr', 'cliplit_basicsr.*']),
    py_modules=['_cliplit_basicsr_hook'],
    package_data={'cliplit_basicsr': ['weights/*.pth', 'weights/*.md', 'samples/*.jpg']},
    include_package_data=True,
    install_requires=[
        'torch', 'torchvision', 'basicsr==1.4.2', 'open_clip_torch>=3,<4', 'opencv-python', 'lmdb',
        'pyyaml', 'pyiqa', 'tqdm', 'numpy'
    ],
    extras_require={'test': ['pytest', 'pytest-timeout']},
    entry_points={
        'console_scripts': [
            'cliplit-enhance=cliplit_basicsr.enhance:main',
            'cliplit-train=cliplit_basicsr.train:main',
            'cliplit-test=cliplit_basicsr.test:main',
        ]
    },
    cmdclass={'build_py': BuildPyWithHook},
)
