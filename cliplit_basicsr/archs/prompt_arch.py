"""CLIP-LIT's learnable prompt pair: two token-embedding sequences scored by a frozen CLIP text tower.

Index 0 is the **negative** (backlit) prompt, index 1 the **positive** (well-lit) one, always. What is
learned is the whole (2, context_length, width) embedding, initialised from CLIP's token embedding of
two texts (the authors' default: 16 ``X`` for both). The frozen CLIP is fetched from the shared cache
(:func:`cliplit_basicsr.clip.load_clip`) and is deliberately **not** a submodule, so the state dict,
BasicSR checkpoints, optimizers and DDP see only ``embedding`` and the ``eot_indices`` buffer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Tuple, Union

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from cliplit_basicsr.atomic_io import atomic_torch_save
from cliplit_basicsr.clip import (
    DEFAULT_PRETRAINED,
    VIT_MODEL,
    PromptFileError,
    check_amp,
    encode_token_embeddings,
    eot_index,
    image_features,
    load_clip,
    token_embeddings,
)
from cliplit_basicsr.errors import one_line_message

POOLING_MODES = ('authors', 'text')
PathLike = Union[str, Path]
if TYPE_CHECKING:  # open_clip (and timm) load where CLIP is used: enhancement alone never imports them
    import open_clip


def x_prompt(length_prompt: int) -> str:
    """The authors' default prompt text: ``length_prompt`` copies of ``X``."""
    return ' '.join(['X'] * length_prompt)


