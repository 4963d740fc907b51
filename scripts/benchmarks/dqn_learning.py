"""``dqn-learning``: the Atari-100k preset trained on several games and seeds, scored by ``evaluate_dqn.py``.

Each game/seed trains ``configs/dqn_atari100k.yaml`` for ``steps`` agent steps in its own process
(``parallel`` at a time, one torch thread each), then is evaluated with ``scripts/evaluate_dqn.py``
under the run's own protocol (the Atari-100k one). Reported: every run's score next to the random and
human scores of the Atari-57 table and its training wall time; per game the mean and standard
deviation (``ddof=1``) over seeds; over the ``seeds x games`` matrix of human-normalized scores the
IQM, median, mean and optimality gap with 95% stratified-bootstrap intervals, computed as rliable does
(:mod:`lodestar.agents.dqn.scores`).

Started again over the same ``runs_dir``, finished work is reused: a run whose latest checkpoint is at
``steps`` is not resumed, and its ``.eval.json`` is reused when it evaluated that checkpoint with the
same protocol and number of episodes.

Options: ``games=Boxing,Krull,RoadRunner seeds=1,2,3 steps=100000 episodes=30 parallel=2
runs_dir=runs/dqn-learning checkpoint_every=<steps> reps=50000`` (``checkpoint_every`` default: the
preset's 25,000, a shorter period loses less of a long run that is killed; ``reps``: bootstrap
resamples). ``--quick``: 2,000 steps of one game with seeds 1 and 2,
3 evaluation episodes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lodestar.agents.dqn.scores import METRICS, aggregate_with_ci, reference_scores, score_matrix
from lodestar.envs.atari import resolve_game
from lodestar.runtime.bench import Figure, report
from lodestar.runtime.checkpoint import CheckpointManager, load_file
from lodestar.runtime.stats import mean_std

ROOT = Path(__file__).resolve().parent.parent.parent
BOOTSTRAP_SEED = 0


def run_name(game: str, seed: int, steps: int) -> str:
    """The run directory's name (and the stem of its ``.log`` / ``.eval.json``)."""
    return f"{resolve_game(game)}-s{seed}-{steps}"


def finished_checkpoint(run_dir: Path, steps: int) -> dict[str, Any] | None:
    """The latest checkpoint's contents when it is at ``steps`` (training is over), else ``None``."""
    latest = CheckpointManager(run_dir / "checkpoints").latest()
    if latest is None:
        return None
    state = load_file(latest)
    return state if state["step"] >= steps else None


def reusable_evaluation(out: Path, run_dir: Path, episodes: int) -> dict[str, Any] | None:
    """The result in ``out`` when it evaluated ``run_dir``'s latest checkpoint as this benchmark asks.

    Asked for: the run's own protocol and ``episodes`` episodes; written after the latest checkpoint,
    so it scored that one and not an earlier one.
    """
    latest = CheckpointManager(run_dir / "checkpoints").latest()
    if latest is None or not out.is_file() or out.stat().st_mtime < latest.stat().st_mtime:
        return None
    try:
        result = json.loads(out.read_text())["results"][0]
    except (ValueError, KeyError, IndexError):
        return None  # an unreadable record is evaluated again, and then overwritten
    same = (
        isinstance(result.get("checkpoint"), str)
        and Path(result["checkpoint"]).resolve() == run_dir.resolve()  # runs_dir may be spelled differently
        and result.get("protocol") == "config"
        and result.get("episodes") == episodes
    )
    return result if same else None


def _run_logged(command: list[str], log_path: Path) -> None:
    with log_path.open("a") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)


