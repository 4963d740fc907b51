"""The one rollout collector: steps a vector env with a policy, for on- or off-policy learners.

On-policy use: ``collector.collect(T)`` returns a :class:`Rollout` of ``[T, N, ...]`` tensors.
Off-policy use: pass a ``sink`` (a callable taking each :class:`Transition`, e.g. one that writes
it into a replay buffer) and every step is handed to it as it happens; ``collect`` then returns ``None`` unless asked to keep the batch too.

A step can also be split in two, :meth:`RolloutCollector.send` (act and start the env's step) and
:meth:`RolloutCollector.receive` (collect it), so that a learner computes while the env steps.

Transitions always carry the *true* next observation: for envs whose episode ended at a step, the
env's ``info["final_obs"]`` replaces the auto-reset observation.

Exact resume of envs that cannot be snapshotted (ale-py's emulators): with ``record_actions`` the
collector keeps the actions it sends (one byte per env step), and :meth:`RolloutCollector.replay_actions`
brings a freshly seeded env back to where those actions left it. An env that can restart from the
actions of its current episodes (:meth:`lodestar.envs.atari.AtariVecEnv.restore_episodes`) needs only the
recent ones: :meth:`RolloutCollector.keep_recent_actions` bounds the log and :meth:`RolloutCollector.resume_at`
continues from a restored env. The policy stays free of side effects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, cast, overload

import torch

from lodestar.envs.base import Observation, VecEnv, select_rows

PolicyOutput = torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]
Policy = Callable[[Observation], PolicyOutput]


@dataclass
class Transition:
    """One batched env step as the learner sees it."""

    obs: Observation
    action: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    next_obs: Observation
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    @property
    def done(self) -> torch.Tensor:
        return self.terminated | self.truncated


@dataclass
class Rollout:
    """``T`` steps of ``N`` envs, time-major; ``next_obs`` holds true next observations."""

    obs: Observation
    action: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    next_obs: Observation
    extras: dict[str, torch.Tensor]
    last_obs: Observation


@dataclass
class EpisodeRecord:
    """A finished episode as reported by the env layer (raw return, agent steps)."""

    env_index: int
    episode_return: float
    length: int
    global_step: int


def _stack(items: list[Observation]) -> Observation:
    first = items[0]
    if isinstance(first, dict):  # one env's observations are all dicts or all tensors
        dicts = cast(list[dict[str, torch.Tensor]], items)
        return {key: torch.stack([item[key] for item in dicts]) for key in first}
    return torch.stack(cast(list[torch.Tensor], items))


class RolloutCollector:
    """Steps ``env`` with ``policy``; keeps the current observation and finished-episode records.

    ``on_episode_end`` is called with the done mask after every step in which some episode ended,
    so recurrent policies can clear their state for those envs. ``record_actions`` keeps a log of the
    discrete actions (0-255) sent to the env, for :meth:`replay_actions`.
    """

    def __init__(
        self,
        env: VecEnv,
        policy: Policy,
        sink: Callable[[Transition], None] | None = None,
        on_episode_end: Callable[[torch.Tensor], None] | None = None,
        record_actions: bool = False,
    ) -> None:
        self.env = env
        self.policy = policy
        self.sink = sink
        self.on_episode_end = on_episode_end
        self.obs: Observation | None = None
        self.global_step = 0
        self._episodes: list[EpisodeRecord] = []
        # One byte per env step: 10M Atari steps cost 10 MB, not 10M tensors.
        self._action_log: bytearray | None = bytearray() if record_actions else None
        self._sent: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None  # a step in flight

    def reset(self, seed: int | None = None) -> Observation:
        """Reset the env (dropping a step in flight) and return the first observation."""
        self._sent = None
        self.obs = self.env.reset(seed=seed)
        return self.obs

    def step(self) -> Transition:
        """One batched step: act, step the env, write to the sink, record finished episodes."""
        self.send()
        return self.receive()

    def send(self) -> None:
        """The first half of :meth:`step`: choose the actions and start the env's step.

        An env with ``step_async``/``step_wait`` (ale-py's emulators in their threads) then runs while
        the caller does other work until :meth:`receive`; any other env steps in :meth:`receive`.
        """
        if self.obs is None:
            raise RuntimeError("call reset() before stepping the collector")
        if self._sent is not None:
            raise RuntimeError("send() called twice: receive() the step in flight first")
        with torch.no_grad():
            output = self.policy(self.obs)
        action, extras = output if isinstance(output, tuple) else (output, {})
        if self._action_log is not None:
            self._action_log += self._action_bytes(action)
        step_async = getattr(self.env, "step_async", None)
        if step_async is not None:
            step_async(action)
        self._sent = (action, extras)

    def receive(self) -> Transition:
        """The second half of :meth:`step`: the transition of the step :meth:`send` started."""
        if self._sent is None:
            raise RuntimeError("receive() called without a step in flight: call send() first")
        (action, extras), self._sent = self._sent, None
        step_wait = getattr(self.env, "step_wait", None)
        result = step_wait() if step_wait is not None else self.env.step(action)
        next_obs, reward, terminated, truncated, info = result
        assert self.obs is not None  # send() checked it
        done = terminated | truncated
        any_done = bool(done.any())
        true_next = select_rows(done, info["final_obs"], next_obs) if any_done else next_obs
        transition = Transition(self.obs, action, reward, terminated, truncated, true_next, extras, info)
        if self.sink is not None:
            self.sink(transition)
        self.global_step += self.env.num_envs
        if any_done:
            self._record_episodes(done, info)
            if self.on_episode_end is not None:
                self.on_episode_end(done)
        self.obs = next_obs
        return transition

    @overload
    def collect(self, num_steps: int, keep: Literal[True]) -> Rollout: ...

    @overload
    def collect(self, num_steps: int, keep: bool | None = None) -> Rollout | None: ...

    def collect(self, num_steps: int, keep: bool | None = None) -> Rollout | None:
        """Run ``num_steps`` batched steps; return the stacked batch when there is no sink (or ``keep``)."""
        keep = self.sink is None if keep is None else keep
        steps = []
        for _ in range(num_steps):
            transition = self.step()
            if keep:
                steps.append(transition)
        if not keep:
            return None
        assert self.obs is not None  # step() set it
        extras_keys = steps[0].extras.keys()
        return Rollout(
            obs=_stack([s.obs for s in steps]),
            action=torch.stack([s.action for s in steps]),
            reward=torch.stack([s.reward for s in steps]),
            terminated=torch.stack([s.terminated for s in steps]),
            truncated=torch.stack([s.truncated for s in steps]),
            next_obs=_stack([s.next_obs for s in steps]),
            extras={key: torch.stack([s.extras[key] for s in steps]) for key in extras_keys},
            last_obs=self.obs,
        )

    def recorded_actions(self) -> torch.Tensor:
        """Every action sent since the collector was made (or replayed to), ``[steps, num_envs]`` uint8."""
        if self._action_log is None:
            raise RuntimeError("this collector does not record actions: create it with record_actions=True")
        if not self._action_log:  # torch.frombuffer refuses an empty buffer
            return torch.zeros((0, self.env.num_envs), dtype=torch.uint8)
        return torch.frombuffer(self._action_log, dtype=torch.uint8).clone().view(-1, self.env.num_envs)

    def replay_actions(self, actions: torch.Tensor, seed: int | None) -> None:
        """Bring the env back to where ``actions`` (``[steps, num_envs]``) left it after a reset with ``seed``.

        The steps bypass the policy, the sink and ``on_episode_end`` and leave no episode records;
        ``global_step`` restarts from 0 to count them and, when recording, the log holds exactly them.
        """
        policy, sink, hook = self.policy, self.sink, self.on_episode_end
        recorded = iter(actions.to(self.env.device, dtype=torch.int64))
        self.policy, self.sink, self.on_episode_end = (lambda obs: next(recorded)), None, None
        if self._action_log is not None:
            self._action_log = bytearray()
        self.global_step = 0
        try:
            self.reset(seed=seed)
            for _ in range(len(actions)):
                self.step()
        finally:
            self.policy, self.sink, self.on_episode_end = policy, sink, hook
        self._episodes.clear()

    def keep_recent_actions(self, steps: int) -> None:
        """Forget all but the last ``steps`` batched actions of the log (what exact resume still needs)."""
        if self._action_log is None:
            raise RuntimeError("this collector does not record actions: create it with record_actions=True")
        keep = min(steps, len(self._action_log) // self.env.num_envs) * self.env.num_envs
        del self._action_log[: len(self._action_log) - keep]

    def resume_at(self, obs: Observation, global_step: int, recent_actions: torch.Tensor) -> None:
        """Continue from an env restored elsewhere: its observation, the step count and the recent
        actions (``[steps, num_envs]``) that the next checkpoint must still hold."""
        self.obs, self.global_step, self._sent = obs, global_step, None
        self._episodes.clear()
        if self._action_log is not None:
            self._action_log = bytearray(recent_actions.to("cpu", torch.uint8).contiguous().numpy().tobytes())

    def pop_episodes(self) -> list[EpisodeRecord]:
        """Episodes finished since the last call (for logging)."""
        episodes, self._episodes = self._episodes, []
        return episodes

    @staticmethod
    def _action_bytes(action: torch.Tensor) -> bytes:
        on_cpu = action.detach().to("cpu")
        if on_cpu.is_floating_point() or bool(((on_cpu < 0) | (on_cpu > 255)).any()):
            raise ValueError("record_actions keeps discrete actions in 0..255 (one byte each)")
        return on_cpu.to(torch.uint8).numpy().tobytes()

    def _record_episodes(self, done: torch.Tensor, info: dict) -> None:
        indices = torch.nonzero(done).flatten().tolist()
        returns = info["episode_return"][done].tolist()
        lengths = info["episode_length"][done].tolist()
        for index, ret, length in zip(indices, returns, lengths, strict=True):
            self._episodes.append(EpisodeRecord(index, float(ret), int(length), self.global_step))
