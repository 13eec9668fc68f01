"""The typed configuration of a training-and-evaluation experiment over arms and seeds.

An experiment YAML names a base training config (``shapes-small``, a YAML path, ...), training
overrides shared by every arm (the common budget), each arm's own overrides, the seeds, what to
evaluate and which claims to check. Every (arm, seed) training config is resolved and checked
when the experiment is loaded, so a bad key fails with one line before any work starts.
Shipped experiments live in ``comit/experiments/configs/``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..model.policy_names import ADAPTIVE, POLICY_NAMES, RASTER_SCAN
from ..train.config import (ConfigError, TrainConfig, load_config, parse_override, read_mapping, resolve_yaml,
                            set_dotted, shipped_names, validated)

EXPERIMENTS_DIR = Path(__file__).resolve().parent / "configs"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # arm and policy names become folder names
_BUDGET_KEYS = ("loop.max_steps", "optim.batch_size")
START = "start"  # the runs of a shared start live beside the arms' under this name
PolicyName = Literal[POLICY_NAMES]  # a named crop policy (explicit index lists are for the CLI)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ArmConfig(_Section):
    """One way of training: a description and the training overrides that make it so."""

    description: str = ""
    overrides: dict[str, Any] = Field(default_factory=dict)


class StartConfig(_Section):
    """A model every arm continues from (their ``init.weights``), trained first from ``base`` with
    these overrides and its own budget (the shared ``train`` section is the arms' and does not
    apply). ``seed``: one start for every seed; None: one start per seed, trained with it.

    Why: a tokenizer must learn to read its message at all before crops or alignment can differ,
    and that costs more than what the arms compare (docs/results.md); a shared start spends it once."""

    description: str = ""
    overrides: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None


class PolicyConfig(_Section):
    """A crop policy at evaluation time (as in ``comit tokenize``); ``num_crops`` None: all."""

    order: PolicyName = RASTER_SCAN
    num_crops: int | None = Field(1, ge=1)
    global_crop: bool = True


class CurvesConfig(_Section):
    """Test-time crop curves (``evaluate_crop_curves``) for some arms."""

    arms: list[str] = Field(default_factory=lambda: ["L"])
    orders: list[PolicyName] = Field(default_factory=lambda: [RASTER_SCAN, ADAPTIVE])
    global_crop: list[bool] = Field(default_factory=lambda: [False, True])
    crop_counts: list[int] | None = None  # None: every count, 1 .. all crops
    num_images: int = Field(64, ge=1)  # val images scored at every point (the probes' test set too)
    metrics: list[Literal["recon", "align", "probe"]] = Field(default_factory=lambda: ["recon", "align", "probe"])
    steps: int | None = Field(None, ge=1)  # decoding steps at every point (None: eval.steps)


class GateConfig(_Section):
    """The working-tokenizer gate: a unit is compared only when its reconstruction under
    ``policy`` beats the same reconstruction scored against another image by ``min_gain_db``
    (a tokenizer whose message is ignored says nothing about crops or alignment)."""

    policy: str = "global"
    min_gain_db: float = Field(5.0, ge=0)


class EvalConfig(_Section):
    """What every trained model is scored on (see docs/evaluation.md for each metric)."""

    data: str = "shapes"
    num_images: int = Field(256, ge=1)  # val images for reconstruction and alignment
    num_train: int = Field(2000, ge=2)  # probe-training images (train split)
    num_test: int = Field(500, ge=1)  # probe test images (val split)
    steps: int = Field(10, ge=1)
    cfg: float = Field(7.5, ge=0)
    batch_size: int = Field(32, ge=1)
    fid_features: str = "shapes-teacher"
    probe_epochs: int | None = Field(None, ge=1)  # None: the probe's defaults (``ProbeSettings``)
    probe_patience: int | None = Field(None, ge=1)
    probe_controls: bool = True  # each unit's probes also read the positive and negative control messages
    policies: dict[str, PolicyConfig] = Field(default_factory=lambda: {
        "global": PolicyConfig(), "all": PolicyConfig(num_crops=None)})
    curves: CurvesConfig = Field(default_factory=CurvesConfig)
    gate: GateConfig | None = None  # None: every evaluated unit is compared


class ClaimConfig(_Section):
    """A claim to check: ``arm`` beats ``baseline`` on ``metric`` (``part/key`` of the arm table), or
    on arm ``arm``'s crop curve ``policy``, ``metric`` at ``crops[1]`` crops beats ``crops[0]``."""

    text: str
    metric: str
    arm: str
    baseline: str | None = None
    policy: str | None = None
    crops: tuple[int, int] | None = None
    paper: str = ""

    @model_validator(mode="after")
    def _one_kind(self) -> "ClaimConfig":
        if (self.baseline is None) == (self.policy is None or self.crops is None):
            raise ValueError(f"claim {self.text!r}: give either baseline (compare two arms) or policy and crops "
                             "(compare two points of a crop curve)")
        return self

    @property
    def kind(self) -> str:
        return "arms" if self.baseline is not None else "crops"


