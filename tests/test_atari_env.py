"""AtariVecEnv over real ALE games: protocol shapes, autoreset, raw scores, lives, seeding, names."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lodestar.envs.atari import AtariVecEnv, atari_env_id, resolve_game


def _random_actions(env: AtariVecEnv, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, env.num_actions, (env.num_envs,), generator=generator)


@pytest.mark.parametrize(
    ("name", "rom"),
    [
        ("Pong", "pong"),
        ("ALE/Pong-v5", "pong"),
        ("pong", "pong"),
        ("SpaceInvaders", "space_invaders"),
        ("space_invaders", "space_invaders"),
        ("ALE/SpaceInvaders-v5", "space_invaders"),
        ("SpaceInvadersNoFrameskip-v4", "space_invaders"),
        ("MontezumaRevenge", "montezuma_revenge"),
        ("TicTacToe3D", "tic_tac_toe_3d"),
    ],
)
def test_resolve_game_accepts_every_spelling(name: str, rom: str) -> None:
    assert resolve_game(name) == rom


def test_atari_env_id_is_the_v5_id() -> None:
    assert atari_env_id("space_invaders") == "ALE/SpaceInvaders-v5"
    assert atari_env_id("ALE/Pong-v5") == "ALE/Pong-v5"


def test_unknown_game_lists_close_matches() -> None:
    with pytest.raises(ValueError, match="unknown Atari game 'Brekout'.*breakout"):
        resolve_game("Brekout")
    with pytest.raises(ValueError, match="unknown Atari game 'NoSuchGameAtAll'"):
        AtariVecEnv("NoSuchGameAtAll", 2, device="cpu")
    with pytest.raises(ValueError, match="non-empty"):
        resolve_game("  ")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_envs": 0}, "num_envs"),
        ({"frameskip": 0}, "frameskip"),
        ({"max_episode_frames": -5}, "max_episode_frames"),
        ({"repeat_action_probability": 1.5}, "repeat_action_probability"),
        ({"noop_max": -1}, "noop_max"),
        ({"seed": 1.5}, "seed"),
        ({"device": "tpu9"}, "device"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict, message: str) -> None:
    args = {"num_envs": 2, "device": "cpu", **kwargs}
    with pytest.raises(ValueError, match=message):
        AtariVecEnv("Pong", **args)


def test_shapes_dtypes_devices_and_spaces() -> None:
    env = AtariVecEnv("Pong", 3, device="cpu", seed=0)
    assert env.game == "pong" and env.env_id == "ALE/Pong-v5"
    assert env.num_actions == 6 and env.action_meanings[:2] == ["NOOP", "FIRE"]
    assert env.single_observation_space.shape == (4, 84, 84)
    assert env.single_observation_space.dtype == np.uint8
    assert env.single_action_space.n == 6
    obs = env.reset()
    assert obs.shape == (3, 4, 84, 84) and obs.dtype == torch.uint8 and obs.device == torch.device("cpu")
    assert env.single_observation_space.contains(obs[0].numpy())
    obs, reward, terminated, truncated, info = env.step(torch.ones(3, dtype=torch.int64))
    assert obs.shape == (3, 4, 84, 84) and obs.dtype == torch.uint8
    assert reward.shape == (3,) and reward.dtype == torch.float32
    assert terminated.dtype == torch.bool and truncated.dtype == torch.bool
    expected = {
        "final_obs": (torch.uint8, (3, 4, 84, 84)),
        "episode_return": (torch.float32, (3,)),
        "episode_length": (torch.int64, (3,)),
        "lives": (torch.int32, (3,)),
        "life_lost": (torch.bool, (3,)),
        "episode_frame_number": (torch.int32, (3,)),
    }
    for key, (dtype, shape) in expected.items():
        assert info[key].dtype == dtype and tuple(info[key].shape) == shape, key
        assert info[key].device == env.device, key
    # Smaller custom preprocessing is passed through to the emulator.
    small = AtariVecEnv("Pong", 2, device="cpu", frame_stack=2, image_size=42)
    assert small.reset().shape == (2, 2, 42, 42)
    assert AtariVecEnv("Pong", 1, device="cpu", full_action_space=True).num_actions == 18


def test_actions_of_any_integer_type_and_clear_errors() -> None:
    env = AtariVecEnv("Breakout", 2, device="cpu", seed=0)
    env.reset()
    for actions in (np.array([0, 1], dtype=np.int32), torch.tensor([3, 2], dtype=torch.int16), [1, 0]):
        obs, *_ = env.step(actions)
        assert obs.shape == (2, 4, 84, 84)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        env.step(torch.zeros(3, dtype=torch.int64))
    # ale-py hangs on out-of-range actions, so this check must happen before they reach it.
    with pytest.raises(ValueError, match="action 4 out of range for breakout"):
        env.step(torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="action -1 out of range"):
        env.step(np.array([-1, 0]))
    with pytest.raises(TypeError, match="integer"):
        env.step(torch.zeros(2))


def test_step_requires_reset_and_closed_env_refuses() -> None:
    env = AtariVecEnv("Pong", 1, device="cpu")
    with pytest.raises(RuntimeError, match="reset"):
        env.step(torch.zeros(1, dtype=torch.int64))
    env.reset()
    env.close()
    with pytest.raises(RuntimeError, match="closed"):
        env.reset()


def test_same_step_autoreset_keeps_final_observation() -> None:
    # 40 emulator frames at frameskip 4: every episode is truncated at its 10th agent step.
    env = AtariVecEnv("Pong", 2, device="cpu", seed=0, max_episode_frames=40)
    first = env.reset()
    previous = first
    for step in range(1, 11):
        obs, _, terminated, truncated, info = env.step(torch.zeros(2, dtype=torch.int64))
        if step < 10:
            assert not (terminated | truncated).any()
            assert torch.equal(info["final_obs"], obs)
            assert (info["episode_length"] == 0).all()
            previous = obs
    assert truncated.all() and not terminated.any()
    assert torch.equal(info["episode_length"], torch.tensor([10, 10]))
    # The returned observation starts the next episode (same screen as a fresh reset: only the
    # newest frame of the stack is filled) ...
    assert torch.equal(obs, first)
    assert (obs[:, :3] == 0).all()
    # ... while final_obs continues the finished episode's frame stack by one frame.
    assert not torch.equal(info["final_obs"], obs)
    assert torch.equal(info["final_obs"][:, :3], previous[:, 1:])
    # The next step belongs to the new episode.
    obs, _, _, truncated, info = env.step(torch.zeros(2, dtype=torch.int64))
    assert not truncated.any()
    assert torch.equal(info["episode_frame_number"], torch.tensor([4, 4], dtype=torch.int32))


def test_final_obs_rows_of_running_envs_hold_the_returned_obs() -> None:
    env = AtariVecEnv("Breakout", 3, device="cpu", seed=3)
    env.reset()
    generator = torch.Generator().manual_seed(0)
    for _ in range(3000):
        obs, _, terminated, truncated, info = env.step(_random_actions(env, generator))
        done = terminated | truncated
        if done.any() and not done.all():
            break
    else:
        pytest.fail("no step where some but not all Breakout games ended")
    assert torch.equal(info["final_obs"][~done], obs[~done])
    assert not torch.equal(info["final_obs"][done], obs[done])


def test_episode_return_is_raw_sum_of_rewards() -> None:
    # SpaceInvaders pays 5-30 points per alien: a clipped reward could never exceed 1.
    env = AtariVecEnv("SpaceInvaders", 2, device="cpu", seed=0, max_episode_frames=1200)
    env.reset()
    generator = torch.Generator().manual_seed(0)
    running = torch.zeros(2)
    steps = torch.zeros(2, dtype=torch.int64)
    largest = 0.0
    finished = 0
    for _ in range(700):
        _, reward, terminated, truncated, info = env.step(_random_actions(env, generator))
        running += reward
        steps += 1
        largest = max(largest, float(reward.max()))
        done = terminated | truncated
        assert torch.equal(info["episode_return"], torch.where(done, running, torch.zeros(2)))
        assert torch.equal(info["episode_length"], torch.where(done, steps, torch.zeros_like(steps)))
        finished += int(done.sum())
        running[done] = 0.0
        steps[done] = 0
    assert finished >= 2
    assert largest > 1.0


def test_life_lost_flags_every_lost_life_but_the_last() -> None:
    # A Breakout game has 5 lives: 4 are lost mid-game, the 5th ends it (terminated, not life_lost).
    env = AtariVecEnv("Breakout", 2, device="cpu", seed=1)
    env.reset()
    generator = torch.Generator().manual_seed(1)
    losses = torch.zeros(2, dtype=torch.int64)
    previous_lives = None
    for _ in range(4000):
        _, _, terminated, truncated, info = env.step(_random_actions(env, generator))
        assert not (info["life_lost"] & (terminated | truncated)).any()
        if previous_lives is not None:
            dropped = (info["lives"] < previous_lives) & ~(terminated | truncated)
            assert torch.equal(info["life_lost"], dropped)
        losses += info["life_lost"]
        if terminated.any():
            break
        previous_lives = info["lives"]
    else:
        pytest.fail("no Breakout game over within 4000 random steps")
    assert (losses[terminated] == 4).all()
    assert (info["lives"][terminated] == 5).all()  # the new game starts with full lives


def test_episodic_life_ends_episodes_at_each_life_loss() -> None:
    env = AtariVecEnv("Breakout", 2, device="cpu", seed=0, episodic_life=True)
    env.reset()
    generator = torch.Generator().manual_seed(0)
    ends = 0
    for _ in range(400):
        _, _, terminated, _, info = env.step(_random_actions(env, generator))
        assert not info["life_lost"].any()
        # ale-py restarts the whole game at each life loss: the next episode has every life again.
        assert (info["lives"][terminated] == 5).all()
        ends += int(terminated.sum())
    # Random play loses a life roughly every 30 steps; whole games last about 150.
    assert ends >= 10


def test_seeds_reproduce_observations() -> None:
    def trajectory(seed: int | None, reset_seed: int | None = None) -> torch.Tensor:
        env = AtariVecEnv("Breakout", 2, device="cpu", seed=seed)
        frames = [env.reset(seed=reset_seed)]
        generator = torch.Generator().manual_seed(7)
        for _ in range(120):
            frames.append(env.step(_random_actions(env, generator))[0])
        return torch.stack(frames)

    base = trajectory(0)
    assert torch.equal(base, trajectory(0))
    assert torch.equal(base, trajectory(None, reset_seed=0))
    assert not torch.equal(base, trajectory(1))
    assert not torch.equal(base[:, 0], base[:, 1])  # env i is seeded with seed + i


def test_noop_starts_vary_the_start_frame() -> None:
    def first_frame_numbers(noop_max: int) -> torch.Tensor:
        env = AtariVecEnv("Pong", 4, device="cpu", seed=5, noop_max=noop_max)
        env.reset()
        return env.step(torch.zeros(4, dtype=torch.int64))[4]["episode_frame_number"]

    assert len(set(first_frame_numbers(0).tolist())) == 1
    assert len(set(first_frame_numbers(30).tolist())) > 1


def test_returned_observations_are_not_overwritten_by_later_steps() -> None:
    # On CPU observations share memory with ale-py's output arrays; they must stay valid.
    env = AtariVecEnv("Breakout", 2, device="cpu", seed=0)
    held = [env.reset()]
    copies = [held[0].clone()]
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):
        obs = env.step(_random_actions(env, generator))[0]
        held.append(obs)
        copies.append(obs.clone())
    for _ in range(30):
        env.step(_random_actions(env, generator))
    assert all(torch.equal(a, b) for a, b in zip(held, copies, strict=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_observations_match_cpu() -> None:
    cpu = AtariVecEnv("Breakout", 2, device="cpu", seed=0)
    gpu = AtariVecEnv("Breakout", 2, device="cuda", seed=0)
    assert torch.equal(cpu.reset(), gpu.reset().cpu())
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        actions = _random_actions(cpu, generator)
        a, b = cpu.step(actions), gpu.step(actions.cuda())
        assert b[0].device.type == "cuda" and b[4]["final_obs"].device.type == "cuda"
        assert torch.equal(a[0], b[0].cpu()) and torch.equal(a[1], b[1].cpu())


def test_cuda_packing_round_trips_every_dtype() -> None:
    # The CUDA path packs all step arrays into one byte buffer for a single host-to-device copy;
    # its packing and typed views are plain CPU code, checked here without a GPU.
    from lodestar.envs.atari import _byte_layout, _pack, _unpack

    rng = np.random.default_rng(0)
    arrays = {
        "obs": rng.integers(0, 255, (3, 4, 5, 5), dtype=np.uint8),
        "reward": rng.normal(size=3).astype(np.float32),
        "terminated": np.array([True, False, True]),
        "episode_length": np.array([7, 0, 9], dtype=np.int64),
        "lives": np.array([3, 2, 1], dtype=np.int32),
    }
    layout = _byte_layout(arrays)
    starts = {key: start for key, _, _, start, _ in layout}
    assert starts["episode_length"] % 8 == 0 and starts["reward"] % 4 == 0 and starts["lives"] % 4 == 0
    packed = np.empty(layout[-1][4], dtype=np.uint8)
    _pack(arrays, layout, packed)
    views = _unpack(torch.from_numpy(packed), layout)
    assert set(views) == set(arrays)
    for key, array in arrays.items():
        assert views[key].dtype == torch.from_numpy(array).dtype, key
        np.testing.assert_array_equal(views[key].numpy(), array)


def _step_all(env: AtariVecEnv, actions: np.ndarray) -> list:
    return [env.step(torch.as_tensor(row)) for row in actions]


def test_every_episode_of_a_seeded_env_starts_from_its_own_seed() -> None:
    """Episodes k >= 1 are re-seeded, so two envs with one seed agree however their past differs."""
    env = AtariVecEnv("Pong", 2, device="cpu", max_episode_frames=80, noop_max=30, seed=4, reseed_after=0)
    env.reset()
    assert env.episode_seed(1, 0) == 5 and env.episode_seed(1, 1) != env.episode_seed(1, 2)
    _step_all(env, np.zeros((25, 2), dtype=np.int64))  # 20-step episodes: both envs are in their second
    state = env.episode_state()
    assert state["seed_index"].tolist() == [1, 1] and state["episode_length"].tolist() == [5, 5]
    assert state["replay_length"].tolist() == [5, 5]


@pytest.mark.parametrize(("reseed_after", "replayed"), [(0, 15), (70, 75)])
def test_restoring_from_the_last_seeded_start_continues_bit_for_bit(reseed_after: int, replayed: int) -> None:
    """Resume replays only the actions since each env's last seeded start: the current episode when
    every episode is seeded, several episodes (ale-py's own resets in between) otherwise."""
    rng = np.random.default_rng(3)
    actions = rng.integers(0, 6, size=(90, 2))

    def make() -> AtariVecEnv:
        return AtariVecEnv(
            "Pong", 2, device="cpu", max_episode_frames=120, noop_max=30, reseed_after=reseed_after
        )

    straight = make()
    straight.reset(seed=11)
    before = _step_all(straight, actions[:75])[-1][0]
    state = straight.episode_state()
    horizon = int(state["replay_length"].max())
    assert horizon == replayed and state["episode_length"].tolist() == [15, 15]  # 30-step episodes

    resumed = make()
    backend = resumed._backend()
    calls = []
    real_step = backend.step
    backend.step = lambda a: calls.append(1) or real_step(a)  # type: ignore[method-assign]
    obs = resumed.restore_episodes(state, actions[75 - horizon : 75])
    assert len(calls) == horizon
    backend.step = real_step  # type: ignore[method-assign]
    assert torch.equal(obs, before)
    last = straight.step(torch.as_tensor(actions[75]))
    again = resumed.step(torch.as_tensor(actions[75]))
    for a, b in zip(
        [last, *_step_all(straight, actions[76:])], [again, *_step_all(resumed, actions[76:])], strict=True
    ):
        assert all(torch.equal(x, y) for x, y in zip(a[:4], b[:4], strict=True))
        assert all(torch.equal(a[4][key], b[4][key]) for key in a[4])


def _step_fields(result) -> list[torch.Tensor]:
    obs, reward, terminated, truncated, info = result
    return [obs, reward, terminated, truncated, *(info[key] for key in sorted(info))]


def test_step_async_then_step_wait_equals_step_across_episode_ends() -> None:
    # 40-frame episodes end every 10 agent steps, so autoreset and episode statistics are covered.
    plain = AtariVecEnv("Pong", 3, device="cpu", seed=5, max_episode_frames=40)
    split = AtariVecEnv("Pong", 3, device="cpu", seed=5, max_episode_frames=40)
    assert torch.equal(plain.reset(), split.reset())
    generator = torch.Generator().manual_seed(0)
    for _ in range(25):
        actions = _random_actions(plain, generator)
        expected = _step_fields(plain.step(actions))
        split.step_async(actions)
        actions.fill_(0)  # the env copied the actions: reusing the caller's buffer changes nothing
        got = _step_fields(split.step_wait())
        assert len(got) == len(expected)
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    plain.close()
    split.close()


def test_step_async_and_step_wait_refuse_misuse_with_clear_errors() -> None:
    env = AtariVecEnv("Pong", 2, device="cpu", seed=0, reseed_after=100)
    with pytest.raises(RuntimeError, match="reset"):
        env.step_async(torch.zeros(2, dtype=torch.int64))
    env.reset(seed=0)
    with pytest.raises(RuntimeError, match="without a step in flight"):
        env.step_wait()
    with pytest.raises(ValueError, match="out of range"):
        env.step_async(torch.tensor([0, 99]))
    env.step_async(torch.zeros(2, dtype=torch.int64))  # the bad action left nothing in flight
    with pytest.raises(RuntimeError, match="in flight"):
        env.step_async(torch.zeros(2, dtype=torch.int64))
    with pytest.raises(RuntimeError, match="in flight"):
        env.episode_state()
    env.step_wait()
    assert env.episode_state()["steps"] == 1
    env.step_async(torch.zeros(2, dtype=torch.int64))
    first = env.reset(seed=0)  # a step in flight is dropped by reset
    again = AtariVecEnv("Pong", 2, device="cpu", seed=0).reset(seed=0)
    assert torch.equal(first, again)
    env.close()
