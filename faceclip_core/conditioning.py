"""One conditioning from the FaceCLIP encodings of several photos of one person."""
from __future__ import annotations

import torch


def average_identity(embeddings: torch.Tensor, pooled: torch.Tensor, face_mask: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """One conditioning from several photos of one person: the mean over the rows that have a face (all rows
    when none has), the way ComfyUI's ConditioningAverage blends conditionings, so [N,77,C] -> [1,77,C]."""
    rows = face_mask.to(torch.bool).to(embeddings.device)
    if not bool(rows.any()):
        rows = torch.ones_like(rows)
    return embeddings[rows].mean(0, keepdim=True), pooled[rows].mean(0, keepdim=True)
