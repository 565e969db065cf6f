"""Settings of the two per-identity methods, one dataclass each, plus what both share.

Values the papers give are the defaults; values they do not give (shared/docs/seed-methods.md §7) are our
choices, marked "choice" here and listed on the node's help page.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

Method = Literal["SeFi-IDE", "ID-EA"]
METHODS: tuple[str, ...] = ("SeFi-IDE", "ID-EA")

# SDXL cross-attention blocks at 32x32 (1024 px) where SeFi-IDE's attention loss is taken (choice: the paper's
# maps are ~16x16 on SD1; these are SDXL's lowest-resolution cross-attention layers).
SEFI_ATTENTION_BLOCKS: tuple[tuple[str, int], ...] = (
    ("input", 7), ("input", 8), ("middle", 0), ("output", 0), ("output", 1), ("output", 2))

# ID-EA uses 81 ImageNet templates with "face of <v0> <v1> person"; a few representative ones (choice).
IDEA_TEMPLATES: tuple[str, ...] = (
    "a photo of a face of {id} person", "a close-up photo of a face of {id} person",
    "a cropped photo of a face of {id} person", "a good photo of a face of {id} person",
    "a bright photo of a face of {id} person", "a rendition of a face of {id} person",
)
SEFI_TEMPLATES: tuple[str, ...] = ("a photo of the face of {id}",)


@dataclass(frozen=True)
class TrainConfig:
    """What every method's loop needs.

    steps: total optimisation steps (a resumed run continues up to this number).
    batch_size: samples per step, drawn from the cached latents (and their mirror images when ``flip``).
    lr: AdamW learning rate; betas/eps/weight decay as ID-EA's code (0.9, 0.999, 1e-7, 1e-2).
    """

    steps: int = 320
    lr: float = 5e-3
    seed: int = 0
    batch_size: int = 1
    flip: bool = True
    weight_decay: float = 1e-2
    adam_eps: float = 1e-7
    num_train_timesteps: int = 1000
    grad_clip: float = 0.0  # 0 = off

    def __post_init__(self) -> None:
        from .errors import IdentityError

        if self.steps < 1:
            raise IdentityError(f"steps must be at least 1, got {self.steps}")
        if not self.lr > 0:
            raise IdentityError(f"learning rate must be positive, got {self.lr}")
        if self.batch_size < 1:
            raise IdentityError(f"batch_size must be at least 1, got {self.batch_size}")


@dataclass(frozen=True)
class SeFiConfig:
    """SeFi-IDE ("Beyond Inserting"): per-stage key/value token pairs and the face-wise attention loss.

    stages: timestep ranges, equal splits of [0, 1000) (paper: 5 K/V pairs; "stage" = timestep range is our
        reading of the figure, as in ProSpect).
    kv_split: separate key-side and value-side tokens (False: one token set per stage; with stages=1 this is
        plain Textual Inversion and the file works with ``embedding:name``).
    num_tokens: tokens per slot (choice: 1, like ProSpect's V*).
    attention_weight: lambda of the attention loss (paper: 3e-3).
    attention_tokens: "identity" aligns the V* columns with the reference word's column; "all" also aligns
        every other prompt token with itself in the reference prompt (choice; the paper's exact form is unknown).
    class_word: the reference word ("person" in the paper's reference prompt).
    """

    stages: int = 5
    kv_split: bool = True
    num_tokens: int = 1
    attention_weight: float = 3e-3
    attention_tokens: Literal["identity", "all"] = "identity"
    attention_blocks: tuple[tuple[str, int], ...] = SEFI_ATTENTION_BLOCKS
    class_word: str = "person"
    templates: tuple[str, ...] = SEFI_TEMPLATES

    def __post_init__(self) -> None:
        from .errors import IdentityError

        if not 1 <= self.stages <= 20:
            raise IdentityError(f"stages must be 1..20, got {self.stages}")
        if not 1 <= self.num_tokens <= 8:
            raise IdentityError(f"num_tokens must be 1..8, got {self.num_tokens}")
        if self.attention_tokens not in ("identity", "all"):
            raise IdentityError(f"attention_tokens must be 'identity' or 'all', got {self.attention_tokens!r}")


@dataclass(frozen=True)
class IDEAConfig:
    """ID-EA: 2 Textual-Inversion tokens cross-initialised at a textual ID anchor, an ID-Enhancer fusing the
    face-recognition embedding with the anchor, and a training-only ID-Adapter on the text context.

    anchor_names: comma-separated names whose token embeddings are averaged (Cross Initialization uses 691
        celebrity names we do not ship; choice: "person").
    reg_weight: weight of the Mahalanobis anchor regulariser (code: 8e-4).
    adapter_scale: beta of the gated adapter (code: 0.4).
    adapter_heads: heads of the enhancer's and adapter's attention (code: 8).
    train_enhancer: the released code leaves the enhancer out of the optimiser (a fixed random projection);
        True trains it too (choice, default False as released).
    """

    num_tokens: int = 2
    anchor_names: str = "person"
    reg_weight: float = 8e-4
    reg_eps: float = 2e-5
    adapter_scale: float = 0.4
    adapter_heads: int = 8
    train_enhancer: bool = False
    class_word: str = "person"
    templates: tuple[str, ...] = IDEA_TEMPLATES

    def __post_init__(self) -> None:
        from .errors import IdentityError

        if not 1 <= self.num_tokens <= 8:
            raise IdentityError(f"num_tokens must be 1..8, got {self.num_tokens}")


@dataclass(frozen=True)
class MethodConfig:
    """One run: which method, its settings, the loop's settings."""

    method: Method
    train: TrainConfig = field(default_factory=TrainConfig)
    sefi: SeFiConfig = field(default_factory=SeFiConfig)
    idea: IDEAConfig = field(default_factory=IDEAConfig)

    def __post_init__(self) -> None:
        from .errors import IdentityError

        if self.method not in METHODS:
            raise IdentityError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")

    @property
    def templates(self) -> tuple[str, ...]:
        return self.sefi.templates if self.method == "SeFi-IDE" else self.idea.templates

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MethodConfig:
        sefi = dict(data["sefi"])
        sefi["attention_blocks"] = tuple((str(b), int(i)) for b, i in sefi["attention_blocks"])
        sefi["templates"] = tuple(sefi["templates"])
        idea = dict(data["idea"])
        idea["templates"] = tuple(idea["templates"])
        return cls(method=data["method"], train=TrainConfig(**data["train"]), sefi=SeFiConfig(**sefi),
                   idea=IDEAConfig(**idea))
