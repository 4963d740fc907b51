"""Seed statistics (runtime/stats.py) and the split rule of the evaluation protocol (runtime/protocol.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from lodestar.runtime.config import ConfigError, load_config
from lodestar.runtime.protocol import check_selection_splits
from lodestar.runtime.stats import (
    Interval,
    bootstrap_mean_difference,
    mean_std,
    standard_error_of_difference,
)

ROOT = Path(__file__).resolve().parent.parent


def test_mean_std_uses_the_sample_standard_deviation():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([4.5]) == (4.5, 0.0)
    with pytest.raises(ValueError, match="non-empty"):
        mean_std([])
    with pytest.raises(ValueError, match="finite"):
        mean_std([1.0, float("nan")])


def test_constant_arms_give_a_zero_width_interval_at_their_difference():
    interval = bootstrap_mean_difference([30.0, 30.0, 30.0], [20.0, 20.0, 20.0])
    assert interval == pytest.approx((10.0, 10.0, 10.0))
    assert interval.excludes_zero
    assert bootstrap_mean_difference([5.0] * 3, [5.0] * 3) == pytest.approx((0.0, 0.0, 0.0))
    assert not Interval(0.0, 0.0, 0.0).excludes_zero


def test_well_separated_arms_exclude_zero_and_overlapping_noisy_arms_do_not():
    rng = np.random.default_rng(1)
    better = bootstrap_mean_difference([61.0, 63.5, 62.0], [40.0, 41.5, 39.0])
    assert better.mean == pytest.approx(62.1667 - 40.1667, abs=1e-3)
    assert 0 < better.low <= better.mean <= better.high and better.excludes_zero
    worse = bootstrap_mean_difference([40.0, 41.5, 39.0], [61.0, 63.5, 62.0])
    assert worse.high < 0 and worse.excludes_zero
    noisy = bootstrap_mean_difference(rng.normal(50, 10, 5).tolist(), rng.normal(50, 10, 5).tolist())
    assert noisy.low < 0 < noisy.high and not noisy.excludes_zero


def test_interval_is_the_percentile_interval_of_independent_per_arm_resamples():
    """With one seed in the second arm only the first arm varies: the interval is that arm's mean's."""
    a = [0.0, 0.0, 10.0]
    # Resampled means of three seeds: 0, 10/3, 20/3 and 10 with probabilities 8/27, 12/27, 6/27, 1/27,
    # so the 97.5th percentile is 10 and the 95th is 20/3.
    interval = bootstrap_mean_difference(a, [0.0], resamples=20_000, seed=3)
    assert interval.mean == pytest.approx(10 / 3)
    assert (interval.low, interval.high) == pytest.approx((0.0, 10.0))
    ninety = bootstrap_mean_difference(a, [0.0], resamples=20_000, confidence=0.9, seed=3)
    assert (ninety.low, ninety.high) == pytest.approx((0.0, 20 / 3))
    narrow = bootstrap_mean_difference(a, [0.0], resamples=20_000, confidence=0.2, seed=3)
    assert (narrow.low, narrow.high) == pytest.approx((10 / 3, 10 / 3))  # the central 20%: the mode only
    # Arms are resampled independently, not as pairs: identical arms still differ across draws.
    assert bootstrap_mean_difference([0.0, 10.0], [0.0, 10.0]) == pytest.approx((0.0, -10.0, 10.0))


def test_bootstrap_is_reproducible_under_a_seed_and_checks_its_input():
    a, b = [51.3, 47.1, 55.9, 49.4], [45.2, 50.7, 44.6]  # uneven values: the resampled means vary
    assert bootstrap_mean_difference(a, b, seed=7) == bootstrap_mean_difference(a, b, seed=7)
    assert bootstrap_mean_difference(a, b, resamples=500, seed=7) != bootstrap_mean_difference(
        a, b, resamples=500, seed=8
    )
    assert bootstrap_mean_difference(a, b, seed=7).mean == bootstrap_mean_difference(a, b, seed=8).mean
    with pytest.raises(ValueError, match="arm b"):
        bootstrap_mean_difference(a, [])
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_mean_difference(a, b, resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_mean_difference(a, b, confidence=1.0)


def test_standard_error_of_difference():
    assert standard_error_of_difference([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]) == pytest.approx(math.sqrt(1 / 3))
    assert standard_error_of_difference([2.0, 2.0, 2.0], [7.0, 7.0, 7.0]) == 0.0


# -- the split rule ------------------------------------------------------------------------------------


def test_selection_on_a_reported_split_is_refused():
    check_selection_splits("val_unseen", ["val_seen", "val_unseen"])
    check_selection_splits(None, ["val_seen"])
    with pytest.raises(ValueError, match="select_split 'test' is a reported split"):
        check_selection_splits("test", ["test"])
    with pytest.raises(ValueError, match=r"eval_splits \['val_unseen', 'test'\] includes .*\['test'\]"):
        check_selection_splits("val_unseen", ["val_unseen", "test"])
    # On real R2R val_unseen is the headline: selecting on it is refused when the caller says so.
    with pytest.raises(ValueError, match="select_split 'val_unseen' is a reported split"):
        check_selection_splits("val_unseen", ["val_seen", "val_unseen"], reported=["val_unseen"])


@pytest.mark.parametrize(
    ("module", "schema", "config", "overrides"),
    [
        ("lodestar.agents.vln.speaker_training", "SpeakerTrainConfig", "vln_speaker.yaml",
         ["select_split=test", "data.eval_splits=[val_seen,test]"]),
        ("lodestar.agents.vln.finetune_config", "FinetuneConfig", "vln_finetune.yaml",
         ["select_split=test", "data.eval_splits=[val_seen,test]"]),
        ("lodestar.agents.vln.finetune_config", "FinetuneConfig", "vln_finetune.yaml",
         ["data.eval_splits=[val_unseen,test]"]),
        ("lodestar.pretrain.trainer", "PretrainConfig", "vln_pretrain.yaml", ["data.eval_splits=[val_seen,test]"]),
    ],
)  # fmt: skip
def test_trainer_configs_never_select_on_or_evaluate_test(module, schema, config, overrides):
    import importlib

    cls = getattr(importlib.import_module(module), schema)
    load_config(cls, ROOT / "configs" / config, [])  # the shipped config passes
    with pytest.raises(ConfigError, match="reported split"):
        load_config(cls, ROOT / "configs" / config, overrides)
