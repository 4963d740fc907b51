"""The DQN speed levers change how an update or a step is computed, never what it computes.

Each switch of ``AgentConfig`` (``adam_impl``, ``channels_last``, ``compile``, ``precision``) is run
against the plain setting from the same weights on the same batches; ``overlap_env_step`` is run
against sequential stepping with the same seeds.
"""

from __future__ import annotations

import pytest
import torch

from lodestar.agents.dqn.agent import DQNAgent
from lodestar.agents.dqn.config import AgentConfig, DQNConfig
from lodestar.agents.dqn.trainer import DQNTrainer
from lodestar.agents.rollout import RolloutCollector
from lodestar.envs.atari import AtariVecEnv
from lodestar.runtime.config import load_config
from tests.dqn_runs import PRESET, TINY_PONG, Batch

PLAIN = {"adam_impl": "for_loop", "channels_last": False, "compile": False, "precision": "float32"}


def _batch(seed: int, size: int = 8) -> Batch:
    g = torch.Generator().manual_seed(seed)

    def frames() -> torch.Tensor:
        return torch.randint(0, 256, (size, 4, 84, 84), dtype=torch.uint8, generator=g)

    return Batch(
        obs=frames(),
        action=torch.randint(0, 3, (size,), generator=g),
        reward=torch.randn(size, generator=g),
        discount=torch.full((size,), 0.99),
        next_obs=frames(),
        weights=torch.rand(size, generator=g) + 0.5,
    )


def _agent(**levers) -> DQNAgent:
    """An agent with the plain settings but ``levers``, its networks holding one fixed set of weights."""
    torch.manual_seed(0)
    reference = DQNAgent(3, AgentConfig(**PLAIN), torch.device("cpu"))
    agent = DQNAgent(3, AgentConfig(**{**PLAIN, **levers}), torch.device("cpu"))
    agent.q_network.load_state_dict(reference.q_network.state_dict())
    agent.target_network.load_state_dict(reference.target_network.state_dict())
    return agent


def _train(agent: DQNAgent, updates: int = 3) -> list[float]:
    return [float(agent.update(_batch(seed))["loss"]) for seed in range(updates)]


def _assert_same_weights(a: DQNAgent, b: DQNAgent, atol: float) -> None:
    for (name, x), y in zip(a.q_network.state_dict().items(), b.q_network.state_dict().values(), strict=True):
        assert torch.allclose(x, y, rtol=0, atol=atol), name


@pytest.mark.parametrize("impl", ["fused", "foreach"])
def test_adam_kernels_make_the_same_updates(impl):
    plain, other = _agent(), _agent(adam_impl=impl)
    assert other.optimizer.param_groups[0][impl] is True
    assert _train(plain) == pytest.approx(_train(other), rel=1e-6)
    # Adam moves every weight by about lr=1e-4 per step: a wrong kernel setting shows far above 1e-7.
    _assert_same_weights(plain, other, atol=1e-7)
    state = other.optimizer.state[next(other.q_network.parameters())]
    assert int(state["step"]) == 3


def test_the_configured_adam_kernels_win_over_a_checkpoints(tmp_path):
    saved = _agent()  # for_loop
    _train(saved, 1)
    torch.save(saved.state_dict(), tmp_path / "agent.pt")
    resumed = _agent(adam_impl="fused")
    resumed.load_state_dict(torch.load(tmp_path / "agent.pt"))
    assert resumed.optimizer.param_groups[0]["fused"] is True
    assert resumed.optimizer.param_groups[0]["foreach"] is False
    _train(saved, 2)
    _train(resumed, 2)
    _assert_same_weights(saved, resumed, atol=1e-7)