class ExperimentConfig(_Section):
    name: str = "experiment"
    base: str = "shapes-small"
    train: dict[str, Any] = Field(default_factory=dict)
    arms: dict[str, ArmConfig]
    start: StartConfig | None = None  # None: every arm trains from a fresh model
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    claims: list[ClaimConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_names(self) -> "ExperimentConfig":
        for kind, names in (("arm", self.arms), ("policy", self.eval.policies)):
            bad = [n for n in names if not _NAME.match(n)]
            if bad:
                raise ValueError(f"{kind} names become folder names: use letters, digits, '-', '_', '.' ({bad})")
        if not self.arms:
            raise ValueError("an experiment needs at least one arm")
        if START in self.arms:
            raise ValueError(f"'{START}' names the arms' shared start (the 'start' section), not an arm")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds repeat: {self.seeds}")
        if self.eval.gate is not None and self.eval.gate.policy not in self.eval.policies:
            raise ValueError(f"eval.gate.policy {self.eval.gate.policy!r} is not one of the eval policies "
                             f"({', '.join(self.eval.policies)})")
        unknown = [a for a in self.eval.curves.arms if a not in self.arms]
        unknown += [a for c in self.claims for a in (c.arm, c.baseline) if a is not None and a not in self.arms]
        if unknown:
            raise ValueError(f"unknown arm(s) {sorted(set(unknown))}; the arms are {', '.join(self.arms)}")
        return self

    def start_seed(self, seed: int) -> int | None:
        """The seed of the start the arms of ``seed`` continue from (None: no start)."""
        if self.start is None:
            return None
        return seed if self.start.seed is None else self.start.seed

    def start_overrides(self, start_seed: int) -> dict[str, Any]:
        """Dotted training overrides of a start: its own, then its seed."""
        overrides = {**flatten(self.start.overrides), "loop.seed": start_seed}
        overrides.setdefault("name", f"{self.name}-{START}")
        return overrides

    def train_overrides(self, arm: str, seed: int, start_weights: str | None = None) -> dict[str, Any]:
        """Dotted training overrides of one (arm, seed): shared ones, the arm's, the seed, then the
        start's model folder (``init.weights``) when the arms continue from one."""
        overrides = {**flatten(self.train), **flatten(self.arms[arm].overrides), "loop.seed": seed}
        overrides.setdefault("name", f"{self.name}-{arm}")
        if start_weights is not None:
            overrides["init.weights"] = start_weights
        return overrides

    def train_config(self, arm: str, seed: int, start_weights: str | None = None) -> TrainConfig:
        return self.resolve(f"arm {arm}", self.train_overrides(arm, seed, start_weights))

    def start_config(self, start_seed: int) -> TrainConfig:
        return self.resolve(START, self.start_overrides(start_seed))

    def resolve(self, what: str, overrides: dict[str, Any]) -> TrainConfig:
        try:
            return load_config(self.base, overrides)
        except ConfigError as error:
            raise ConfigError(f"{what}: {error}") from error


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"step": {"max_crops": 1}}`` -> ``{"step.max_crops": 1}`` (dotted keys stay as they are)."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


# ---------------------------------------------------------------------- loading
def shipped_experiments() -> list[str]:
    return shipped_names(EXPERIMENTS_DIR)


def resolve_experiment_path(name_or_path: str | Path) -> Path:
    return resolve_yaml(name_or_path, EXPERIMENTS_DIR, "experiment")


def load_experiment(name_or_path: str | Path, overrides: list[str] | None = None,
                    seeds: list[int] | None = None, arms: list[str] | None = None) -> ExperimentConfig:
    """Read an experiment, apply ``key=value`` overrides (``train.loop.max_steps=100``,
    ``eval.num_images=64``, ``seeds=[0,1]``), keep only ``arms`` when given, and check that every
    (arm, seed) resolves to a valid training config with the same budget."""
    path = resolve_experiment_path(name_or_path)
    raw = read_mapping(path, "a mapping (name, base, train, arms, seeds, eval, claims)")
    for key, value in (parse_override(o) for o in overrides or []):
        set_dotted(raw, key, value)
    if seeds is not None:
        raw["seeds"] = list(seeds)
    config = validated(ExperimentConfig, raw, str(path), "experiment")
    if arms is not None:
        config = select_arms(config, arms)
    check_units(config)
    return config


def select_arms(config: ExperimentConfig, arms: list[str]) -> ExperimentConfig:
    """The experiment restricted to ``arms`` (claims and curves about other arms are dropped)."""
    unknown = [a for a in arms if a not in config.arms]
    if unknown:
        raise ConfigError(f"unknown arm(s) {unknown}; the experiment has {', '.join(config.arms)}")
    kept = {a: config.arms[a] for a in config.arms if a in arms}
    claims = [c for c in config.claims if c.arm in kept and (c.baseline is None or c.baseline in kept)]
    curves = config.eval.curves.model_copy(update={"arms": [a for a in config.eval.curves.arms if a in kept]})
    return config.model_copy(update={"arms": kept, "claims": claims,
                                     "eval": config.eval.model_copy(update={"curves": curves})})


def check_units(config: ExperimentConfig) -> None:
    """Every arm and the start resolve (one seed is enough: seeds change nothing else) and the
    arms share the budget."""
    if config.start is not None:
        config.start_config(config.start_seed(config.seeds[0]))
    budgets = {}
    for arm in config.arms:
        resolved = config.train_config(arm, config.seeds[0])
        budgets[arm] = (resolved.loop.max_steps, resolved.optim.batch_size)
    if len(set(budgets.values())) > 1:
        described = ", ".join(f"{arm} {steps} steps x {batch} images" for arm, (steps, batch) in budgets.items())
        raise ConfigError(f"every arm must have the same training budget; got {described}. Set "
                          f"{' and '.join(_BUDGET_KEYS)} in the shared 'train' section, not per arm")


def dump_experiment(config: ExperimentConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
