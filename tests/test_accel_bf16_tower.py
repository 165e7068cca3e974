"""CPU bf16 image forwards on one bf16 copy of the tower (a fast path: see cliplit_basicsr.accel)."""

import pytest
import torch

from cliplit_basicsr.clip import VIT_MODEL, image_features, load_clip, preprocess_images
from cliplit_basicsr.losses.cliplit_loss import CLIPLITIdentityLoss


def test_cpu_bf16_runs_a_cached_bf16_image_tower(vit_file, parity_dir, small_images):
    """CPU bf16: image towers run on one bf16 copy (no per-call weight casts); the fp32 model is untouched,
    gradients still reach the images, and the losses stay close to fp32."""
    from cliplit_basicsr.accel import bf16_image_tower

    vit = load_clip(VIT_MODEL, vit_file)
    tower = bf16_image_tower(vit.visual, torch.device('cpu'), 'bf16')
    assert tower is bf16_image_tower(vit.visual, torch.device('cpu'), 'bf16') and tower is not vit.visual
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in tower.parameters())
    assert all(p.dtype == torch.float32 for p in vit.parameters())
    with torch.no_grad():
        expected = tower(preprocess_images(small_images).bfloat16()).float()
        torch.testing.assert_close(image_features(vit, small_images, 'bf16'), expected)
    rn_file = str(parity_dir / 'tiny_rn_openai.pt')
    enhanced = small_images.clone().requires_grad_()
    losses = {
        amp: CLIPLITIdentityLoss(clip_pretrained=rn_file, amp=amp)(enhanced, small_images.flip(-1))
        for amp in (None, 'bf16')
    }
    grads = [torch.autograd.grad(loss, enhanced)[0] for loss in losses.values()]
    assert losses['bf16'] != losses[None] and losses['bf16'].item() == pytest.approx(losses[None].item(), rel=0.1)
    assert torch.nn.functional.cosine_similarity(grads[0].flatten(), grads[1].flatten(), dim=0) > 0.95
