"""The typed training configuration: every choice the paper leaves open, with its default and why.

A config is a YAML file with the sections below (any section or field may be omitted; unknown
keys and wrong types are errors before any work starts). Shipped configs live in
``comit/configs/`` and are named without the extension: ``comit train shapes-small``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..model.config import MODEL_SIZES, ModelConfig
from ..user_settings import first_error
from .sequences import crops_available

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = "tiny"


class ConfigError(ValueError):
    """A training config that cannot be used, with a one-line reason."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DataConfig(_Section):
    """Where training images come from.

    dataset: ``shapes`` / ``shapes:key=value,...`` (built-in, procedural) or an image folder
        (recursive; ``root/train`` is used when it exists — the ImageNet layout).
    flip: random horizontal flips (folders only; mirroring would break the shapes relations).
    num_workers: DataLoader worker processes (0: load in the training process).
    latent_cache: a folder written by ``comit cache-latents`` for this config: the autoencoder's
        Gaussians of every image and grid crop, so steps draw latents instead of encoding
        (``train/latent_cache.py``). Not with flips, random crop positions or the conveyor.
    """

    dataset: str = "shapes"
    flip: bool = False
    num_workers: int = Field(0, ge=0)
    latent_cache: str | None = None
    val_dataset: str | None = None  # images for the periodic sample grids; default: the val split


class TeacherConfig(_Section):
    """The frozen encoder REPA and SREPA align to.

    kind: ``shapes`` (the bundled CNN, offline), ``hf`` (any ``transformers`` vision model, DINOv2
        by default), or ``none`` (no alignment losses).
    name: hub id or local directory (``hf``); a directory for ``shapes`` (default: the bundled one).
    image_size: the teacher's input side (DINOv2: 224, a 16x16 patch grid).
    """

    kind: Literal["shapes", "hf", "none"] = "shapes"
    name: str | None = None
    image_size: int = Field(224, gt=0)
    dtype: Literal["float32", "bfloat16"] = "float32"


