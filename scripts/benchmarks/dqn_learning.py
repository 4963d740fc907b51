"""``dqn-learning``: the Atari-100k preset trained on several games, scored by ``evaluate_dqn.py``.

Each game/seed trains ``configs/dqn_atari100k.yaml`` for ``steps`` agent steps in its own process
(``parallel`` at a time, one torch thread each), then is evaluated with ``scripts/evaluate_dqn.py``
under the run's own protocol (the Atari-100k one). Every score is reported next to the random and
human scores of the Atari-57 table and the wall time.

Options: ``games=Boxing,Krull,RoadRunner seeds=1 steps=100000 episodes=30 parallel=2
runs_dir=runs/dqn-learning checkpoint_every=<steps>`` (default: the preset's 25,000; a shorter period
loses less of a long run that is killed). ``--quick``: 3,000 steps of one game, 3 evaluation episodes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lodestar.agents.dqn.scores import reference_scores
from lodestar.envs.atari import resolve_game
from lodestar.runtime.bench import Figure, report
from lodestar.runtime.checkpoint import CheckpointManager, load_file

ROOT = Path(__file__).resolve().parent.parent.parent


def _train_and_evaluate(
    game: str, seed: int, steps: int, episodes: int, runs_dir: Path, checkpoint_every: int | None
) -> dict:
    name = f"{resolve_game(game)}-s{seed}-{steps}"
    run_dir = runs_dir / name
    train = [
        sys.executable,
        str(ROOT / "scripts" / "train_dqn.py"),
        *(
            ["--resume", str(run_dir)]
            if (run_dir / "checkpoints").is_dir()
            else ["--config", str(ROOT / "configs" / "dqn_atari100k.yaml")]
        ),
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
    log_path = runs_dir / f"{name}.log"
    start = time.perf_counter()
    with log_path.open("a") as log:
        subprocess.run(train, check=True, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    # A resumed run's own record covers its earlier processes too; this process's wall time does not.
    recorded = load_file(CheckpointManager(run_dir / "checkpoints").latest()).get("train_seconds")
    out = runs_dir / f"{name}.eval.json"
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
    with log_path.open("a") as log:
        subprocess.run(evaluate, check=True, stdout=log, stderr=subprocess.STDOUT)
    result = json.loads(out.read_text())["results"][0]
    return {
        "game": resolve_game(game),
        "seed": seed,
        "train_seconds": recorded if recorded is not None else wall,
        "train_seconds_whole_run": recorded is not None,
        **result,
    }


def run(quick: bool, options: dict[str, str]) -> list[Figure]:
    games = options.get("games", "Boxing" if quick else "Boxing,Krull,RoadRunner").split(",")
    seeds = [int(s) for s in options.get("seeds", "1").split(",")]
    steps = int(options.get("steps", 3_000 if quick else 100_000))
    episodes = int(options.get("episodes", 3 if quick else 30))
    parallel = int(options.get("parallel", 2))
    runs_dir = Path(options.get("runs_dir", "runs/dqn-learning"))
    checkpoint_every = int(options["checkpoint_every"]) if "checkpoint_every" in options else None
    runs_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(game, seed) for game in games for seed in seeds]
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        results = list(
            pool.map(lambda job: _train_and_evaluate(*job, steps, episodes, runs_dir, checkpoint_every), jobs)
        )
    table = reference_scores()
    figures = []
    for r in results:
        ref = table[r["game"]]
        print(
            f"{r['game']} seed {r['seed']}: mean {r['mean']:.1f} (median {r['median']:.1f}, std {r['std']:.1f}, "
            f"{r['episodes']} episodes) | random {ref.random} | human {ref.human} | "
            f"HNS {r['human_normalized']:.3f} | train wall time {r['train_seconds'] / 60:.1f} min"
            + (
                ""
                if r["train_seconds_whole_run"]
                else " (last process only: older checkpoints lack the run's time)"
            )
        )
        figures.append(
            Figure(
                "dqn-learning",
                f"{r['game']}_s{r['seed']}_mean_score_{steps}_steps",
                round(r["mean"], 2),
                "score",
                "random_agent_score",
                ref.random,
                target=ref.random,
                target_on="value",
            )
        )
        figures.append(
            Figure(
                "dqn-learning",
                f"{r['game']}_s{r['seed']}_human_normalized",
                round(r["human_normalized"], 4),
                "HNS",
            )
        )
        figures.append(
            Figure(
                "dqn-learning", f"{r['game']}_s{r['seed']}_train_wall_time", round(r["train_seconds"], 1), "s"
            )
        )
    report(figures, f"dqn-learning: dqn_atari100k.yaml, {steps} agent steps, {episodes} eval episodes")
    return figures
