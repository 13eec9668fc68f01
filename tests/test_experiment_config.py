"""Experiment configs: shipped ones resolve, every arm shares the budget, bad keys fail early."""

from __future__ import annotations

import pytest

from comit.experiments.config import flatten, load_experiment, shipped_experiments
from comit.experiments.runner import train_command, units, Unit
from comit.train.config import ConfigError, load_config, parse_override


@pytest.mark.parametrize("name", ["structure", "structure-tiny", "structure-gpu"])
def test_shipped_experiments_resolve_with_equal_budgets(name):
    assert name in shipped_experiments()
    config = load_experiment(name)
    budgets = {(c.loop.max_steps, c.optim.batch_size) for c in
               (config.train_config(arm, seed) for arm in config.arms for seed in config.seeds)}
    assert len(budgets) == 1 and len(config.seeds) >= 3
    assert config.train_config("G", 0).step.max_crops == 1 and config.train_config("G", 0).step.global_first_p == 1
    assert config.train_config("L-noSREPA", 0).step.srepa_weight == 0
    assert config.train_config("L", 0).step.global_first_p == 0.5 and config.train_config("L", 0).max_crops() == 10
    assert {config.train_config("L", s).loop.seed for s in config.seeds} == set(config.seeds)


def test_units_run_seed_by_seed():
    config = load_experiment("structure-tiny", seeds=[4, 5], arms=["G", "L"])
    assert units(config) == [Unit("L", 4), Unit("G", 4), Unit("L", 5), Unit("G", 5)]  # the config's arm order


def test_train_command_repeats_the_unit(tmp_path):
    config = load_experiment("structure")
    words = train_command(config, Unit("G", 2), tmp_path).split()
    assert words[:5] == ["comit", "train", "shapes-small", "--out", str(tmp_path / "runs" / "G" / "seed-2")]
    again = load_config(words[2], dict(parse_override(w) for w in words[5:]))
    assert again == config.train_config("G", 2)


def test_selecting_arms_drops_their_claims_and_curves():
    config = load_experiment("structure", arms=["G", "L-noSREPA"])
    assert list(config.arms) == ["G", "L-noSREPA"] and config.eval.curves.arms == [] and config.claims == []


def test_flatten_nested_and_dotted_keys():
    assert flatten({"step": {"max_crops": 1}, "loop.seed": 2}) == {"step.max_crops": 1, "loop.seed": 2}


@pytest.mark.parametrize("overrides, message", [
    (["arms.G.overrides.optim.batch_size=8"], "same training budget"),
    (["train.model.hidden_size=66"], "arm L: "),  # not divisible by 4 heads
    (["claims=[{text: x, metric: m, arm: L}]"], "either baseline"),
    (["eval.policies={'a b': {}}"], "folder names"),
    (["seeds=[]"], "seeds"),
])
def test_bad_experiments_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_experiment("structure-tiny", overrides)


def test_unknown_experiment_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="shipped: structure, structure-gpu, structure-tiny"):
        load_experiment("nope")
