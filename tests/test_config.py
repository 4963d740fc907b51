"""Typed configs: YAML + key=value overrides, and the errors for bad input."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

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
