"""A differentiable SDXL text encoding (CLIP-L + CLIP-G) with learnable rows spliced into the token embeddings.

ComfyUI's CLIP layers add their residuals in place, which autograd cannot differentiate through, and its
encode path is built for inference. This runs the same weights out of place: any module tree with the
HF/ComfyUI CLIP layout (``text_model.embeddings.{token,position}_embedding``, ``text_model.encoder.layers[i]``
with ``layer_norm1``, ``self_attn(x, mask, attention)``, ``layer_norm2``, ``mlp``; ``text_model.final_layer_norm``;
``text_projection``) works, so the core never imports ComfyUI.

SDXL conditioning, as ComfyUI's CLIPTextEncode makes it: CLIP-L penultimate layer and CLIP-G penultimate layer
(no final LayerNorm), concatenated per position -> [B, 77, 2048]; pooled = CLIP-G's final-LayerNorm state at the
end token, projected -> [B, 1280]; only causal masking (no padding mask). A prompt longer than one 77-token chunk
is encoded chunk by chunk and the chunks concatenated, the pooled vector coming from the first chunk.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from ..layers import multi_head_attention
from .prompts import CHUNK, PromptTokens

ENCODERS: tuple[str, ...] = ("clip_l", "clip_g")


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: torch.Tensor | None = None,
               **_: Any) -> torch.Tensor:
    """The ``optimized_attention`` ComfyUI's CLIP layers call: plain SDPA, which autograd differentiates."""
    return multi_head_attention(q, k, v, heads, mask=mask)


@dataclass
class CLIPStack:
    """One CLIP text transformer. ``hidden_layer``: which layer's output is the context (-2 = penultimate)."""

    module: Any
    hidden_layer: int = -2
    gradient_checkpointing: bool = False

    @property
    def width(self) -> int:
        return int(self.module.text_model.embeddings.token_embedding.weight.shape[1])

    def token_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        weight = self.module.text_model.embeddings.token_embedding.weight
        return weight[ids.to(weight.device)].float()

    def _run(self, embeds: torch.Tensor, layers: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The first ``layers`` layers: (the output of layer ``hidden_layer`` if reached, the last output)."""
        tm = self.module.text_model
        pos = tm.embeddings.position_embedding.weight.to(device=embeds.device, dtype=embeds.dtype)
        x = embeds + pos[: embeds.shape[1]]
        n = x.shape[1]
        causal = torch.full((n, n), float("-inf"), device=x.device, dtype=x.dtype).triu(1)
        all_layers = list(tm.encoder.layers)
        target = self.hidden_layer % len(all_layers)
        hidden = None
        for i, layer in enumerate(all_layers[:layers]):
            if self.gradient_checkpointing and x.requires_grad:
                x = checkpoint(_layer, layer, x, causal, use_reentrant=False)
            else:
                x = _layer(layer, x, causal)
            if i == target:
                hidden = x
        return hidden, x

    def forward(self, embeds: torch.Tensor, eos: Sequence[int], want_pooled: bool
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        layers = len(self.module.text_model.encoder.layers)
        # the pooled output needs every layer
        last = layers if want_pooled else self.hidden_layer % layers + 1
        hidden, x = self._run(embeds, last)
        pooled = None
        if want_pooled:
            final = self.module.text_model.final_layer_norm(x)
            pooled = self.module.text_projection(final[torch.arange(x.shape[0]), list(eos)]).float()
        return hidden.float(), pooled

    def final_states(self, embeds: torch.Tensor) -> torch.Tensor:
        """The last layer's output after the final LayerNorm (HF's ``last_hidden_state``) at every position."""
        _, x = self._run(embeds, len(self.module.text_model.encoder.layers))
        return self.module.text_model.final_layer_norm(x).float()


def _layer(layer: Any, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    x = x + layer.self_attn(layer.layer_norm1(x), mask, _attention)
    return x + layer.mlp(layer.layer_norm2(x))


@dataclass
class SDXLTextEncoder:
    """CLIP-L + CLIP-G; ``encode`` splices per-encoder rows ``[N, D]`` (or ``[B, N, D]``) into the slots."""

    clip_l: CLIPStack
    clip_g: CLIPStack
    device: torch.device | str = "cpu"

    def stacks(self) -> dict[str, CLIPStack]:
        return {"clip_l": self.clip_l, "clip_g": self.clip_g}

    def widths(self) -> dict[str, int]:
        return {name: s.width for name, s in self.stacks().items()}

    def word_rows(self, prompt: PromptTokens) -> dict[str, torch.Tensor]:
        """The input token embeddings at ``prompt.slots`` (e.g. of the class word in a reference prompt)."""
        out = {}
        for name, stack in self.stacks().items():
            ids = torch.tensor([prompt.ids[name][i] for i in prompt.slots], device=self.device)
            out[name] = stack.token_embeddings(ids)
        return out

    def _embeds(self, name: str, prompt: PromptTokens, rows: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
        """Encoder ``name``'s input token embeddings of ``prompt`` [B, chunks * 77, D], ``rows`` in its slots."""
        ids = torch.tensor(prompt.ids[name], device=self.device)
        embeds = self.stacks()[name].token_embeddings(ids).unsqueeze(0)
        if rows is None:
            return embeds
        r = rows[name].to(self.device, torch.float32)
        r = r.unsqueeze(0) if r.dim() == 2 else r
        embeds = embeds.expand(r.shape[0], -1, -1)
        slots = list(prompt.slots)
        # out of place, so gradients reach the rows
        keep = torch.ones(embeds.shape[1], 1, device=self.device)
        keep[slots] = 0
        placed = torch.zeros_like(embeds)
        placed = placed.index_copy(1, torch.tensor(slots, device=self.device), r)
        return embeds * keep + placed

    def encode(self, prompt: PromptTokens, rows: Mapping[str, torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        contexts = []
        pooled = None
        for name, stack in self.stacks().items():
            chunks = len(prompt.ids[name]) // CHUNK
            embeds = self._embeds(name, prompt, rows)
            b = embeds.shape[0]
            hidden, p = stack.forward(embeds.reshape(b * chunks, CHUNK, -1), [prompt.eos] * (b * chunks),
                                      want_pooled=name == "clip_g")
            contexts.append(hidden.reshape(b, chunks * CHUNK, -1))
            if p is not None:
                pooled = p.reshape(b, chunks, -1)[:, 0]  # ComfyUI pools the first chunk
        b = max(c.shape[0] for c in contexts)
        contexts = [c.expand(b, -1, -1) for c in contexts]
        return torch.cat(contexts, dim=-1), pooled.expand(b, -1)

    def encode_final(self, prompt: PromptTokens, rows: Mapping[str, torch.Tensor] | None = None
                     ) -> dict[str, torch.Tensor]:
        """Per encoder, the final-LayerNorm output [B, 77, D] of a one-chunk ``prompt`` with ``rows`` in its
        slots (what Cross Initialization reads; SDXL's context is the penultimate layer instead)."""
        return {name: stack.final_states(self._embeds(name, prompt, rows))
                for name, stack in self.stacks().items()}
