"""The losses, each a small pure function."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def denoising_loss(predicted_noise: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The papers' loss: MSE between the predicted and the true noise (epsilon space)."""
    return F.mse_loss(predicted_noise.float(), noise.float())


def attention_alignment_parts(terms: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """SeFi-IDE's face-wise attention loss split by column group (attention.GROUPS): the mean over the probed
    layers of each layer's parts (see attention.alignment_parts); None when no layer was probed."""
    if not terms:
        return None
    return torch.stack([t.float() for t in terms]).mean(0)


def attention_alignment_loss(terms: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """SeFi-IDE's face-wise attention loss: the sum of its groups' parts (attention_alignment_parts)."""
    parts = attention_alignment_parts(terms)
    return None if parts is None else parts.sum()
