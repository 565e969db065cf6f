"""Settings of the two per-identity methods, one dataclass each, plus what both share.

Values the papers or the ID-EA reference code give are the defaults; values they do not give are our choices,
marked "choice" here and listed on the Train node's help page.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from .errors import IdentityError
from .recipes import DEFAULT_RECIPE
from .recipes import recipe as recipe_of

Method = Literal["SeFi-IDE", "ID-EA"]
METHODS: tuple[str, ...] = ("SeFi-IDE", "ID-EA")
Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
AttentionTokens = Literal["identity", "all"]
CLASS_WORDS: tuple[str, ...] = ("person", "woman", "man")

# SDXL cross-attention blocks at 32x32 (1024 px) where SeFi-IDE's attention loss is taken (choice: the paper's
# maps are ~16-32 cells wide; these are SDXL's lowest-resolution cross-attention layers).
SEFI_ATTENTION_BLOCKS: tuple[tuple[str, int], ...] = (
    ("input", 7), ("input", 8), ("middle", 0), ("output", 0), ("output", 1), ("output", 2))

# Where the identity and the class word go in a template: "{id}" once; "{class}" at most once.
ID_SLOT, CLASS_SLOT = "{id}", "{class}"


def _idea_templates() -> tuple[str, ...]:
    """ID-EA trains on 81 ImageNet-style captions (27 phrasings x photo / illustration / depiction). These are 27
    phrasings of our own for SDXL's natural-language captions of head-and-shoulders portraits, in the same three
    media (choice). ``{am}``: article and medium ("an illustration"); ``{m}``: the medium alone. As in the
    reference code, where the person's name would go stands "face of <identity> <class word>" (its dataset
    fills its captions with "face of <tokens> person"), so the tokens are learned in a face context."""
    phrasings = (
        "{am} of {p}", "a close-up {m} of {p}", "a cropped {m} of {p}", "a good {m} of {p}", "a bright {m} of {p}",
        "a dark {m} of {p}", "a high-quality {m} of {p}", "a candid {m} of {p}", "a portrait {m} of {p}",
        "{am} focused on {p}", "{am} of {p}, head and shoulders", "{am} of {p} looking at the camera",
        "{am} of {p} looking to the side", "{am} of {p} smiling", "{am} of {p} with a neutral expression",
        "{am} of {p} indoors", "{am} of {p} outdoors", "{am} of {p} in soft light", "{am} of {p} in daylight",
        "{am} of {p} against a plain background", "a small {m} of {p}", "a large {m} of {p}", "a nice {m} of {p}",
        "a simple {m} of {p}", "a detailed {m} of {p}", "a recent {m} of {p}", "{am} showing {p}",
    )
    media = (("a photo", "photo"), ("an illustration", "illustration"), ("a depiction", "depiction"))
    person = f"the face of {ID_SLOT} {CLASS_SLOT}"
    return tuple(phrase.format(am=am, m=m, p=person) for am, m in media for phrase in phrasings)


IDEA_TEMPLATES: tuple[str, ...] = _idea_templates()
# SeFi-IDE's paper prompt: the identity stands in place of the class word ("a photo of the face of V*").
SEFI_TEMPLATES: tuple[str, ...] = (f"a photo of the face of {ID_SLOT}",)

# The learning rate, batch and number of tokens of each method when the user leaves them at 0 ("the method's").
METHOD_DEFAULTS: dict[str, dict[str, float | int]] = {
    "ID-EA": {"lr": 0.012, "batch_size": 8, "num_tokens": 2},  # the reference code: 0.0015 x batch 8, 2 tokens
    "SeFi-IDE": {"lr": 0.005, "batch_size": 1, "num_tokens": 1},  # choice (unpublished); 1 token as ProSpect's V*
}


def method_default(method: str, name: str, value: float | int) -> float | int:
    """``value``, or the method's default for ``name`` when ``value`` is 0."""
    return value if value else METHOD_DEFAULTS[method][name]


