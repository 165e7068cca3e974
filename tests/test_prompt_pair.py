"""The prompt pair as a BasicSR network: registry, state dict without CLIP, files in and out."""

import pytest
import torch
from basicsr.archs import build_network

from cliplit_basicsr.archs.prompt_arch import CLIPLITPromptPair, read_prompt_file
from cliplit_basicsr.clip import PromptFileError


def test_built_from_options_with_only_its_own_state(vit_file):
    pair = build_network({'type': 'CLIPLITPromptPair', 'clip_pretrained': vit_file})
    assert isinstance(pair, CLIPLITPromptPair)
    assert [name for name, _ in pair.named_parameters()] == ['embedding']
    assert set(pair.state_dict()) == {'embedding', 'eot_indices'}
    assert pair.embedding.shape[0] == 2 and pair().shape == (2, pair.clip().text_projection.shape[1])


def test_gradients_reach_only_the_embedding(vit_file):
    pair = CLIPLITPromptPair(clip_pretrained=vit_file)
    pair().sum().backward()
    assert pair.embedding.grad is not None and pair.embedding.grad.abs().sum() > 0
    assert all(p.grad is None for p in pair.clip().parameters())


def test_save_and_load_round_trip(vit_file, tmp_path):
    pair = CLIPLITPromptPair(clip_pretrained=vit_file, init_texts=['low light', 'normal light'], pooling='text')
    with torch.no_grad():
        pair.embedding.add_(torch.randn_like(pair.embedding))
    path = tmp_path / 'prompt.pth'
    pair.save_file(path)
    assert list(tmp_path.iterdir()) == [path]  # atomic write leaves no temporary file
    loaded = CLIPLITPromptPair(clip_pretrained=vit_file, init_file=str(path))
    assert torch.equal(loaded.embedding, pair.embedding) and torch.equal(loaded.eot_indices, pair.eot_indices)
    # BasicSR's own load_network reads the same file (param_key 'params')
    fresh = CLIPLITPromptPair(clip_pretrained=vit_file)
    fresh.load_state_dict(torch.load(path, weights_only=True)['params'])
    assert torch.equal(fresh.embedding, pair.embedding)


def test_wrong_files_give_one_line_errors(vit_file, parity_dir, tmp_path):
    text = tmp_path / 'notes.pth'
    text.write_text('hello')
    for path in (text, parity_dir / 'tiny_vit_openai.pt'):
        with pytest.raises(PromptFileError) as excinfo:
            read_prompt_file(path)
        assert str(path) in str(excinfo.value) and '\n' not in str(excinfo.value)
    wrong_width = tmp_path / 'wide.pth'
    torch.save({'module.embedding_prompt': torch.zeros(2, 77, 512)}, wrong_width)
    with pytest.raises(PromptFileError, match='expects'):
        CLIPLITPromptPair(clip_pretrained=vit_file, init_file=str(wrong_width))


def test_bad_options(vit_file):
    with pytest.raises(ValueError, match='pooling'):
        CLIPLITPromptPair(clip_pretrained=vit_file, pooling='mean')
    with pytest.raises(ValueError, match='init_texts'):
        CLIPLITPromptPair(clip_pretrained=vit_file, init_texts=['only one'])


def test_forwards_through_ddp_input_scattering(vit_file):
    """Under DDP with CUDA device ids, a call without positional inputs fails inside torch (its input
    scattering yields no argument tuple); the training model passes a placeholder. Exercise that path on
    CPU by giving a gloo DDP wrapper the device ids it would have on a GPU."""
    import socket

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=0, world_size=1)
    try:
        pair = CLIPLITPromptPair(clip_pretrained=vit_file)
        wrapped = DistributedDataParallel(pair)
        wrapped.device_ids, wrapped.device_type = [0], 'cpu'  # the scattering path that CUDA takes
        with pytest.raises(IndexError):
            wrapped()
        text = wrapped(None)
        torch.testing.assert_close(text, pair(), rtol=0, atol=0)
        text.sum().backward()
        assert pair.embedding.grad.abs().sum() > 0
    finally:
        dist.destroy_process_group()
