"""FaceT5-FLUX's DiT (``model/dit.pt``): a diffusers ``FluxTransformer2DModel`` state dict, FLUX.1-dev layout.

The pack never runs it: ComfyUI's UNETLoader converts diffusers FLUX names itself (``convert_diffusers_mmdit``) and
detects FLUX-dev from them. This module knows the diffusers key set and the shapes it implies, so that
``faceclip_core.convert`` refuses an incomplete or edited file before writing 23.8 GB of it.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..errors import FaceCLIPStateDictError

MODEL = "diffusers FLUX transformer (FaceT5's dit.pt)"
# Keys every diffusers FluxTransformer2DModel has (with at least one block of each kind).
SIGNATURE = ("x_embedder.weight", "context_embedder.weight", "time_text_embed.timestep_embedder.linear_1.weight",
             "transformer_blocks.0.attn.add_q_proj.weight", "single_transformer_blocks.0.proj_mlp.weight",
             "norm_out.linear.weight", "proj_out.weight")
TIMESTEP_IN = 256  # the sinusoidal timestep / guidance embedding width (diffusers Timesteps(256))
_GUIDANCE = "time_text_embed.guidance_embedder."
_NORMS = ("norm_q", "norm_k", "norm_added_q", "norm_added_k")


@dataclass(frozen=True)
class FluxDiTConfig:
    """What the shapes say about a diffusers FLUX transformer (FLUX.1-dev: 3072 wide, 19 + 38 blocks, T5 4096,
    pooled 768, guidance embedding)."""

    hidden: int
    depth: int
    depth_single: int
    in_channels: int
    out_channels: int
    context_dim: int
    pooled_dim: int
    mlp_hidden: int
    head_dim: int
    guidance: bool


def is_flux_dit(sd: Mapping[str, torch.Tensor]) -> bool:
    return all(k in sd for k in SIGNATURE)


def _count(sd: Mapping[str, torch.Tensor], prefix: str) -> int:
    rx = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in sd if (m := rx.match(k))}
    return max(found) + 1 if found else 0


def infer_config(sd: Mapping[str, torch.Tensor]) -> FluxDiTConfig:
    try:
        hidden, in_channels = sd["x_embedder.weight"].shape
        return FluxDiTConfig(
            hidden=hidden, depth=_count(sd, "transformer_blocks."),
            depth_single=_count(sd, "single_transformer_blocks."), in_channels=in_channels,
            out_channels=sd["proj_out.weight"].shape[0], context_dim=sd["context_embedder.weight"].shape[1],
            pooled_dim=sd["time_text_embed.text_embedder.linear_1.weight"].shape[1],
            mlp_hidden=sd["transformer_blocks.0.ff.net.0.proj.weight"].shape[0],
            head_dim=sd["transformer_blocks.0.attn.norm_q.weight"].shape[0],
            guidance=any(k.startswith(_GUIDANCE) for k in sd))
    except (KeyError, ValueError, IndexError) as err:
        raise FaceCLIPStateDictError(f"{MODEL} state dict is incomplete: cannot read its architecture ({err!r})",
                                     missing=[str(err).strip("'")] if isinstance(err, KeyError) else ()) from err


def expected_layout(cfg: FluxDiTConfig) -> dict[str, tuple[int, ...]]:
    """Every key of a diffusers FluxTransformer2DModel of this architecture, with its shape."""
    h, m, hd = cfg.hidden, cfg.mlp_hidden, cfg.head_dim
    layout: dict[str, tuple[int, ...]] = {}

    def linear(name: str, out: int, inp: int) -> None:
        layout[f"{name}.weight"], layout[f"{name}.bias"] = (out, inp), (out,)

    linear("x_embedder", h, cfg.in_channels)
    linear("context_embedder", h, cfg.context_dim)
    embedders = [("timestep_embedder", TIMESTEP_IN), ("text_embedder", cfg.pooled_dim)]
    if cfg.guidance:
        embedders.append(("guidance_embedder", TIMESTEP_IN))
    for name, width in embedders:
        linear(f"time_text_embed.{name}.linear_1", h, width)
        linear(f"time_text_embed.{name}.linear_2", h, h)
    linear("norm_out.linear", 2 * h, h)
    linear("proj_out", cfg.out_channels, h)
    for i in range(cfg.depth):
        b = f"transformer_blocks.{i}"
        for name in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_out.0", "to_add_out"):
            linear(f"{b}.attn.{name}", h, h)
        for norm in _NORMS:
            layout[f"{b}.attn.{norm}.weight"] = (hd,)
        linear(f"{b}.norm1.linear", 6 * h, h)
        linear(f"{b}.norm1_context.linear", 6 * h, h)
        for ff in ("ff", "ff_context"):
            linear(f"{b}.{ff}.net.0.proj", m, h)
            linear(f"{b}.{ff}.net.2", h, m)
    for i in range(cfg.depth_single):
        b = f"single_transformer_blocks.{i}"
        for name in ("to_q", "to_k", "to_v"):
            linear(f"{b}.attn.{name}", h, h)
        for norm in _NORMS[:2]:
            layout[f"{b}.attn.{norm}.weight"] = (hd,)
        linear(f"{b}.norm.linear", 3 * h, h)
        linear(f"{b}.proj_mlp", m, h)
        linear(f"{b}.proj_out", h, h + m)
    return layout


def check_state_dict(sd: Mapping[str, torch.Tensor]) -> FluxDiTConfig:
    """Refuse, naming the keys, a state dict (tensors may be memory-mapped or on the meta device) that is not a
    whole diffusers FLUX transformer. Returns its architecture."""
    missing = [k for k in SIGNATURE if k not in sd]
    if missing:
        raise FaceCLIPStateDictError(f"not a {MODEL} state dict", missing=missing)
    cfg = infer_config(sd)
    expected = expected_layout(cfg)
    mismatched = sorted(f"{k} {tuple(sd[k].shape)} (expected {s})" for k, s in expected.items()
                        if k in sd and tuple(sd[k].shape) != s)
    missing = sorted(k for k in expected if k not in sd)
    unexpected = sorted(k for k in sd if k not in expected)
    not_float = sorted(k for k in sd if not sd[k].is_floating_point())
    if missing or unexpected or mismatched or not_float:
        raise FaceCLIPStateDictError(
            f"the state dict does not match the {MODEL} architecture inferred from it (the file is incomplete, "
            "edited, or another FLUX variant)", missing=missing, unexpected=unexpected,
            mismatched=mismatched + [f"{k} {sd[k].dtype} (expected a float dtype)" for k in not_float])
    if cfg.hidden % cfg.head_dim:
        raise FaceCLIPStateDictError(f"{MODEL}: width {cfg.hidden} does not split into heads of {cfg.head_dim}")
    return cfg
