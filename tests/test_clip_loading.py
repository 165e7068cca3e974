"""Loading frozen CLIPs: the local file formats, sharing, freezing, missing weights, precision options."""

import time
import warnings

import open_clip
import pytest
import torch
from huggingface_hub import constants as hub_constants

from cliplit_basicsr.clip import (
    RN_MODEL,
    VIT_MODEL,
    CLIPLoadError,
    PrecisionError,
    image_features,
    load_clip,
    resnet_feature_maps,
)
from cliplit_basicsr.losses.cliplit_loss import CLIPLITEnhanceLoss, CLIPLITIdentityLoss

pytestmark = pytest.mark.usefixtures('accel_mode')  # every test with the fast paths on and off


def test_model_is_frozen_shared_and_unregistered(vit_file):
    model = load_clip(VIT_MODEL, vit_file)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    loss = CLIPLITEnhanceLoss(clip_pretrained=vit_file)
    assert loss.clip(torch.device('cpu')) is model
    assert not list(loss.parameters()) and not loss.state_dict()


def _save_torchscript_archive(state: dict, path) -> None:
    """A TorchScript archive whose state dict is ``state`` (the form of OpenAI's released ``.pt`` files)."""
    root = torch.nn.Module()
    for key, value in state.items():
        *parents, leaf = key.split('.')
        module = root
        for name in parents:
            if not hasattr(module, name):
                module.add_module(name, torch.nn.Module())
            module = getattr(module, name)
        module.register_buffer(leaf, value)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)  # torch.jit is deprecated, but OpenAI's files use it
        torch.jit.save(torch.jit.script(root), str(path))


def test_openai_formats_load_alike(vit_file, tmp_path, small_images):
    """OpenAI's TorchScript archive and a wrapped ``{'state_dict': {'module.…'}}`` give the same model."""
    reference = load_clip(VIT_MODEL, vit_file)
    archive = tmp_path / 'archive.pt'
    _save_torchscript_archive(torch.load(vit_file, weights_only=True), archive)
    wrapped = tmp_path / 'wrapped.pt'
    torch.save({'state_dict': {f'module.{k}': v for k, v in reference.state_dict().items()}}, wrapped)
    with torch.no_grad():
        expected = image_features(reference, small_images)
        for path in (archive, wrapped):
            assert torch.equal(image_features(load_clip(VIT_MODEL, str(path)), small_images), expected), path.name


def test_open_clip_safetensors_loads_into_the_named_config(parity_dir, tmp_path, small_images):
    import safetensors.torch as safetensors  # an open_clip dependency: always installed

    open_clip.add_model_config(parity_dir / 'tiny-rn-quickgelu.json')
    reference = load_clip(RN_MODEL, str(parity_dir / 'tiny_rn_openai.pt'))
    path = tmp_path / 'tiny_rn.safetensors'
    safetensors.save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    model = load_clip('tiny-rn-quickgelu', str(path))
    assert not model.training  # open_clip's create_model returns training mode; the RN has BatchNorm
    with torch.no_grad():
        for ours, theirs in zip(resnet_feature_maps(model, small_images), resnet_feature_maps(reference, small_images)):
            assert torch.equal(ours, theirs)


def _assert_one_line_error(excinfo, *needles):
    message = str(excinfo.value)
    assert '\n' not in message
    for needle in needles:
        assert needle in message, f'{needle!r} not in {message!r}'


@pytest.mark.parametrize('offline', [True, False])
def test_missing_weights_fail_fast_with_one_line(monkeypatch, tmp_path, offline):
    """Offline (or with the hub unreachable) and nothing cached: one line naming model, file and option."""
    monkeypatch.setattr(hub_constants, 'HF_HUB_CACHE', str(tmp_path))
    monkeypatch.setattr(hub_constants, 'HF_HUB_OFFLINE', offline)
    monkeypatch.setattr(hub_constants, 'ENDPOINT', 'http://127.0.0.1:9')  # nothing listens: refused at once
    for var in ('HTTPS_PROXY', 'https_proxy', 'ALL_PROXY', 'all_proxy'):
        monkeypatch.delenv(var, raising=False)
    start = time.monotonic()
    with pytest.raises(CLIPLoadError) as excinfo:
        CLIPLITEnhanceLoss()
    _assert_one_line_error(excinfo, VIT_MODEL, 'open_clip_pytorch_model.bin', 'clip_pretrained', str(tmp_path))
    with pytest.raises(CLIPLoadError) as excinfo:
        load_clip(RN_MODEL, 'openai')
    _assert_one_line_error(excinfo, RN_MODEL, 'resnet101_clip.openai')
    assert time.monotonic() - start < 20  # a hang guard only, not a speed test


def test_bad_pretrained_values(tmp_path, vit_file):
    with pytest.raises(CLIPLoadError) as excinfo:
        load_clip(VIT_MODEL, str(tmp_path / 'missing.pt'))
    _assert_one_line_error(excinfo, 'missing.pt', 'clip_pretrained')
    garbage = tmp_path / 'garbage.pt'
    garbage.write_text('not a checkpoint')
    with pytest.raises(CLIPLoadError) as excinfo:
        load_clip(VIT_MODEL, str(garbage))
    _assert_one_line_error(excinfo, 'garbage.pt', VIT_MODEL)
    with pytest.raises(CLIPLoadError) as excinfo:  # a ViT cannot give the identity loss its RN maps
        CLIPLITIdentityLoss(clip_pretrained=vit_file)(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
    _assert_one_line_error(excinfo, 'ModifiedResNet')


def test_amp_options(vit_file, small_images):
    with pytest.raises(PrecisionError):
        CLIPLITEnhanceLoss(clip_pretrained=vit_file, amp='fp8')
    with pytest.raises(PrecisionError):
        CLIPLITEnhanceLoss(clip_pretrained=vit_file, amp='fp16')(small_images, torch.randn(2, 64))
    text = torch.randn(2, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fp32 = CLIPLITEnhanceLoss(clip_pretrained=vit_file)(small_images, text)
        bf16 = CLIPLITEnhanceLoss(clip_pretrained=vit_file, amp='bf16')(small_images, text)
    assert bf16.dtype == torch.float32
    assert bf16 != fp32 and bf16 == pytest.approx(fp32.item(), rel=0.1)  # autocast really ran, and stays close