def train_and_evaluate(
    game: str, seed: int, steps: int, episodes: int, runs_dir: Path, checkpoint_every: int | None
) -> dict[str, Any]:
    """Train (or finish, or reuse) one game/seed run, evaluate it (or reuse its evaluation)."""
    name = run_name(game, seed, steps)
    run_dir = runs_dir / name
    log_path = runs_dir / f"{name}.log"
    state = finished_checkpoint(run_dir, steps)
    wall = None
    if state is None:
        resume = bool(CheckpointManager(run_dir / "checkpoints").checkpoints())
        start = (
            ["--resume", str(run_dir)]
            if resume
            else ["--config", str(ROOT / "configs" / "dqn_atari100k.yaml")]
        )
        train = [
            sys.executable,
            str(ROOT / "scripts" / "train_dqn.py"),
            *start,
            f"env.game={game}",
            f"seed={seed}",
            f"total_steps={steps}",
            f"name={name}",
            f"runs_dir={runs_dir}",
            "torch_threads=1",
            "eval.every_steps=0",
            "eval.episodes=0",
            *([f"checkpoint_every_steps={checkpoint_every}"] if checkpoint_every is not None else []),
        ]
        began = time.perf_counter()
        _run_logged(train, log_path)
        wall = time.perf_counter() - began
        state = finished_checkpoint(run_dir, steps)
        if state is None:
            raise RuntimeError(f"{run_dir} has no checkpoint at step {steps} after training; see {log_path}")
    # The checkpoint's own record covers every process of a resumed run; this process's wall time does not.
    recorded = state.get("train_seconds")
    out = runs_dir / f"{name}.eval.json"
    result = reusable_evaluation(out, run_dir, episodes)
    reused = [*(["training"] if wall is None else []), *(["evaluation"] if result is not None else [])]
    if result is None:
        evaluate = [
            sys.executable,
            str(ROOT / "scripts" / "evaluate_dqn.py"),
            "--checkpoint",
            str(run_dir),
            "--protocol",
            "config",
            "--episodes",
            str(episodes),
            "--out",
            str(out),
        ]
        _run_logged(evaluate, log_path)
        result = json.loads(out.read_text())["results"][0]
    return {
        **result,
        "game": resolve_game(game),
        "seed": seed,
        "train_seconds": recorded if recorded is not None else wall,
        "train_seconds_whole_run": recorded is not None,
        "reused": " and ".join(reused),
    }


def _run_figures(r: dict[str, Any], steps: int) -> list[Figure]:
    ref = reference_scores()[r["game"]]
    tag = f"{r['game']}_s{r['seed']}"
    figures = [
        Figure(
            "dqn-learning",
            f"{tag}_mean_score_{steps}_steps",
            round(r["mean"], 2),
            "score",
            "random_agent_score",
            ref.random,
            target=ref.random,
            target_on="value",
        ),
        Figure("dqn-learning", f"{tag}_human_normalized", round(r["human_normalized"], 4), "HNS"),
    ]
    if r["train_seconds"] is not None:
        figures.append(Figure("dqn-learning", f"{tag}_train_wall_time", round(r["train_seconds"], 1), "s"))
    return figures