@dataclass(frozen=True)
class TrainConfig:
    """What every method's loop needs.

    steps: total optimisation steps (a resumed run continues up to this number).
    batch_size: samples per step; each draws its own photo, prompt template, stage and noise.
    micro_batch: samples per forward/backward pass (0: the whole batch at once); the gradients of the passes
        are accumulated, so the result is the same and only the memory changes.
    precision: the UNet's compute dtype. Tokens and optimizer state are always fp32; fp16 uses dynamic loss
        scaling (steps whose scaled gradients overflow are skipped and the scale halves).
    lr: AdamW learning rate; betas/eps/weight decay as ID-EA's code (0.9, 0.999, 1e-7, 1e-2).
    """

    steps: int = 320
    lr: float = 0.005
    seed: int = 0
    batch_size: int = 1
    micro_batch: int = 0
    precision: Precision = "fp32"
    weight_decay: float = 1e-2
    adam_eps: float = 1e-7
    num_train_timesteps: int = 1000
    grad_clip: float = 0.0  # 0 = off
    loss_scale: float = 2.0 ** 16  # initial dynamic loss scale (fp16 only)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise IdentityError(f"steps must be at least 1, got {self.steps}")
        if not self.lr > 0:
            raise IdentityError(f"learning rate must be positive, got {self.lr}")
        if self.batch_size < 1:
            raise IdentityError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.micro_batch < 0:
            raise IdentityError(f"micro_batch must be 0 (whole batch) or more, got {self.micro_batch}")
        if self.precision not in PRECISIONS:
            raise IdentityError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    @property
    def pass_size(self) -> int:
        """Samples per forward/backward pass."""
        return min(self.micro_batch or self.batch_size, self.batch_size)


@dataclass(frozen=True)
class SeFiConfig:
    """SeFi-IDE ("Beyond Inserting"): per-stage key/value token pairs and the face-wise attention loss.

    stages: timestep ranges, equal splits of [0, 1000) (paper: 5 K/V pairs; "stage" = timestep range is our
        reading of the figure, as in ProSpect).
    kv_split: separate key-side and value-side tokens (False: one token set per stage; with stages=1 this is
        plain Textual Inversion and the file works with ``embedding:name``).
    num_tokens: tokens standing for the person (choice: 1, like ProSpect's V*).
    attention_weight: lambda of the attention loss (paper: 3e-3).
    attention_tokens: "all" (default, the paper's "each token"): the identity's columns and every column after it
        (end token, padding), which are the only keys the identity changes in CLIP's causal encoders, the two
        groups weighing the same (each averaged over its columns); "identity": only the identity's columns.
    class_word: the reference word the identity replaces ("person" in the paper's reference prompt).
    """

    stages: int = 5
    kv_split: bool = True
    num_tokens: int = 1
    attention_weight: float = 3e-3
    attention_tokens: AttentionTokens = "all"
    attention_blocks: tuple[tuple[str, int], ...] = SEFI_ATTENTION_BLOCKS
    class_word: str = "person"
    templates: tuple[str, ...] = SEFI_TEMPLATES

    def __post_init__(self) -> None:
        if not 1 <= self.stages <= 20:
            raise IdentityError(f"stages must be 1..20, got {self.stages}")
        if not 1 <= self.num_tokens <= 8:
            raise IdentityError(f"num_tokens must be 1..8, got {self.num_tokens}")
        if self.attention_tokens not in ("identity", "all"):
            raise IdentityError(f"attention_tokens must be 'identity' or 'all', got {self.attention_tokens!r}")
        if self.attention_weight < 0:
            raise IdentityError(f"attention_weight must be 0 or more, got {self.attention_weight}")
        _check_templates(self.templates)


@dataclass(frozen=True)
class IDEAConfig:
    """ID-EA: Textual-Inversion tokens cross-initialised at a textual ID anchor, an ID-Enhancer fusing the
    face-recognition embedding with that (fixed) anchor, and a training-only ID-Adapter on the text context.

    anchor_names: "celebrities" (the shipped list, data/anchor_names.txt) or comma-separated words or names whose
        token embeddings are averaged (the reference code averages 691 celebrity names).
    reg_weight: weight of the Mahalanobis anchor regulariser (code: 8e-4).
    adapter_scale: beta of the gated adapter (code: 0.4).
    adapter_fade: the last fraction of the steps over which the adapter's contribution falls linearly to 0, so
        the tokens alone carry the identity by the end, as at inference (choice: 0.2; the code keeps it to the
        end and drops it at inference).
    adapter_heads: heads of the enhancer's and adapter's attention (code: 8).
    train_enhancer: the released code leaves the enhancer out of the optimiser (a fixed random projection);
        True trains it too (choice, default False as released).
    """

    num_tokens: int = 2
    anchor_names: str = "celebrities"
    reg_weight: float = 8e-4
    reg_eps: float = 2e-5
    adapter_scale: float = 0.4
    adapter_fade: float = 0.2
    adapter_heads: int = 8
    train_enhancer: bool = False
    class_word: str = "person"
    templates: tuple[str, ...] = IDEA_TEMPLATES

    def __post_init__(self) -> None:
        if not 1 <= self.num_tokens <= 8:
            raise IdentityError(f"num_tokens must be 1..8, got {self.num_tokens}")
        if not 0.0 <= self.adapter_fade <= 1.0:
            raise IdentityError(f"adapter_fade must be between 0 and 1, got {self.adapter_fade}")
        _check_templates(self.templates)


