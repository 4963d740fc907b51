"""The rollout collector: on-policy batches and off-policy sink writes from one loop."""

from __future__ import annotations

import pytest
import torch

from lodestar.agents.rollout import RolloutCollector
from tests.countdown_env import CountdownEnv


def test_on_policy_batch_uses_true_next_observation():
    env = CountdownEnv([2, 3])
    collector = RolloutCollector(env, lambda obs: torch.ones(2, dtype=torch.long))
    collector.reset()
    batch = collector.collect(4)
    assert batch.obs.shape == (4, 2, 3) and batch.reward.shape == (4, 2)
    # env 0 ends at step 2: its next_obs there is the final obs (t=2), not the reset obs (t=0)
    assert batch.next_obs[1, 0].tolist() == [0, 0, 2]
    assert batch.obs[2, 0].tolist() == [0, 1, 0]
    assert batch.terminated[:, 0].tolist() == [False, True, False, True]
    assert batch.terminated[:, 1].tolist() == [False, False, True, False]
    assert torch.equal(batch.last_obs, env._obs())
    episodes = collector.pop_episodes()
    assert [(e.env_index, e.episode_return, e.length) for e in episodes] == [
        (0, 4.0, 2),
        (1, 6.0, 3),
        (0, 4.0, 2),
    ]
    assert collector.pop_episodes() == []


def test_off_policy_sink_and_extras_and_episode_hook():
    env = CountdownEnv([3], limit=2)
    written, resets = [], []

    def policy(obs):
        return torch.zeros(1, dtype=torch.long), {"value": obs[:, 2]}

    collector = RolloutCollector(env, policy, sink=written.append, on_episode_end=resets.append)
    collector.reset()
    assert collector.collect(5) is None
    assert len(written) == 5 and collector.global_step == 5
    step = written[1]
    assert step.truncated.tolist() == [True] and step.terminated.tolist() == [False]
    assert step.next_obs.tolist() == [[0, 0, 2]] and step.extras["value"].tolist() == [1.0]
    assert len(resets) == 2
    kept = collector.collect(2, keep=True)
    assert kept.extras["value"].shape == (2, 1) and len(written) == 7


def test_recorded_actions_replay_to_the_same_moment_without_side_effects():
    env = CountdownEnv([2, 3])
    sequence = iter(torch.tensor([[0, 1], [2, 0], [1, 1], [0, 2], [2, 2]]))
    written, resets = [], []
    collector = RolloutCollector(
        env, lambda obs: next(sequence), written.append, resets.append, record_actions=True
    )
    collector.reset()
    collector.collect(5)
    recorded = collector.recorded_actions()
    assert recorded.dtype == torch.uint8 and recorded.tolist() == [[0, 1], [2, 0], [1, 1], [0, 2], [2, 2]]
    obs, steps = collector.obs.clone(), collector.global_step

    def unused_policy(obs):
        raise AssertionError("a replay sends the recorded actions, not the policy's")

    again = RolloutCollector(
        CountdownEnv([2, 3]), unused_policy, written.append, resets.append, record_actions=True
    )
    sinks, hooks = len(written), len(resets)
    again.replay_actions(recorded, seed=0)
    assert torch.equal(again.obs, obs) and again.global_step == steps == 10
    assert torch.equal(again.recorded_actions(), recorded)
    # The replay skips the policy, the sink and the episode hook, and leaves no episode records.
    assert (len(written), len(resets)) == (sinks, hooks) and again.pop_episodes() == []


def test_action_log_is_opt_in_and_holds_bytes():
    collector = RolloutCollector(CountdownEnv([2]), lambda obs: torch.ones(1, dtype=torch.long))
    collector.reset()
    collector.step()
    with pytest.raises(RuntimeError, match="record_actions=True"):
        collector.recorded_actions()
    wide = RolloutCollector(CountdownEnv([2]), lambda obs: torch.full((1,), 300), record_actions=True)
    assert wide.recorded_actions().shape == (0, 1)
    wide.reset()
    with pytest.raises(ValueError, match="0..255"):
        wide.step()


def test_action_log_keeps_only_what_resume_needs_and_continues_after_a_restore():
    env = CountdownEnv([4, 4])
    collector = RolloutCollector(env, lambda obs: torch.tensor([1, 2]), record_actions=True)
    collector.reset()
    collector.collect(5)
    collector.keep_recent_actions(2)
    assert collector.recorded_actions().tolist() == [[1, 2], [1, 2]]
    collector.keep_recent_actions(10)  # never more than it has
    assert collector.recorded_actions().shape == (2, 2)
    restored = RolloutCollector(CountdownEnv([4, 4]), lambda obs: torch.tensor([0, 1]), record_actions=True)
    restored.resume_at(collector.obs, collector.global_step, collector.recorded_actions())
    restored.step()
    assert restored.global_step == 12 and restored.recorded_actions().tolist() == [[1, 2], [1, 2], [0, 1]]
