"""CLIP's text path on learnable token embeddings (what CLIP-LIT's prompt pair optimises).

``encode_token_embeddings(model, model.token_embedding(tokens), tokens.argmax(-1))`` equals
``model.encode_text(tokens)``: positional embedding, causal text transformer, ``ln_final``, pooling at
the end-of-text position, ``text_projection``. CLIP-LIT learns the embeddings instead of the tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

import torch

from cliplit_basicsr import accel

from .precision import clip_autocast

if TYPE_CHECKING:  # open_clip (and timm) load where CLIP is used: enhancement alone never imports them
    import open_clip


def tokenize(texts: Sequence[str], model: open_clip.CLIP) -> torch.Tensor:
    """OpenAI CLIP's BPE tokens (N, context_length) of ``texts``, on the model's device."""
    import open_clip

    tokens = open_clip.tokenize(list(texts), context_length=model.context_length)
    return tokens.to(model.token_embedding.weight.device)


def token_embeddings(texts: Sequence[str], model: open_clip.CLIP) -> torch.Tensor:
    """CLIP's token embedding (N, context_length, width) of ``texts`` (a constant: no autograd graph)."""
    with torch.no_grad():
        return model.token_embedding(tokenize(texts, model)).float()


def eot_index(text: str, model: open_clip.CLIP) -> int:
    """Position of the end-of-text token in the tokenisation of ``text`` (its largest id)."""
    return int(tokenize([text], model)[0].argmax())


def encode_token_embeddings(
    model: open_clip.CLIP,
    embeddings: torch.Tensor,
    eot_indices: torch.Tensor,
    amp: Optional[str] = None,
    pooled_length: Optional[int] = None,
) -> torch.Tensor:
    """Text features (N, embed_dim), float32, of token embeddings (N, context_length, width).

    ``eot_indices`` (N,) gives the position pooled for each sequence; gradients flow to ``embeddings``.
    ``pooled_length``: ``eot_indices.max() + 1`` if the caller knows it (reading it from a GPU tensor waits
    for the device).
    With the fast paths on, the transformer runs only up to the last pooled position (under CLIP's causal
    mask the pooled positions never see later ones: the same result, later positions get zero gradient
    either way; :func:`cliplit_basicsr.accel.text_transformer`).
    """
    with clip_autocast(embeddings.device, amp):
        cast_dtype = model.transformer.get_cast_dtype()
        x = embeddings.to(cast_dtype) + model.positional_embedding.to(cast_dtype)
        length = int(eot_indices.max()) + 1 if pooled_length is None else pooled_length
        fast = accel.text_transformer(model.transformer, x, model.attn_mask, length)
        x = model.transformer(x, attn_mask=model.attn_mask) if fast is None else fast
        x = model.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot_indices]
        x = (
            model.text_projection(x)
            if isinstance(model.text_projection, torch.nn.Linear)
            else x @ model.text_projection
        )
    return x.float()
