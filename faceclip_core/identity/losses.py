"""The losses, each a small pure function."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def denoising_loss(predicted_noise: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The papers' loss: MSE between the predicted and the true noise (epsilon space)."""
    return F.mse_loss(predicted_noise.float(), noise.float())


def attention_alignment_loss(terms: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """SeFi-IDE's face-wise attention loss: the mean over the probed layers of the squared difference between
    the identity tokens' maps and the reference word's maps (see attention.TrainingAttention)."""
    if not terms:
        return None
    return torch.stack([t.float() for t in terms]).mean()
