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
    """One CLIP text transformer. ``hidden_layer``: which layer's output is the context (-2 = penultimate).
    ``dtype``: what it computes in; None = its weights' dtype (training copies, cast once, so ComfyUI's casting
    layers never copy a weight)."""

    module: Any
    hidden_layer: int = -2
    gradient_checkpointing: bool = False
    dtype: torch.dtype | None = None

    @property
    def width(self) -> int:
        return int(self.module.text_model.embeddings.token_embedding.weight.shape[1])

    def token_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        """The input embeddings of ``ids``, in the dtype the stack computes in."""
        weight = self.module.text_model.embeddings.token_embedding.weight
        return weight[ids.to(weight.device)].to(self.dtype or weight.dtype)

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
            out[name] = stack.token_embeddings(ids).float()
        return out

    def _spliced(self, name: str, prompt: PromptTokens, rows: torch.Tensor | None) -> torch.Tensor:
        """[B, chunks * 77, D] input embeddings of ``prompt`` for encoder ``name``, with ``rows`` ([N, D] or
        [B, N, D]) in its slots."""
        ids = torch.tensor(prompt.ids[name], device=self.device)
        embeds = self.stacks()[name].token_embeddings(ids).unsqueeze(0)  # [1, chunks * 77, D]
        if rows is None:
            return embeds
        r = rows.to(self.device, embeds.dtype)
        r = r.unsqueeze(0) if r.dim() == 2 else r
        embeds = embeds.expand(r.shape[0], -1, -1)
        slots = list(prompt.slots)
        # out of place, so gradients reach the rows
        keep = torch.ones(embeds.shape[1], 1, device=self.device, dtype=embeds.dtype)
        keep[slots] = 0
        placed = torch.zeros_like(embeds).index_copy(1, torch.tensor(slots, device=self.device), r)
        return embeds * keep + placed

    def _run(self, embeds: dict[str, torch.Tensor], eos: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per encoder [B, chunks * 77, D] embeddings (B = 1 broadcasts) and each row's end-token position ->
        [B, chunks * 77, C] context and [B, P] pooled (of the first chunk, as ComfyUI pools)."""
        contexts = []
        pooled = None
        for name, stack in self.stacks().items():
            x = embeds[name]
            b, chunks = x.shape[0], x.shape[1] // CHUNK
            row_eos = list(eos) if len(eos) == b else [eos[0]] * b
            hidden, p = stack.forward(x.reshape(b * chunks, CHUNK, -1), [e for e in row_eos for _ in range(chunks)],
                                      want_pooled=name == "clip_g")
            contexts.append(hidden.reshape(b, chunks * CHUNK, -1))
            if p is not None:
                pooled = p.reshape(b, chunks, -1)[:, 0]
        b = max(c.shape[0] for c in contexts)
        contexts = [c.expand(b, -1, -1) for c in contexts]
        return torch.cat(contexts, dim=-1), pooled.expand(b, -1)

    def encode(self, prompt: PromptTokens, rows: Mapping[str, torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        embeds = {name: self._spliced(name, prompt, None if rows is None else rows[name]) for name in ENCODERS}
        return self._run(embeds, [prompt.eos])

    def encode_batch(self, prompts: Sequence[PromptTokens], rows: Sequence[Mapping[str, torch.Tensor]]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Several prompts of one length, each with its own rows ([N, D] per encoder), in one call through each
        encoder: [len(prompts), L, C] and [len(prompts), P]."""
        if len({len(p.ids["clip_l"]) for p in prompts}) != 1:
            raise ValueError("encode_batch needs prompts of one length")
        embeds = {name: torch.cat([self._spliced(name, p, r[name]) for p, r in zip(prompts, rows, strict=True)])
                  for name in ENCODERS}
        return self._run(embeds, [p.eos for p in prompts])

    def encode_final(self, prompt: PromptTokens, rows: Mapping[str, torch.Tensor] | None = None
                     ) -> dict[str, torch.Tensor]:
        """Per encoder, the final-LayerNorm output [B, 77, D] of a one-chunk ``prompt`` with ``rows`` in its
        slots (what Cross Initialization reads; SDXL's context is the penultimate layer instead)."""
        return {name: stack.final_states(self._spliced(name, prompt, None if rows is None else rows[name]))
                for name, stack in self.stacks().items()}