class StepConfig(_Section):
    """One training step (see ``step.py``). Defaults and why:

    min_crops, max_crops: K ~ uniform{min..max} crops per image (max None: every crop, global
        included), so the model never knows whether more crops follow and learns to spend
        tokens coarse to fine.
    global_first_p: probability that the first crop is the whole image; 0.5 so the model serves
        both the global-first and the local-only policies that inference offers.
    crop_positions: ``grid`` (the inference grid: the model trains on the positions it will see)
        or ``random`` (any pixel position of the crop size: denser offsets, for generalisation).
    unconditional_p: probability of decoding from m0 (guidance training), 0.1 as is usual for
        classifier-free guidance.
    t_sampling: ``uniform`` t in [0, 1], or ``logit_normal`` (SD3's choice, more weight in the
        middle of the path) with ``t_mean``, ``t_std``.
    flow_loss: where the flow-matching error is measured: ``velocity`` (the paper's) or ``data``
        (the clean-image guess, for ``model.prediction: data``): the velocity error weights each t
        by 1 / (1 - t)², so the nearly clean end, which the noisy input alone explains, dominates;
        in data space the noisy end, where only the message can help, counts as much.
    repa_weight, srepa_weight: weights of the two alignment losses (REPA's 0.5 for each).
    projector_hidden: width of the 3-layer MLP projectors (REPA uses 2048; None: 4 x hidden).
    srepa_pooling: how the message states become one vector for SREPA: ``mean`` over tokens.
    srepa_source: what SREPA aligns: ``states``, the decoder's message states at the tap (our
        reading of the paper), or ``codes``, the written FSQ codes of all tokens, flattened. The
        decoder's message states also see the noisy image, so at low noise they can match the
        teacher without the message carrying anything; the codes can only match it if the encoder
        writes what the image is (docs/training.md, "Message collapse").
    drop_quantization_p, corrupt_p: FSQ training noise (see ``FSQ``); off by default because the
        paper does not mention them.
    fsq_straight_through: the gradient FSQ's rounding passes back: ``bounded`` (the tanh's
        derivative, standard FSQ, vanishes for saturated codes) or ``identity`` (the bound's slope
        near 0 everywhere, so saturated codes still learn; see docs/training.md, "Message collapse").
    saturation_weight, saturation_radius: weight of a penalty (|raw| - radius)^2 on the raw FSQ
        values beyond ``radius`` (0: off, the paper has none). Beyond |raw| = 2 the tanh bound is
        flat; the penalty pulls values back to where a step can still change a code.
    readout_weight: weight of an auxiliary readout (0: off, the paper has none): an MLP from the
        written codes and the decoding offset to the full image latent, scored by MSE and dropped
        after training. The flow loss reaches the encoder only through a decoder that must first
        learn to read the message, and small runs stall there (docs/training.md); the readout gives
        the encoder a direct signal to write what the image is from the first step.
    unseen_weight: weight of the flow loss on the latent cells no crop of the sequence has shown
        (1: the paper's loss on the whole latent; guidance-dropout samples always count everywhere).
        A message written from a few local crops predicts little of the rest, and the loss there
        teaches the decoder to lean on the noisy input rather than on the message
        (docs/training.md, "Local crops").
    global_warmup_steps: a curriculum (0: off, the paper has none): for the first so many optimiser
        steps every sequence is the global crop alone, from m0, with the gradient through that one
        write; the sequences above follow. With the paper's sequences from step 0, the gradient
        carries "global crop from m0" in only 5 % of samples and small runs never learn to read
        the message; after a global-only warm-up they do (docs/training.md). On the conveyor the
        warm-up's images hold the global crop alone and leave after one step, so a warm-up step
        trains ``batch_size`` writes, not ``batch_size x max_crops``.
    backprop_updates: which message writes carry gradient: ``last`` (the paper's: the first K - 1
        run without gradient, the model learns to improve a message) or ``all`` (backpropagation
        through the whole sequence of writes, not in the paper). With ``last``, an early local
        crop's write is only ever trained when it happens to be the last of its sequence, and the
        small runs never learnt to write local crops (docs/training.md, "Local crops").
    conveyor: keep each image's message between steps and write its crops one per step, each with
        gradient (``conveyor.py``), instead of writing K - 1 crops without gradient every step
        (off: the paper's step). Every prefix of every sequence is then trained once, and a step
        costs about half as much on small models. ``optim.batch_size`` is then the number of NEW
        images per step; a step trains about ``batch_size x max_crops`` (image, prefix) pairs.
        Each image's sequence has ``max_crops`` crops (``min_crops`` does not apply: K runs from 1).
    """

    min_crops: int = Field(1, ge=1)
    max_crops: int | None = Field(None, ge=1)
    global_first_p: float = Field(0.5, ge=0, le=1)
    crop_positions: Literal["grid", "random"] = "grid"
    unconditional_p: float = Field(0.1, ge=0, le=1)
    t_sampling: Literal["uniform", "logit_normal"] = "uniform"
    t_mean: float = 0.0
    t_std: float = Field(1.0, gt=0)
    flow_loss: Literal["velocity", "data"] = "velocity"
    repa_weight: float = Field(0.5, ge=0)
    srepa_weight: float = Field(0.5, ge=0)
    projector_hidden: int | None = Field(None, gt=0)
    srepa_pooling: Literal["mean"] = "mean"
    srepa_center: bool = True
    srepa_source: Literal["states", "codes"] = "states"
    drop_quantization_p: float = Field(0.0, ge=0, le=1)
    corrupt_p: float = Field(0.0, ge=0, le=1)
    fsq_straight_through: Literal["bounded", "identity"] = "bounded"
    saturation_weight: float = Field(0.0, ge=0)
    readout_weight: float = Field(0.0, ge=0)
    saturation_radius: float = Field(2.0, gt=0)
    unseen_weight: float = Field(1.0, ge=0, le=1)
    global_warmup_steps: int = Field(0, ge=0)
    backprop_updates: Literal["last", "all"] = "last"
    conveyor: bool = False


