"""CLIP-LIT's enhancement network as a BasicSR model: checkpoint loading, the authors' inference, metrics.

``basicsr.test`` (and validation during training) runs it; the training model ``CLIPLITModel``
subclasses it. Everything not specific to CLIP-LIT (``feed_data``, visuals, logging of metric values) is
BasicSR's ``SRModel``.
"""

import functools
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from os import path as osp
from typing import Dict, Optional

import numpy as np
import torch
import torch.distributed as dist
from basicsr.archs import build_network
from basicsr.metrics import calculate_metric
from basicsr.models.base_model import BaseModel
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger, tensor2img
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import MODEL_REGISTRY
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from cliplit_basicsr.atomic_io import atomic_torch_save
from cliplit_basicsr.checkpoint import load_checkpoint, resolve_checkpoint
from cliplit_basicsr.engine import enhance_tensor
from cliplit_basicsr.errors import OptionError
from cliplit_basicsr.image_io import write_png
from cliplit_basicsr.metrics import needs_reference
from cliplit_basicsr.network import CLIPLITNet

from .validation_sets import DecodedValidationSets

# How long the other ranks wait for rank 0's validation: longer than any validation, unlike the process
# group's own timeout (NCCL: 10 minutes by default), which a full-resolution validation set can outlast.
VALIDATION_WAIT = timedelta(hours=24)
_validation_group = None
# BasicSR's numpy metrics and their tensor versions (same formulas, float64; PSNR's adds 1e-8 to the MSE)
DEVICE_METRICS = {'calculate_psnr': 'calculate_psnr_pt', 'calculate_ssim': 'calculate_ssim_pt'}


