"""Pragmatic inference (Speaker-Follower): the speaker reranks the routes the follower proposes.

The follower proposes ``K`` candidate routes per instruction: its greedy route (always candidate 0, so
reranking can only add to greedy decoding) and ``K - 1`` routes sampled from its action distribution.
Both passes run batched on the sequential :class:`~lodestar.envs.nav.sim.env.NavVecEnv` of greedy
evaluation; the sampled pass runs the split's episodes ``K - 1`` times over under distinct ids. Each
candidate keeps the follower's log-probability of its route: the sum of the log-probabilities of the
actions taken, STOP included (a route cut off at ``max_steps`` has no STOP to count). Routes sampled
twice are kept once.

The speaker then scores every candidate: the teacher-forced log-likelihood of the instruction given
the route, per target token (``<EOS>`` included). Every candidate of an instruction is scored on the
same tokens, so dividing by their number leaves the speaker's own ranking unchanged; it only puts
short and long instructions on one scale against the follower's log-probability, so that one weight
fits both. The prediction is the candidate with the best ``w * speaker + (1 - w) * follower``
(ties go to the earlier candidate, the greedy route first). ``w = 0`` leaves the speaker out and means
the follower's own decoding, its greedy route: the most probable of the candidates under the follower
need not be the greedy one (greedy decoding is myopic), so the plain formula at ``w = 0`` would be
another decoder rather than the baseline.

``w`` is chosen on a validation split (:func:`select_weight`, ``val_unseen`` by default; the held-out
``test`` split is refused, see :mod:`lodestar.runtime.protocol`) from a grid, then applied to every
reported split.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lodestar.agents.rollout import Transition
from lodestar.agents.vln.evaluate import Evaluation, has_goals, make_eval_env, run_policy
from lodestar.agents.vln.follower import FollowerBundle, FollowerPolicy
from lodestar.agents.vln.speaker import SpeakerBundle
from lodestar.agents.vln.trajectories import PathFeaturizer
from lodestar.envs.base import Observation, dict_observation
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.graph import NavGraph
from lodestar.envs.nav.data.r2r import Episode
from lodestar.envs.nav.eval.failures import classify_all
from lodestar.envs.nav.eval.metrics import METRIC_KEYS, RATE_KEYS, episode_metrics
from lodestar.envs.nav.eval.metrics import evaluate as score_predictions
from lodestar.runtime.progress import progress
from lodestar.runtime.protocol import HELD_OUT_SPLIT

# The grid of speaker weights searched on the validation split; 0 is greedy decoding.
DEFAULT_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
# Metrics a weight may be selected by (higher is better for each).
SELECTION_METRICS = ("sr", "spl", "ndtw", "sdtw", "cls")
# Separates an episode's path id from the copy number of its sampled runs (ids stay unique).
_COPY = "#sample"


class ScoredPolicy(FollowerPolicy):
    """A greedy or sampling :class:`FollowerPolicy` (no teacher) that also returns, in
    ``extras["log_prob"]``, the log-probability of each action it chose."""

    def __call__(self, obs: Observation) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # FollowerPolicy's own step, so the greedy candidate is exactly greedy evaluation's route.
        logits, action = self.learner_step(dict_observation(obs))
        log_prob = logits.log_softmax(-1).gather(1, action[:, None]).squeeze(1)
        return action, {"learner_action": action, "log_prob": log_prob}


@dataclass
class Candidates:
    """Candidate routes of every instruction of one split, with their scores.

    Row ``m`` is instruction ``instruction_ids[m]``; its candidates are ``routes[m]`` (R2R submission
    trajectories ``[[viewpoint, heading, elevation], ...]``, candidate 0 the greedy route). Score
    tensors are ``[M, K]`` float64 with ``K`` the most candidates of any row; ``valid`` marks real ones.
    """

    split: str
    episodes: list[Episode]
    graphs: Mapping[str, NavGraph]
    instruction_ids: list[str]
    routes: list[list[list[list[Any]]]]
    follower_logp: torch.Tensor
    speaker_logp: torch.Tensor | None = None
    _metrics: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if len(self.routes) != len(self.instruction_ids) or not all(self.routes):
            raise ValueError("every instruction needs at least one candidate route")
        if self.follower_logp.shape != (len(self.routes), self.max_candidates):
            raise ValueError(
                f"follower_logp is {list(self.follower_logp.shape)}, expected "
                f"[{len(self.routes)}, {self.max_candidates}] (instructions, candidates)"
            )
        self._by_id = {ep.instr_id(k): (ep, k) for ep in self.episodes for k in range(len(ep.instructions))}
        unknown = [iid for iid in self.instruction_ids if iid not in self._by_id]
        if unknown:
            raise ValueError(f"instruction ids not among the episodes of {self.split!r}: {unknown[:5]}")

    def __len__(self) -> int:
        return len(self.instruction_ids)

    @property
    def max_candidates(self) -> int:
        return max(len(r) for r in self.routes)

    @property
    def valid(self) -> torch.Tensor:
        """``[M, K]`` bool: which padded slots hold a candidate."""
        counts = torch.tensor([len(r) for r in self.routes])
        return torch.arange(self.max_candidates)[None, :] < counts[:, None]

    @property
    def has_goals(self) -> bool:
        return has_goals(self.episodes)

    def instruction(self, m: int) -> tuple[Episode, str]:
        """The episode of row ``m`` and its instruction text."""
        episode, k = self._by_id[self.instruction_ids[m]]
        return episode, episode.instructions[k]

    def metrics(self) -> torch.Tensor:
        """``[M, K, len(METRIC_KEYS)]`` float64 R2R metrics of every candidate (computed once)."""
        if not self.has_goals:
            raise ValueError(f"split {self.split!r} hides its goals: its candidates cannot be scored")
        if self._metrics is None:
            table = torch.zeros(len(self), self.max_candidates, len(METRIC_KEYS), dtype=torch.float64)
            for m, routes in enumerate(self.routes):
                episode, _ = self.instruction(m)
                graph = self.graphs[episode.scan]
                for j, route in enumerate(routes):
                    scores = episode_metrics(graph, _viewpoints(route), episode.path)
                    table[m, j] = torch.tensor([scores[key] for key in METRIC_KEYS], dtype=torch.float64)
            self._metrics = table
        return self._metrics


def _viewpoints(route: Sequence[Sequence[Any]]) -> list[str]:
    """The viewpoint ids of a submission trajectory ``[[viewpoint, heading, elevation], ...]``."""
    return [str(step[0]) for step in route]


def _walk(
    bundle: FollowerBundle,
    env: Any,
    mode: str,
    generator: torch.Generator | None,
    progress_desc: str | None,
) -> tuple[list[dict[str, Any]], torch.Tensor]:
    """Every instruction of ``env`` once with ``mode`` actions: records in split order and their log-probs."""
    model = bundle.model
    policy = ScoredPolicy(model, env.num_envs, mode=mode, generator=generator, features=env.feature_table)
    running = torch.zeros(env.num_envs, dtype=torch.float64, device=model.device)
    totals = torch.zeros(env.num_episodes, dtype=torch.float64, device=model.device)

    def on_step(transition: Transition) -> None:
        done = transition.done
        running.add_(transition.extras["log_prob"].to(torch.float64))
        # Each instruction finishes once: adding its sum to a zero total needs no read of the mask.
        index = transition.info["instruction_index"].clamp(min=0)
        totals.index_put_((index,), torch.where(done, running, 0.0), accumulate=True)
        running.masked_fill_(done, 0.0)

    records = run_policy(model, env, policy, progress_desc, on_step)
    order = {iid: k for k, iid in enumerate(env.instruction_ids)}
    logp = totals.cpu()[[order[r["instr_id"]] for r in records]]
    return records, logp


def propose_routes(
    bundle: FollowerBundle,
    dataset: NavDataset,
    split: str,
    k: int,
    *,
    episodes: Sequence[Episode] | None = None,
    num_envs: int = 64,
    max_steps: int = 15,
    seed: int = 0,
    show_progress: bool = False,
) -> Candidates:
    """``k`` candidate routes per instruction of ``split`` (or of ``episodes`` of it): greedy + ``k - 1`` samples.

    ``seed`` seeds the sampling; ``show_progress`` shows one bar per pass.
    """
    if k < 1:
        raise ValueError(f"the number of candidate routes must be >= 1, got {k}")
    listed = dataset.episodes(split) if episodes is None else list(episodes)
    device = bundle.model.device

    def env_for(source: Sequence[Episode]) -> Any:
        return make_eval_env(
            dataset, split, source, num_envs, bundle.features, bundle.angle_feature_size,
            bundle.max_instruction_len, device, max_steps,
        )  # fmt: skip

    greedy_env = env_for(listed)
    ids, graphs = list(greedy_env.instruction_ids), greedy_env.graphs
    desc = f"candidates {split} (greedy)" if show_progress else None
    greedy, greedy_logp = _walk(bundle, greedy_env, "greedy", None, desc)
    routes = [[record["trajectory"]] for record in greedy]
    logps = [[float(lp)] for lp in greedy_logp]
    if k > 1:
        row_of = {iid: m for m, iid in enumerate(ids)}
        copies, owner = [], {}
        for copy in range(1, k):
            for ep in listed:
                twin = dataclasses.replace(ep, path_id=f"{ep.path_id}{_COPY}{copy}")
                copies.append(twin)
                owner.update({twin.instr_id(i): row_of[ep.instr_id(i)] for i in range(len(ep.instructions))})
        generator = torch.Generator(device=device).manual_seed(seed)
        desc = f"candidates {split} ({k - 1} samples)" if show_progress else None
        sampled, sampled_logp = _walk(bundle, env_for(copies), "sample", generator, desc)
        seen = [{tuple(_viewpoints(route[0]))} for route in routes]
        for record, lp in zip(sampled, sampled_logp.tolist(), strict=True):
            m = owner[record["instr_id"]]
            key = tuple(_viewpoints(record["trajectory"]))
            if key not in seen[m]:  # the same route has the same actions, hence the same score
                seen[m].add(key)
                routes[m].append(record["trajectory"])
                logps[m].append(lp)
    width = max(len(r) for r in routes)
    follower = torch.full((len(routes), width), float("-inf"), dtype=torch.float64)
    for m, row in enumerate(logps):
        follower[m, : len(row)] = torch.tensor(row, dtype=torch.float64)
    return Candidates(split, listed, graphs, ids, routes, follower)


class SpeakerScorer:
    """Scores candidates with a speaker: the per-token log-likelihood of the instruction given the route.

    The speaker reads its own features (``bundle.features`` in ``dataset``) and encodes the
    instruction with its own vocabulary. Routes run in batches of ``batch_size`` (teacher forcing).
    """

    def __init__(self, bundle: SpeakerBundle, dataset: NavDataset, batch_size: int = 128) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.bundle, self.dataset, self.batch_size = bundle, dataset, batch_size

    @torch.no_grad()
    def __call__(self, candidates: Candidates, show_progress: bool = False) -> torch.Tensor:
        """``[M, K]`` float64 scores (``-inf`` on padding); also stored in ``candidates.speaker_logp``."""
        model, vocab = self.bundle.model, self.bundle.vocab
        device = model.device
        scans = sorted({ep.scan for ep in candidates.episodes})
        featurizer = PathFeaturizer.from_dataset(
            self.dataset, scans, self.bundle.features, device, self.bundle.angle_feature_size
        )
        texts = [candidates.instruction(m)[1] for m in range(len(candidates))]
        tokens, _ = vocab.encode_batch(texts, self.bundle.max_instruction_len, device=device)
        pairs = [(m, j) for m, routes in enumerate(candidates.routes) for j in range(len(routes))]
        scores = torch.full((len(candidates), candidates.max_candidates), float("-inf"), dtype=torch.float64)
        was_training = model.training
        model.eval()
        bar = (
            progress(total=len(pairs), desc=f"speaker {candidates.split}", unit="route")
            if show_progress
            else None
        )
        try:
            for start in range(0, len(pairs), self.batch_size):
                batch = pairs[start : start + self.batch_size]
                routes = []
                for m, j in batch:
                    episode, _ = candidates.instruction(m)
                    routes.append((episode.scan, _viewpoints(candidates.routes[m][j]), episode.heading))
                encoded = model.encode(featurizer(featurizer.index_paths(routes), with_pano=True))
                rows = torch.tensor([m for m, _ in batch], device=device)
                text = tokens[rows]
                logits = model(encoded, text, torch.arange(len(batch), device=device))
                targets = text[:, 1:]
                token_logp = logits.log_softmax(-1).gather(2, targets[..., None]).squeeze(2)
                real = targets != vocab.pad_id
                per_token = (token_logp * real).sum(1) / real.sum(1).clamp(min=1)
                scores[[m for m, _ in batch], [j for _, j in batch]] = per_token.double().cpu()
                if bar is not None:
                    bar.update(len(batch))
        finally:
            model.train(was_training)
            if bar is not None:
                bar.close()
        candidates.speaker_logp = scores
        return scores


def _check_weight(weight: float) -> None:
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"the speaker weight must be in [0, 1], got {weight}")


def rerank(candidates: Candidates, weight: float) -> torch.Tensor:
    """``[M]`` index of each instruction's chosen candidate under ``w * speaker + (1 - w) * follower``.

    ``weight = 0`` is the follower alone: its greedy route (candidate 0; see the module docstring).
    """
    _check_weight(weight)
    if weight == 0.0:
        return torch.zeros(len(candidates), dtype=torch.int64)
    if candidates.speaker_logp is None:
        raise ValueError("the candidates have no speaker scores: score them first (SpeakerScorer)")
    combined = weight * candidates.speaker_logp + (1.0 - weight) * candidates.follower_logp
    # argmax returns the first maximum: ties go to the earlier candidate, the greedy route first.
    return combined.masked_fill(~candidates.valid, float("-inf")).argmax(1)


def reranked_evaluation(candidates: Candidates, weight: float) -> Evaluation:
    """The chosen routes as an :class:`Evaluation` (submission records, R2R metrics, failure categories).

    The metrics come from the same code as greedy evaluation and ``scripts/evaluate_nav.py``.
    """
    choice = rerank(candidates, weight).tolist()
    chosen = [candidates.routes[m][j] for m, j in enumerate(choice)]
    records: list[dict[str, Any]] = [
        {"instr_id": iid, "trajectory": route}
        for iid, route in zip(candidates.instruction_ids, chosen, strict=True)
    ]
    summary: dict[str, float] | None = None
    per_instruction: dict[str, dict[str, float]] = {}
    categories: dict[str, str] = {}
    if candidates.has_goals:
        predictions = {
            iid: _viewpoints(route) for iid, route in zip(candidates.instruction_ids, chosen, strict=True)
        }
        summary, per_instruction = score_predictions(candidates.episodes, candidates.graphs, predictions)
        categories = classify_all(candidates.episodes, candidates.graphs, predictions)
    return Evaluation(candidates.split, records, summary, per_instruction, candidates.episodes, categories)


def check_selection_split(split: str) -> None:
    """Refuse to choose the reranking weight on the held-out split (evaluation protocol)."""
    if split == HELD_OUT_SPLIT:
        raise ValueError(
            f"the reranking weight is chosen on a validation split (val_unseen or val_seen), never on "
            f"{split!r}: the held-out split takes part in no decision"
        )


@dataclass
class WeightSelection:
    """The weight chosen on ``split`` by ``metric`` and the mean metrics of every weight of the grid."""

    weight: float
    split: str
    metric: str
    scores: dict[float, dict[str, float]]


def parse_weights(text: str) -> tuple[float, ...]:
    """A comma-separated grid of speaker weights in ``[0, 1]`` (``"0,0.5,1"``), sorted, without repeats."""
    try:
        weights = sorted({float(item) for item in text.split(",") if item.strip()})
    except ValueError:
        raise ValueError(f"speaker weights must be comma-separated numbers, got {text!r}") from None
    if not weights:
        raise ValueError("the grid of speaker weights is empty")
    for weight in weights:
        _check_weight(weight)
    return tuple(weights)


def select_weight(
    candidates: Candidates, weights: Sequence[float] = DEFAULT_WEIGHTS, metric: str = "sr"
) -> WeightSelection:
    """The weight of ``weights`` whose reranking scores best on ``candidates``' (validation) split.

    Ties go to the smallest weight, the closest to greedy decoding.
    """
    check_selection_split(candidates.split)
    if metric not in SELECTION_METRICS:
        raise ValueError(f"select the weight by one of {SELECTION_METRICS}, got {metric!r}")
    if not weights:
        raise ValueError("the grid of speaker weights is empty")
    table = candidates.metrics()
    rows = torch.arange(len(candidates))
    scores: dict[float, dict[str, float]] = {}
    for weight in sorted(weights):
        means = table[rows, rerank(candidates, weight)].mean(0).tolist()
        scores[weight] = dict(zip(METRIC_KEYS, means, strict=True))
    best = max(scores, key=lambda w: (scores[w][metric], -w))
    return WeightSelection(best, candidates.split, metric, scores)


def format_weight_table(selection: WeightSelection) -> str:
    """The grid of weights with SR/SPL/nDTW/TL on the selection split, the chosen one marked."""
    lines = [f"speaker weight w on {selection.split} (chosen by {selection.metric.upper()}):"]
    lines.append(f"{'w':>6}  {'SR':>6}  {'SPL':>6}  {'nDTW':>6}  {'TL':>6}")
    for weight, s in selection.scores.items():
        mark = "  <- chosen" if weight == selection.weight else ""
        lines.append(
            f"{weight:>6.2f}  {100 * s['sr']:>6.2f}  {100 * s['spl']:>6.2f}  {100 * s['ndtw']:>6.2f}  "
            f"{s['tl']:>6.2f}{mark}"
        )
    return "\n".join(lines)


def format_comparison(results: Mapping[str, tuple[Mapping[str, float], Mapping[str, float]]]) -> str:
    """Greedy against reranked metrics per split (``{split: (greedy, reranked)}``), rates in percent."""
    keys = ("sr", "spl", "ndtw", "tl", "ne")
    header = f"{'split':<12} {'decoding':<9}" + "".join(f"{k.upper():>8}" for k in keys)
    lines = [header]
    for split, (greedy, reranked) in results.items():
        for name, summary in (("greedy", greedy), ("reranked", reranked)):
            cells = "".join(f"{100 * summary[k] if k in RATE_KEYS else summary[k]:>8.2f}" for k in keys)
            lines.append(f"{split:<12} {name:<9}{cells}")
        delta = "".join(
            f"{100 * (reranked[k] - greedy[k]) if k in RATE_KEYS else reranked[k] - greedy[k]:>+8.2f}"
            for k in keys
        )
        lines.append(f"{'':<12} {'change':<9}{delta}")
    return "\n".join(lines)
