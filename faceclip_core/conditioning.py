"""Turning FaceCLIP encodings of several faces into conditioning: chunked batches and one averaged identity."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

EncodeFn = Callable[[torch.Tensor, Sequence[str], torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def encode_in_chunks(encode: EncodeFn, faces: torch.Tensor, prompts: Sequence[str], face_mask: torch.Tensor,
                     chunk_size: int = 4, between: Callable[[int, int], None] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``encode`` over the batch in chunks; ``between(done, total)`` runs after each chunk (progress, and
    ComfyUI's interrupt check, which raises to stop)."""
    total = faces.shape[0]
    if total != len(prompts) or total != face_mask.shape[0]:
        raise ValueError(f"batch mismatch: {total} faces, {len(prompts)} prompts, {face_mask.shape[0]} mask entries")
    embeddings, pooled = [], []
    for start in range(0, total, chunk_size):
        stop = min(total, start + chunk_size)
        e, p = encode(faces[start:stop], prompts[start:stop], face_mask[start:stop])
        embeddings.append(e)
        pooled.append(p)
        if between is not None:
            between(stop, total)
    return torch.cat(embeddings), torch.cat(pooled)


def average_identity(embeddings: torch.Tensor, pooled: torch.Tensor, face_mask: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """One conditioning from several photos of one person: the mean over the rows that have a face (all rows
    when none has), the way ComfyUI's ConditioningAverage blends conditionings, so [N,77,C] -> [1,77,C]."""
    rows = face_mask.to(torch.bool).to(embeddings.device)
    if not bool(rows.any()):
        rows = torch.ones_like(rows)
    return embeddings[rows].mean(0, keepdim=True), pooled[rows].mean(0, keepdim=True)