@MODEL_REGISTRY.register()
class CLIPLITEvalModel(SRModel):
    """Runs CLIP-LIT's light-map network on ``lq`` (optional ``gt``) and evaluates BasicSR metrics.

    ``path.pretrain_network_g``: a checkpoint (plain state dict, ``module.``-prefixed, or BasicSR's
    ``params`` form) or ``official``, the authors' final model, which is the default when testing.
    ``test()`` is the authors' inference whatever the padding of ``network_g``: the current weights in the
    reflect-padding variant, at full resolution, ``clamp(I / L, 0, 1)``.
    """

    def __init__(self, opt: dict):
        BaseModel.__init__(self, opt)  # SRModel's own __init__ would load with BasicSR's loader
        self.net_g = self.model_to_device(self.build_network_g(opt['network_g']))
        if not isinstance(self.get_bare_model(self.net_g), CLIPLITNet):
            raise OptionError(f'network_g: {type(self).__name__} needs type CLIPLITNet, got {opt["network_g"]["type"]}')
        self.print_network(self.net_g)
        load_path = opt['path'].get('pretrain_network_g', None if self.is_train else 'official')
        if load_path is not None:
            self.load_network_g(load_path)
        self._inference_net: Optional[CLIPLITNet] = None
        self._validation_sets = DecodedValidationSets()
        if self.opt['dist']:
            validation_group()  # by every rank at once, before rank 0 can be busy validating
        if self.is_train:
            self.init_training_settings()

    def model_to_device(self, net: nn.Module) -> nn.Module:
        """BaseModel's, except in a distributed run: DDP without device ids on a CPU (BasicSR asks for the
        current CUDA device), and without broadcasting buffers before each forward, as CLIP-LIT's buffers are
        constants (a broadcast would also invalidate what is cached from them, such as the prompt pair's
        pooled length, and read it back every step)."""
        if not self.opt['dist']:
            return super().model_to_device(net)
        device_ids = None if self.device.type == 'cpu' else [torch.cuda.current_device()]
        return DistributedDataParallel(
            net.to(self.device),
            device_ids=device_ids,
            find_unused_parameters=self.opt.get('find_unused_parameters', False),
            broadcast_buffers=False,
        )

    def build_network_g(self, network_opt: dict) -> nn.Module:
        """The bare ``network_g`` before it is moved to the device (and wrapped in DDP)."""
        return build_network(network_opt)

    def load_network_g(self, load_path: str) -> None:
        """Load ``load_path`` (or ``official``) into ``net_g``, strictly."""
        path = resolve_checkpoint(load_path)
        get_root_logger().info(f'Loading {type(self.get_bare_model(self.net_g)).__name__} from {path}')
        load_checkpoint(self.get_bare_model(self.net_g), path)

    @master_only
    def save_network(self, net, net_label: str, current_iter: int, param_key: str = 'params') -> None:
        """BasicSR's ``save_network`` (``models/<label>_<iter>.pth``, ``latest`` for -1), written atomically:
        a process killed while saving leaves the previous file whole. One network, one key: what this
        package saves."""
        label = 'latest' if current_iter == -1 else current_iter
        path = osp.join(self.opt['path']['models'], f'{net_label}_{label}.pth')
        state = {
            k[len('module.') :] if k.startswith('module.') else k: v.cpu()
            for k, v in self.get_bare_model(net).state_dict().items()
        }
        atomic_torch_save({param_key: state}, path)

    def init_training_settings(self) -> None:
        raise OptionError(f'model type {type(self).__name__} only evaluates; train with type CLIPLITModel')

    def inference_network(self) -> CLIPLITNet:
        """``net_g``'s current weights in the reflect-padding variant the authors infer with."""
        net = self.get_bare_model(self.net_g)
        if net.padding == 'reflect':
            return net
        if self._inference_net is None:
            self._inference_net = CLIPLITNet(padding='reflect').to(self.device)
        self._inference_net.load_state_dict(net.state_dict())
        return self._inference_net

    def test(self) -> None:
        """Enhance ``self.lq`` into ``self.output`` as the authors' test script does (exact, tiled)."""
        self.output = enhance_tensor(self.inference_network(), self.lq)

    def _visualization_path(self, dataset_name: str, img_name: str, current_iter) -> str:
        folder = self.opt['path']['visualization']
        if self.opt['is_train']:
            return osp.join(folder, img_name, f'{img_name}_{current_iter}.png')
        suffix = self.opt['val'].get('suffix') or self.opt['name']
        return osp.join(folder, dataset_name, f'{img_name}_{suffix}.png')

    def dist_validation(self, dataloader, current_iter, tb_logger, save_img: bool) -> None:
        """Rank 0 validates (BasicSR's way) while the other ranks wait for it at a barrier of a gloo group
        with a timeout of ``VALIDATION_WAIT``. In BasicSR's own ``dist_validation`` they go straight on to
        their next collective, which fails once the validation outlasts the process group's timeout."""
        if self.opt['rank'] == 0:
            self.nondist_validation(dataloader, current_iter, tb_logger, save_img)
        dist.barrier(group=validation_group())

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img: bool) -> None:
        """SRModel's validation, except that full-reference metrics are skipped on images without ``gt``,
        and that during training the sets are decoded once and PSNR and SSIM run on the device.

        So no-reference metrics (NIQE, MUSIQ) also run on sets without ground truth (BasicSR's
        ``SingleImageDataset``); a metric is averaged over the images it could be computed on. While
        training, each set is decoded once (:mod:`.validation_sets`), ``calculate_psnr`` /
        ``calculate_ssim`` are computed by BasicSR's tensor versions on the 8-bit output
        (:data:`DEVICE_METRICS`), images are written by a background thread, and nothing is read back per
        image but what a host metric or a written image needs; ``basicsr.test`` runs BasicSR's own numpy
        metrics, the paper's tables.
        """
        dataset_name = dataloader.dataset.opt['name']
        metric_opts: Dict[str, dict] = self.opt['val'].get('metrics') or {}
        if metric_opts:
            self._initialize_best_metric_results(dataset_name)
        on_device = {
            name: DEVICE_METRICS[opt['type']]
            for name, opt in metric_opts.items()
            if self.opt['is_train'] and opt['type'] in DEVICE_METRICS
        }
        totals, counts = defaultdict(float), defaultdict(int)
        pbar = tqdm(total=len(dataloader), unit='image') if self.opt['val'].get('pbar', False) else None

        with ThreadPoolExecutor(1) as writer:
            written = []
            batches = self._validation_sets.batches(dataset_name, dataloader) if self.opt['is_train'] else dataloader
            for val_data in batches:
                img_name = osp.splitext(osp.basename(val_data['lq_path'][0]))[0]
                self.feed_data(val_data)
                self.test()
                result = torch.round(self.output.detach().clamp(0, 1) * 255) / 255  # tensor2img's 8-bit levels
                gt = getattr(self, 'gt', None)
                del self.lq, self.output
                if gt is not None:
                    del self.gt  # the next set may have no ground truth
                host = functools.cache(functools.partial(_to_host, result, gt))  # copied once, when first needed
                if save_img:
                    path = self._visualization_path(dataset_name, img_name, current_iter)
                    written.append(writer.submit(_write_visual, path, host()['img']))
                for name, metric_opt in metric_opts.items():
                    if gt is None and needs_reference(metric_opt['type']):
                        continue
                    if name in on_device:
                        value = calculate_metric({'img': result, 'img2': gt}, dict(metric_opt, type=on_device[name]))
                        totals[name] += value.sum()  # a tensor: read once, after the loop
                    else:
                        totals[name] += calculate_metric(host(), metric_opt)
                    counts[name] += 1
                if pbar is not None:
                    pbar.update(1)
                    pbar.set_description(f'Test {img_name}')
            for future in written:
                future.result()  # a failed write is raised here, not lost in the thread
        if pbar is not None:
            pbar.close()

        skipped = [name for name in metric_opts if not counts[name]]
        if skipped:
            get_root_logger().warning(f'{dataset_name} has no ground truth: skipped {", ".join(skipped)}')
        self.metric_results = {name: float(totals[name]) / counts[name] for name in metric_opts if counts[name]}
        for name, value in self.metric_results.items():
            self._update_best_metric_result(dataset_name, name, value, current_iter)
        if self.metric_results:
            self._log_validation_metric_values(current_iter, dataset_name, tb_logger)


def _to_host(result: torch.Tensor, gt: Optional[torch.Tensor]) -> Dict[str, np.ndarray]:
    """An image's output (and ground truth) as BasicSR's numpy metrics and writers take them."""
    return {key: tensor2img([t]) for key, t in (('img', result), ('img2', gt)) if t is not None}


def _write_visual(path: str, image: np.ndarray) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    write_png(path, image)


def validation_group() -> dist.ProcessGroup:
    """The gloo group the ranks wait in for validation (made once, by every rank at once)."""
    global _validation_group
    if _validation_group is None:
        _validation_group = dist.new_group(backend='gloo', timeout=VALIDATION_WAIT)
    return _validation_group
