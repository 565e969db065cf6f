"""The training state left per identity, at full SDXL size, is the size the README and the help page name."""
from __future__ import annotations

import torch

from faceclip_core.identity import TrainState, save_state
from faceclip_core.identity.config import IDEAConfig
from faceclip_core.identity.params import IDEAParams, StagedTokens
from tests.conftest import REPO


def state_megabytes(params: torch.nn.Module, path) -> float:
    """The file save_state writes for ``params`` after one AdamW step (the optimiser's moments exist then)."""
    trainable = [p for p in params.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable)
    for p in trainable:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    state = TrainState(step=1, params=dict(params.state_dict()), optimizer=optimizer.state_dict(),
                       rng=torch.Generator().get_state(), config={}, history=[])
    return save_state(path, state).stat().st_size / 1e6


def test_the_state_left_per_identity_is_the_size_the_docs_name(tmp_path):
    sdxl = {"clip_l": 768, "clip_g": 1280}
    idea = IDEAParams({n: torch.randn(IDEAConfig.num_tokens, d) for n, d in sdxl.items()}, torch.randn(512),
                      heads=IDEAConfig.adapter_heads, scale=IDEAConfig.adapter_scale, reg_eps=IDEAConfig.reg_eps,
                      train_enhancer=IDEAConfig.train_enhancer)
    idea_mb = state_megabytes(idea, tmp_path / "idea.safetensors")
    sefi_mb = state_megabytes(StagedTokens({n: torch.randn(1, d) for n, d in sdxl.items()}, stages=5, parts=2),
                              tmp_path / "sefi.safetensors")
    assert round(idea_mb) == 366 and sefi_mb < 1, (idea_mb, sefi_mb)
    for doc in (REPO / "README.md", REPO / "web" / "docs" / "FaceCLIPTrainIDEmbedding.md"):
        text = " ".join(doc.read_text().replace("**", "").split())
        assert "366 MB per ID-EA identity" in text and "under 1 MB per SeFi-IDE" in text, doc