@ARCH_REGISTRY.register()
class CLIPLITPromptPair(nn.Module):
    """The (negative, positive) prompt pair; ``forward()`` returns its text features (2, embed_dim).

    Args:
        clip_model: open_clip model name whose text tower encodes the prompts (ViT-B/32 in CLIP-LIT).
        clip_pretrained: open_clip tag or local weights file (see :func:`cliplit_basicsr.clip.load_clip`).
        init_texts: [negative, positive] texts to initialise from; default ``length_prompt`` X's for both.
        length_prompt: number of X's of the authors' default text (16).
        pooling: ``'authors'`` pools both prompts at the end-of-text position of the X-prompt (index
            ``length_prompt + 1``) whatever the init texts, as the authors' code does; ``'text'`` pools
            each prompt at its own init text's end token, as ``encode_text`` does.
        init_file: optional prompt file (this package's or the authors' format) to start from.
        amp: ``None`` (fp32), ``'bf16'`` or ``'fp16'`` autocast of the text transformer.
    """

    def __init__(
        self,
        clip_model: str = VIT_MODEL,
        clip_pretrained: Optional[str] = DEFAULT_PRETRAINED,
        init_texts: Optional[Sequence[str]] = None,
        length_prompt: int = 16,
        pooling: str = 'authors',
        init_file: Optional[str] = None,
        amp: Optional[str] = None,
    ):
        super().__init__()
        if pooling not in POOLING_MODES:
            raise ValueError(f"network_prompt: pooling '{pooling}' is not one of {', '.join(POOLING_MODES)}")
        texts = list(init_texts) if init_texts is not None else [x_prompt(length_prompt)] * 2
        if len(texts) != 2 or not all(isinstance(t, str) for t in texts):
            raise ValueError(f'network_prompt: init_texts must be two strings [negative, positive], got {texts!r}')
        self.clip_model, self.clip_pretrained, self.amp = clip_model, clip_pretrained, check_amp(amp)
        clip = load_clip(clip_model, clip_pretrained)
        self.embedding = nn.Parameter(token_embeddings(texts, clip))
        if pooling == 'authors':
            eots = [eot_index(x_prompt(length_prompt), clip)] * 2
        else:
            eots = [eot_index(text, clip) for text in texts]
        self.register_buffer('eot_indices', torch.tensor(eots, dtype=torch.long))
        self._pooled_length: Tuple[tuple, int] = ((), 0)
        if init_file:
            self.load_file(init_file)

    def clip(self) -> open_clip.CLIP:
        """The shared frozen CLIP on this module's device."""
        return load_clip(self.clip_model, self.clip_pretrained, self.embedding.device)

    def forward(self, *placeholder) -> torch.Tensor:
        """Text features (2, embed_dim) of the pair, unnormalised; differentiable w.r.t. ``embedding``.

        Positional arguments are ignored: DDP with CUDA device ids cannot forward a call without any
        (its input scattering then yields no argument tuple), so the training model passes ``None``.
        """
        return encode_token_embeddings(self.clip(), self.embedding, self.eot_indices, self.amp, self.pooled_length())

    def pooled_length(self) -> int:
        """How many positions the text transformer must compute (up to the last pooled one), read from
        ``eot_indices`` only when that buffer changes: a step does not wait for the device to answer."""
        stamp = (self.eot_indices.data_ptr(), self.eot_indices._version)
        if self._pooled_length[0] != stamp:
            self._pooled_length = (stamp, int(self.eot_indices.max()) + 1)
        return self._pooled_length[1]

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised CLIP image features (B, embed_dim) of a batch in [0,1], without autograd.

        This is what prompt learning scores: compute it once per image set and pass it to the prompt losses.
        """
        return image_features(self.clip(), images, self.amp, normalize=True)

    def load_file(self, path: PathLike) -> 'CLIPLITPromptPair':
        """Load a prompt file (this package's or the authors' format) into this pair; returns ``self``."""
        embedding, eot_indices = read_prompt_file(path)
        if embedding.shape != self.embedding.shape:
            raise PromptFileError(
                f'prompt file {path}: embedding has shape {tuple(embedding.shape)}, '
                f'{self.clip_model} expects {tuple(self.embedding.shape)}'
            )
        with torch.no_grad():
            self.embedding.copy_(embedding)
            if eot_indices is not None:
                self.eot_indices.copy_(eot_indices)
        return self

    def save_file(self, path: PathLike) -> None:
        """Write the pair atomically as ``{'params': state_dict}`` (BasicSR's ``save_network`` layout)."""
        atomic_torch_save({'params': {k: v.detach().cpu() for k, v in self.state_dict().items()}}, path)


def read_prompt_file(path: PathLike) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Read ``(embedding (2,L,W), eot_indices (2,) or None)`` from a prompt file.

    Accepted: this package's / BasicSR's ``{'params': {'embedding', 'eot_indices'}}`` (or the bare state
    dict), and the authors' DataParallel state dict, whose ``module.embedding_prompt`` is the pair (their
    copies of the text tower are ignored, as their loader does). Anything else raises :class:`PromptFileError`.
    """
    try:
        data = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # torch raises many types for non-torch or corrupt files
        raise PromptFileError(f'prompt file {path}: not a readable torch file ({one_line_message(err, 300)})') from None
    if isinstance(data, dict) and isinstance(data.get('params'), dict):
        data = data['params']
    if not isinstance(data, dict):
        raise PromptFileError(f'prompt file {path}: expected a state dict, got {type(data).__name__}')
    if 'embedding' in data:
        embedding, eot_indices = data['embedding'], data.get('eot_indices')
    else:
        embedding = data.get('module.embedding_prompt', data.get('embedding_prompt'))
        eot_indices = None
    if not torch.is_tensor(embedding) or embedding.ndim != 3 or embedding.shape[0] != 2:
        keys = ', '.join(sorted(map(str, data))[:3]) or 'none'
        raise PromptFileError(
            f"prompt file {path}: no prompt pair ('embedding' or the authors' "
            f"'module.embedding_prompt' of shape (2, 77, width)); keys: {keys}"
        )
    if eot_indices is not None and (not torch.is_tensor(eot_indices) or eot_indices.shape != (2,)):
        raise PromptFileError(f'prompt file {path}: eot_indices must be a (2,) tensor')
    return embedding.float(), eot_indices