def _check_templates(templates: tuple[str, ...]) -> None:
    if not templates:
        raise IdentityError("at least one prompt template is needed")
    for t in templates:
        if t.count(ID_SLOT) != 1 or t.count(CLASS_SLOT) > 1:
            raise IdentityError(f"a template needs {ID_SLOT} exactly once and {CLASS_SLOT} at most once: {t!r}")


@dataclass(frozen=True)
class MethodConfig:
    """One run: which method, its settings, the loop's settings."""

    method: Method
    train: TrainConfig = field(default_factory=TrainConfig)
    sefi: SeFiConfig = field(default_factory=SeFiConfig)
    idea: IDEAConfig = field(default_factory=IDEAConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise IdentityError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")

    @property
    def is_sefi(self) -> bool:
        return self.method == "SeFi-IDE"

    @property
    def class_word(self) -> str:
        return self.sefi.class_word if self.is_sefi else self.idea.class_word

    @property
    def num_tokens(self) -> int:
        return self.sefi.num_tokens if self.is_sefi else self.idea.num_tokens

    @property
    def templates(self) -> tuple[str, ...]:
        """The training templates with the class word filled in ({id} left for the tokens)."""
        raw = self.sefi.templates if self.is_sefi else self.idea.templates
        return tuple(t.replace(CLASS_SLOT, self.class_word) for t in raw)

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


def blocks_text(blocks: tuple[tuple[str, int], ...]) -> str:
    """("input", 7), ... -> "input:7, ..." (how the node shows attention layers)."""
    return ", ".join(f"{b}:{i}" for b, i in blocks)


def parse_blocks(text: str) -> tuple[tuple[str, int], ...]:
    """"input:7, middle:0" -> (("input", 7), ("middle", 0)); raises naming the part that is not a block."""
    blocks = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        block, _, number = part.partition(":")
        if block.strip() not in ("input", "middle", "output") or not number.strip().isdigit():
            raise IdentityError(f"attention_layers: {part!r} is not 'input:N', 'middle:N' or 'output:N'")
        blocks.append((block.strip(), int(number)))
    return tuple(blocks)


def method_config(method: str, *, steps: int, lr: float, seed: int, batch_size: int, micro_batch: int,
                  precision: str, num_tokens: int, class_word: str, stages: int, kv_split: bool,
                  attention_weight: float, attention_tokens: str, attention_layers: str, anchor_names: str,
                  reg_weight: float, adapter_scale: float, recipe: str = DEFAULT_RECIPE) -> MethodConfig:
    """The Train node's inputs as one config; 0 for the learning rate or batch means the recipe's, 0 for the number
    of tokens the method's own (METHOD_DEFAULTS)."""
    if method not in METHODS:
        raise IdentityError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    tokens = {"num_tokens": method_default(method, "num_tokens", num_tokens)}
    chosen = recipe_of(recipe, method)
    return MethodConfig(
        method,
        train=TrainConfig(steps=steps, lr=lr or chosen.lr, seed=seed, batch_size=batch_size or chosen.batch_size,
                          micro_batch=micro_batch, precision=precision),
        sefi=SeFiConfig(stages=stages, kv_split=kv_split, attention_weight=attention_weight,
                        attention_tokens=attention_tokens, attention_blocks=parse_blocks(attention_layers),
                        class_word=class_word, **(tokens if method == "SeFi-IDE" else {})),
        idea=IDEAConfig(anchor_names=anchor_names, reg_weight=reg_weight, adapter_scale=adapter_scale,
                        class_word=class_word, **(tokens if method == "ID-EA" else {})))
