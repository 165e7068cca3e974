"""Helpers shared by tests: fresh interpreters, option files, tiny models."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_python(args, cwd, env_update=None, timeout=300):
    """Run ``python ARGS`` in ``cwd`` offline, with the start-up hook on, and return the completed process."""
    env = dict(os.environ, HF_HUB_OFFLINE='1', PYTHONWARNINGS='ignore')
    env.pop('CLIPLIT_BASICSR_NO_HOOK', None)
    env.update(env_update or {})
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def write_options(path: Path, options: dict) -> Path:
    path.write_text(yaml.safe_dump(options, sort_keys=False), encoding='utf-8')
    return path


def tiny_sr_options(data: Path, **train_set) -> dict:
    """A BasicSR SRModel (MSRResNet) run small enough for a CPU test: 2 iterations, checkpoint every 2, on
    the 4 PNG pairs of :func:`write_sr_pairs`; ``train_set`` updates the train dataset's options."""
    return {
        'name': 'tiny_sr',
        'model_type': 'SRModel',
        'scale': 2,
        'num_gpu': 0,
        'manual_seed': 0,
        'datasets': {
            'train': {
                'name': 'tiny',
                'type': 'PairedImageDataset',
                'dataroot_gt': str(data / 'gt'),
                'dataroot_lq': str(data / 'lq'),
                'io_backend': {'type': 'disk'},
                'filename_tmpl': '{}',
                'gt_size': 16,
                'use_hflip': True,
                'use_rot': True,
                'num_worker_per_gpu': 0,
                'batch_size_per_gpu': 2,
                'dataset_enlarge_ratio': 1,
                'prefetch_mode': None,
                **train_set,
            }
        },
        'network_g': {
            'type': 'MSRResNet',
            'num_in_ch': 3,
            'num_out_ch': 3,
            'num_feat': 4,
            'num_block': 1,
            'upscale': 2,
        },
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {
            'ema_decay': 0,
            'optim_g': {'type': 'Adam', 'lr': 1e-3},
            'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
            'total_iter': 2,
            'warmup_iter': -1,
            'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
        },
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': False},
    }


def write_sr_pairs(root: Path) -> Path:
    """4 random 32x32 ground-truth PNGs in ``root/gt`` and 16x16 inputs in ``root/lq``; returns ``root``."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    for folder, size in (('gt', 32), ('lq', 16)):
        (root / folder).mkdir(parents=True)
        for index in range(4):
            cv2.imwrite(str(root / folder / f'{index}.png'), rng.integers(0, 256, (size, size, 3), np.uint8))
    return root


def tiny_vit(image_size: int = 32, act_layer=None, **options):
    """A small open_clip ViT (patch 8, width 32, 3 layers, 4 heads), seeded, in eval mode; QuickGELU as
    OpenAI's towers unless ``act_layer`` says otherwise."""
    import torch
    from open_clip.transformer import QuickGELU, VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(
        image_size=image_size,
        patch_size=8,
        width=32,
        layers=3,
        heads=4,
        mlp_ratio=4.0,
        output_dim=16,
        act_layer=act_layer or QuickGELU,
        **options,
    ).eval()