def test_channels_last_keeps_q_values_updates_and_checkpoint_layout():
    plain, fast = _agent(), _agent(channels_last=True)
    conv = fast.q_network.torso.layers[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    obs = _batch(7).obs
    assert torch.allclose(plain.q_network(obs), fast.q_network(obs), atol=1e-5)
    assert torch.equal(plain.act(obs, 0.0), fast.act(obs, 0.0))
    assert _train(plain) == pytest.approx(_train(fast), rel=1e-5)
    # Convolutions sum in another order; Adam turns a rounding flip of a near-zero gradient into a few
    # 1e-6 differences, a tenth of one step (lr=1e-4). A wrong layout would move weights by whole steps.
    _assert_same_weights(plain, fast, atol=1e-5)
    # Checkpoints are interchangeable; loading keeps the fast layout.
    fast.load_state_dict(plain.state_dict())
    assert fast.q_network.torso.layers[0].weight.is_contiguous(memory_format=torch.channels_last)
    _assert_same_weights(plain, fast, atol=0.0)


def test_bfloat16_autocast_stays_close_to_float32():
    plain, bf16 = _agent(), _agent(precision="bfloat16")
    obs = _batch(7).obs
    with bf16._autocast():
        low = bf16.q_network(obs)
    assert low.dtype == torch.bfloat16
    assert torch.allclose(low.float(), plain.q_network(obs), rtol=0.05, atol=0.02)
    start = {name: value.clone() for name, value in plain.q_network.state_dict().items()}
    assert _train(plain, 2) == pytest.approx(_train(bf16, 2), rel=0.05)
    # Adam's first steps move every weight by about lr, with the gradient's sign: bfloat16 flips the
    # sign of some small gradients, so the two updates point the same way rather than match.
    after = bf16.q_network.state_dict()
    for name, value in plain.q_network.state_dict().items():
        ours, theirs = (value - start[name]).flatten(), (after[name] - start[name]).flatten()
        assert torch.nn.functional.cosine_similarity(ours, theirs, dim=0) > 0.9, name


@pytest.mark.slow  # compiling takes from about 20 s (warm cache) to minutes on 2 cores
def test_a_compiled_update_matches_the_eager_one():
    plain, compiled = _agent(), _agent(compile=True)
    assert _train(plain) == pytest.approx(_train(compiled), rel=1e-5)
    _assert_same_weights(plain, compiled, atol=1e-6)


# -- overlapped stepping -------------------------------------------------------------------------------


def test_send_then_receive_gives_the_transitions_of_step():
    def collect(split: bool) -> list[tuple[torch.Tensor, ...]]:
        env = AtariVecEnv("Pong", 2, device="cpu", seed=3, max_episode_frames=80)
        actions = torch.Generator().manual_seed(5)
        collector = RolloutCollector(env, lambda obs: torch.randint(0, 6, (2,), generator=actions))
        collector.reset(seed=3)
        out = []
        for _ in range(30):  # episodes of 20 agent steps: some end on the way
            if split:
                collector.send()
                t = collector.receive()
            else:
                t = collector.step()
            out.append((t.obs, t.action, t.reward, t.terminated, t.truncated, t.next_obs))
        env.close()
        return out

    sequential, split = collect(False), collect(True)
    assert any(bool(step[4].any()) for step in sequential)  # an episode was cut: final obs were used
    for a, b in zip(sequential, split, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_the_collector_refuses_a_second_send_and_a_receive_without_send():
    env = AtariVecEnv("Pong", 1, device="cpu", seed=0)
    collector = RolloutCollector(env, lambda obs: torch.zeros(1, dtype=torch.long))
    collector.reset(seed=0)
    with pytest.raises(RuntimeError, match="receive\\(\\) called without a step in flight"):
        collector.receive()
    collector.send()
    with pytest.raises(RuntimeError, match="send\\(\\) called twice"):
        collector.send()
    collector.reset(seed=0)  # drops the step in flight
    collector.step()
    env.close()


def _tiny(*extra: str) -> DQNConfig:
    # Random actions throughout (epsilon 1): they come from the trainer's generator alone, so both
    # modes must send the same ones, however their networks differ.
    return load_config(
        DQNConfig,
        PRESET,
        [*TINY_PONG, "total_steps=100", "agent.epsilon_start=1", "agent.epsilon_end=1", *extra],
    )


def test_overlapped_stepping_stores_the_transitions_of_sequential_stepping(tmp_path):
    runs = {}
    for overlap in (True, False):
        trainer = DQNTrainer(_tiny(f"overlap_env_step={overlap}"), tmp_path / str(overlap))
        trainer.train()
        runs[overlap] = trainer
    overlapped, sequential = runs[True], runs[False]
    assert overlapped.agent.updates == sequential.agent.updates == 15  # (100 - 40) env steps / 4
    assert torch.equal(overlapped.collector.recorded_actions(), sequential.collector.recorded_actions())
    a, b = overlapped.replay.state_dict(), sequential.replay.state_dict()
    # Contents, frames and stream state; the priorities (sampler) follow each run's own TD errors.
    stored = _leaves({key: a[key] for key in ("fields", "frames", "writer")})
    assert stored == _leaves({key: b[key] for key in ("fields", "frames", "writer")})
    assert any(key.startswith("frames.") and value[0] > 0 for key, value in stored.items())


def _leaves(state: dict, prefix: str = "") -> dict[str, object]:
    """Every leaf of a nested state dict, tensors as (numel, their bytes) for comparison."""
    out: dict[str, object] = {}
    for key, value in state.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        elif isinstance(value, torch.Tensor):
            out[prefix + key] = (value.numel(), value.contiguous().view(-1).view(torch.uint8).tolist())
        else:
            out[prefix + key] = value
    return out


def test_overlapped_updates_sample_the_buffer_before_the_step(tmp_path):
    trainer = DQNTrainer(_tiny("overlap_env_step=true"), tmp_path / "run")
    sizes = []
    real_update = trainer.update

    def spy(step: int):
        sizes.append((len(trainer.replay), trainer.collector.global_step, step))
        return real_update(step)

    trainer.update = spy  # type: ignore[method-assign]
    trainer.train()
    # Every update ran while the step to `step` was in flight: the buffer held the steps before it.
    assert sizes and all(stored == done == step - 2 for stored, done, step in sizes)


def test_the_update_path_reads_nothing_back_from_the_device(tmp_path, monkeypatch):
    trainer = DQNTrainer(_tiny("replay.prioritized=false"), tmp_path / "run")
    trainer.before_loop(None)
    while trainer.collector.global_step < 40:
        trainer.train_step()

    def refuse(*args, **kwargs):
        raise AssertionError("a host read (item/float/bool/tolist) inside the update path")

    for name in ("item", "tolist", "__float__", "__bool__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    updates = [trainer.update(48) for _ in range(3)]
    monkeypatch.undo()
    assert all(set(u) == {"loss", "q_mean"} and u["loss"].dim() == 0 for u in updates)
    assert trainer._read_metrics(updates)["loss"] >= 0.0
