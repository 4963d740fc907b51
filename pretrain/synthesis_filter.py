"""Filtered synthesis: the follower walks every synthetic instruction, poor matches are dropped.

The speaker (path -> instruction) and the follower (instruction -> path) are each other's inverse: a
synthetic instruction the follower walks far from its path is likely a bad label. For a synthetic
split written by :mod:`lodestar.pretrain.synthesis`, :func:`filter_split`

1. walks every (path, instruction) pair from the path's start with the follower, batched and greedy
   on the fast simulator path (a sequential :class:`~lodestar.envs.nav.sim.env.NavVecEnv` observing
   indices, as :func:`lodestar.agents.vln.evaluate.run_greedy` runs it);
2. scores each walk with the project's nDTW (:func:`lodestar.envs.nav.eval.metrics.episode_metrics`)
   against the pair's path;
3. keeps the pairs scoring at least ``threshold`` and writes them as a new split ``out_split``:

   - ``<data>/R2R_<out_split>.json``: the episodes with at least one kept instruction, their
     ``instructions`` cut to the kept ones and an extra field ``"filter_ndtw"`` holding the score of
     each kept instruction (same order); other R2R readers ignore the extra field;
   - ``<data>/trajectories/<out_split>.pt``: the kept episodes of the source trajectory store with a
     per-step extra ``filter_ndtw`` (the pair's score repeated on every step: the store's extras are
     per step), and ``.json`` beside it: the source metadata for the kept rows plus a ``"filter"``
     record (threshold, follower, the score of *every* source pair, kept/dropped statistics).

A split already filtered with the same source, follower and threshold is reused (:func:`filter_split`
returns its report without walking again). Thresholds are decisions: choose them on a validation
split, never on ``test`` (DESIGN.md section 9).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lodestar.agents.vln.evaluate import make_eval_env, run_greedy
from lodestar.agents.vln.follower import FollowerBundle, load_follower
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.graph import NavGraph
from lodestar.envs.nav.data.r2r import Episode
from lodestar.envs.nav.data.tokenizer import tokenize
from lodestar.envs.nav.eval.metrics import episode_metrics
from lodestar.envs.nav.sim.env import NavVecEnv
from lodestar.pretrain.synthesis import file_digest, split_file, store_files
from lodestar.replay.trajectory import TrajectoryStore

SCORE_FIELD = "filter_ndtw"
# Walks a sequential env over every instruction once; returns R2R submission records
# (``{"instr_id", "trajectory": [[viewpoint, heading, elevation], ...]}``).
Walker = Callable[[NavVecEnv], list[dict[str, Any]]]


def greedy_walker(bundle: FollowerBundle) -> Walker:
    """The follower's greedy walk (argmax actions), as greedy evaluation runs it."""
    return lambda env: run_greedy(bundle.model, env)


@dataclass
class PairStats:
    """Means over a set of (path, instruction) pairs."""

    pairs: int
    instruction_words: float
    path_hops: float
    path_metres: float
    ndtw: float


@dataclass
class FilterReport:
    """What one filtering pass kept and how the kept pairs differ from the dropped ones."""

    source: str
    split: str
    threshold: float
    follower: str  # digest of the follower file (or the walker's name)
    scores: dict[str, float]  # source instr_id -> nDTW of the follower's walk
    kept: PairStats
    dropped: PairStats

    @property
    def pairs(self) -> int:
        return len(self.scores)

    @property
    def kept_fraction(self) -> float:
        return self.kept.pairs / self.pairs if self.pairs else 0.0

    def table(self) -> str:
        """Kept vs dropped pairs, one row each (means)."""
        lines = [
            f"filter {self.source} -> {self.split}: nDTW >= {self.threshold:g} keeps {self.kept.pairs} of "
            f"{self.pairs} pairs ({100 * self.kept_fraction:.1f}%)",
            f"  {'':8} {'pairs':>7} {'words':>7} {'hops':>6} {'metres':>7} {'nDTW':>6}",
        ]
        for name, s in (("kept", self.kept), ("dropped", self.dropped)):
            lines.append(
                f"  {name:8} {s.pairs:>7} {s.instruction_words:>7.1f} {s.path_hops:>6.2f} "
                f"{s.path_metres:>7.2f} {s.ndtw:>6.3f}"
            )
        return "\n".join(lines)

    def record(self) -> dict[str, Any]:
        """The JSON record stored in the kept split's trajectory metadata (``"filter"``)."""
        return {
            "source": self.source,
            "threshold": self.threshold,
            "follower": self.follower,
            "kept": asdict(self.kept),
            "dropped": asdict(self.dropped),
            "scores": self.scores,
        }

    @classmethod
    def from_record(cls, split: str, record: Mapping[str, Any]) -> FilterReport:
        return cls(
            record["source"],
            split,
            float(record["threshold"]),
            record["follower"],
            {k: float(v) for k, v in record["scores"].items()},
            PairStats(**record["kept"]),
            PairStats(**record["dropped"]),
        )


