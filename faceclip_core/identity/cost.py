"""What a training run will cost the GPU, before it starts: peak memory and time, from a profile of one SDXL
training step measured at full size by ``bench/regime.py`` (fake tensors: the real graph without memory or
compute), so the Train node can say it and refuse a run that cannot fit.

Scaling: a pass's memory above the weights grows with the samples in the pass and, like the UNet's FLOPs, with the
latent's area (SDPA on the GPU keeps no N x N maps); ``tests/e2e/test_bench_regime.py`` checks this model against
the measured step.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .config import MethodConfig
from .errors import IdentityError

GIB = 2 ** 30

# SDXL's parameters (UNet; CLIP-L + CLIP-G text transformers), counted from ComfyUI's model at full size.
UNET_PARAMS = 2_567_463_684
TEXT_PARAMS = 817_844_480


@dataclass(frozen=True)
class PassProfile:
    """One training sample in a 16-bit dtype, as bench/regime.py measures it. Memory above the weights:
    ``fixed_gib`` once (the method's trainable parts and their optimizer state) plus ``sample_gib`` per sample in
    a pass at 1024 px (it scales with the latent's area). FLOPs per sample: ``area_tflop`` x area + ``area2_tflop``
    x area^2, area relative to 1024 px (self-attention grows with the square of the token count; the text encoders'
    small constant share is folded in): exact at 768 and 1024 px."""

    fixed_gib: float
    sample_gib: float
    area_tflop: float
    area2_tflop: float


# (method, gradient checkpointing) -> profile, fitted to bench/regime.py's full-size measurements at 1024 and
# 768 px (without checkpointing: 1024 px only, its FLOPs split as with it); tests/e2e/test_bench_regime.py checks
# the defaults against a fresh measurement
PROFILES: dict[tuple[str, bool], PassProfile] = {
    ("SeFi-IDE", True): PassProfile(fixed_gib=0.020, sample_gib=0.910, area_tflop=19.828, area2_tflop=1.223),
    ("SeFi-IDE", False): PassProfile(fixed_gib=0.020, sample_gib=5.741, area_tflop=14.560, area2_tflop=0.898),
    ("ID-EA", True): PassProfile(fixed_gib=0.247, sample_gib=0.555, area_tflop=17.654, area2_tflop=2.560),
    ("ID-EA", False): PassProfile(fixed_gib=0.247, sample_gib=5.019, area_tflop=13.011, area2_tflop=1.887),
}

# What a CUDA card holds beyond the tensors: its context and cuBLAS/cuDNN workspaces, and the caching allocator's
# slack (fragmentation).
CUDA_OVERHEAD_GIB = 0.5
ALLOCATOR_SLACK = 0.10

# Dense fp16/bf16 tensor throughput with fp32 accumulation (PyTorch's matmuls), TFLOP/s, and the share of it an
# eager SDXL training step sustains (an estimate; bench/train.py --backend cuda measures the real time).
CARDS: dict[str, float] = {"RTX 3060 12GB": 25.6, "RTX 4090 24GB": 165.2, "H100 80GB": 989.4}
UTILISATION = 0.35


@dataclass(frozen=True)
class RunEstimate:
    """``peak_gib``: the tensors at the step's peak; ``device_gib``: what the card must have for it."""

    peak_gib: float
    device_gib: float
    weights_gib: float
    tflop_per_step: float
    steps: int

    @property
    def reserve_bytes(self) -> int:
        """What the step needs above its weights: the memory a load must keep free for it."""
        return int((self.peak_gib - self.weights_gib) * GIB)

    def minutes(self, tflops: float) -> float:
        return run_minutes(self.tflop_per_step, self.steps, tflops)

    def minutes_by_card(self) -> dict[str, float]:
        return minutes_by_card(self.tflop_per_step, self.steps)

    def text(self) -> str:
        cards = ", ".join(f"~{m:.1f} min on an {card}" for card, m in self.minutes_by_card().items())
        return f"estimated: {self.device_gib:.1f} GB of GPU memory at the peak; {cards}"


def run_minutes(tflop_per_step: float, steps: int, tflops: float) -> float:
    """Minutes for ``steps`` steps on a card of ``tflops`` dense fp16/bf16 throughput, at ``UTILISATION``."""
    return tflop_per_step * steps / (tflops * UTILISATION) / 60


def minutes_by_card(tflop_per_step: float, steps: int) -> dict[str, float]:
    return {card: round(run_minutes(tflop_per_step, steps, tflops), 2) for card, tflops in CARDS.items()}


def device_gib(tensor_gib: float) -> float:
    """What a CUDA card must have for tensors peaking at ``tensor_gib``."""
    return tensor_gib * (1 + ALLOCATOR_SLACK) + CUDA_OVERHEAD_GIB


def estimate_run(config: MethodConfig, resolution: int, checkpointing: bool, pass_size: int | None = None,
                 weight_bytes: int = 2) -> RunEstimate:
    """The run of ``config`` at ``resolution``: ``pass_size`` samples per forward/backward pass (default: the
    config's), weights stored in ``weight_bytes`` per value (the training dtype's)."""
    t = config.train
    size = pass_size or t.pass_size
    profile = PROFILES[(config.method, checkpointing)]
    area = (resolution / 1024) ** 2
    weights = (UNET_PARAMS + TEXT_PARAMS) * weight_bytes / GIB
    # the profiles were measured in a 16-bit dtype: fp32 doubles the activations as it doubles the weights
    peak = weights + profile.fixed_gib + profile.sample_gib * area * size * weight_bytes / 2
    return RunEstimate(peak_gib=peak, device_gib=device_gib(peak), weights_gib=weights,
                       tflop_per_step=(profile.area_tflop * area + profile.area2_tflop * area ** 2) * t.batch_size,
                       steps=t.steps)


def largest_pass(config: MethodConfig, resolution: int, checkpointing: bool, free_gib: float,
                 weight_bytes: int = 2) -> int:
    """The most samples per pass (up to the batch) whose step fits ``free_gib`` of device memory; at least 1."""
    t = config.train
    for size in range(t.batch_size, 1, -1):
        if estimate_run(config, resolution, checkpointing, size, weight_bytes).device_gib <= free_gib:
            return size
    return 1


def fit_to_device(config: MethodConfig, resolution: int, checkpointing: bool, device_gib_total: float | None,
                  weight_bytes: int = 2) -> tuple[MethodConfig, RunEstimate]:
    """``config`` with its micro-batch chosen when left at 0 (auto: the most samples per pass that fit the device,
    whose other models the run unloads first), and the run's estimate. ``device_gib_total``: the GPU's memory, or
    None (the CPU: nothing to fit). Raises, saying what to change, when even one sample per pass cannot fit."""
    t = config.train
    if t.micro_batch == 0 and device_gib_total is not None:
        size = largest_pass(config, resolution, checkpointing, device_gib_total, weight_bytes)
        config = replace(config, train=replace(t, micro_batch=size))
    estimate = estimate_run(config, resolution, checkpointing, weight_bytes=weight_bytes)
    if device_gib_total is not None and estimate.device_gib > device_gib_total:
        advice = [] if checkpointing else ["turn gradient_checkpointing on"]
        if config.train.pass_size > 1:
            advice.append("set micro_batch to 1")
        if resolution > 768:
            advice.append("lower resolution to 768")
        advice = advice or ["use a GPU with more memory"]
        raise IdentityError(
            f"this training run needs about {estimate.device_gib:.1f} GB of GPU memory and this GPU has "
            f"{device_gib_total:.1f} GB: {' or '.join(advice)}.")
    return config, estimate
