"""Experiment configs: shipped ones resolve, every arm shares the budget, bad keys fail early."""

from __future__ import annotations

import pytest

from comit.experiments.config import flatten, load_experiment, shipped_experiments
from comit.experiments.runner import START, train_command, start_units, unit_config, units, Unit
from comit.train.config import ConfigError, load_config, parse_override


@pytest.mark.parametrize("name", ["structure", "structure-tiny", "structure-gpu", "structure-shared-start"])
def test_shipped_experiments_resolve_with_equal_budgets(name):
    assert name in shipped_experiments()
    config = load_experiment(name)
    budgets = {(c.loop.max_steps, c.optim.batch_size) for c in
               (config.train_config(arm, seed) for arm in config.arms for seed in config.seeds)}
    assert len(budgets) == 1 and len(config.seeds) >= 3
    assert config.train_config("G", 0).step.max_crops == 1 and config.train_config("G", 0).step.global_first_p == 1
    if "L-noSREPA" in config.arms:
        assert config.train_config("L-noSREPA", 0).step.srepa_weight == 0
    assert config.train_config("L", 0).step.global_first_p == 0.5 and config.train_config("L", 0).max_crops() == 10
    assert {config.train_config("L", s).loop.seed for s in config.seeds} == set(config.seeds)
    if name == "structure-shared-start":  # the 2026-12-06 run: the arms' start sees the global crop only
        start = config.start_config(config.start_seed(0))
        assert start.step.max_crops == 1 and start.model == config.train_config("L", 0).model
    else:  # every unit from a fresh model; any global-crop warm-up is the same for both arms, and short
        assert config.start is None and all("init.weights" not in config.train_overrides(a, 0) for a in config.arms)
        warmup = {config.train_config(arm, 0).step.global_warmup_steps for arm in config.arms}
        assert len(warmup) == 1 and warmup.pop() * 2 < config.train_config("L", 0).loop.max_steps
    if name == "structure":  # the paper's L does not read from scratch at this size: docs/results.md
        assert config.train_config("L", 0).step.global_warmup_steps == 750


def test_units_run_seed_by_seed():
    config = load_experiment("structure-tiny", seeds=[4, 5], arms=["G", "L"])
    assert units(config) == [Unit("L", 4), Unit("G", 4), Unit("L", 5), Unit("G", 5)]  # the config's arm order


@pytest.mark.parametrize("name, unit", [("structure", Unit("G", 2)), ("structure-shared-start", Unit(START, 0))])
def test_train_command_repeats_the_unit(tmp_path, name, unit):
    config = load_experiment(name)
    words = train_command(config, unit, tmp_path).split()
    assert words[:5] == ["comit", "train", config.base, "--out", str(tmp_path / "runs" / unit.arm / f"seed-{unit.seed}")]
    again = load_config(words[2], dict(parse_override(w) for w in words[5:]))
    assert again == unit_config(config, unit, tmp_path)


def test_arms_continue_from_their_seeds_start(tmp_path):
    config = load_experiment("structure-shared-start", ["start.overrides.loop.max_steps=2"], seeds=[0, 1])
    assert start_units(config) == [Unit(START, 0)]  # start.seed 0: one start for every seed
    for seed in (0, 1):
        assert unit_config(config, Unit("L", seed), tmp_path).init.weights == str(tmp_path / "runs/start/seed-0/model")
    per_seed = load_experiment("structure-shared-start", ["start.seed=null"], seeds=[0, 1])
    assert start_units(per_seed) == [Unit(START, 0), Unit(START, 1)]
    assert unit_config(per_seed, Unit("G", 1), tmp_path).init.weights == str(tmp_path / "runs/start/seed-1/model")
    assert unit_config(per_seed, Unit(START, 1), tmp_path).loop.seed == 1
    fresh = load_experiment("structure-shared-start", ["start=null"])
    assert start_units(fresh) == [] and unit_config(fresh, Unit("L", 0), tmp_path).init.weights is None


def test_selecting_arms_drops_their_claims_and_curves():
    config = load_experiment("structure-shared-start", arms=["G", "L-noSREPA"])
    assert list(config.arms) == ["G", "L-noSREPA"] and config.eval.curves.arms == [] and config.claims == []


def test_flatten_nested_and_dotted_keys():
    assert flatten({"step": {"max_crops": 1}, "loop.seed": 2}) == {"step.max_crops": 1, "loop.seed": 2}


@pytest.mark.parametrize("overrides, message", [
    (["arms.G.overrides.optim.batch_size=8"], "same training budget"),
    (["train.model.hidden_size=66"], "arm L: "),  # not divisible by 4 heads
    (["claims=[{text: x, metric: m, arm: L}]"], "either baseline"),
    (["eval.policies={'a b': {}}"], "folder names"),
    (["seeds=[]"], "seeds"),
    (["arms.start={}"], "names the arms' shared start"),
    (["start.overrides.loop.bogus=1"], "start: "),
])
def test_bad_experiments_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_experiment("structure-tiny", overrides)


def test_unknown_experiment_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="shipped: structure, structure-gpu, structure-shared-start, structure-tiny"):
        load_experiment("nope")