def summarize(results: list[dict[str, Any]], steps: int, reps: int) -> list[Figure]:
    """Print the per-run lines and the per-game and aggregate tables; return every figure.

    ``results`` holds one evaluation record per run (``game``, ``seed``, ``mean``, ``human_normalized``,
    ...); every game needs the same seeds.
    """
    table = reference_scores()
    figures: list[Figure] = []
    for r in results:
        ref = table[r["game"]]
        timing = "-" if r["train_seconds"] is None else f"{r['train_seconds'] / 60:.1f} min"
        notes = (
            []
            if r["train_seconds_whole_run"]
            else ["last process only: older checkpoints lack the run's time"]
        )
        notes += [f"reused {r['reused']}"] if r.get("reused") else []
        print(
            f"{r['game']} seed {r['seed']}: mean {r['mean']:.1f} (median {r['median']:.1f}, std {r['std']:.1f}, "
            f"{r['episodes']} episodes) | random {ref.random} | human {ref.human} | "
            f"HNS {r['human_normalized']:.3f} | train wall time {timing}"
            + (f" ({'; '.join(notes)})" if notes else "")
        )
        figures += _run_figures(r, steps)

    scores: dict[str, list[float]] = defaultdict(list)
    hns: dict[str, list[float]] = defaultdict(list)
    for r in results:
        scores[r["game"]].append(r["mean"])
        hns[r["game"]].append(r["human_normalized"])
    matrix, games = score_matrix(hns)
    seeds = matrix.shape[0]
    print(f"\nper game over {seeds} seed(s) (std: sample standard deviation over seeds)")
    print(f"{'game':<16}{'mean':>10}{'std':>9}{'random':>10}{'human':>10}{'HNS mean':>10}{'HNS std':>9}")
    for game in games:
        ref = table[game]
        (score_mean, score_std), (hns_mean, hns_std) = mean_std(scores[game]), mean_std(hns[game])
        print(
            f"{game:<16}{score_mean:>10.1f}{score_std:>9.1f}{ref.random:>10.1f}{ref.human:>10.1f}"
            f"{hns_mean:>10.3f}{hns_std:>9.3f}"
        )
        figures += [
            Figure(
                "dqn-learning",
                f"{game}_mean_score_over_seeds",
                round(score_mean, 2),
                "score",
                "random_agent_score",
                ref.random,
                target=ref.random,
                target_on="value",
            ),
            Figure("dqn-learning", f"{game}_score_std_over_seeds", round(score_std, 2), "score"),
            Figure("dqn-learning", f"{game}_human_normalized_over_seeds", round(hns_mean, 4), "HNS"),
        ]

    estimates = aggregate_with_ci(matrix, METRICS, reps=reps, seed=BOOTSTRAP_SEED)
    print(
        f"\nhuman-normalized score over {seeds} seed(s) x {len(games)} game(s), 95% stratified bootstrap "
        f"({reps:,} resamples, seed {BOOTSTRAP_SEED}; rliable's estimators)"
        + (
            ": one seed per game leaves nothing to resample, so the intervals are points"
            if seeds == 1
            else ""
        )
    )
    for name, (value, low, high) in estimates.items():
        print(f"  {name:<15}{value:>8.3f}  [{low:.3f}, {high:.3f}]")
        figures += [
            Figure("dqn-learning", f"hns_{name}", round(value, 4), "HNS"),
            Figure("dqn-learning", f"hns_{name}_ci95_low", round(low, 4), "HNS"),
            Figure("dqn-learning", f"hns_{name}_ci95_high", round(high, 4), "HNS"),
        ]
    return figures


def run(quick: bool, options: dict[str, str]) -> list[Figure]:
    games = options.get("games", "Boxing" if quick else "Boxing,Krull,RoadRunner").split(",")
    seeds = [int(s) for s in options.get("seeds", "1,2" if quick else "1").split(",")]
    steps = int(options.get("steps", 2_000 if quick else 100_000))
    episodes = int(options.get("episodes", 3 if quick else 30))
    parallel = int(options.get("parallel", 2))
    reps = int(options.get("reps", 50_000))
    runs_dir = Path(options.get("runs_dir", "runs/dqn-learning"))
    checkpoint_every = int(options["checkpoint_every"]) if "checkpoint_every" in options else None
    table = reference_scores()
    unscored = [g for g in games if resolve_game(g) not in table]
    if unscored:
        raise ValueError(f"games without a random/human score in the Atari-57 table: {', '.join(unscored)}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must differ, got {seeds}")
    runs_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(game, seed) for game in games for seed in seeds]
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        results = list(
            pool.map(lambda job: train_and_evaluate(*job, steps, episodes, runs_dir, checkpoint_every), jobs)
        )
    figures = summarize(results, steps, reps)
    report(
        figures,
        f"dqn-learning: dqn_atari100k.yaml, {steps} agent steps, {len(seeds)} seed(s), {episodes} eval episodes",
    )
    return figures
