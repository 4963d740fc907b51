"""Typed configs: YAML + key=value overrides, and the errors for bad input."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from lodestar.agents.dqn.config import DQNConfig
from lodestar.runtime.config import ConfigError, from_dict, load_config, to_dict


@dataclass
class EnvSection:
    game: str = "Pong"
    num_envs: int = 8


@dataclass
class Schema:
    env: EnvSection = field(default_factory=EnvSection)
    lr: float = 1e-4
    total_steps: int = 1000
    double: bool = False
    loss: Literal["huber", "mse"] = "huber"
    device: str = "auto"
    seed: int | None = None
    hidden: list[int] = field(default_factory=lambda: [64, 64])


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("env:\n  game: Breakout\nlr: 0.001\n")
    cfg = load_config(Schema, path, ["env.num_envs=4", "double=true", "seed=3", "hidden=[8, 16]", "lr=1"])
    assert cfg.env.game == "Breakout" and cfg.env.num_envs == 4
    assert cfg.double is True and cfg.seed == 3 and cfg.hidden == [8, 16]
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert to_dict(cfg)["env"] == {"game": "Breakout", "num_envs": 4}


def test_defaults_without_file():
    cfg = load_config(Schema)
    assert cfg.env.game == "Pong" and cfg.seed is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("env.gmae=Pong", "unknown config key 'env.gmae'; did you mean env.game"),
        ("total_step=10", "unknown config key 'total_step'"),
        ("total_steps=ten", "config key 'total_steps': expected an integer"),
        ("total_steps=1.5", "config key 'total_steps': expected an integer"),
        ("double=1", "config key 'double': expected true/false"),
        ("loss=l1", "config key 'loss': 'l1' is not one of 'huber', 'mse'"),
        ("lr=fast", "config key 'lr': expected a number"),
        ("hidden=3", "config key 'hidden': expected a list"),
        ("env=3", "env must be a mapping"),
        ("novalue", "is not of the form key=value"),
    ],
)
def test_override_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(Schema, None, [override])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Schema, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("env: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Schema, bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(Schema, scalar)


def test_unknown_key_in_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("env:\n  games: Pong\n")
    with pytest.raises(ConfigError, match="unknown config key 'env.games'"):
        load_config(Schema, path)


def test_round_trip_through_dict():
    cfg = load_config(Schema, None, ["env.game=Boxing"])
    assert from_dict(Schema, to_dict(cfg)) == cfg


def test_exponent_numbers_that_yaml_reads_as_strings_are_numbers(tmp_path):
    # YAML 1.1 reads exponent forms without a dot (1e-4, 1e6) as strings.
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-4\ntotal_steps: 1e6\n")
    cfg = load_config(Schema, path)
    assert cfg.lr == 1e-4 and isinstance(cfg.lr, float)
    assert cfg.total_steps == 1_000_000 and isinstance(cfg.total_steps, int)
    cfg = load_config(Schema, None, ["lr=1e-4", "total_steps=2e3", "seed=1e1"])
    assert (cfg.lr, cfg.total_steps, cfg.seed) == (1e-4, 2000, 10)
    for override, message in [
        ("lr=1e-4x", "config key 'lr': expected a number, got '1e-4x'"),
        ("lr=nan", "config key 'lr': expected a number, got 'nan'"),
        ("total_steps=1.5e0", "config key 'total_steps': expected an integer, got '1.5e0'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config(Schema, None, [override])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("replay.replay_ratio=-1", "replay.replay_ratio must be > 0, got -1.0"),
        ("replay.replay_ratio=0", "replay.replay_ratio must be > 0, got 0.0"),
        ("replay.capacity=-5", "replay.capacity must be >= 1, got -5"),
        ("replay.learning_starts=-1", "replay.learning_starts must be >= 0, got -1"),
        ("replay.beta_start=1.5", r"replay.beta_start must be in \[0, 1\], got 1.5"),
        ("replay.priority_eps=0", "replay.priority_eps must be > 0, got 0.0"),
        ("agent.batch_size=0", "agent.batch_size must be >= 1, got 0"),
        ("agent.n_step=0", "agent.n_step must be >= 1, got 0"),
        ("agent.gamma=0", r"agent.gamma must be in \(0, 1\], got 0.0"),
        ("agent.gamma=1.01", r"agent.gamma must be in \(0, 1\], got 1.01"),
        ("agent.lr=0", "agent.lr must be > 0, got 0.0"),
        ("agent.epsilon_start=1.2", r"agent.epsilon_start must be in \[0, 1\], got 1.2"),
        ("agent.epsilon_end=-0.1", r"agent.epsilon_end must be in \[0, 1\], got -0.1"),
        ("agent.max_grad_norm=0", "agent.max_grad_norm must be > 0 \\(or null"),
        ("agent.target_update_period=0", "agent.target_update_period must be >= 1, got 0"),
        ("env.num_envs=0", "env.num_envs must be >= 1, got 0"),
        ("env.repeat_action_probability=2", r"env.repeat_action_probability must be in \[0, 1\]"),
        ("eval.num_envs=0", "eval.num_envs must be >= 1, got 0"),
        ("eval.epsilon=-1", r"eval.epsilon must be in \[0, 1\], got -1.0"),
        ("eval.episodes=-1", "eval.episodes must be >= 0"),
        ("keep_checkpoints=0", "keep_checkpoints must be >= 1, got 0"),
        ("total_steps=0", "total_steps must be >= 1, got 0"),
    ],
)
def test_dqn_values_that_make_no_sense_are_refused_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DQNConfig, None, [override])


def test_dqn_replay_must_hold_a_batch_and_split_evenly_over_the_envs():
    # Without this check a too small buffer fails only once learning starts, many steps in.
    with pytest.raises(ConfigError, match=r"replay.capacity \(16\) must be at least agent.batch_size \(32\)"):
        load_config(DQNConfig, None, ["replay.capacity=16", "agent.batch_size=32"])
    with pytest.raises(
        ConfigError, match=r"replay.capacity \(1001\) must be a multiple of env.num_envs \(2\)"
    ):
        load_config(DQNConfig, None, ["replay.capacity=1001", "env.num_envs=2"])
    cfg = load_config(DQNConfig, None, ["replay.capacity=32", "agent.batch_size=32", "agent.lr=1e-4"])
    assert cfg.replay.capacity == 32 and cfg.agent.lr == 1e-4