def score_walks(
    episodes: Sequence[Episode], graphs: Mapping[str, NavGraph], walks: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """nDTW of the walk of every instruction of ``episodes`` against its path (``walks``: instr_id ->
    viewpoints from the path's start). A missing walk is a ``KeyError`` naming the instruction."""
    scores = {}
    for ep in episodes:
        graph = graphs[ep.scan]
        for k in range(len(ep.instructions)):
            iid = ep.instr_id(k)
            if iid not in walks:
                raise KeyError(f"the follower did not walk instruction {iid!r}")
            scores[iid] = episode_metrics(graph, walks[iid], ep.path, name=iid)["ndtw"]
    return scores


def pair_stats(pairs: Sequence[tuple[Episode, int]], scores: Mapping[str, float]) -> PairStats:
    """Mean instruction length (words), path hops, path length (m) and nDTW of ``(episode, k)`` pairs."""
    if not pairs:
        return PairStats(0, 0.0, 0.0, 0.0, 0.0)
    words = [len(tokenize(ep.instructions[k])) for ep, k in pairs]
    hops = [len(ep.path) - 1 for ep, _ in pairs]
    metres = [ep.distance or 0.0 for ep, _ in pairs]
    ndtw = [scores[ep.instr_id(k)] for ep, k in pairs]
    return PairStats(len(pairs), *(float(np.mean(x)) for x in (words, hops, metres, ndtw)))


def walk_split(
    dataset: NavDataset,
    split: str,
    bundle: FollowerBundle,
    walker: Walker | None = None,
    num_envs: int = 256,
    max_steps: int = 15,
    device: torch.device | str = "cpu",
) -> dict[str, list[str]]:
    """Every instruction of ``split`` walked from its path's start: instr_id -> viewpoints visited.

    ``walker`` defaults to the follower's greedy walk; the env is built for ``bundle``'s features,
    angle size and instruction length.
    """
    env = make_eval_env(
        dataset,
        split,
        None,
        num_envs,
        bundle.features,
        bundle.angle_feature_size,
        bundle.max_instruction_len,
        device,
        max_steps=max_steps,
    )
    records = (walker or greedy_walker(bundle))(env)
    return {r["instr_id"]: [step[0] for step in r["trajectory"]] for r in records}


def filter_split(
    data_dir: str | Path,
    source: str,
    out_split: str,
    follower: str | Path | FollowerBundle,
    threshold: float,
    walker: Walker | None = None,
    num_envs: int = 256,
    max_steps: int = 15,
    device: torch.device | str = "cpu",
) -> FilterReport:
    """Filter split ``source`` of ``data_dir`` into ``out_split`` (see the module docstring).

    ``follower`` is a follower file / run directory (``load_follower``) or a loaded bundle;
    ``walker`` replaces its greedy walk (tests). Reuses an ``out_split`` made with the same source,
    follower and threshold; a follower file is identified by its digest, a loaded bundle only by its
    ``info["iteration"]`` (pass a file where reuse must be exact).
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"filter threshold must lie in [0, 1] (an nDTW), got {threshold}")
    if out_split == source:
        raise ValueError(f"the filtered split needs its own name, got out_split={out_split!r} = source")
    root = Path(data_dir)
    if isinstance(follower, FollowerBundle):
        bundle, follower_id = follower, "bundle:" + str(follower.info.get("iteration", "?"))
    else:
        path = Path(follower)
        bundle = load_follower(path, device)
        resolved = path / "best.pt" if (path / "best.pt").is_file() else path
        follower_id = file_digest(resolved) if resolved.is_file() else str(path)
    if walker is not None:
        follower_id += f"+{getattr(walker, '__name__', type(walker).__name__)}"
    reused = _reusable(root, source, out_split, follower_id, threshold)
    if reused is not None:
        return reused
    dataset = NavDataset(root)
    episodes = dataset.episodes(source)
    walks = walk_split(dataset, source, bundle, walker, num_envs, max_steps, device)
    scores = score_walks(episodes, dataset.graphs(sorted({ep.scan for ep in episodes})), walks)
    kept_pairs = [
        (ep, k) for ep in episodes for k in range(len(ep.instructions)) if scores[ep.instr_id(k)] >= threshold
    ]
    kept_ids = {ep.instr_id(k) for ep, k in kept_pairs}
    dropped = [
        (ep, k) for ep in episodes for k in range(len(ep.instructions)) if ep.instr_id(k) not in kept_ids
    ]
    report = FilterReport(
        source,
        out_split,
        threshold,
        follower_id,
        scores,
        pair_stats(kept_pairs, scores),
        pair_stats(dropped, scores),
    )
    _write(root, episodes, kept_ids, report)
    return report


def load_scores(data_dir: str | Path, split: str) -> dict[str, list[float]]:
    """The ``filter_ndtw`` field of every episode of a filtered split: path_id -> scores."""
    records = json.loads(split_file(Path(data_dir), split).read_text(encoding="utf-8"))
    return {str(r["path_id"]): [float(s) for s in r[SCORE_FIELD]] for r in records}


def _reusable(root: Path, source: str, split: str, follower: str, threshold: float) -> FilterReport | None:
    _, meta_path = store_files(root, split)
    if not (split_file(root, split).is_file() and meta_path.is_file()):
        return None
    record = json.loads(meta_path.read_text(encoding="utf-8")).get("filter", {})
    same = (record.get("source"), record.get("follower"), record.get("threshold")) == (
        source,
        follower,
        threshold,
    )
    if not same:
        raise FileExistsError(
            f"{split_file(root, split)} was filtered from {record.get('source')!r} with follower "
            f"{record.get('follower')!r} at threshold {record.get('threshold')!r} (asked: {source!r}, "
            f"{follower!r}, {threshold!r}): delete it or choose another split name"
        )
    return FilterReport.from_record(split, record)


def _write(root: Path, episodes: Sequence[Episode], kept_ids: set[str], report: FilterReport) -> None:
    """The kept split's trajectory store and metadata, then (last, so that its presence means done)
    its R2R JSON."""
    entries, rows, new_ids, source_ids = [], [], [], []
    source_store, source_meta = store_files(root, report.source)
    meta = json.loads(source_meta.read_text(encoding="utf-8")) if source_meta.is_file() else {}
    row_of = {iid: i for i, iid in enumerate(meta.get("instr_ids", []))}
    for ep in episodes:
        keep = [k for k in range(len(ep.instructions)) if ep.instr_id(k) in kept_ids]
        if not keep:
            continue
        entry = ep.to_json()
        entry["instructions"] = [ep.instructions[k] for k in keep]
        entry[SCORE_FIELD] = [report.scores[ep.instr_id(k)] for k in keep]
        entries.append(entry)
        for j, k in enumerate(keep):
            new_ids.append(f"{ep.path_id}_{j}")
            source_ids.append(ep.instr_id(k))
            rows.append(row_of.get(ep.instr_id(k), -1))
    store_path, meta_path = store_files(root, report.split)
    store_path.parent.mkdir(parents=True, exist_ok=True)
    record = report.record()
    if source_store.is_file():
        if -1 in rows:
            raise ValueError(f"{source_meta} does not list every instruction of split {report.source!r}")
        _kept_store(source_store, rows, [report.scores[i] for i in source_ids]).save(store_path)
        meta = {**meta, "split": report.split, "instr_ids": new_ids, "source_instr_ids": source_ids}
        meta.update(paths=len(entries), instructions=len(new_ids), filter=record)
    else:  # a split without a store (not written by synthesis): the record alone
        meta = {"split": report.split, "instr_ids": new_ids, "source_instr_ids": source_ids, "filter": record}
    _atomic_text(meta_path, json.dumps(meta))
    _atomic_text(split_file(root, report.split), json.dumps(entries, indent=1))


def _kept_store(path: Path, rows: list[int], scores: list[float], chunk: int = 4096) -> TrajectoryStore:
    """The episodes ``rows`` of the store at ``path``, with the per-step ``filter_ndtw`` extra."""
    source = TrajectoryStore.load(path)
    kept = TrajectoryStore(
        pad_token=source.pad_token, pad_action=source.pad_action, pad_viewpoint=source.pad_viewpoint
    )
    for start in range(0, len(rows), chunk):
        batch = source.get(rows[start : start + chunk])
        score = torch.tensor(scores[start : start + chunk], dtype=torch.float32)
        extras = {**batch.extras, SCORE_FIELD: score.unsqueeze(1).expand_as(batch.viewpoints).contiguous()}
        kept.extend_padded(
            batch.instruction,
            batch.instruction_lengths,
            batch.viewpoints,
            batch.actions,
            batch.lengths,
            extras,
        )
    return kept


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
