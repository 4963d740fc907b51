"""``--help`` of every config-driven script lists the config keys with their types and defaults."""

from __future__ import annotations

import dataclasses
from typing import Literal

import finetune_vln
import pretrain_vln
import pytest
import synthesize
import train_dqn
import train_speaker

from lodestar.envs.nav.data.dataset import FEATURES_HELP
from lodestar.runtime.config import describe_config


@dataclasses.dataclass
class Inner:
    rate: float = 0.5
    mode: Literal["fast", "slow"] = "fast"


@dataclasses.dataclass
class Outer:
    name: str | None = None
    steps: int = 10
    flags: list[str] = dataclasses.field(default_factory=lambda: ["a", "b"])
    inner: Inner = dataclasses.field(default_factory=Inner)
    verbose: bool = True


def test_describe_config_lists_nested_keys_types_and_defaults() -> None:
    rows = [line.split() for line in describe_config(Outer).splitlines()]
    assert rows == [
        ["name", "str", "|", "null", "null"],
        ["steps", "int", "10"],
        ["flags", "list[str]", "[a,", "b]"],
        ["inner.rate", "float", "0.5"],
        ["inner.mode", "{fast,slow}", "fast"],
        ["verbose", "bool", "true"],
    ]


@pytest.mark.parametrize(
    ("script", "keys"),
    [
        (train_dqn, ["env.game", "agent.double", "replay.replay_ratio", "total_steps"]),
        (train_speaker, ["data_dir", "iterations"]),
        (pretrain_vln, ["data_dir", "iterations"]),
        (finetune_vln, ["data_dir", "iterations"]),
        (synthesize, ["decoding"]),
    ],
    ids=lambda x: getattr(x, "__name__", ""),
)
def test_training_script_help_lists_its_config_keys(
    script: object, keys: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--help"])  # type: ignore[attr-defined]
    assert exit_info.value.code == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith("  ")}
    assert set(keys) <= listed


@pytest.mark.parametrize("script", [train_speaker, pretrain_vln, finetune_vln], ids=lambda m: m.__name__)
def test_navigation_help_documents_automatic_features(
    script: object, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        script.main(["--help"])  # type: ignore[attr-defined]
    out = capsys.readouterr().out
    assert ["data.features", "str", "auto"] in [line.split() for line in out.splitlines()]
    assert FEATURES_HELP in out  # what auto means and how to name a file