class InitConfig(_Section):
    """How a fresh model's weights start (a resumed run loads them instead). Defaults: DiT's.

    message_gate: starting value of the attention and MLP gates of the message/query stream in
        every block. DiT starts every gate at 0; then the queries cannot read the crop until
        the gates open, every image writes the same message, and the flow loss pushes that one
        message into FSQ's saturated corners, where the straight-through gradient vanishes (the
        collapse that small runs show, docs/training.md). 1 lets the queries read the crop from
        the first step.
    message_positions: how the message and query position vectors start: ``random`` (normal, std
        ``message_embed_std``) or ``grid`` (the patches' 2-D sin-cos table at that std; needs one
        message token per patch, the paper's ratio: 256 tokens for 16x16 patches), so that token i
        starts out attending to, and being read by, patch i.
    query_key, query_key_scale: ``tied`` starts every block's key projection equal to its query
        projection (both scaled by ``query_key_scale``), so attention starts as similarity of the
        (normalised) tokens: with ``message_positions: grid`` query i then looks at patch i from the
        first step, and patches at their neighbours. With independent random projections the
        queries' attention is near uniform and they learn to carry a crop far more slowly than the
        patches do (docs/training.md, "Where the time goes").
    patch_gate: the same for the image-patch stream (DiT: 0). At 0 the patches receive nothing from
        attention at first, so the decoder's output cannot depend on the message until the gates
        have grown: swapping two images' messages changes it by exactly 0 at initialisation.
    message_embed_std: std of the learned message positions, query token and query positions
        (1.0, as the released code; 0.02, ViT's choice, was our default before 2026-12-01: then the
        query positions barely differ from one another and every query writes nearly the same code).
    weights: fine-tuning: start the transformer from a saved COMiT model (``bundled``, a folder
        written by ``comit train``/``save_pretrained`` or a hub id) instead of a fresh
        initialisation; the other ``init`` fields are then unused. Its architecture must equal
        ``model``; the training heads (projectors, readout), the optimiser and the step count start
        fresh.
    """

    message_gate: float = 0.0
    patch_gate: float = 0.0
    message_positions: Literal["random", "grid"] = "random"
    query_key: Literal["independent", "tied"] = "independent"
    query_key_scale: float = Field(1.0, gt=0)
    message_embed_std: float = Field(1.0, gt=0)
    weights: str | None = None


class OptimConfig(_Section):
    """AdamW with linear warm-up then a decay (paper: Adam, lr 3e-4, inverse-square-root decay, EMA 0.999).

    schedule: after the warm-up, ``inverse_sqrt`` (the paper's: lr * sqrt(warmup / step)),
        ``constant``, ``cosine`` (to 0 at ``loop.max_steps``), or ``wsd`` (warm-up, stable,
        decay: constant, then linear to 0 over the last ``decay_steps`` before ``loop.max_steps``,
        from the first step when the run is shorter; a run can be resumed at a longer
        ``max_steps`` until the decay starts, so its length need not be fixed in advance). Inverse-sqrt suits runs of
        hundreds of thousands of steps; a short run barely moves under it: at lr 5e-4 with a
        200-step warm-up, the learning rates of 2,500 steps sum to 0.56 (constant: 1.25).

    batch_size: the GLOBAL batch per optimiser step, over all processes and accumulation steps;
        each process takes ``batch_size / (world_size * grad_accum)`` images per micro-step. The
        learning rate is not rescaled with the number of processes: the same config gives the
        same optimisation on 1 or 64 GPUs.
    """

    lr: float = Field(3e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(1000, ge=0)
    schedule: Literal["inverse_sqrt", "constant", "cosine", "wsd"] = "inverse_sqrt"
    decay_steps: int = Field(0, ge=0)
    batch_size: int = Field(32, ge=1)
    grad_accum: int = Field(1, ge=1)
    grad_clip: float | None = Field(1.0, gt=0)
    ema_decay: float = Field(0.999, ge=0, lt=1)


class LoopConfig(_Section):
    """How long to train and what to write.

    precision: ``auto`` (bf16 autocast on CUDA and on CPUs with bf16 units — AVX-512 BF16, AMX —,
        fp32 on other CPUs, where torch emulates bf16 and a step ran 16x slower), ``fp32`` or
        ``bf16``. Experiments that compare runs made on different machines pin ``fp32``.
    eval_every: every so many steps, score the EMA model on ``eval_images`` held-out images
        (``validation.py``: 10-step and one-step PSNR, gain over another image) into ``val.jsonl``
        (0: never).
    keep_last: checkpoints kept on disk (older ones are deleted once a newer one is complete).
    sample_every: write a grid of reconstructions of fixed val images (0: never).
    tensorboard, wandb_project: also show the metrics, the sample grids and the held-out curve in
        TensorBoard (``RUN/tensorboard``) or in this Weights & Biases project (``train/run_log.py``).
    """

    max_steps: int = Field(1000, ge=1)
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(500, ge=1)
    keep_last: int = Field(2, ge=1)
    sample_every: int = Field(0, ge=0)
    sample_images: int = Field(8, ge=1)
    eval_every: int = Field(0, ge=0)
    eval_images: int = Field(64, ge=2)
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    tensorboard: bool = False
    wandb_project: str | None = None
    compile: bool = False


class TrainConfig(_Section):
    """A whole training run; ``model`` holds the :class:`ModelConfig` of the tokenizer to train."""

    name: str = "run"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    step: StepConfig = Field(default_factory=StepConfig)
    init: InitConfig = Field(default_factory=InitConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    loop: LoopConfig = Field(default_factory=LoopConfig)

    @model_validator(mode="after")
    def _check_crops(self) -> "TrainConfig":
        available = self.max_crops_available()
        if self.step.max_crops is not None and self.step.max_crops > available:
            raise ValueError(f"step.max_crops {self.step.max_crops} exceeds the {available} crops of the "
                             f"{self.model.grid_size}x{self.model.grid_size} grid plus the global crop")
        if self.step.global_first_p < 1 and self.step.min_crops > self.model.grid_size ** 2:
            raise ValueError(f"step.min_crops {self.step.min_crops} exceeds the {self.model.grid_size ** 2} local crops "
                             "of a sequence without the global crop; set step.global_first_p=1 or lower min_crops")
        if self.step.min_crops > self.max_crops():
            raise ValueError(f"step.min_crops {self.step.min_crops} exceeds max_crops {self.max_crops()}")
        if self.step.conveyor and self.step.backprop_updates != "last":
            raise ValueError("step.conveyor writes one crop per step with gradient: it cannot be combined with "
                             "step.backprop_updates=all")
        if self.optim.schedule == "wsd" and self.optim.decay_steps < 1:
            raise ValueError("optim.schedule wsd needs optim.decay_steps >= 1 (the steps of the final linear decay)")
        if self.model.attention != "hard":
            raise ValueError("training uses attention: hard (the intended mask); 'released' exists only to "
                             "reproduce the released checkpoints")
        self._check_latent_cache()
        return self

    def _check_latent_cache(self) -> None:
        """A cache holds the unflipped image and its grid crops, and the conveyor encodes its own."""
        if self.data.latent_cache is None:
            return
        refused = [reason for reason, present in (
            ("data.flip (the cached crops are unflipped)", self.data.flip),
            ("step.crop_positions=random (only grid crops are cached)", self.step.crop_positions == "random"),
            ("step.conveyor (it keeps its own latents)", self.step.conveyor)) if present]
        if refused:
            raise ValueError(f"data.latent_cache cannot serve {refused[0]}; drop the cache or that setting")

    def max_crops_available(self) -> int:
        return crops_available(self.model.grid_size ** 2, self.step.global_first_p)

    def max_crops(self) -> int:
        return self.step.max_crops if self.step.max_crops is not None else self.max_crops_available()

    def micro_batch(self, world_size: int) -> int:
        """Images per process per micro-step; a clear error when the global batch does not split."""
        parts = world_size * self.optim.grad_accum
        if self.optim.batch_size % parts:
            raise ConfigError(f"optim.batch_size {self.optim.batch_size} does not split into {world_size} "
                              f"processes x {self.optim.grad_accum} accumulation steps")
        return self.optim.batch_size // parts


# ---------------------------------------------------------------------- loading
def shipped_configs() -> list[str]:
    return shipped_names(CONFIGS_DIR)


def shipped_names(directory: Path) -> list[str]:
    return sorted(path.stem for path in directory.glob("*.yaml"))


def resolve_config_path(name_or_path: str | Path | None) -> Path:
    """A shipped config name (``tiny``, ``shapes-small``, ...) or a YAML file path."""
    return resolve_yaml(DEFAULT_CONFIG if name_or_path is None else name_or_path, CONFIGS_DIR, "config")


def resolve_yaml(name_or_path: str | Path, directory: Path, what: str) -> Path:
    """A YAML file path, or the name of one shipped in ``directory``; ``what`` ("config") names it in errors."""
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_file():
        return path
    shipped = directory / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(f"no {what} file {name!r} and no shipped {what} of that name; "
                      f"shipped: {', '.join(shipped_names(directory))}")


def load_config(name_or_path: str | Path | None = None, overrides: list[str] | dict | None = None) -> TrainConfig:
    """Read a config and apply ``key=value`` overrides (``optim.lr=1e-4``, or ``lr=1e-4`` when
    the key names one field of one section). Every error is a :class:`ConfigError`."""
    path = resolve_config_path(name_or_path)
    raw = read_mapping(path, "a mapping of sections (model, data, teacher, step, init, optim, loop)")
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides or [])
    for key, value in items:
        set_dotted(raw, qualify_key(key), value)
    return validate_config(raw, str(path))


def validate_config(raw: dict, source: str = "config") -> TrainConfig:
    """Build the config; ``model.size`` (tiny, S, B, L, XL) fills in the transformer's width and depth."""
    model = raw.get("model")
    if isinstance(model, dict) and "size" in model:
        model = dict(model)
        size = model.pop("size")
        if size not in MODEL_SIZES:
            raise ConfigError(f"{source}: model.size {size!r} is not one of {', '.join(MODEL_SIZES)}")
        raw = {**raw, "model": {**MODEL_SIZES[size], **model}}
    return validated(TrainConfig, raw, source, "config")


def read_mapping(path: Path, holds: str) -> dict:
    """The YAML mapping in ``path`` (a one-line ``ConfigError`` otherwise; ``holds`` says what it should hold)."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold {holds}")
    return raw


Model = TypeVar("Model", bound=BaseModel)


def validated(cls: type[Model], raw: dict, source: str, what: str) -> Model:
    """``cls(**raw)``, its first validation error as one ``ConfigError`` line naming ``source`` and the key."""
    try:
        return cls(**raw)
    except ValidationError as error:
        where, message = first_error(error)
        raise ConfigError(f"{source}: {where or what}: {message}") from error


def parse_override(text: str) -> tuple[str, Any]:
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise ConfigError(f"override {text!r} is not key=value (e.g. max_steps=100 or optim.lr=1e-4)")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def qualify_key(key: str) -> str:
    """``max_steps`` -> ``loop.max_steps``: a bare key must name exactly one field."""
    if "." in key:
        return key
    sections = {name: annotation for name, annotation in TrainConfig.model_fields.items()}
    owners = [name for name, field in sections.items()
              if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
              and key in field.annotation.model_fields]
    if key in sections:
        return key
    if len(owners) == 1:
        return f"{owners[0]}.{key}"
    if not owners:
        raise ConfigError(f"unknown config key {key!r}; write section.key, sections: {', '.join(sections)}")
    raise ConfigError(f"config key {key!r} is ambiguous ({', '.join(owners)}); write section.key")


def set_dotted(raw: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {key}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def dump_config(config: TrainConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
